"""Segmentation datasets: cases (multi-channel images + label map on one grid) from studies and folders.

Phantom cases for training come from `phantom.phantom_case` (phantom imports segmentation, not the reverse).

A `Case` holds one image per channel (channel = a phase/sequence name such as "AP" or "PVP"), all on the
grid of its reference series, plus an optional ground-truth label map on that grid. `preprocess` turns a
case into network arrays (channel, x, y, z) at the plan spacing, normalised as the plans say.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError, ModelError
from ..study import LABELS, Study, same_grid

log = logging.getLogger(__name__)


@dataclass
class Case:
    case_id: str
    images: dict[str, sitk.Image]  # channel name -> image, all on the reference grid
    modalities: list[str]
    labels: sitk.Image | None = None
    meta: dict = field(default_factory=dict)

    @property
    def channel_names(self) -> list[str]:
        return list(self.images)

    @property
    def reference(self) -> sitk.Image:
        return next(iter(self.images.values()))

    def channel_array(self, name: str) -> np.ndarray:
        """Channel as float32 array in (x, y, z) order."""
        return sitk.GetArrayFromImage(self.images[name]).astype(np.float32).transpose(2, 1, 0)

    def label_array(self) -> np.ndarray:
        return sitk.GetArrayFromImage(self.labels).astype(np.uint8).transpose(2, 1, 0)


def case_from_study(study: Study, channels, reference: str | None = None, case_id: str | None = None) -> Case:
    """Pick the series of each channel (by series name or phase) and put them on the reference grid.

    Series not on the reference grid are resampled onto it (linear); they are assumed to be in the same
    physical frame already, i.e. registered (`hccfusion register`) or acquired without motion.
    """
    channels = list(channels)
    missing = [c for c in channels if study.get(c) is None]
    if missing:
        raise ModelError(
            f"Study '{study.study_id}' has no series for phase(s) {missing} that the model needs "
            f"(model channels {channels}; study series {list(study.series)}): add them, or use a model "
            "trained on the phases you have.")
    series = [study.get(c) for c in channels]
    ref_name = reference or study.meta.get("reference")
    ref = study.get(ref_name) if ref_name else None
    if ref is None:
        ref = next((s for s in series if s.phase.value == "PVP"), series[0])
    images = {}
    for name, s in zip(channels, series):
        image = sitk.Cast(s.image, sitk.sitkFloat32)
        if not same_grid(image, ref.image):
            log.warning("Series '%s' is not on the grid of reference '%s': resampling it (assumed registered).",
                        s.name, ref.name)
            low = float(sitk.GetArrayViewFromImage(image).min())
            image = sitk.Resample(image, ref.image, sitk.Transform(), sitk.sitkLinear, low, sitk.sitkFloat32)
        images[name] = image
    labels = ref.masks.get("labels")
    return Case(case_id or study.study_id, images, [s.modality.value for s in series], labels,
                {"reference_series": ref.name})


def cases_from_folder(folder: "str | Path", channels, reference: str | None = None) -> list[Case]:
    """Every study folder under `folder` (io.load_study), labels from the reference series' 'labels' mask."""
    from ..io import load_study

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"Dataset folder '{folder}' does not exist: give a folder of study folders.")
    cases = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        case = case_from_study(load_study(sub), channels, reference, case_id=sub.name)
        if case.labels is None:
            raise InputError(f"Study '{sub}' has no 'labels' mask on its reference series: add one to study.json.")
        cases.append(case)
    if not cases:
        raise InputError(f"Dataset folder '{folder}' holds no study folders.")
    return cases


# ------------------------------------------------------------------ preprocessing
def plan_grid(image: sitk.Image, spacing) -> sitk.Image:
    """An empty image covering `image`'s field of view at `spacing` (same origin and direction)."""
    size = [max(1, int(round(n * s / t))) for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing)]
    grid = sitk.Image(size, sitk.sitkUInt8)
    grid.SetSpacing([float(t) for t in spacing])
    grid.SetOrigin(image.GetOrigin())
    grid.SetDirection(image.GetDirection())
    return grid


def normalise(array: np.ndarray, channel: str, plans: dict) -> np.ndarray:
    """CT: clip to foreground 0.5-99.5 percentiles, z-score with global foreground stats; else per-case z-score."""
    if plans["normalisation"][channel] == "ct":
        st = plans["intensity"][channel]
        array = np.clip(array, st["percentile_00_5"], st["percentile_99_5"])
        return ((array - st["mean"]) / max(st["std"], 1e-6)).astype(np.float32)
    return ((array - array.mean()) / max(float(array.std()), 1e-6)).astype(np.float32)


def check_channels(case: Case, plans: dict) -> None:
    if case.channel_names != list(plans["channels"]):
        raise ModelError(
            f"Case '{case.case_id}' has channels {case.channel_names} but the model expects {plans['channels']} "
            "in this order: give the model's phases (e.g. --channels), in its order.")


def preprocess(case: Case, plans: dict, with_labels: bool = True):
    """(image (C, x, y, z) float32, labels (x, y, z) uint8 or None, plan-grid image) at the plan spacing."""
    check_channels(case, plans)
    grid = plan_grid(case.reference, plans["spacing"])
    chans = []
    for name, image in case.images.items():
        low = float(sitk.GetArrayViewFromImage(image).min())
        res = sitk.Resample(image, grid, sitk.Transform(), sitk.sitkLinear, low, sitk.sitkFloat32)
        chans.append(normalise(sitk.GetArrayFromImage(res).transpose(2, 1, 0), name, plans))
    labels = None
    if with_labels and case.labels is not None:
        lab = sitk.Resample(case.labels, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
        labels = remap_labels(sitk.GetArrayFromImage(lab).transpose(2, 1, 0), plans["labels"])
    return np.ascontiguousarray(np.stack(chans)), (None if labels is None else np.ascontiguousarray(labels)), grid


def remap_labels(array: np.ndarray, model_labels: dict) -> np.ndarray:
    """Study label values (study.LABELS) -> the model's label indices; labels the model lacks become background."""
    out = np.zeros(array.shape, np.uint8)
    for name, index in model_labels.items():
        if name in LABELS and index:
            out[array == LABELS[name]] = index
    return out
