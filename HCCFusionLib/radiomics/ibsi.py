"""IBSI-1 conformant preprocessing (Zwanenburg et al., IBSI reference manual, chapter 2): the `ibsi` preset mode.

Order, as in the IBSI image processing scheme: interpolation of image and mask to a grid whose centre is the
centre of the original grid (image: nearest / linear / cubic spline; mask: interpolated, then kept where ≥ the
partial-volume threshold), rounding of interpolated intensities (CT: HU are integers), re-segmentation of the
intensity mask (range and outlier filtering, mean ± k·σ of the interpolated ROI, combined as the intersection of
both ranges), then discretisation (fixed bin size from the lower bound of the re-segmentation range, or fixed bin
number between the ROI's minimum and maximum). The morphological mask is the interpolated ROI, not re-segmented.

Texture aggregation: "3D"; "2.5D" (in-plane neighbourhoods, matrices merged over slices: pyradiomics' ``force2D``);
"2D" (in-plane neighbourhoods, features of each slice averaged over the slices). The preset records which.
"""
from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk

from ..errors import InputError

MODES = ("legacy", "ibsi")
#: interpolation name -> spline order (scipy.ndimage); "cubic" is the tricubic spline IBSI configuration E uses.
INTERPOLATORS = {"nearest": 0, "linear": 1, "cubic": 3}
AGGREGATIONS = ("3D", "2.5D", "2D")
DEFAULTS = {"mode": "ibsi", "resample_mm": None, "interpolator": "linear", "mask_interpolator": "linear",
            "mask_threshold": 0.5, "round_intensities": False, "resegment_range": None, "resegment_sigma": None,
            "aggregation": "3D", "normalize": None}


def _excess_kurtosis(value: float, n_voxels: int) -> float:
    return value - 3.0


def _axis_n_minus_1(value: float, n_voxels: int) -> float:
    return value * math.sqrt(n_voxels / (n_voxels - 1))


#: pyradiomics' documented deviations from the IBSI-1 definitions, kept visible: (feature class, feature) ->
#: (cause, conversion of the pyradiomics value to the IBSI one given the ROI's voxel count). Tables keep
#: pyradiomics' values; tests assert that each deviation is exactly this one.
PYRADIOMICS_DEVIATIONS = {
    ("firstorder", "Kurtosis"): ("pyradiomics reports the kurtosis m4/m2², IBSI the excess kurtosis (minus 3)",
                                 _excess_kurtosis),
    ("shape", "MajorAxisLength"): ("pyradiomics' PCA divides the coordinate covariance by N, IBSI's reference by "
                                   "N-1: axis lengths differ by sqrt(N/(N-1)) (negligible for large ROIs)",
                                   _axis_n_minus_1),
    ("shape", "MinorAxisLength"): ("same covariance normalisation (N vs N-1) as MajorAxisLength", _axis_n_minus_1),
    ("shape", "LeastAxisLength"): ("same covariance normalisation (N vs N-1) as MajorAxisLength", _axis_n_minus_1),
}


def check_preprocess(prep: dict, where: str) -> dict:
    """The IBSI preprocessing choices of a preset, completed with the defaults and validated."""
    prep = {**DEFAULTS, **prep}
    unknown = sorted(set(prep) - set(DEFAULTS))
    if unknown:
        raise InputError(f"Radiomics preset '{where}': unknown preprocess keys {unknown} for mode 'ibsi' "
                         f"(known: {', '.join(DEFAULTS)}).")
    for key in ("interpolator", "mask_interpolator"):
        if prep[key] not in INTERPOLATORS:
            raise InputError(f"Radiomics preset '{where}': preprocess.{key} '{prep[key]}' is not one of "
                             f"{', '.join(INTERPOLATORS)} (mode 'ibsi').")
    if prep["aggregation"] not in AGGREGATIONS:
        raise InputError(f"Radiomics preset '{where}': preprocess.aggregation must be one of {AGGREGATIONS}.")
    if not 0.0 < float(prep["mask_threshold"]) <= 1.0:
        raise InputError(f"Radiomics preset '{where}': preprocess.mask_threshold must be in (0, 1].")
    rng = prep["resegment_range"]
    if rng is not None and (len(rng) != 2 or (None not in rng and rng[0] >= rng[1])):
        raise InputError(f"Radiomics preset '{where}': preprocess.resegment_range must be [low, high] (null for "
                         "an open end).")
    if prep["normalize"]:
        raise InputError(f"Radiomics preset '{where}': normalisation is not part of mode 'ibsi'; use mode "
                         "'legacy' for z-scored MR presets.")
    return prep


