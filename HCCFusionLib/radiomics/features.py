"""Features of one series × its regions: preprocessing, the optimised extraction and the naive reference loop.

`series_features` gives exactly what `RadiomicsFeatureExtractor.execute(image, region_mask)` gives for each region
(the "naive loop", `naive_series_features` / `naive_extract`), faster:

- each filtered image (LoG, wavelet) is computed once per series and reused for every region; the wavelet is
  computed on the series cropped to the union of the regions plus the wavelet's support (the transform is local, so
  values inside are unchanged); the LoG, a recursive (infinite-support) filter, sees the whole series;
- each region's filtered image is cropped to the region's bounding box before its features are computed;
- the grey levels of one (image type, region) are discretised once and shared by all texture classes (pyradiomics
  bins the same image and mask again in every class);
- shape features, which depend only on the mask, are computed once per distinct mask (`shapes`).
"""
from __future__ import annotations

import hashlib
import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..regions import size_reason
from . import ibsi
from .presets import Preset, pyradiomics


# ---------------------------------------------------------------- preprocessing
def preprocess_image(image: sitk.Image, preset: Preset) -> sitk.Image:
    """Series image as pyradiomics sees it: float32, normalised and resampled per the preset (mode 'ibsi': see
    `ibsi.preprocess_image`)."""
    if preset.mode == "ibsi":
        return ibsi.preprocess_image(image, preset.preprocess)
    imageoperations = pyradiomics()[2]
    image = sitk.Cast(image, sitk.sitkFloat32)
    norm = preset.preprocess.get("normalize")
    if norm:
        image = imageoperations.normalizeImage(image, normalizeScale=norm.get("scale", 1),
                                               removeOutliers=norm.get("remove_outliers"))
        image = sitk.Cast(image, sitk.sitkFloat32)
    grid = _target_grid(image, preset)
    if grid is not None:
        interpolator = getattr(sitk, preset.preprocess.get("interpolator") or "sitkBSpline")
        image = sitk.Resample(image, grid, sitk.Transform(), interpolator, 0.0, sitk.sitkFloat32)
    return image


