"""Registration QC: mask Dice, displacement / Jacobian statistics, overlap, checkerboard and difference images."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..study import LABELS

#: QC thresholds: a result beyond them gets a warning in the QC table.
MAX_DISPLACEMENT_MM = 50.0
MIN_OVERLAP = 0.5
_LABEL_NAMES = {v: k for k, v in LABELS.items()}


#: Above this many voxels, a deformable transform is applied through its displacement field sampled every
#: FIELD_SPACING_MM (linear interpolation of a smooth field: < 0.01 mm from the exact B-spline, much faster).
FIELD_VOXELS = 2_000_000
FIELD_SPACING_MM = 3.0


def dense(transform: sitk.Transform, reference: sitk.Image, spacing_mm: float = FIELD_SPACING_MM) -> sitk.Transform:
    """`transform` as a DisplacementFieldTransform sampled every `spacing_mm` over `reference`'s extent."""
    spacing = np.maximum(np.array(reference.GetSpacing()), spacing_mm)
    extent = (np.array(reference.GetSize()) - 1) * np.array(reference.GetSpacing())
    size = (np.ceil(extent / spacing).astype(int) + 2).tolist()
    direction = np.array(reference.GetDirection()).reshape(3, 3)
    origin = np.array(reference.GetOrigin()) - direction @ spacing / 2
    field = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, size, origin.tolist(),
                                              spacing.tolist(), reference.GetDirection())
    return sitk.DisplacementFieldTransform(field)


def _is_linear(transform: sitk.Transform) -> bool:
    composite = sitk.CompositeTransform(transform)
    return all(composite.GetNthTransform(i).IsLinear() for i in range(composite.GetNumberOfTransforms()))


def resample(image: sitk.Image, reference: sitk.Image, transform: sitk.Transform, nearest: bool = False,
             default: float | None = None) -> sitk.Image:
    """`image` on `reference`'s grid through the fixed→moving `transform` (nearest neighbour for labels)."""
    if np.prod(reference.GetSize()) > FIELD_VOXELS and not _is_linear(transform):
        transform = dense(transform, reference)
    if default is None:
        default = 0.0 if nearest else float(np.min(sitk.GetArrayViewFromImage(image)))
    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    return sitk.Resample(image, reference, transform, interpolator, default, image.GetPixelID())


def dice_per_label(reference: sitk.Image, other: sitk.Image) -> dict[str, float]:
    """Dice of every non-zero label present in either map (same grid), keyed by LABELS name or 'label<k>'."""
    a = sitk.GetArrayViewFromImage(reference)
    b = sitk.GetArrayViewFromImage(other)
    out = {}
    for value in sorted(set(np.unique(a)) | set(np.unique(b))):
        if value == 0:
            continue
        x, y = a == value, b == value
        out[_LABEL_NAMES.get(int(value), f"label{int(value)}")] = float(2 * np.sum(x & y) / (x.sum() + y.sum()))
    return out


def displacement_stats(transform: sitk.Transform, grid: sitk.Image, region: sitk.Image | None,
                       moving: sitk.Image) -> dict[str, float]:
    """Max displacement (mm), min Jacobian determinant and fraction of `region` mapped inside `moving`.

    Evaluated on `grid` (the coarse working grid) from the transform's dense displacement field.
    """
    field = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, grid.GetSize(), grid.GetOrigin(),
                                              grid.GetSpacing(), grid.GetDirection())
    vectors = sitk.GetArrayFromImage(field)  # z, y, x, 3
    jacobian = sitk.GetArrayFromImage(sitk.DisplacementFieldJacobianDeterminant(field))
    inside = np.ones(vectors.shape[:3], bool) if region is None else sitk.GetArrayViewFromImage(region) > 0
    if not inside.any():
        inside[:] = True
    idx = np.stack(np.nonzero(inside)[::-1], axis=1).astype(float)  # x, y, z voxel indices
    origin = np.array(grid.GetOrigin())
    matrix = np.array(grid.GetDirection()).reshape(3, 3) * np.array(grid.GetSpacing())
    mapped = origin + idx @ matrix.T + vectors[inside]
    m_matrix = np.array(moving.GetDirection()).reshape(3, 3) * np.array(moving.GetSpacing())
    m_index = (mapped - np.array(moving.GetOrigin())) @ np.linalg.inv(m_matrix).T
    within = np.all((m_index >= -0.5) & (m_index <= np.array(moving.GetSize()) - 0.5), axis=1)
    return {
        "max_displacement_mm": float(np.linalg.norm(vectors[inside], axis=1).max()),
        "min_jacobian": float(jacobian[inside].min()),
        "overlap_fraction": float(within.mean()),
    }