# ---------------------------------------------------------------- grid and interpolation
def target_grid(image: sitk.Image, resample_mm) -> tuple | None:
    """(size, spacing, start, step) of the IBSI grid (x, y, z order), or None when the grid is kept.

    Grid centres are aligned: n_new = ceil(n_old · s_old / s_new), and the first new voxel sits at the old
    continuous index start = (s_old (n_old - 1) - s_new (n_new - 1)) / (2 s_old); step = s_new / s_old. A null
    (or ≤ 0) spacing keeps that axis (2D configurations: in-plane only).
    """
    if not resample_mm:
        return None
    old = np.array(image.GetSpacing(), float)
    new = np.array([float(s) if s is not None and float(s) > 0 else o for s, o in zip(resample_mm, old)])
    if np.allclose(old, new):
        return None
    n_old = np.array(image.GetSize(), float)
    size = np.maximum(np.ceil(np.round(n_old * old / new, 6)), 1).astype(int)
    start = (old * (n_old - 1) - new * (size - 1)) / (2 * old)
    return size, new, start, new / old


def _resample(arr: np.ndarray, grid, order: int) -> np.ndarray:
    """`arr` (z, y, x) sampled on `grid`; outside the old grid the nearest edge value is used."""
    from scipy import ndimage

    size, _, start, step = grid
    return ndimage.affine_transform(arr.astype(np.float64), step[::-1], offset=start[::-1],
                                    output_shape=tuple(int(v) for v in size[::-1]), order=order, mode="nearest")


def _on_grid(arr: np.ndarray, reference: sitk.Image, grid) -> sitk.Image:
    out = sitk.GetImageFromArray(arr)
    if grid is None:
        out.CopyInformation(reference)
        return out
    size, spacing, start, _ = grid
    out.SetSpacing([float(v) for v in spacing])
    out.SetDirection(reference.GetDirection())
    out.SetOrigin(reference.TransformContinuousIndexToPhysicalPoint([float(v) for v in start]))
    return out


def preprocess_image(image: sitk.Image, prep: dict) -> sitk.Image:
    """Image interpolated to the IBSI grid (float32), rounded to integers when `round_intensities`."""
    grid = target_grid(image, prep["resample_mm"])
    arr = sitk.GetArrayFromImage(image).astype(np.float64)
    if grid is not None:
        arr = _resample(arr, grid, INTERPOLATORS[prep["interpolator"]])
    if prep["round_intensities"]:
        arr = np.round(arr)
    return _on_grid(arr.astype(np.float32), image, grid)


def preprocess_mask(mask: sitk.Image, image: sitk.Image, prep: dict) -> sitk.Image:
    """The morphological mask on the IBSI grid: the ROI interpolated like the image, kept where the interpolated
    value is ≥ the partial-volume threshold (compared at 6 decimals, so a 0.5 from two voxels counts)."""
    grid = target_grid(image, prep["resample_mm"])
    arr = (sitk.GetArrayViewFromImage(mask) > 0).astype(np.float64)
    if grid is not None:
        arr = np.round(_resample(arr, grid, INTERPOLATORS[prep["mask_interpolator"]]), 6)
        arr = arr >= float(prep["mask_threshold"])
    return _on_grid(arr.astype(np.uint8), image, grid)


