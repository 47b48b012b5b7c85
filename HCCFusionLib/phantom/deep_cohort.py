"""Planted lesion-patch cohorts for the deep fusion network (in memory; no files).

Each patient has one lesion in liver, rendered in three phases (AP, PVP, DP) on a 1 mm grid: a context volume of
2s voxels per side around the lesion, from which `deepfusion.patches.split_context` takes the lesion patch (the
central s^3) and the liver context (the whole volume averaged down by 2). The lesion is an axis-aligned ellipsoid
(semi-axes random, the same distribution along x and y), with arterial enhancement, washout, Gaussian noise and a
stripe texture (period 4-6 voxels, random phase, strongest in AP).

- trait='texture': the label is the ORIENTATION of the stripes: varying along x (1) or along y (0); amplitudes,
  kinetics, sizes and noise are drawn independently of it. The two classes are 90-degree rotations of each other
  in distribution, so every rotation-invariant feature (first order, shape, and texture matrices averaged over
  their 13 directions, as pyradiomics computes them) has the same distribution in both classes: the trait is
  invisible to the tabular kinetic + radiomics features by construction, while a CNN sees it directly.
- trait='kinetics' (control): the label is arterial hyper-enhancement + washout (AP +delta, DP -delta HU); the
  stripe orientation is random. Tabular mean-intensity features carry this trait as well as any image model.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..deepfusion.patches import split_context

PHASES = ("AP", "PVP", "DP")
LIVER_HU = np.array([70.0, 110.0, 95.0])
LESION_HU = np.array([120.0, 105.0, 85.0])
LESION_SD = np.array([22.0, 18.0, 18.0])
STRIPE_SHARE = np.array([1.0, 0.5, 0.2])  # stripe amplitude per phase, relative to AP
TRAITS = ("texture", "kinetics")


@dataclass
class PlantedCohort:
    """table: `patches` (phases, 2, s, s, s) + clinical `age`; y: 0/1 labels; masks: lesion masks (n, s, s, s) on the
    lesion patch grid (1 mm); volumes: the full-resolution context volumes (n, phases, 2s, 2s, 2s)."""

    table: pd.DataFrame
    y: np.ndarray
    masks: np.ndarray
    volumes: np.ndarray
    phases: tuple = PHASES
    spacing_mm: float = 1.0


def planted_cohort(n: int = 80, trait: str = "texture", size: int = 16, seed: int = 0, noise: float = 12.0,
                   delta: float = 30.0, missing: float = 0.0) -> PlantedCohort:
    """n patients (balanced labels) with the label planted in `trait`; `missing`: probability that a non-AP phase
    is absent (all NaN in the patch)."""
    if trait not in TRAITS:
        raise ValueError(f"trait must be one of {TRAITS}")
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % 2)
    full = 2 * size
    grid = np.stack(np.meshgrid(*[np.arange(full) - (full - 1) / 2] * 3, indexing="ij"))  # (3, z, y, x) in mm
    volumes = np.empty((n, len(PHASES), full, full, full), np.float32)
    masks = np.empty((n, size, size, size), np.uint8)
    for i in range(n):
        volumes[i], lesion = _patient(rng, grid, y[i], trait, noise, delta)
        lo = (full - size) // 2
        masks[i] = lesion[lo:lo + size, lo:lo + size, lo:lo + size]
    patches = split_context(volumes)
    if missing:
        absent = rng.random((n, len(PHASES))) < missing
        absent[:, 0] = False
        patches[absent] = np.nan
    table = pd.DataFrame({"patches": list(patches), "age": rng.normal(62, 10, n).round()},
                         index=pd.Index([f"P{i:03d}" for i in range(n)], name="patient_id"))
    return PlantedCohort(table, y, masks, volumes)


def _patient(rng, grid, label, trait, noise, delta):
    z, yy, x = grid
    centre = rng.uniform(-1.0, 1.0, 3)
    axes = rng.uniform(4.0, 6.5, 3)
    lesion = (((z - centre[0]) / axes[0]) ** 2 + ((yy - centre[1]) / axes[1]) ** 2
              + ((x - centre[2]) / axes[2]) ** 2) <= 1.0
    normal = rng.normal(size=3)
    normal /= np.linalg.norm(normal)
    outside = (grid * normal[:, None, None, None]).sum(axis=0) > rng.uniform(10.0, 14.0)  # beyond the liver edge
    lesion &= ~outside
    along_x = bool(label) if trait == "texture" else bool(rng.integers(2))
    coordinate = x if along_x else yy
    period, offset = rng.uniform(4.0, 6.0), rng.uniform(0, 2 * np.pi)
    stripes = np.cos(2 * np.pi * coordinate / period + offset)
    amplitude = rng.uniform(10.0, 35.0)
    enhancement = LESION_HU + rng.normal(0, LESION_SD)
    if trait == "kinetics" and label:
        enhancement = enhancement + np.array([delta, 0.0, -delta])
    out = np.empty((len(PHASES),) + z.shape, np.float32)
    for p in range(len(PHASES)):
        v = np.full(z.shape, LIVER_HU[p] + rng.normal(0, 8))
        v[lesion] = enhancement[p] + amplitude * STRIPE_SHARE[p] * stripes[lesion]
        v[outside] = -90.0
        out[p] = v + rng.normal(0, noise, z.shape)
    return out, lesion


def save_planted_runs(cohort: PlantedCohort, folder, endpoint: str = "label"):
    """Write each patient as a completed run folder (registration: the phases on one 1 mm grid; segmentation:
    liver + the lesion) and `cohort.csv` (run, `endpoint`, age) beside them; returns the CSV path."""
    from pathlib import Path

    import SimpleITK as sitk

    from ..layout import RunFolder
    from ..lesions import LesionTable
    from ..registration import RegistrationResult
    from ..segmentation.predictor import Segmentation, save_segmentation
    from ..study import LABELS, Series, Study

    folder = Path(folder)
    rows = []
    full, size = cohort.volumes.shape[-1], cohort.masks.shape[-1]
    lo = (full - size) // 2
    for i, patient in enumerate(cohort.table.index):
        paths = RunFolder(folder / "runs" / str(patient))

        def image(array):
            out = sitk.GetImageFromArray(array)
            out.SetSpacing([cohort.spacing_mm] * 3)
            out.SetOrigin([-(full - 1) / 2 * cohort.spacing_mm] * 3)
            return out

        study = Study(str(patient))
        for p, phase in enumerate(cohort.phases):
            study.add(Series(phase, phase, image(cohort.volumes[i, p])))
        RegistrationResult(cohort.phases[0], {phase: sitk.Euler3DTransform() for phase in cohort.phases}, study,
                           pd.DataFrame({"series": [], "warnings": []})).save(paths.registration)
        lesion = np.zeros((full,) * 3, np.uint8)
        lesion[lo:lo + size, lo:lo + size, lo:lo + size] = cohort.masks[i]
        labels = image(np.where(lesion > 0, LABELS["tumour"], np.where(cohort.volumes[i, 1] > 0, LABELS["liver"], 0))
                       .astype(np.uint8))
        lesion_map = image(lesion.astype(np.uint32))
        save_segmentation(Segmentation(labels, LesionTable.from_map(labels, lesion_map).frame, lesion_map),
                          paths.segmentation)
        rows.append({"run": f"runs/{patient}", endpoint: int(cohort.y[i]), "age": cohort.table["age"].iloc[i]})
    csv = folder / "cohort.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv
