"""Input checks run before any registration: each bad input becomes a clear HCCFusionError."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..errors import GeometryError, InputError
from ..study import Modality

#: Plausible CT attenuation range (HU) for the 0.1 / 99.9 percentiles.
CT_HU_RANGE = (-3100.0, 4000.0)


def check_volume(image: sitk.Image, name: str) -> None:
    """A 3D, scalar image with an orthonormal (invertible, unsheared) direction and finite values."""
    if image.GetDimension() != 3:
        raise GeometryError(
            f"Series '{name}' is {image.GetDimension()}D: registration needs 3D volumes "
            "(load the whole series, not a single slice)."
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"Series '{name}' has {image.GetNumberOfComponentsPerPixel()} components per voxel: "
                         "register scalar volumes (split vector/RGB images first).")
    if min(image.GetSize()) < 4:
        raise GeometryError(f"Series '{name}' has size {image.GetSize()}: at least 4 voxels per axis are needed "
                            "(a single slice or a thin slab cannot be registered in 3D).")
    direction = np.array(image.GetDirection()).reshape(3, 3)
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-3):
        raise GeometryError(
            f"Series '{name}' has a direction matrix {np.round(direction, 4).tolist()} that is not a rotation "
            f"(determinant {np.linalg.det(direction):.4g}, sheared or degenerate axes): the file header is "
            "broken; re-export the series from the scanner/DICOM or fix its orientation."
        )
    if not np.isfinite(sitk.GetArrayViewFromImage(image)).all():
        raise InputError(f"Series '{name}' contains NaN or infinite voxels: re-export it or replace them.")


def check_modality(image: sitk.Image, modality: Modality, name: str) -> None:
    """Raise an InputError when the intensities cannot belong to the declared modality.

    CT must be in Hounsfield units (fat/air below -100 HU present, values within the physical range);
    PET must be non-negative; MR must not look like a CT (a large share of voxels at air HU).
    """
    values = sitk.GetArrayViewFromImage(image)
    low, high = np.percentile(values, [0.1, 99.9])
    declared = f"Series '{name}' is declared {modality.value}"
    if modality is Modality.CT:
        if values.min() > -100 or low < CT_HU_RANGE[0] or high > CT_HU_RANGE[1]:
            raise InputError(
                f"{declared} but its intensities ({values.min():.4g}..{values.max():.4g}, 99.9th percentile "
                f"{high:.4g}) are not Hounsfield units (a CT shows fat or air below -100 HU and stays below "
                f"{CT_HU_RANGE[1]:.0f} HU): it is probably an MR or PET image, or a CT exported without rescale "
                "slope/intercept; fix the phase/modality or the export."
            )
    elif modality is Modality.PET:
        if values.min() < -1e-3 * max(abs(high), 1.0):
            raise InputError(f"{declared} but has negative values ({values.min():.4g}): PET must be SUV or "
                             "activity (>= 0); it is probably a CT; fix the phase/modality.")
    elif modality is Modality.MR:
        if np.mean(values < -500) > 0.05:
            raise InputError(f"{declared} but {np.mean(values < -500):.0%} of its voxels are below -500 "
                             "(air in Hounsfield units): it is probably a CT; fix the phase/modality.")


def check_mask(mask: sitk.Image, name: str) -> sitk.Image:
    """A non-empty binary mask (UInt8, 0/1)."""
    binary = sitk.Cast(mask != 0, sitk.sitkUInt8)
    if not sitk.GetArrayViewFromImage(binary).any():
        raise InputError(f"The mask {name} is empty (no voxel set): segment the liver first or "
                         "register without a mask (--mask none).")
    return binary


def physical_box(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned bounding box (min, max corner, mm) of the image's voxel centres."""
    size = np.array(image.GetSize()) - 1
    corners = np.array([[i, j, k] for i in (0, size[0]) for j in (0, size[1]) for k in (0, size[2])], float)
    points = np.array([image.TransformContinuousIndexToPhysicalPoint(c.tolist()) for c in corners])
    return points.min(axis=0), points.max(axis=0)


def check_overlap(fixed: sitk.Image, moving: sitk.Image, fixed_name: str, moving_name: str) -> float:
    """Fraction of the fixed box covered by the moving box; GeometryError when they do not intersect."""
    fmin, fmax = physical_box(fixed)
    mmin, mmax = physical_box(moving)
    inter = np.clip(np.minimum(fmax, mmax) - np.maximum(fmin, mmin), 0, None)
    extent = np.maximum(fmax - fmin, 1e-6)
    if np.any(inter <= 0):
        raise GeometryError(
            f"Series '{moving_name}' (extent {np.round(mmin, 1).tolist()}..{np.round(mmax, 1).tolist()} mm) "
            f"does not overlap the reference '{fixed_name}' ({np.round(fmin, 1).tolist()}.."
            f"{np.round(fmax, 1).tolist()} mm) in physical space: the two are not in one scanner frame "
            "(wrong origin/orientation in a header, or a different patient/study); fix the geometry first."
        )
    return float(np.prod(inter / extent))
