"""One lesion model: the tumour label's instance map and its table, made once and read by every stage.

Rule (the segmentation's post-processing rule, `segmentation.predictor.postprocess_labels`):
lesions are the face-connected (6-neighbour) components of the tumour label, numbered 1..n largest first;
components smaller than `MIN_LESION_ML` are not lesions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from .errors import InputError
from .study import LABELS, check_same_grid

log = logging.getLogger(__name__)

FULLY_CONNECTED = False  # face (6-) connectivity
MIN_LESION_ML = 0.05  # smallest lesion kept (ml)

#: column -> unit. max_diameter_mm is the 3D maximum (Feret) diameter between boundary-voxel centres;
#: centroids are physical LPS mm.
COLUMNS = {"lesion": "id (value in the instance map)", "voxels": "count", "volume_ml": "ml",
           "max_diameter_mm": "mm (3D maximum diameter)", "centroid_x_mm": "mm (LPS)",
           "centroid_y_mm": "mm (LPS)", "centroid_z_mm": "mm (LPS)"}
LESION_COLUMNS = list(COLUMNS)
DIAMETER_COLUMN = "max_diameter_mm"  # the column BCLC's tumour size is read from


def label_lesions(labels: sitk.Image, *, min_ml: float = MIN_LESION_ML,
                  tumour_label: int = LABELS["tumour"]) -> sitk.Image:
    """Lesion instance map (UInt32, 0 background, 1..n largest first) of the tumour label in `labels`."""
    tumour = sitk.Cast(labels == tumour_label, sitk.sitkUInt8)
    voxel_ml = float(np.prod(labels.GetSpacing())) / 1000.0
    min_voxels = max(int(np.ceil(min_ml / voxel_ml - 1e-9)), 0) if min_ml > 0 else 0
    comps = sitk.ConnectedComponent(tumour, FULLY_CONNECTED)
    return sitk.RelabelComponent(comps, minimumObjectSize=min_voxels, sortByObjectSize=True)


def extreme_points(points: np.ndarray, directions: int = 256) -> np.ndarray:
    """The points that are extreme (first or last) along many directions (the candidates of a diameter)."""
    k = np.arange(directions) + 0.5
    phi, theta = np.arccos(1 - k / directions), np.pi * (1 + 5 ** 0.5) * k  # half-sphere Fibonacci directions
    dirs = np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], 1)
    proj = points @ dirs.T
    return points[np.unique(np.concatenate([proj.argmin(0), proj.argmax(0)]))]


def max_diameter_mm(points: np.ndarray, directions: int = 256) -> float:
    """Largest distance between points (physical mm), from the extreme points along many directions."""
    if len(points) < 2:
        return 0.0
    cand = extreme_points(points, directions)
    d = np.sqrt(((cand[:, None] - cand[None]) ** 2).sum(-1))
    return float(d.max())


def assign_pairs(distance: np.ndarray, gate_mm, overlap: np.ndarray | None = None) -> list[tuple[int, int]]:
    """One-to-one (row, column) pairs of two lesion sets minimising distance / gate − overlap (Hungarian
    assignment); a pair further apart than its gate (a number or one per column) that does not overlap is never made."""
    from scipy.optimize import linear_sum_assignment

    distance = np.asarray(distance, float)
    if not distance.size:
        return []
    overlap = np.zeros_like(distance) if overlap is None else np.asarray(overlap, float)
    gate = np.broadcast_to(np.asarray(gate_mm, float), distance.shape)
    allowed = (distance <= gate) | (overlap > 0)
    cost = np.where(allowed, distance / gate - overlap, 1e6)
    return [(int(i), int(j)) for i, j in zip(*linear_sum_assignment(cost)) if allowed[i, j]]


def _surface(phys: np.ndarray, zyx: np.ndarray, arr: np.ndarray, lesion: int) -> np.ndarray:
    """Physical points of the lesion's boundary voxels (the diameter's end points lie there)."""
    inside = np.ones(len(zyx), bool)
    for axis in range(3):
        for step in (-1, 1):
            nb = zyx.copy()
            nb[:, axis] += step
            ok = (nb[:, axis] >= 0) & (nb[:, axis] < arr.shape[axis])
            val = np.zeros(len(zyx), bool)
            val[ok] = arr[nb[ok, 0], nb[ok, 1], nb[ok, 2]] == lesion
            inside &= val
    return phys[~inside] if (~inside).any() else phys


@dataclass
class LesionTable:
    """One row per lesion of an instance map, columns `LESION_COLUMNS` (units in `COLUMNS`)."""

    frame: pd.DataFrame

    def __post_init__(self):
        missing = [c for c in LESION_COLUMNS if c not in self.frame.columns]
        if missing:
            raise InputError(f"Lesion table lacks column(s) {missing}; expected {LESION_COLUMNS}. Recreate it "
                             "with `hccfusion segment` (or HCCFusionLib.lesions.LesionTable.from_map).")
        self.frame = self.frame[LESION_COLUMNS].reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.frame)

    @classmethod
    def from_map(cls, labels: sitk.Image, lesion_map: sitk.Image) -> "LesionTable":
        """Measure every lesion of `lesion_map` (on `labels`' grid)."""
        check_same_grid(labels, lesion_map, "lesion instance map")
        arr = sitk.GetArrayFromImage(lesion_map)
        voxel_ml = float(np.prod(labels.GetSpacing())) / 1000.0
        direction = np.asarray(labels.GetDirection()).reshape(3, 3)
        rows = []
        for lesion in range(1, int(arr.max()) + 1 if arr.size else 1):
            zyx = np.argwhere(arr == lesion)
            if not len(zyx):
                continue
            index = zyx[:, ::-1].astype(float)  # x, y, z voxel indices
            phys = np.asarray(labels.GetOrigin()) + (index * np.asarray(labels.GetSpacing())) @ direction.T
            centroid = phys.mean(0)
            rows.append({"lesion": lesion, "voxels": len(zyx), "volume_ml": round(len(zyx) * voxel_ml, 3),
                         "max_diameter_mm": round(max_diameter_mm(_surface(phys, zyx, arr, lesion)), 2),
                         "centroid_x_mm": round(float(centroid[0]), 2),
                         "centroid_y_mm": round(float(centroid[1]), 2),
                         "centroid_z_mm": round(float(centroid[2]), 2)})
        return cls(pd.DataFrame(rows, columns=LESION_COLUMNS))

    @classmethod
    def from_labels(cls, labels: sitk.Image, *, min_ml: float = MIN_LESION_ML) -> tuple[sitk.Image, "LesionTable"]:
        """(instance map, table) of the tumour label, by `label_lesions`."""
        lesion_map = label_lesions(labels, min_ml=min_ml)
        return lesion_map, cls.from_map(labels, lesion_map)

    def to_csv(self, path) -> Path:
        """Write the table as one CSV (atomically)."""
        from .files import atomic_write

        path = Path(path)
        with atomic_write(path) as tmp:
            self.frame.to_csv(tmp, index=False)
        return path

    @classmethod
    def from_csv(cls, path) -> "LesionTable":
        """Read a table written by `to_csv`; a CSV without the lesion columns is an InputError."""
        try:
            frame = pd.read_csv(path)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            raise InputError(f"Cannot read lesion table '{path}' ({exc}): give a lesions.csv written by "
                             "`hccfusion segment`.") from exc
        missing = [c for c in LESION_COLUMNS if c not in frame.columns]
        if missing:
            raise InputError(f"Lesion table '{path}' lacks column(s) {missing}; expected {LESION_COLUMNS}. "
                             "Give a lesions.csv written by `hccfusion segment`.")
        return cls(frame)
