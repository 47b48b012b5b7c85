"""Legacy-preset preprocessing cropped to the regions: the B-spline resampling computed only on the rows and
slices around the regions' box plus the filters' margin, bit for bit equal to the whole-series resampling.

Margin (per axis, in voxels of the target grid): the LoG's (`features.LOG_MARGIN_SIGMAS` × largest sigma / spacing
+ 2) or the wavelet's support (filter length × 2^levels + 2), whichever is larger, so the filters' crops
(`features.crop_groups`) see the same voxels as on the whole series.

Why the values are identical (ITK ≥ 5, which SimpleITK wraps): for a linear transform `ResampleImageFilter` maps the
first and last voxel of each output row (index axis 0, over the output's whole extent) to the input's continuous
index and interpolates between them. So the crop keeps
- whole rows (index axis 0 uncropped): the same row ends;
- a start whose physical point is exact (origin + spacing × index without rounding, checked in rational arithmetic;
  the start moves back a voxel or two until it is) on a spacing of few binary digits (e.g. 1.5 mm; other
  spacings: that axis uncropped): every voxel's physical point is then the same double as on the whole grid;
- the whole input series: the same continuous indices and the same B-spline coefficients (the prefilter is
  recursive, so a cropped input would change their low-order bits).
This needs a grid whose direction is a signed permutation (entries 0 and ±1: no rounding in direction × spacing);
other grids, and crops of more than 80 % of the grid, are resampled whole. Checked voxel for voxel in
`Testing/test_radiomics_crop.py` and, for the features, by `Testing/Benchmarks/bench_radiomics.py --crop-filters`.
"""
from __future__ import annotations

import logging
from fractions import Fraction

import numpy as np
import SimpleITK as sitk

from .features import LOG_MARGIN_SIGMAS, _target_grid
from .presets import Preset

log = logging.getLogger(__name__)

MAX_CROP_FRACTION = 0.8  # a crop larger than this share of the grid is resampled whole (no gain)
START_SEARCH = 16  # voxels the crop's start may move back (per axis) to find an exactly representable origin


def filter_margin(preset: Preset, spacing) -> np.ndarray:
    """Voxels (x, y, z) around the regions' box that the preset's LoG and wavelet read."""
    margin = np.zeros(3, int)
    types = preset.extractor().enabledImagetypes
    if "LoG" in types:
        sigma = max(float(s) for s in types["LoG"].get("sigma", [1.0]))
        margin = np.maximum(margin, np.ceil(LOG_MARGIN_SIGMAS * sigma / np.asarray(spacing, float)).astype(int) + 2)
    if "Wavelet" in types:
        import pywt

        custom = types["Wavelet"]
        levels = int(custom.get("start_level", 0)) + int(custom.get("level", 1))
        margin = np.maximum(margin, pywt.Wavelet(custom.get("wavelet", "coif1")).dec_len * 2 ** levels + 2)
    return margin


def preprocess_cropped(image: sitk.Image, masks: dict, preset: Preset):
    """(preprocessed image, {name: mask}) on the crop of the preset's grid around `masks` (masks on that grid, e.g.
    from `features.preprocess_mask`), or None where cropping does not apply (IBSI mode, no resampling, another
    interpolator than B-spline, normalisation, an oblique grid, or a crop nearly as large as the grid)."""
    grid = _target_grid(image, preset)
    interpolator = preset.preprocess.get("interpolator") or "sitkBSpline"
    if preset.mode == "ibsi" or grid is None or interpolator != "sitkBSpline" or preset.preprocess.get("normalize"):
        return None
    boxes = [_box(m) for m in masks.values() if sitk.GetArrayViewFromImage(m).any()]
    if not boxes:
        return None
    size = np.array(grid.GetSize())
    margin = filter_margin(preset, grid.GetSpacing())
    lo = np.maximum(np.min([b[0] for b in boxes], 0) - margin, 0)
    hi = np.minimum(np.max([b[1] for b in boxes], 0) + margin + 1, size)
    lo[0], hi[0] = 0, size[0]  # whole rows: ITK interpolates each row between its two ends
    lo = exact_start(grid, lo)
    if lo is None or np.prod(hi - lo) >= MAX_CROP_FRACTION * np.prod(size):
        return None
    start, extent = [int(v) for v in lo], [int(v) for v in hi - lo]
    reference = sitk.Image(extent, sitk.sitkUInt8)
    reference.SetSpacing(grid.GetSpacing())
    reference.SetDirection(grid.GetDirection())
    reference.SetOrigin(grid.TransformIndexToPhysicalPoint(start))
    out = sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), reference, sitk.Transform(), sitk.sitkBSpline, 0.0,
                        sitk.sitkFloat32)
    cropped = {}
    for name, mask in masks.items():
        cropped[name] = sitk.RegionOfInterest(mask, extent, start)
        cropped[name].CopyInformation(out)
    return out, cropped


def exact_start(grid: sitk.Image, lo) -> np.ndarray | None:
    """`lo` (x, y, z) with each axis moved back (by at most `START_SEARCH` voxels, else to 0) to a start whose
    physical point, and every later voxel's, is computed without rounding: the spacing times any index is exact (a
    spacing of few binary digits: 0.5, 0.75, 1, 1.25, 1.5 mm …) and so is origin + spacing × start. An axis with
    another spacing starts at 0. None for an oblique grid (direction entries other than 0 and ±1)."""
    direction = np.array(grid.GetDirection()).reshape(3, 3)
    if not np.all(np.isin(direction, (-1.0, 0.0, 1.0))) or not np.all((direction != 0).sum(0) == 1):
        return None
    row = np.argmax(direction != 0, axis=0)  # the physical axis each index axis moves along
    origin, spacing = grid.GetOrigin(), grid.GetSpacing()
    lo = np.array(lo, int)
    for axis in range(3):
        step = Fraction(direction[row[axis], axis] * spacing[axis])
        if abs(step.numerator) >= 2 ** 32:  # step × index would round for large indices
            lo[axis] = 0
            continue
        for start in range(int(lo[axis]), max(int(lo[axis]) - START_SEARCH, 0) - 1, -1):
            point = Fraction(origin[row[axis]]) + step * start
            if Fraction(float(point)) == point:
                break
        lo[axis] = start if Fraction(float(point)) == point else 0
    return lo


def _box(mask: sitk.Image):
    idx = np.nonzero(sitk.GetArrayViewFromImage(mask))
    return np.array([i.min() for i in idx[::-1]]), np.array([i.max() for i in idx[::-1]])