def disagreement(first: sitk.Transform, second: sitk.Transform, grid: sitk.Image, region: sitk.Image | None,
                 percentile: float = 50.0, step: int = 2) -> float:
    """`percentile` of |first(p) - second(p)| (mm) over every `step`-th point p of `grid` inside `region`."""
    coarse = grid[::step, ::step, ::step]
    fields = [sitk.GetArrayFromImage(sitk.TransformToDisplacementField(
        t, sitk.sitkVectorFloat64, coarse.GetSize(), coarse.GetOrigin(), coarse.GetSpacing(), coarse.GetDirection()))
        for t in (first, second)]
    distance = np.linalg.norm(fields[0] - fields[1], axis=-1)
    inside = None if region is None else sitk.GetArrayViewFromImage(region)[::step, ::step, ::step] > 0
    values = distance[inside] if inside is not None and inside.any() else distance
    return float(np.percentile(values, percentile))


def warnings_for(qc: dict) -> list[str]:
    """Plain-language warnings when the QC numbers say the result looks wrong."""
    found = []
    before, after = qc.get("metric_before"), qc.get("metric_after")
    if not np.isfinite(after):
        found.append("metric could not be evaluated after registration (images no longer overlap)")
    elif np.isfinite(before) and after > before + 1e-4:
        found.append(f"metric worse after registration ({after:.4f} > {before:.4f} before)")
    if qc["min_jacobian"] <= 0:
        found.append(f"transform folds (min Jacobian determinant {qc['min_jacobian']:.3f} <= 0)")
    if qc["max_displacement_mm"] > MAX_DISPLACEMENT_MM:
        found.append(f"huge displacement ({qc['max_displacement_mm']:.1f} mm > {MAX_DISPLACEMENT_MM:g} mm)")
    if qc["overlap_fraction"] < MIN_OVERLAP:
        found.append(f"low overlap: only {qc['overlap_fraction']:.0%} of the reference region maps inside the series")
    for key, value in qc.items():
        if key.startswith("dice_after_") and value + 0.05 < qc.get(key.replace("after", "before"), 0.0):
            found.append(f"{key[len('dice_after_'):]} Dice dropped ({qc[key.replace('after', 'before')]:.2f} -> {value:.2f})")
    return found


def _unit(image: sitk.Image) -> sitk.Image:
    low, high = np.percentile(sitk.GetArrayViewFromImage(image), [1, 99])
    scale = float(high - low) or 1.0
    return sitk.Clamp((sitk.Cast(image, sitk.sitkFloat32) - float(low)) / scale, sitk.sitkFloat32, 0.0, 1.0)


def checkerboard(fixed: sitk.Image, resampled: sitk.Image, tiles: tuple[int, int, int] = (8, 8, 4)) -> sitk.Image:
    """Checkerboard of the reference and the resampled series, each scaled to [0, 1] by its 1–99th percentiles."""
    return sitk.CheckerBoard(_unit(fixed), _unit(resampled), list(tiles))


def difference(fixed: sitk.Image, resampled: sitk.Image) -> sitk.Image:
    """Signed difference of the [0, 1]-scaled reference and resampled series (meaningful within one modality)."""
    return _unit(resampled) - _unit(fixed)
