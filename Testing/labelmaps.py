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
