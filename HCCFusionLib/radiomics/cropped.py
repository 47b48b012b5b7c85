"""Legacy-preset preprocessing cropped to the regions: the B-spline resampling computed only on the regions' box
plus the filters' margin, from the input cropped to that box plus the B-spline's margin.

Margins (per axis, in voxels):
- output (target grid): the LoG's (`features.LOG_MARGIN_SIGMAS` × largest sigma / spacing + 2) or the wavelet's
  support (filter length × 2^levels + 2), whichever is larger, so the filters' crops (`features.crop_groups`) see
  the same voxels as on the whole series;
- input (original grid): the cubic kernel's support (2) + `IIR_MARGIN` (32): the B-spline coefficients come from a
  recursive (infinite-support) prefilter whose pole is 2 - sqrt(3), and 0.268^32 < 2^-60, so the coefficients
  inside the box converge to the same doubles as on the whole series.

The resampling runs in ITK's Python wrapping with the input's index start kept (same physical ↔ index arithmetic
as the whole image) and an output requested region, in double precision as SimpleITK's `Resample` does: values in
the box equal the whole-series resampling bit for bit (checked in `Testing/test_radiomics_crop.py` and by
`Testing/Benchmarks/bench_radiomics.py --crop-filters`, which compares Original features with the naive loop).
"""
from __future__ import annotations

import logging

import numpy as np
import SimpleITK as sitk

from .features import LOG_MARGIN_SIGMAS, _target_grid
from .presets import Preset

log = logging.getLogger(__name__)

IIR_MARGIN = 32  # input voxels for the B-spline prefilter to converge (|2 - sqrt(3)|^32 < 2^-60)
KERNEL_MARGIN = 2  # the cubic B-spline's support radius, in input voxels


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
    interpolator than B-spline, no ITK Python wrapping, or a crop as large as the grid)."""
    grid = _target_grid(image, preset)
    interpolator = preset.preprocess.get("interpolator") or "sitkBSpline"
    if preset.mode == "ibsi" or grid is None or interpolator != "sitkBSpline" or preset.preprocess.get("normalize"):
        return None
    boxes = [_box(m) for m in masks.values() if sitk.GetArrayViewFromImage(m).any()]
    if not boxes:
        return None
    size = np.array(grid.GetSize())
    lo = np.maximum(np.min([b[0] for b in boxes], 0) - filter_margin(preset, grid.GetSpacing()), 0)
    hi = np.minimum(np.max([b[1] for b in boxes], 0) + filter_margin(preset, grid.GetSpacing()) + 1, size)
    if np.prod(hi - lo) >= 0.8 * np.prod(size):
        return None
    try:  # imported only now: loading ITK's wrapping costs seconds per process
        import itk
    except ImportError:
        log.info("ITK's Python wrapping is not installed: resampling the whole series")
        return None
    values = _resample_region(itk, sitk.Cast(image, sitk.sitkFloat32), grid, lo, hi)
    out = sitk.GetImageFromArray(values)
    out.SetSpacing(grid.GetSpacing())
    out.SetDirection(grid.GetDirection())
    out.SetOrigin(grid.TransformIndexToPhysicalPoint([int(v) for v in lo]))
    start, extent = [int(v) for v in lo], [int(v) for v in hi - lo]
    cropped = {}
    for name, mask in masks.items():
        cropped[name] = sitk.RegionOfInterest(mask, extent, start)
        cropped[name].CopyInformation(out)
    return out, cropped


def _box(mask: sitk.Image):
    idx = np.nonzero(sitk.GetArrayViewFromImage(mask))
    return np.array([i.min() for i in idx[::-1]]), np.array([i.max() for i in idx[::-1]])


def _resample_region(itk, image: sitk.Image, grid: sitk.Image, lo, hi) -> np.ndarray:
    """float32 values of `sitk.Resample(image, grid, identity, B-spline)` on the grid voxels [lo, hi) (x, y, z)."""
    corners = [grid.TransformContinuousIndexToPhysicalPoint([float(c) for c in (x, y, z)])
               for x in (lo[0], hi[0] - 1) for y in (lo[1], hi[1] - 1) for z in (lo[2], hi[2] - 1)]
    index = np.array([image.TransformPhysicalPointToContinuousIndex(p) for p in corners])
    margin = KERNEL_MARGIN + IIR_MARGIN
    in_lo = np.maximum(np.floor(index.min(0)).astype(int) - margin, 0)
    in_hi = np.minimum(np.ceil(index.max(0)).astype(int) + margin + 1, np.array(image.GetSize()))
    arr = sitk.GetArrayViewFromImage(image)[in_lo[2]:in_hi[2], in_lo[1]:in_hi[1], in_lo[0]:in_hi[0]]
    source = itk.image_from_array(np.ascontiguousarray(arr, dtype=np.float64))
    region = itk.ImageRegion[3]()
    region.SetIndex([int(v) for v in in_lo])  # index start kept: same geometry arithmetic as the whole image
    region.SetSize([int(v) for v in in_hi - in_lo])
    source.SetRegions(region)
    source.SetSpacing(image.GetSpacing())
    source.SetOrigin(image.GetOrigin())
    source.SetDirection(itk.matrix_from_array(np.array(image.GetDirection()).reshape(3, 3)))
    kind = itk.Image[itk.D, 3]
    interpolator = itk.BSplineInterpolateImageFunction[kind, itk.D, itk.D].New()
    interpolator.SetSplineOrder(3)
    resample = itk.ResampleImageFilter[kind, kind].New(Input=source, Interpolator=interpolator,
                                                        DefaultPixelValue=0.0)
    resample.SetTransform(itk.IdentityTransform[itk.D, 3].New())
    resample.SetOutputSpacing(grid.GetSpacing())
    resample.SetOutputOrigin(grid.GetOrigin())
    resample.SetOutputDirection(itk.matrix_from_array(np.array(grid.GetDirection()).reshape(3, 3)))
    resample.SetSize([int(s) for s in grid.GetSize()])
    resample.UpdateOutputInformation()
    wanted = itk.ImageRegion[3]()
    wanted.SetIndex([int(v) for v in lo])
    wanted.SetSize([int(v) for v in hi - lo])
    resample.GetOutput().SetRequestedRegion(wanted)
    resample.Update()
    out = resample.GetOutput()
    out.DisconnectPipeline()  # else reading the array re-runs the filter on the whole grid
    return itk.array_view_from_image(out).astype(np.float32)