# ---------------------------------------------------------------- re-segmentation and discretisation
def resegment_range(values: np.ndarray, prep: dict) -> tuple[float, float]:
    """[low, high] of the intensity mask: the re-segmentation range intersected with mean ± k·σ of `values` (the
    intensities of the interpolated ROI) when outlier filtering is on."""
    low, high = -math.inf, math.inf
    if prep["resegment_range"] is not None:
        lo, hi = prep["resegment_range"]
        low, high = (-math.inf if lo is None else float(lo)), (math.inf if hi is None else float(hi))
    sigma = prep["resegment_sigma"]
    if sigma and values.size:
        mean, sd = float(values.mean()), float(values.std())
        low, high = max(low, mean - sigma * sd), min(high, mean + sigma * sd)
    return low, high


def resegment(image: sitk.Image, mask: sitk.Image, prep: dict) -> sitk.Image:
    """The intensity mask: ROI voxels whose intensity is within `resegment_range`."""
    img = sitk.GetArrayViewFromImage(image)
    roi = sitk.GetArrayViewFromImage(mask) > 0
    low, high = resegment_range(img[roi], prep)
    out = sitk.GetImageFromArray((roi & (img >= low) & (img <= high)).astype(np.uint8))
    out.CopyInformation(mask)
    return out


def discretise(values: np.ndarray, settings: dict, lower_bound: float | None) -> np.ndarray:
    """IBSI discretisation of ROI intensities to grey levels 1, 2, …

    Fixed bin number N (``binCount``): floor(N (x - min) / (max - min)) + 1, the maximum in bin N. Fixed bin size w
    (``binWidth``): floor((x - x0) / w) + 1 with x0 the lower bound of the re-segmentation range (else the ROI
    minimum), so a grey level means the same intensity interval in every ROI.
    """
    values = np.asarray(values, np.float64)
    if settings.get("binCount"):
        n = int(settings["binCount"])
        lo, hi = values.min(), values.max()
        if hi == lo:
            return np.ones(values.shape, int)
        return np.minimum(np.floor(n * (values - lo) / (hi - lo)).astype(int) + 1, n)
    width = float(settings.get("binWidth", 25))
    x0 = values.min() if lower_bound is None or not math.isfinite(lower_bound) else lower_bound
    return np.floor((values - x0) / width).astype(int) + 1


def describe(prep: dict, setting: dict) -> dict:
    """The preprocessing choices of a preset as a report's feature card lists them."""
    if prep.get("mode", "legacy") != "ibsi":
        return {"preprocessing": "legacy (HCCFusion v1: pyradiomics-style grid, masks nearest neighbour)",
                "resampling": prep.get("resample_mm") or "native grid",
                "interpolator": prep.get("interpolator"), "normalisation": prep.get("normalize") or "none",
                "re-segmentation": setting.get("resegmentRange") or "none",
                "discretisation": _binning(setting)}
    rng, sigma = prep["resegment_range"], prep["resegment_sigma"]
    reseg = [f"range {rng}" if rng else None, f"outliers mean ± {sigma}σ" if sigma else None]
    return {"preprocessing": "IBSI-1 (grid centres aligned)",
            "resampling": prep["resample_mm"] or "native grid", "interpolator": prep["interpolator"],
            "mask": f"{prep['mask_interpolator']} interpolation, partial-volume threshold {prep['mask_threshold']}",
            "intensity rounding": bool(prep["round_intensities"]),
            "re-segmentation": " + ".join(r for r in reseg if r) or "none",
            "aggregation": prep["aggregation"], "discretisation": _binning(setting)}


def _binning(setting: dict) -> str:
    if setting.get("binCount"):
        return f"fixed bin number {setting['binCount']}"
    return f"fixed bin size {setting.get('binWidth', 25)}"