def preprocess_mask(mask: sitk.Image, image: sitk.Image, preset: Preset) -> sitk.Image:
    """Binary mask of `image` (the original series) on the preprocessed grid (mode 'ibsi': interpolated and
    thresholded, `ibsi.preprocess_mask`; legacy: nearest neighbour)."""
    if preset.mode == "ibsi":
        return ibsi.preprocess_mask(mask, image, preset.preprocess)
    grid = _target_grid(image, preset)
    mask = sitk.Cast(mask > 0, sitk.sitkUInt8)
    if grid is None:
        return mask
    return sitk.Resample(mask, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


def _target_grid(image: sitk.Image, preset: Preset) -> sitk.Image | None:
    """Whole-FOV grid at the preset spacing, aligned like pyradiomics' resampling; None = keep the native grid."""
    spacing = preset.preprocess.get("resample_mm")
    if not spacing:
        return None
    old = np.array(image.GetSpacing())
    new = np.where(np.array(spacing, float) > 0, np.array(spacing, float), old)
    if np.allclose(old, new):
        return None
    size = np.maximum(np.floor(np.array(image.GetSize()) * old / new), 1).astype(int)
    grid = sitk.Image([int(s) for s in size], sitk.sitkUInt8)
    grid.SetSpacing(new.tolist())
    grid.SetDirection(image.GetDirection())
    grid.SetOrigin(image.TransformContinuousIndexToPhysicalPoint((0.5 * (new - old) / old).tolist()))
    return grid


def image_hash(image: sitk.Image) -> str:
    """SHA-256 of an image's voxels (with their type) and geometry."""
    h = hashlib.sha256()
    arr = np.ascontiguousarray(sitk.GetArrayViewFromImage(image))
    h.update(str(arr.dtype).encode())
    h.update(arr.tobytes())
    for v in (image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()):
        h.update(np.round(np.asarray(v, float), 6).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------- regions as `execute` prepares them
@dataclass
class SeriesFeatures:
    """Feature values and failure reasons of one series, per region."""

    values: dict = field(default_factory=dict)  # region -> {pyradiomics key: float}
    reasons: dict = field(default_factory=dict)  # region -> {feature_class or pyradiomics key: reason}
    shape_keys: dict = field(default_factory=dict)  # region -> hash of the mask shape features were computed on
    seconds: float = 0.0


@dataclass
class _Region:
    """A region prepared as `execute` prepares it: boxes, the mask features use and the one shape uses."""

    reasons: dict  # feature class -> why it is not computed
    box: np.ndarray | None = None  # bounding box features are cropped to (after re-segmentation)
    own_box: np.ndarray | None = None  # bounding box of the mask itself
    feature_mask: sitk.Image | None = None
    shape_mask: sitk.Image | None = None


def _prepare_region(image: sitk.Image, mask: sitk.Image, settings: dict, classes: list[str], name: str,
                    prep: dict | None = None) -> _Region:
    """`prep`: the preprocessing of an 'ibsi' preset (re-segmentation by `ibsi.resegment`); None: pyradiomics'."""
    imageoperations = pyradiomics()[2]
    m = sitk.GetArrayViewFromImage(mask) > 0
    voxels = int(m.sum())
    dims = int(sum((i.max() - i.min()) > 0 for i in np.nonzero(m))) if voxels else 0
    if voxels and not np.isfinite(sitk.GetArrayViewFromImage(image)[m]).all():
        reason = f"NaN/inf in the image inside region '{name}': fix the image (or its export) first"
        return _Region({c: reason for c in classes})
    reasons = {c: r for c in classes if (r := size_reason(voxels, dims, c, name))}
    if len(reasons) == len(classes):
        return _Region(reasons)
    try:
        own_box = box = check_mask(mask, settings)
        feature_mask = mask
        if prep is not None and (prep["resegment_range"] is not None or prep["resegment_sigma"]):
            feature_mask = ibsi.resegment(image, mask, prep)
            box = check_mask(feature_mask, settings)
        elif prep is None and settings.get("resegmentRange") is not None:
            feature_mask = imageoperations.resegmentMask(image, mask, **settings)
            box = check_mask(feature_mask, settings)
    except ValueError as exc:
        reason = f"pyradiomics refused region '{name}': {exc}"
        return _Region({c: reason for c in classes})
    shape_mask = feature_mask if settings.get("resegmentShape") else mask
    return _Region(reasons, box, own_box, feature_mask, shape_mask)


def check_mask(mask: sitk.Image, settings: dict) -> np.ndarray:
    """`imageoperations.checkMask` for a mask already on the image grid (same box, checks and messages), without
    its label-statistics pass over the whole image."""
    label = int(settings.get("label", 1))
    arr = sitk.GetArrayViewFromImage(mask) == label
    if not arr.any():
        raise ValueError("Label (%g) not present in mask" % label)
    idx = np.nonzero(arr)
    bb = np.array([v for axis in (2, 1, 0) for v in (idx[axis].min(), idx[axis].max())], dtype=int)
    ndims = int(np.sum((bb[1::2] - bb[0::2] + 1) > 1))
    min_dims = settings.get("minimumROIDimensions", 2)
    if ndims == 0:
        raise ValueError("mask only contains 1 segmented voxel! Cannot extract features for a single voxel.")
    if ndims < min_dims:
        raise ValueError("mask has too few dimensions (number of dimensions %d, minimum required %d)"
                         % (ndims, min_dims))
    min_size = settings.get("minimumROISize")
    if min_size is not None and idx[0].size <= min_size:
        raise ValueError("Size of the ROI is too small (minimum size: %g, ROI size: %g" % (min_size, idx[0].size))
    return bb


def shape_key(shape_mask: sitk.Image, bb) -> str:
    """Hash of the mask crop shape features are computed on (equal crops give equal shape features; the origin
    is left out: shape features do not depend on it, and a cropped grid's origin may differ in its last bits)."""
    imageoperations = pyradiomics()[2]
    _, cropped = imageoperations.cropToTumorMask(shape_mask, shape_mask, bb)
    cropped.SetOrigin((0.0, 0.0, 0.0))
    return image_hash(cropped)


def compute_shape(extractor, shape_mask: sitk.Image, bb, settings: dict) -> dict:
    # shape features use only the mask and the spacing: the mask stands in for the image (same grid)
    return {k: float(v) for k, v in extractor.computeShape(shape_mask, shape_mask, bb, **settings).items()}


# ---------------------------------------------------------------- the optimised path
def _binned_once(feature_class, store: dict, lower_bound=False):
    """`feature_class` whose grey-level discretisation is done by its first instance and reused by the next ones.

    pyradiomics' classes each call `_applyBinning` on the same image and mask with the same settings; the first
    result (kept read-only, so no class can alter it for the next) and its grey levels are handed to the others.
    `lower_bound` False: pyradiomics' binning; else IBSI's (`ibsi.discretise`, fixed bins from `lower_bound`, a
    number, or from the ROI minimum when None).
    """
    class BinnedOnce(feature_class):
        def _applyBinning(self, matrix):
            if "matrix" not in store and lower_bound is not False:
                binned = np.zeros(matrix.shape, dtype=int)
                binned[self.maskArray] = ibsi.discretise(matrix[self.maskArray], self.settings, lower_bound)
                self.coefficients["grayLevels"] = np.unique(binned[self.maskArray])
                self.coefficients["Ng"] = int(self.coefficients["grayLevels"].max())
            elif "matrix" not in store:
                binned = pyradiomics_binning(matrix, self.maskArray, self.settings)
                self.coefficients["grayLevels"] = np.unique(binned[self.maskArray])
                self.coefficients["Ng"] = int(np.max(self.coefficients["grayLevels"]))
            if "matrix" not in store:
                binned.flags.writeable = False
                store.update(matrix=binned, grayLevels=self.coefficients["grayLevels"],
                             Ng=max(self.coefficients["Ng"], store.get("ng", 0)))
            self.coefficients["grayLevels"] = store["grayLevels"].copy()
            self.coefficients["Ng"] = store["Ng"]
            return store["matrix"]

    BinnedOnce.__name__ = BinnedOnce.__qualname__ = feature_class.__name__
    BinnedOnce.__module__ = feature_class.__module__  # its log messages stay under pyradiomics' (quiet) logger
    return BinnedOnce


def pyradiomics_binning(matrix: np.ndarray, roi: np.ndarray, settings: dict) -> np.ndarray:
    """`imageoperations.binImage(matrix, roi, **settings)[0]`, bit for bit, faster: with a fixed bin width its edges
    depend only on the ROI's minimum and maximum, which pyradiomics finds with Python's `min`/`max` over every
    voxel (about 1 s per series on the full-size phantom); here numpy's, which give the same values."""
    imageoperations = pyradiomics()[2]
    values = matrix[roi]
    ends = np.array([values.min(), values.max()]) if values.size else np.array([np.nan])
    if settings.get("binCount") is not None or not np.isfinite(ends).all():
        return imageoperations.binImage(matrix, roi, **settings)[0]
    edges = imageoperations.getBinEdges(ends, **settings)
    binned = np.zeros(matrix.shape, dtype="int")
    binned[roi] = np.digitize(values, edges)
    return binned


def _class_features(classes_impl, image, mask, image_type: str, classes, enabled: dict, kwargs: dict,
                    lower_bound=False, ng: int = 0) -> dict:
    """`RadiomicsFeatureExtractor.computeFeatures` restricted to `classes`, the image binned once for all of them
    (`lower_bound`: see `_binned_once`; `ng`: at least this many grey levels, e.g. the whole ROI's for a slice)."""
    out, binned = {}, {"ng": ng}
    for cls in classes:
        calculator = _binned_once(classes_impl[cls], binned, lower_bound)(image, mask, **kwargs)
        for feature in enabled[cls] or []:
            calculator.enableFeatureByName(feature)
        for feature, value in calculator.execute().items():
            out[f"{image_type}_{cls}_{feature}"] = float(value)
    return out


def series_features(image: sitk.Image, masks: dict, preset: Preset, shapes: dict | None = None,
                    defer_shapes: bool = False, crop_filters: bool = False) -> SeriesFeatures:
    """Features of every region mask of one preprocessed series, filters computed once (see the module doc).

    `masks`: region name -> binary mask on `image`'s grid. `shapes`: shape features already computed, keyed by
    `shape_key` (reused instead of recomputed; new ones are added). `defer_shapes`: leave out shape features
    another process computes for the same mask (only `shape_keys` are returned for them). `crop_filters`: every
    filter on its regions' crops (`_variants`, `crop_groups`; LoG features within `CROP_TOLERANCE` relative, not
    bit-identical; Original and shape unchanged).
    """
    _, _, imageoperations, classes_impl = pyradiomics()
    start = time.perf_counter()
    extractor = preset.extractor()
    settings = {**extractor.settings, "label": 1}
    classes = [c for c in extractor.enabledFeatures if c != "shape2D"]
    prep = preset.preprocess if preset.mode == "ibsi" else None
    result = SeriesFeatures()
    prepared, duplicates = prepare_regions(image, masks, extractor, settings, classes, prep, result, shapes,
                                           defer_shapes)
    if prepared:
        _filtered_features(image, prepared, extractor, settings, result, classes_impl, imageoperations, prep,
                           crop_filters)
    copy_duplicates(result, duplicates)
    result.seconds = time.perf_counter() - start
    return result


def prepare_regions(image, masks, extractor, settings, classes, prep, result, shapes, defer_shapes):
    """Each distinct mask's region prepared, its shape features into `result` (see `series_features`): returns
    ({name: (box, feature mask, feature classes still to compute)}, {duplicate name: the equal mask's name})."""
    prepared, first_of, duplicates = {}, {}, {}
    for name, mask in masks.items():
        digest = image_hash(mask)
        if digest in first_of:  # e.g. "tumour", "index" and "lesion1" of a single-lesion patient
            duplicates[name] = first_of[digest]
            continue
        first_of[digest] = name
        region = _prepare_region(image, mask, settings, classes, name, prep)
        result.values[name], result.reasons[name] = {}, dict(region.reasons)
        if region.box is None:
            continue
        if "shape" in classes and "shape" not in region.reasons:
            key = result.shape_keys[name] = shape_key(region.shape_mask, region.box)
            if defer_shapes and region.shape_mask is mask and np.array_equal(region.own_box, region.box):
                pass  # same mask and box as the shape task's: it computes these
            elif shapes is not None and key in shapes:
                result.values[name].update(shapes[key])
            else:
                result.values[name].update(compute_shape(extractor, region.shape_mask, region.box, settings))
                if shapes is not None:
                    shapes[key] = {k: v for k, v in result.values[name].items() if "_shape_" in k}
        todo = [c for c in classes if c != "shape" and c not in region.reasons]
        if todo:
            prepared[name] = (region.box, region.feature_mask, todo)
    return prepared, duplicates


def copy_duplicates(result, duplicates: dict) -> None:
    """A duplicate mask's features and reasons are those of the equal mask computed."""
    for name, same in duplicates.items():
        result.values[name] = dict(result.values[same])
        result.reasons[name] = dict(result.reasons[same])
        if same in result.shape_keys:
            result.shape_keys[name] = result.shape_keys[same]


def _filtered_features(image, prepared, extractor, settings, result, classes_impl, imageoperations, prep=None,
                       crop_filters: bool = False):
    for image_type, custom in extractor.enabledImagetypes.items():
        for variant, margin in _variants(image_type, custom, image.GetSpacing(), crop_filters):
            args = {**settings, **variant}
            boxes = {name: p[0] for name, p in prepared.items()}
            for names, source, offset in _crops(image, boxes, margin):
                local = {}
                for name in names:
                    bb, feature_mask, todo = prepared[name]
                    mask = feature_mask if source is image else sitk.RegionOfInterest(
                        feature_mask, source.GetSize(), [int(v) for v in offset])
                    lbb = np.array(bb).copy()
                    lbb[0::2] -= offset
                    lbb[1::2] -= offset
                    local[name] = (lbb, mask, todo)
                generator = getattr(imageoperations, f"get{image_type}Image")(source, next(iter(local.values()))[1],
                                                                               **args)
                for filtered, type_name, kwargs in generator:
                    for name, (lbb, mask, todo) in local.items():
                        _region_features(result.values[name], filtered, mask, lbb, type_name, kwargs, todo, prep,
                                         classes_impl, extractor.enabledFeatures, imageoperations)


def _region_features(out: dict, filtered, mask, lbb, type_name: str, kwargs: dict, todo, prep, classes_impl,
                     enabled: dict, imageoperations) -> None:
    cropped_image, cropped_mask = imageoperations.cropToTumorMask(filtered, mask, lbb, padDistance=0)
    bound, per_slice = _lower_bound(prep, type_name), []
    if prep is not None and prep["aggregation"] == "2D":
        per_slice = [c for c in todo if c != "firstorder"]
        out.update(_slice_features(classes_impl, cropped_image, cropped_mask, type_name, per_slice, enabled, kwargs,
                                   bound))
    out.update(_class_features(classes_impl, cropped_image, cropped_mask, type_name,
                               [c for c in todo if c not in per_slice], enabled, kwargs, bound))


def _slice_features(classes_impl, image, mask, type_name: str, classes, enabled: dict, kwargs: dict,
                    lower_bound) -> dict:
    """IBSI "2D" texture: the features of each slice (in-plane neighbourhoods), averaged over the slices where they
    are defined. Grey levels are discretised once over the whole ROI, then each slice keeps them."""
    arr, roi = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(mask) > 0
    levels = np.zeros(arr.shape, np.float32)
    levels[roi] = ibsi.discretise(arr[roi], kwargs, lower_bound)
    level_image = sitk.GetImageFromArray(levels)
    level_image.CopyInformation(image)
    mask = sitk.Cast(mask > 0, sitk.sitkUInt8)
    same = {**{k: v for k, v in kwargs.items() if k != "binCount"}, "binWidth": 1}  # level l stays level l
    values: dict[str, list] = {}
    size = [image.GetSize()[0], image.GetSize()[1], 1]
    for z in np.flatnonzero(roi.any(axis=(1, 2))):
        with warnings.catch_warnings():  # a slice of one voxel or one row: pyradiomics' NaNs, averaged out below
            warnings.simplefilter("ignore", RuntimeWarning)
            part = _class_features(classes_impl, sitk.RegionOfInterest(level_image, size, [0, 0, int(z)]),
                                   sitk.RegionOfInterest(mask, size, [0, 0, int(z)]), type_name, classes, enabled,
                                   same, 1.0, int(levels.max()))
        for key, value in part.items():
            values.setdefault(key, []).append(value)
    return {k: float(np.nanmean(v)) if np.isfinite(v).any() else math.nan for k, v in values.items()}


def _lower_bound(prep: dict | None, type_name: str):
    """IBSI fixed-bin-size origin: the re-segmentation range's lower bound on the original image, else the ROI
    minimum (None); False for legacy presets (pyradiomics' binning)."""
    if prep is None:
        return False
    rng = prep["resegment_range"]
    return float(rng[0]) if type_name == "original" and rng is not None and rng[0] is not None else None


# ITK's recursive (Deriche) LoG starts each line from the crop's edge; that start is forgotten slowly: on the
# full-size phantom 6 sigma gave bin flips and relative differences up to 2e-2 (glcm ClusterShade), 8 sigma
# 4e-4, 10 sigma 2.5e-6 and no flips
LOG_MARGIN_SIGMAS = 10.0
#: Largest relative difference from the naive loop accepted for filtered (LoG) features with `crop_filters`
CROP_TOLERANCE = 1e-4


def _variants(image_type: str, custom: dict, spacing, crop_filters: bool) -> list[tuple[dict, object]]:
    """[(image type arguments, crop margin in voxels (x, y, z) or None = whole image)] of one image type.

    Wavelet: always cropped to its support (the transform is local: values inside are unchanged). LoG with
    `crop_filters`: one variant per sigma, each cropped to ceil(10 sigma / spacing) + 2 voxels (the recursive LoG
    is not local: values inside change in their low-order bits only, within `CROP_TOLERANCE`)."""
    if image_type == "Wavelet":
        import pywt

        levels = int(custom.get("start_level", 0)) + int(custom.get("level", 1))
        return [(custom, np.full(3, pywt.Wavelet(custom.get("wavelet", "coif1")).dec_len * 2 ** levels + 2))]
    if image_type == "LoG" and crop_filters:
        return [({**custom, "sigma": [s]},
                 np.ceil(LOG_MARGIN_SIGMAS * float(s) / np.array(spacing, float)).astype(int) + 2)
                for s in custom.get("sigma", [1.0])]
    return [(custom, None)]


def crop_groups(boxes: dict, margin, size) -> list[tuple[list, np.ndarray, np.ndarray]]:
    """[(region names, lo, hi)]: crops (x, y, z voxels [lo, hi)) of the regions' pyradiomics boxes plus `margin`,
    clipped to `size`; two crops merge into their union while the union is no larger than the two together (nested
    regions share one filter run, distant ones get their own)."""
    size = np.asarray(size)
    groups = [([n], np.maximum(np.asarray(bb)[0::2] - margin, 0), np.minimum(np.asarray(bb)[1::2] + margin + 1, size))
              for n, bb in boxes.items()]
    while len(groups) > 1:
        best = None
        for i in range(len(groups)):
            for j in range(i + 1, len(groups)):
                lo, hi = np.minimum(groups[i][1], groups[j][1]), np.maximum(groups[i][2], groups[j][2])
                gain = sum(int(np.prod(g[2] - g[1])) for g in (groups[i], groups[j])) - int(np.prod(hi - lo))
                if gain >= 0 and (best is None or gain > best[0]):
                    best = (gain, i, j, lo, hi)
        if best is None:
            break
        _, i, j, lo, hi = best
        groups[i] = (groups[i][0] + groups[j][0], lo, hi)
        del groups[j]
    return groups


def _crops(image: sitk.Image, boxes: dict, margin) -> list[tuple[list, sitk.Image, np.ndarray]]:
    """[(region names, image or its crop, the crop's offset)] a filter runs on (`crop_groups`; None: whole)."""
    if margin is None:
        return [(list(boxes), image, np.zeros(3, int))]
    out = []
    for names, lo, hi in crop_groups(boxes, margin, image.GetSize()):
        if np.all(lo == 0) and np.all(hi == np.array(image.GetSize())):
            out.append((names, image, np.zeros(3, int)))
        else:
            out.append((names, sitk.RegionOfInterest(image, [int(v) for v in hi - lo], [int(v) for v in lo]), lo))
    return out


def bin_flips(image: sitk.Image, masks: dict, preset: Preset) -> dict:
    """{region: {filtered image type name: voxels of the region whose grey-level bin differs between the filter of
    the whole `image` and of the region's own crop under `crop_filters`}} (pyradiomics' filters and binning; LoG
    per sigma and every wavelet sub-band). Each whole-image filter runs once for all regions."""
    _, _, imageoperations, _ = pyradiomics()
    extractor = preset.extractor()
    settings = {**extractor.settings, "label": 1}
    boxes = {n: check_mask(m, settings) for n, m in masks.items() if sitk.GetArrayViewFromImage(m).any()}
    flips = {n: {} for n in boxes}
    first = masks[next(iter(boxes))] if boxes else None
    for image_type, custom in extractor.enabledImagetypes.items():
        for variant, margin in _variants(image_type, custom, image.GetSpacing(), True):
            if margin is None or not boxes:
                continue
            get = getattr(imageoperations, f"get{image_type}Image")
            whole = {name: f for f, name, _ in get(image, first, **{**settings, **variant})}
            for region, bb in boxes.items():
                [(_, part, offset)] = _crops(image, {region: bb}, margin)
                small = sitk.RegionOfInterest(masks[region], part.GetSize(), [int(v) for v in offset])
                roi = sitk.GetArrayFromImage(small) > 0
                for filtered, name, kwargs in get(part, small, **{**settings, **variant}):
                    ref = sitk.RegionOfInterest(whole[name], part.GetSize(), [int(v) for v in offset])
                    bins = [imageoperations.binImage(sitk.GetArrayFromImage(f), roi, **kwargs)[0][roi]
                            for f in (ref, filtered)]
                    flips[region][name] = int((bins[0] != bins[1]).sum())
    return flips


# ---------------------------------------------------------------- the naive reference
def naive_series_features(image: sitk.Image, masks: dict, preset: Preset) -> SeriesFeatures:
    """Reference: one `RadiomicsFeatureExtractor.execute(preprocessed image, mask)` per region (filters recomputed
    each time); the same size rules and failure reasons as `series_features`. Legacy presets only: `execute` has
    no IBSI re-segmentation or discretisation."""
    if preset.mode == "ibsi":
        raise InputError(f"Preset '{preset.key}' uses IBSI preprocessing, which pyradiomics' `execute` does not do: "
                         "use series_features (the naive loop reproduces legacy presets only).")
    start = time.perf_counter()
    extractor = preset.extractor()
    settings = {**extractor.settings, "label": 1}
    classes = [c for c in extractor.enabledFeatures if c != "shape2D"]
    result = SeriesFeatures()
    for name, mask in masks.items():
        region = _prepare_region(image, mask, settings, classes, name)
        reasons = result.reasons[name] = dict(region.reasons)
        result.values[name] = {}
        if region.box is None:
            continue
        values = extractor.execute(image, mask, label=1)
        result.values[name] = {k: float(v) for k, v in values.items() if not k.startswith("diagnostics_")
                               and k.split("_")[-2] not in reasons}
    result.seconds = time.perf_counter() - start
    return result


def naive_extract(image: sitk.Image, masks: dict, preset: Preset) -> SeriesFeatures:
    """The naive loop from the original series: per region, preprocess (as pyradiomics would inside `execute`)
    and call `execute` — the baseline of the benchmark and of the identity tests."""
    start = time.perf_counter()
    out = SeriesFeatures()
    for name, mask in masks.items():
        pre = preprocess_image(image, preset)
        part = naive_series_features(pre, {name: preprocess_mask(mask, image, preset)}, preset)
        out.values.update(part.values)
        out.reasons.update(part.reasons)
    out.seconds = time.perf_counter() - start
    return out


def max_relative_difference(a: SeriesFeatures, b: SeriesFeatures) -> tuple[float, int]:
    """Largest |a-b| / max(|a|, |b|, 1e-12) over features present in both (NaN == NaN), and their count."""
    worst, count = 0.0, 0
    for region, values in a.values.items():
        for key, va in values.items():
            vb = b.values.get(region, {}).get(key)
            if vb is None:
                continue
            count += 1
            if math.isnan(va) and math.isnan(vb):
                continue
            if math.isnan(va) or math.isnan(vb):
                return math.inf, count
            worst = max(worst, abs(va - vb) / max(abs(va), abs(vb), 1e-12))
    return worst, count
