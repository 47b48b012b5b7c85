"""Analytic label maps for tests: a centred grid with an ellipsoidal liver and spherical tumours."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from HCCFusionLib.study import LABELS


def grid_mm(size, spacing):
    """Physical x, y, z (mm) of every voxel of a grid of `size` (x, y, z) centred on 0, as (z, y, x) arrays."""
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(size[::-1], spacing[::-1])]
    z, y, x = np.meshgrid(*axes, indexing="ij")
    return x, y, z


def labelmap(size, spacing, tumours=(), liver_axes=None) -> sitk.Image:
    """Labels (study.LABELS) on a centred grid: a liver ellipsoid with semi-axes `liver_axes` (mm; one number
    for a sphere) and tumours [((x, y, z) mm, radius mm)] drawn over it."""
    x, y, z = grid_mm(size, spacing)
    lab = np.zeros(x.shape, np.uint8)
    if liver_axes:
        a, b, c = np.broadcast_to(np.asarray(liver_axes, float), 3)
        lab[(x / a) ** 2 + (y / b) ** 2 + (z / c) ** 2 <= 1] = LABELS["liver"]
    for (cx, cy, cz), r in tumours:
        lab[(x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= r ** 2] = LABELS["tumour"]
    image = sitk.GetImageFromArray(lab)
    image.SetSpacing(spacing)
    image.SetOrigin([-(n - 1) * s / 2 for n, s in zip(size, spacing)])
    return image


#: body, liver and tumour HU of the two-phase synthetic CT studies
TWO_PHASE_HU = {"AP": (60, 80, 120), "PVP": (70, 110, 90)}


def two_phase_study(study_id: str, labels: sitk.Image, seed: int, air_columns: int = 0):
    """A Study of AP and PVP images over `labels` (TWO_PHASE_HU, Gaussian noise SD 8 seeded by seed + phase
    index); `air_columns` voxels of air (-1000 HU) at both x ends."""
    from HCCFusionLib.study import Series, Study

    lab = sitk.GetArrayFromImage(labels)
    study = Study(study_id)
    for k, (phase, (body, liver, tumour)) in enumerate(TWO_PHASE_HU.items()):
        arr = np.full(lab.shape, float(body), np.float32)
        arr[lab == LABELS["liver"]], arr[lab == LABELS["tumour"]] = liver, tumour
        if air_columns:
            arr[:, :, :air_columns] = arr[:, :, -air_columns:] = -1000.0
        arr += np.random.default_rng(seed + k).normal(0, 8.0, arr.shape).astype(np.float32)
        image = sitk.GetImageFromArray(arr)
        image.CopyInformation(labels)
        study.add(Series(phase, phase, image))
    return study
