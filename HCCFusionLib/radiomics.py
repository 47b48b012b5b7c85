"""Radiomics per series × region on pyradiomics, with kinetic features, deltas and stability screening.

Pipeline of `extract_study` for every series (CT phase, MRI sequence, PET):

1. label map: the `segmentation` given (on the series grid, or resampled to it with nearest neighbour when
   `resample_masks=True`), else the series' own ``masks["labels"]``; regions from `regions.build_regions`.
2. preprocessing once per series, by the modality's versioned preset (``presets/*.yaml``): optional z-score
   normalisation (pyradiomics' `normalizeImage`) and resampling of the whole series to the preset spacing
   (B-spline; masks nearest neighbour). pyradiomics itself then runs without resampling, so each filter sees the
   whole (preprocessed) series instead of a crop padded by a few voxels.
3. features, exactly as `RadiomicsFeatureExtractor.execute(image, region_mask)` would give them (the "naive loop",
   `naive_series_features`), but computed faster (`series_features`): each filtered image (LoG, wavelet) is computed
   once per series and reused for every region; the wavelet is computed on the series cropped to the union of the
   regions plus the wavelet's support (identical values, the transform is local); shape features, which depend
   only on the mask, are computed once per distinct mask (registered phases share them); series run in parallel
   processes; results are cached by content hash (image, mask, preset, versions).

Failures never stop the run: an empty, one-voxel, flat or too small region, a mask on another grid, NaN in the
image, or a feature pyradiomics cannot define give NaN values with a `reason` in the long table.

Outputs (`Extraction.save(OUT)` → ``OUT/radiomics/``): ``features_long.csv`` (study, series, phase, modality,
region, image_type, feature_class, feature, value, reason), ``features_wide.csv`` (one row per study, columns
``<phase>__<region>__<imagetype>_<class>_<feature>`` plus kinetic columns ``<phase>__<region>__kinetic_<name>``),
``kinetics.csv``, ``definitions.csv`` and ``diagnostics.json``.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import __version__
from .errors import GeometryError, HCCFusionError, InputError, require
from .progress import scaled, silent
from .regions import (DEFAULT_MARGIN_MM, DEFAULT_REGIONS, DEFAULT_RINGS_MM, REGION_GROUPS, body_mask, build_regions,
                      size_reason)
from .study import LABELS, Modality, Series, Study, check_same_grid, same_grid

log = logging.getLogger(__name__)

PRESET_DIR = Path(__file__).parent / "presets"
DEFAULT_PRESETS = {"CT": "ct", "MR": "mr", "PT": "pet"}
IMAGE_TYPES = ("Original", "LoG", "Wavelet")
DEFAULT_IMAGE_TYPE_ARGS = {"Original": {}, "LoG": {"sigma": [1.0, 3.0, 5.0]}, "Wavelet": {}}
#: Bumped whenever this module's results change, so cached results are not reused across versions.
CACHE_VERSION = 1
LONG_COLUMNS = ["study", "series", "phase", "modality", "region", "image_type", "feature_class", "feature",
                "value", "reason"]


# ---------------------------------------------------------------- pyradiomics access
def _pyradiomics():
    radiomics = require("radiomics", "radiomics")
    radiomics.setVerbosity(60)  # pyradiomics' own stderr handler stays quiet …
    for name in ("radiomics", "pykwalify"):  # … and their chatter stays out of the caller's log
        logging.getLogger(name).setLevel(logging.ERROR)
    from radiomics import featureextractor, getFeatureClasses, imageoperations

    return radiomics, featureextractor, imageoperations, getFeatureClasses()


def versions() -> dict:
    import pywt

    radiomics = _pyradiomics()[0]
    return {"hccfusion": __version__, "pyradiomics": radiomics.__version__, "numpy": np.__version__,
            "SimpleITK": sitk.Version_VersionString(), "pywavelets": pywt.__version__, "cache": CACHE_VERSION}


# ---------------------------------------------------------------- presets
@dataclass(frozen=True)
class Preset:
    """A versioned extraction preset (see presets/*.yaml)."""

    name: str
    version: int
    modality: str
    preprocess: dict
    setting: dict
    image_types: dict
    feature_classes: dict = field(default_factory=dict)
    description: str = ""
    source: str = ""

    @property
    def key(self) -> str:
        return f"{self.name}_v{self.version}"

    def params(self) -> dict:
        """pyradiomics parameter dictionary (no resampling/normalisation inside pyradiomics: done per series)."""
        setting = {**self.setting, "additionalInfo": False, "label": 1}
        return {"setting": setting, "imageType": self.image_types, "featureClass": self.feature_classes}

    def extractor(self):
        featureextractor = _pyradiomics()[1]
        try:
            return featureextractor.RadiomicsFeatureExtractor(json.loads(json.dumps(self.params())))
        except Exception as exc:  # pykwalify SchemaError and friends
            raise InputError(f"Radiomics preset '{self.source or self.key}' is not valid for pyradiomics: "
                             f"{str(exc).strip()[:300]}") from None

    def with_image_types(self, names) -> "Preset":
        names = [_image_type(n) for n in names]
        return replace(self, image_types={n: self.image_types.get(n, DEFAULT_IMAGE_TYPE_ARGS[n]) for n in names})

    def as_dict(self) -> dict:
        return asdict(self)

    def sha256(self) -> str:
        data = {k: v for k, v in self.as_dict().items() if k not in ("source", "description")}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _image_type(name: str) -> str:
    for t in IMAGE_TYPES:
        if t.lower() == str(name).strip().lower():
            return t
    raise InputError(f"Unknown image type '{name}': use {', '.join(IMAGE_TYPES)}.")


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*_v*.yaml"))


def load_preset(spec: "str | Path | Preset") -> Preset:
    """A preset by name ("ct", "mr", "pet": newest version; or "ct_v1") or from a YAML/JSON file."""
    if isinstance(spec, Preset):
        return spec
    path = Path(spec)
    if not path.is_file():
        name = str(spec)
        candidates = sorted(PRESET_DIR.glob(f"{name}.yaml")) or sorted(
            PRESET_DIR.glob(f"{name}_v*.yaml"), key=lambda p: int(p.stem.rsplit("_v", 1)[1]))
        if not candidates:
            raise InputError(f"Radiomics preset '{spec}' is neither a file nor a known preset: "
                             f"use one of {', '.join(available_presets())} or a YAML/JSON file.")
        path = candidates[-1]
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except Exception as exc:
        raise InputError(f"Cannot parse radiomics preset '{path}' ({exc}): fix the YAML/JSON syntax.") from None
    missing = [k for k in ("name", "version", "modality", "setting", "imageType") if k not in (data or {})]
    if missing:
        raise InputError(f"Radiomics preset '{path}' lacks {missing}: see HCCFusionLib/presets/ct_v1.yaml.")
    prep = {"resample_mm": None, "interpolator": "sitkBSpline", "normalize": None, **(data.get("preprocess") or {})}
    preset = Preset(name=str(data["name"]), version=int(data["version"]), modality=str(data["modality"]),
                    preprocess=prep, setting=dict(data["setting"] or {}),
                    image_types={_image_type(k): dict(v or {}) for k, v in (data["imageType"] or {}).items()},
                    feature_classes=dict(data.get("featureClass") or {}),
                    description=str(data.get("description") or ""), source=str(path))
    for key in ("resampledPixelSpacing", "normalize", "preCrop"):
        if preset.setting.get(key):
            raise InputError(f"Radiomics preset '{path}': put '{key}' under 'preprocess' (done once per series), "
                             "not under 'setting'.")
    preset.extractor()  # validates against pyradiomics' schema
    return preset


def preset_for(series: Series, presets: dict | None = None) -> Preset:
    """The preset for a series: `presets` keyed by series name, phase code or modality, else the modality default."""
    presets = presets or {}
    for key in (series.name, series.phase.value, series.modality.value, "*"):
        if key in presets:
            return load_preset(presets[key])
    default = DEFAULT_PRESETS.get(series.modality.value)
    if default is None:
        raise InputError(f"No radiomics preset for modality {series.modality.value} (series '{series.name}'): "
                         "pass one with --preset NAME_OR_FILE.")
    return load_preset(default)


# ---------------------------------------------------------------- preprocessing
def preprocess_image(image: sitk.Image, preset: Preset) -> sitk.Image:
    """Series image as pyradiomics sees it: float32, normalised and resampled per the preset."""
    imageoperations = _pyradiomics()[2]
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


# ---------------------------------------------------------------- names
def image_type_names(image_types: dict) -> list[str]:
    """Names pyradiomics gives the enabled image types (e.g. original, log-sigma-3-0-mm-3D, wavelet-LLH)."""
    names = []
    for kind, args in image_types.items():
        if kind == "Original":
            names.append("original")
        elif kind == "LoG":
            names += ["log-sigma-%s-mm-3D" % str(s).replace(".", "-") for s in args.get("sigma", [])]
        elif kind == "Wavelet":
            levels = int(args.get("level", 1))
            combos = ["".join(c) for c in itertools.product("LH", repeat=3) if "".join(c) != "LLL"]
            for idx in range(1, levels + 1):
                prefix = "wavelet-" if idx == 1 else f"wavelet{idx}-"
                names += [prefix + c for c in combos]
            names.append(("wavelet-" if levels == 1 else f"wavelet{levels}-") + "LLL")
    return names


def feature_names(preset: Preset) -> dict[str, list[str]]:
    """Enabled feature names per class (non-deprecated, as `enableAllFeatures` picks them)."""
    classes = _pyradiomics()[3]
    enabled = preset.extractor().enabledFeatures
    out = {}
    for cls, names in enabled.items():
        if cls == "shape2D":
            continue
        out[cls] = list(names) if names else [n for n, dep in classes[cls].getFeatureNames().items() if not dep]
    return out


def expected_keys(preset: Preset) -> list[tuple[str, str, str]]:
    """(image_type, feature_class, feature) triples a full extraction of one region yields."""
    names = feature_names(preset)
    keys = [("original", "shape", f) for f in names.get("shape", [])]
    for itype in image_type_names(preset.image_types):
        keys += [(itype, cls, f) for cls, feats in names.items() if cls != "shape" for f in feats]
    return keys


def column_name(phase: str, region: str, image_type: str, feature_class: str, feature: str) -> str:
    return f"{phase}__{region}__{image_type}_{feature_class}_{feature}"


# ---------------------------------------------------------------- hashing helpers
def image_hash(image: sitk.Image) -> str:
    h = hashlib.sha256()
    arr = np.ascontiguousarray(sitk.GetArrayViewFromImage(image))
    h.update(str(arr.dtype).encode())
    h.update(arr.tobytes())
    for v in (image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection()):
        h.update(np.round(np.asarray(v, float), 6).tobytes())
    return h.hexdigest()


def _pack(image: sitk.Image) -> dict:
    """Compact picklable form of an image (masks: bounding-box crop)."""
    return {"array": sitk.GetArrayFromImage(image), "spacing": image.GetSpacing(), "origin": image.GetOrigin(),
            "direction": image.GetDirection()}


def _unpack(data: dict) -> sitk.Image:
    image = sitk.GetImageFromArray(data["array"])
    image.SetSpacing(data["spacing"])
    image.SetOrigin(data["origin"])
    image.SetDirection(data["direction"])
    return image


# ---------------------------------------------------------------- per-series features (the core)
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


def _prepare_region(image: sitk.Image, mask: sitk.Image, settings: dict, classes: list[str], name: str) -> _Region:
    imageoperations = _pyradiomics()[2]
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
        own_box = box = _check_mask(mask, settings)
        feature_mask = mask
        if settings.get("resegmentRange") is not None:
            feature_mask = imageoperations.resegmentMask(image, mask, **settings)
            box = _check_mask(feature_mask, settings)
    except ValueError as exc:
        reason = f"pyradiomics refused region '{name}': {exc}"
        return _Region({c: reason for c in classes})
    shape_mask = feature_mask if settings.get("resegmentShape") else mask
    return _Region(reasons, box, own_box, feature_mask, shape_mask)


def _check_mask(mask: sitk.Image, settings: dict) -> np.ndarray:
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


def _shape_key(shape_mask: sitk.Image, bb) -> str:
    imageoperations = _pyradiomics()[2]
    _, cropped = imageoperations.cropToTumorMask(shape_mask, shape_mask, bb)
    return image_hash(cropped)


def _compute_shape(extractor, shape_mask: sitk.Image, bb, settings: dict) -> dict:
    # shape features use only the mask and the spacing: the mask stands in for the image (same grid)
    return {k: float(v) for k, v in extractor.computeShape(shape_mask, shape_mask, bb, **settings).items()}


def _class_features(classes_impl, image, mask, image_type: str, classes, enabled: dict, kwargs: dict) -> dict:
    """`RadiomicsFeatureExtractor.computeFeatures` restricted to `classes`."""
    out = {}
    for cls in classes:
        calculator = classes_impl[cls](image, mask, **kwargs)
        for feature in enabled[cls] or []:
            calculator.enableFeatureByName(feature)
        for feature, value in calculator.execute().items():
            out[f"{image_type}_{cls}_{feature}"] = float(value)
    return out


def series_features(image: sitk.Image, masks: dict, preset: Preset, shapes: dict | None = None,
                    defer_shapes: bool = False) -> SeriesFeatures:
    """Features of every region mask of one preprocessed series, filters computed once (see module doc).

    `masks`: region name -> binary mask on `image`'s grid. `shapes`: shape features already computed, keyed by
    shape-mask hash (reused instead of recomputed). `defer_shapes`: leave out shape features another process
    computes for the same mask (only `shape_keys` are returned for them).
    """
    _, _, imageoperations, classes_impl = _pyradiomics()
    start = time.perf_counter()
    extractor = preset.extractor()
    settings = {**extractor.settings, "label": 1}
    classes = [c for c in extractor.enabledFeatures if c != "shape2D"]
    result = SeriesFeatures()
    prepared, first_of = {}, {}
    duplicates = {}
    for name, mask in masks.items():
        digest = image_hash(mask)
        if digest in first_of:  # e.g. "tumour", "index" and "lesion1" of a single-lesion patient
            duplicates[name] = first_of[digest]
            continue
        first_of[digest] = name
        region = _prepare_region(image, mask, settings, classes, name)
        result.values[name], result.reasons[name] = {}, dict(region.reasons)
        if region.box is None:
            continue
        if "shape" in classes and "shape" not in region.reasons:
            key = _shape_key(region.shape_mask, region.box)
            result.shape_keys[name] = key
            if defer_shapes and region.shape_mask is mask and np.array_equal(region.own_box, region.box):
                pass  # same mask and box as the shape task's: it computes these
            elif shapes is not None and key in shapes:
                result.values[name].update(shapes[key])
            else:
                result.values[name].update(_compute_shape(extractor, region.shape_mask, region.box, settings))
                if shapes is not None:
                    shapes[key] = {k: v for k, v in result.values[name].items() if "_shape_" in k}
        todo = [c for c in classes if c != "shape" and c not in region.reasons]
        if todo:
            prepared[name] = (region.box, region.feature_mask, todo)
    if prepared:
        _filtered_features(image, prepared, extractor, settings, result, classes_impl, imageoperations)
    for name, same in duplicates.items():
        result.values[name] = dict(result.values[same])
        result.reasons[name] = dict(result.reasons[same])
        if same in result.shape_keys:
            result.shape_keys[name] = result.shape_keys[same]
    result.seconds = time.perf_counter() - start
    return result


def _filtered_features(image, prepared, extractor, settings, result, classes_impl, imageoperations):
    for image_type, custom in extractor.enabledImagetypes.items():
        args = {**settings, **custom}
        source, offset = image, np.zeros(3, int)
        if image_type == "Wavelet":
            source, offset = _wavelet_crop(image, [p[0] for p in prepared.values()], custom)
        local = {}
        for name, (bb, feature_mask, todo) in prepared.items():
            mask = feature_mask if source is image else sitk.RegionOfInterest(
                feature_mask, source.GetSize(), [int(v) for v in offset])
            lbb = np.array(bb).copy()
            lbb[0::2] -= offset
            lbb[1::2] -= offset
            local[name] = (lbb, mask, todo)
        generator = getattr(imageoperations, f"get{image_type}Image")(source, next(iter(local.values()))[1], **args)
        for filtered, type_name, kwargs in generator:
            for name, (lbb, mask, todo) in local.items():
                cropped_image, cropped_mask = imageoperations.cropToTumorMask(filtered, mask, lbb, padDistance=0)
                result.values[name].update(_class_features(classes_impl, cropped_image, cropped_mask, type_name,
                                                           todo, extractor.enabledFeatures, kwargs))


def _wavelet_crop(image: sitk.Image, boxes, custom: dict):
    """The image cropped to the union of region boxes plus the wavelet's support (values inside are unchanged)."""
    import pywt

    wavelet = pywt.Wavelet(custom.get("wavelet", "coif1"))
    levels = int(custom.get("start_level", 0)) + int(custom.get("level", 1))
    margin = wavelet.dec_len * 2 ** levels + 2
    boxes = np.array(boxes)
    size = np.array(image.GetSize())
    lo = np.maximum(boxes[:, 0::2].min(0) - margin, 0)
    hi = np.minimum(boxes[:, 1::2].max(0) + margin + 1, size)
    if np.all(lo == 0) and np.all(hi == size):
        return image, np.zeros(3, int)
    return sitk.RegionOfInterest(image, [int(v) for v in hi - lo], [int(v) for v in lo]), lo


def naive_series_features(image: sitk.Image, masks: dict, preset: Preset) -> SeriesFeatures:
    """Reference: one `RadiomicsFeatureExtractor.execute(preprocessed image, mask)` per region (filters recomputed
    each time); the same size rules and failure reasons as `series_features`."""
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


# ---------------------------------------------------------------- worker task (one series, in a process)
def _series_task(task: dict) -> dict:
    if task.get("threads"):
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(task["threads"])
    preset = load_preset(Preset(**task["preset"]))
    image = _unpack(task["image"])
    pre = preprocess_image(image, preset)
    masks = {name: preprocess_mask(_unpack_mask(m), image, preset) for name, m in task["masks"].items()}
    shapes = dict(task.get("shapes") or {})
    found = series_features(pre, masks, preset, shapes=shapes, defer_shapes=task.get("defer_shapes", False))
    return {"series": task["series"], "values": found.values, "reasons": found.reasons,
            "shape_keys": found.shape_keys, "seconds": found.seconds, "shapes": shapes,
            "preprocessed_sha256": image_hash(pre), "grid": {"size": pre.GetSize(), "spacing": pre.GetSpacing()}}


def _shape_task(task: dict) -> dict:
    """Shape features of the regions of one label-map group (registered series share them)."""
    if task.get("threads"):
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(task["threads"])
    preset = load_preset(Preset(**task["preset"]))
    image = _blank(task["grid"])
    extractor = preset.extractor()
    settings = {**extractor.settings, "label": 1}
    shapes = {}
    for name, packed in task["masks"].items():
        mask = preprocess_mask(_unpack_mask(packed), image, preset)
        m = sitk.GetArrayViewFromImage(mask) > 0
        dims = int(sum((i.max() - i.min()) > 0 for i in np.nonzero(m))) if m.any() else 0
        if size_reason(int(m.sum()), dims, "shape", name):
            continue
        try:
            bb = _check_mask(mask, settings)
        except ValueError:
            continue
        key = _shape_key(mask, bb)
        if key not in shapes:
            shapes[key] = _compute_shape(extractor, mask, bb, settings)
    return {"shapes": shapes}


def _pack_mask(mask: sitk.Image) -> dict:
    """A binary mask as its bounding-box crop plus the full grid (cheap to send to a worker process)."""
    arr = sitk.GetArrayViewFromImage(mask) > 0
    idx = np.nonzero(arr)
    lo = [int(i.min()) for i in idx] if arr.any() else [0, 0, 0]
    hi = [int(i.max()) + 1 for i in idx] if arr.any() else [0, 0, 0]
    return {"crop": arr[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].astype(np.uint8), "lo": lo,
            "size": mask.GetSize(), "spacing": mask.GetSpacing(), "origin": mask.GetOrigin(),
            "direction": mask.GetDirection()}


def _unpack_mask(data: dict) -> sitk.Image:
    arr = np.zeros(data["size"][::-1], np.uint8)
    lo, crop = data["lo"], data["crop"]
    arr[lo[0]:lo[0] + crop.shape[0], lo[1]:lo[1] + crop.shape[1], lo[2]:lo[2] + crop.shape[2]] = crop
    return _unpack({"array": arr, "spacing": data["spacing"], "origin": data["origin"],
                    "direction": data["direction"]})


def _blank(data: dict) -> sitk.Image:
    image = sitk.Image([int(s) for s in data["size"]], sitk.sitkUInt8)
    image.SetSpacing(data["spacing"])
    image.SetOrigin(data["origin"])
    image.SetDirection(data["direction"])
    return image


# ---------------------------------------------------------------- kinetic and reviewable features
KINETIC_DEFINITIONS = [
    # name, scope, unit, definition
    ("mean", "series", "image unit", "mean intensity of the region on the original (not resampled) series"),
    ("median", "series", "image unit", "median intensity of the region"),
    ("std", "series", "image unit", "standard deviation of the region's intensities"),
    ("p10", "series", "image unit", "10th percentile of the region's intensities"),
    ("p90", "series", "image unit", "90th percentile of the region's intensities"),
    ("volume_ml", "series", "mL", "region volume on the series grid"),
    ("ratio_to_liver", "series", "ratio", "region mean / background-liver mean in the same series"),
    ("contrast_to_liver", "series", "image unit", "region mean - background-liver mean in the same series"),
    ("suv_max", "PET", "SUV", "maximum SUV in the region (PET)"),
    ("suv_mean", "PET", "SUV", "mean SUV in the region (PET)"),
    ("tlr", "PET", "ratio", "tumour-to-liver ratio: region SUVmax / background-liver SUVmean (PET)"),
    ("adc_mean", "ADC", "ADC unit", "mean apparent diffusion coefficient in the region (ADC map)"),
    ("hbp_uptake_ratio", "HBP", "ratio", "region mean / background-liver mean in the hepatobiliary phase"),
    ("relative_arterial_enhancement", "AP,NC", "ratio", "(AP mean - NC mean) / |NC mean| of the region"),
    ("arterial_enhancement_vs_liver", "AP,NC", "ratio",
     "(AP - NC) of the region / (AP - NC) of the background liver (means)"),
    ("washout_index", "AP,NC,PVP|DP", "ratio",
     "(AP mean - later-phase mean) / (AP mean - NC mean) of the region: share of arterial enhancement lost"),
    ("washout_vs_liver", "PVP|DP", "ratio",
     "(background-liver mean - region mean) / |background-liver mean| in the later phase (> 0: region darker)"),
    ("delta_mean", "phase pair", "image unit", "region mean in the first phase - mean in the second (e.g. AP-PVP)"),
    ("delta_median", "phase pair", "image unit", "region median in the first phase - median in the second"),
]
PHASE_PAIRS = (("AP", "NC"), ("AP", "PVP"), ("AP", "DP"), ("PVP", "DP"))


def definitions_table():
    """One row per exported quantity family: kinetic features, deltas and the radiomic naming scheme."""
    import pandas as pd

    rows = [{"name": n, "scope": s, "unit": u, "definition": d} for n, s, u, d in KINETIC_DEFINITIONS]
    rows += [
        {"name": "<phase>__<region>__<imagetype>_<class>_<feature>", "scope": "features_wide", "unit": "",
         "definition": "pyradiomics feature <class>_<feature> of <imagetype> (original, log-sigma-<s>-mm-3D, "
                       "wavelet-<LHH…>) in <region> of the series of <phase>"},
        {"name": "<phase>__<region>__kinetic_<name>", "scope": "features_wide", "unit": "",
         "definition": "kinetic/reviewable feature <name> (this table) of <region>; <phase> may be a pair 'AP-PVP'"},
        {"name": "<A>-<B>__<region>__<feature>", "scope": "phase_deltas", "unit": "",
         "definition": "feature in phase A minus the same feature in phase B (radiomics.phase_deltas)"},
        {"name": "delta__<column> / relchange__<column>", "scope": "timepoint_deltas", "unit": "",
         "definition": "follow-up minus previous time point of one patient / that difference over |previous|"},
    ]
    return pd.DataFrame(rows, columns=["name", "scope", "unit", "definition"])


def region_statistics(image: sitk.Image, mask: sitk.Image) -> dict:
    """Reviewable intensity statistics of one region on the original series (NaN-free voxels only)."""
    values = sitk.GetArrayViewFromImage(image)[sitk.GetArrayViewFromImage(mask) > 0].astype(np.float64)
    out = {"volume_ml": values.size * float(np.prod(image.GetSpacing())) / 1000.0}
    if values.size == 0 or not np.isfinite(values).all():
        return {**out, **{k: math.nan for k in ("mean", "median", "std", "p10", "p90", "max")}}
    return {**out, "mean": float(values.mean()), "median": float(np.median(values)), "std": float(values.std()),
            "p10": float(np.percentile(values, 10)), "p90": float(np.percentile(values, 90)),
            "max": float(values.max())}


def kinetic_features(stats: dict, phases: dict, liver_region: str = "background_liver") -> list[dict]:
    """Kinetic rows from per-series region statistics.

    `stats`: series name -> region -> `region_statistics` dict; `phases`: series name -> (phase code, modality).
    Returns rows with phase (code or "A-B"), region, feature, value, reason.
    """
    rows = []

    def add(phase, region, feature, value, reason=""):
        if isinstance(value, float) and math.isnan(value) and not reason:
            reason = "undefined: region empty, NaN in the image or zero denominator"
        rows.append({"phase": phase, "region": region, "feature": feature, "value": value, "reason": reason})

    by_phase = {}
    for series, regions in stats.items():
        phase, modality = phases[series]
        by_phase.setdefault(phase, regions)
        liver = regions.get(liver_region)
        for region, s in regions.items():
            for key in ("mean", "median", "std", "p10", "p90", "volume_ml"):
                add(phase, region, key, s[key])
            if region != liver_region:
                if liver is None:
                    reason = f"no '{liver_region}' region in this series"
                    add(phase, region, "ratio_to_liver", math.nan, reason)
                    add(phase, region, "contrast_to_liver", math.nan, reason)
                else:
                    add(phase, region, "ratio_to_liver", _div(s["mean"], liver["mean"]))
                    add(phase, region, "contrast_to_liver", s["mean"] - liver["mean"])
            if modality == "PT":
                add(phase, region, "suv_max", s["max"])
                add(phase, region, "suv_mean", s["mean"])
                add(phase, region, "tlr", _div(s["max"], liver["mean"]) if liver else math.nan,
                    "" if liver else f"no '{liver_region}' region in this series")
            if phase == "ADC":
                add(phase, region, "adc_mean", s["mean"])
            if phase == "HBP" and region != liver_region:
                add(phase, region, "hbp_uptake_ratio", _div(s["mean"], liver["mean"]) if liver else math.nan,
                    "" if liver else f"no '{liver_region}' region in this series")
    mean = {p: {r: s["mean"] for r, s in regs.items()} for p, regs in by_phase.items()}
    median = {p: {r: s["median"] for r, s in regs.items()} for p, regs in by_phase.items()}
    if "AP" in mean and "NC" in mean:
        for region in mean["AP"]:
            if region not in mean["NC"]:
                continue
            ap, nc = mean["AP"][region], mean["NC"][region]
            add("AP-NC", region, "relative_arterial_enhancement", _div(ap - nc, abs(nc)))
            if liver_region in mean["AP"] and liver_region in mean["NC"] and region != liver_region:
                add("AP-NC", region, "arterial_enhancement_vs_liver",
                    _div(ap - nc, mean["AP"][liver_region] - mean["NC"][liver_region]))
            for late in ("PVP", "DP"):
                if late in mean and region in mean[late]:
                    add(f"AP-{late}", region, "washout_index", _div(ap - mean[late][region], ap - nc))
    for late in ("PVP", "DP"):
        if late in mean and liver_region in mean[late]:
            liver_late = mean[late][liver_region]
            for region, value in mean[late].items():
                if region != liver_region:
                    add(late, region, "washout_vs_liver", _div(liver_late - value, abs(liver_late)))
    for a, b in PHASE_PAIRS:
        if a in mean and b in mean:
            for region in mean[a]:
                if region in mean[b]:
                    add(f"{a}-{b}", region, "delta_mean", mean[a][region] - mean[b][region])
                    add(f"{a}-{b}", region, "delta_median", median[a][region] - median[b][region])
    return rows


def _div(a: float, b: float) -> float:
    return a / b if b and math.isfinite(b) and math.isfinite(a) else math.nan


# ---------------------------------------------------------------- deltas
def phase_deltas(wide, pairs=(("AP", "PVP"), ("PVP", "DP"), ("AP", "DP"))):
    """Columns "<A>-<B>__<region>__<feature>" = A minus B for every feature present in both phases."""
    import pandas as pd

    out = {}
    for a, b in pairs:
        for col in wide.columns:
            phase, _, rest = col.partition("__")
            if phase == a and f"{b}__{rest}" in wide.columns:
                out[f"{a}-{b}__{rest}"] = wide[col] - wide[f"{b}__{rest}"]
    return pd.DataFrame(out, index=wide.index)


def timepoint_deltas(wide, patient, time):
    """Changes between consecutive time points of each patient.

    `wide`: features indexed by study; `patient` / `time`: mappings study -> patient id / time (sortable).
    Returns one row per follow-up study with patient, from_study, "delta__<col>" and "relchange__<col>".
    """
    import pandas as pd

    rows = []
    keys = pd.DataFrame({"_patient": [patient[s] for s in wide.index], "_time": [time[s] for s in wide.index]},
                        index=wide.index)
    frame = pd.concat([wide, keys], axis=1)
    for pid, group in frame.sort_values("_time").groupby("_patient", sort=True):
        values = group.drop(columns=["_patient", "_time"]).apply(pd.to_numeric, errors="coerce")
        for (prev_id, prev), (cur_id, cur) in zip(values.iloc[:-1].iterrows(), values.iloc[1:].iterrows()):
            diff = cur - prev
            rel = diff / prev.abs().where(prev.abs() > 0)
            row = {"study": cur_id, "patient": pid, "from_study": prev_id}
            row.update({f"delta__{k}": v for k, v in diff.items()})
            row.update({f"relchange__{k}": v for k, v in rel.items()})
            rows.append(row)
    return pd.DataFrame(rows).set_index("study") if rows else pd.DataFrame()


# ---------------------------------------------------------------- study extraction
@dataclass
class Extraction:
    """Results of one study: tidy long table, wide row, kinetics, definitions and diagnostics."""

    study_id: str
    long: "object"  # pandas DataFrame, LONG_COLUMNS
    kinetics: "object"  # pandas DataFrame
    diagnostics: dict

    @property
    def wide(self):
        """One row (index = study) with radiomic and kinetic columns, names as in the module doc."""
        import pandas as pd

        cols = {column_name(r.phase_key, r.region, r.image_type, r.feature_class, r.feature): r.value
                for r in self.long.assign(phase_key=self.long["wide_phase"]).itertuples()}
        cols.update({f"{r.phase}__{r.region}__kinetic_{r.feature}": r.value for r in self.kinetics.itertuples()})
        return pd.DataFrame([cols], index=pd.Index([self.study_id], name="study"))

    @property
    def failures(self):
        """Rows of the long table without a value, with their reason."""
        return self.long[self.long["reason"] != ""]

    def save(self, out: "str | Path") -> Path:
        """Write OUT/radiomics/{features_long,features_wide,kinetics,definitions}.csv + diagnostics.json."""
        folder = Path(out) / "radiomics"
        write_outputs(folder, self.long[LONG_COLUMNS], self.wide, self.kinetics, self.diagnostics)
        return folder


def write_outputs(folder: Path, long, wide, kinetics, diagnostics: dict, extra: dict | None = None) -> None:
    """All radiomics outputs (+ `extra` {file name: DataFrame}) into `folder`, replaced only once all are written."""
    import shutil
    import tempfile

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".part", dir=folder.parent))
    try:
        long.to_csv(tmp / "features_long.csv", index=False)
        wide.to_csv(tmp / "features_wide.csv")
        kinetics.to_csv(tmp / "kinetics.csv", index=False)
        definitions_table().to_csv(tmp / "definitions.csv", index=False)
        for name, frame in (extra or {}).items():
            frame.to_csv(tmp / name, index=frame.index.name is not None)
        (tmp / "diagnostics.json").write_text(json.dumps({**diagnostics, "complete": True}, indent=1, default=str))
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old.{time.time_ns()}")
            folder.rename(old)
        tmp.rename(folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def outputs_complete(folder: "str | Path") -> bool:
    """True when `folder` (OUT/radiomics) holds a finished extraction (used by cohort resume)."""
    folder = Path(folder)
    names = ("features_long.csv", "features_wide.csv", "kinetics.csv", "definitions.csv", "diagnostics.json")
    if not all((folder / n).is_file() for n in names):
        return False
    try:
        return bool(json.loads((folder / "diagnostics.json").read_text()).get("complete"))
    except (OSError, ValueError):
        return False


def _label_map(series: Series, segmentation: sitk.Image | None, resample_masks: bool,
               study: Study | None = None) -> tuple:
    """(label map on the series grid or None, how it was obtained or why it is missing).

    Order: the `segmentation` given; the series' own ``masks["labels"]``; the labels of another series of the study
    on the same grid (the reference first: a registered study often carries them once); with `resample_masks`, the
    segmentation or the reference labels resampled to the series (nearest neighbour). Otherwise a GeometryError-
    style reason for the series (its rows get NaN with that reason; the run goes on).
    """
    if segmentation is not None and same_grid(series.image, segmentation):
        return segmentation, "segmentation given"
    if "labels" in series.masks:
        note = " (the segmentation given is on another grid)" if segmentation is not None else ""
        return series.masks["labels"], "series' own labels" + note
    others = [s for s in (study or []) if "labels" in s.masks and s is not series]
    others.sort(key=lambda s: s.name != (study.meta.get("reference") if study else None))
    for other in others:
        if same_grid(series.image, other.masks["labels"]):
            return other.masks["labels"], f"labels of series '{other.name}' (same grid)"
    source = segmentation if segmentation is not None else (others[0].masks["labels"] if others else None)
    if source is None:
        return None, (f"no segmentation for series '{series.name}': pass --segmentation SEG or give the series "
                      'masks {"labels": …} in study.json')
    if resample_masks:
        resampled = sitk.Resample(source, series.image, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                                  source.GetPixelID())
        return resampled, "labels resampled to the series grid (nearest neighbour)"
    what = "segmentation" if segmentation is not None else f"labels of series '{others[0].name}'"
    return None, (f"GeometryError: {_grid_problem(series.image, source, f'{what} used for series {series.name!r}')}"
                  " Better: register the study first (hccfusion register …, then extract OUT/registration), "
                  "or pass --resample-masks.")


def _grid_problem(image: sitk.Image, mask: sitk.Image, what: str) -> str:
    try:
        check_same_grid(image, mask, what)
    except GeometryError as exc:
        return str(exc)
    return ""


def _wide_phase(study: Study) -> dict:
    """Column prefix per series: its phase code, or the series name when two series share a phase."""
    counts = {}
    for s in study:
        counts[s.phase.value] = counts.get(s.phase.value, 0) + 1
    return {s.name: s.phase.value if counts[s.phase.value] == 1 else s.name for s in study}


def extract_study(study: Study, segmentation: sitk.Image | None = None, *, regions=DEFAULT_REGIONS,
                  rings_mm=DEFAULT_RINGS_MM, margin_mm: float = DEFAULT_MARGIN_MM, clip: str = "liver",
                  presets: dict | None = None, image_types=None, workers: int = 2, cache_dir=None,
                  resample_masks: bool = False, label_values: dict | None = None, progress=None) -> Extraction:
    """Radiomics, kinetics and diagnostics of every series × region of a study (see the module doc).

    `presets`: {series name | phase code | modality code | "*": preset name/file/Preset}; default per modality.
    `image_types`: subset of ("Original", "LoG", "Wavelet") overriding the presets'. `workers`: processes
    (1 = in this process). `cache_dir`: folder of cached per-(series, region) results.
    """
    import pandas as pd

    progress = progress or silent
    started = time.perf_counter()
    wide_phase = _wide_phase(study)
    diag = {"study": study.study_id, "versions": versions(), "presets": {}, "series": {},
            "regions": {"groups": list(regions), "rings_mm": [list(r) for r in rings_mm], "margin_mm": margin_mm,
                        "clip": clip}}
    tasks, shape_groups, kinetic_stats, series_info = {}, {}, {}, {}
    long_rows, cache_hits = [], {}
    region_cache = {}
    for i, series in enumerate(study):
        progress(0.05 * i / max(len(study), 1), f"regions of {series.name}")
        preset = preset_for(series, presets)
        if image_types:
            preset = preset.with_image_types(image_types)
        diag["presets"][preset.key] = {**preset.as_dict(), "sha256": preset.sha256()}
        expected = expected_keys(preset)
        info = {"phase": series.phase.value, "modality": series.modality.value, "preset": preset.key,
                "image_sha256": image_hash(series.image), "regions": {}}
        series_info[series.name] = (preset, expected)
        diag["series"][series.name] = info
        labels, how = _label_map(series, segmentation, resample_masks, study)
        info["labels"] = how
        if labels is None:
            long_rows += _failed_rows(study.study_id, series, wide_phase, "all", expected, how)
            continue
        body = None
        has_liver = bool((sitk.GetArrayViewFromImage(labels) == {**LABELS, **(label_values or {})}["liver"]).any())
        if series.modality is Modality.CT and (clip == "body" or (clip == "liver" and not has_liver)):
            body = body_mask(series.image)
        key = (image_hash(labels), clip, image_hash(body) if body is not None else None)
        if key not in region_cache:
            region_cache[key] = build_regions(labels, names=regions, rings_mm=rings_mm, margin_mm=margin_mm,
                                              clip=clip, body=body, label_values=label_values)
        found = region_cache[key]
        arr = sitk.GetArrayViewFromImage(series.image)
        nan_voxels = int((~np.isfinite(arr)).sum()) if np.issubdtype(arr.dtype, np.floating) else 0
        kinetic_stats[series.name] = {n: region_statistics(series.image, r.mask) for n, r in found.items()}
        masks = {}
        for name, region in found.items():
            info["regions"][name] = {**region.describe(), "mask_sha256": image_hash(region.mask)}
            if nan_voxels:
                reason = (f"image of series '{series.name}' has {nan_voxels} NaN/inf voxels, which every filter and "
                          "the resampling would spread: replace them (e.g. by the background value) and re-run")
                long_rows += _failed_rows(study.study_id, series, wide_phase, name, expected, reason)
                continue
            masks[name] = region
        if not masks:
            continue
        cache_keys = {n: _cache_key(info["image_sha256"], info["regions"][n]["mask_sha256"], preset)
                      for n in masks}
        todo = {}
        for name in masks:
            cached = _cache_get(cache_dir, cache_keys[name])
            if cached is not None:
                cache_hits[(series.name, name)] = cached
                info["regions"][name]["cache"] = "hit"
            else:
                todo[name] = masks[name]
                info["regions"][name]["cache"] = "miss"
        if not todo:
            continue
        grid = {"size": series.image.GetSize(), "spacing": series.image.GetSpacing(),
                "origin": series.image.GetOrigin(), "direction": series.image.GetDirection()}
        packed = {n: _pack_mask(r.mask) for n, r in todo.items()}
        threads = 1 if workers > 1 else None
        tasks[series.name] = {"series": series.name, "preset": preset.as_dict(), "threads": threads,
                              "image": _pack(series.image), "masks": packed, "cache_keys": cache_keys}
        group = (key, json.dumps(grid, default=str), preset.key, json.dumps(preset.preprocess, sort_keys=True))
        shape_groups.setdefault(group, {"preset": preset.as_dict(), "threads": threads, "grid": grid,
                                        "masks": {}})["masks"].update(packed)

    results = _run_tasks(tasks, shape_groups, workers, scaled(progress, 0.05, 0.95))
    for (series_name, region), cached in cache_hits.items():
        results.setdefault(series_name, {"values": {}, "reasons": {}}).setdefault("cached", {})[region] = cached
    for series in study:
        if series.name not in results:
            continue
        preset, expected = series_info[series.name]
        res = results[series.name]
        for region in list(res["values"]) + list(res.get("cached", {})):
            if region in res.get("cached", {}):
                values, reasons = res["cached"][region]["values"], res["cached"][region]["reasons"]
            else:
                values, reasons = res["values"][region], res["reasons"][region]
                _cache_put(cache_dir, tasks[series.name]["cache_keys"][region],
                           {"values": values, "reasons": reasons})
            long_rows += _rows(study.study_id, series, wide_phase, region, expected, values, reasons)
        if "seconds" in res:
            diag["series"][series.name]["seconds"] = round(res["seconds"], 3)
            diag["series"][series.name]["preprocessed_sha256"] = res.get("preprocessed_sha256")
            diag["series"][series.name]["preprocessed_grid"] = res.get("grid")
    long = pd.DataFrame(long_rows, columns=LONG_COLUMNS + ["wide_phase"])
    order = {f"{s}\0{r}": i for i, (s, r) in enumerate(
        (s, r) for s, info in diag["series"].items() for r in list(info["regions"]) + ["all"])}
    rank = (long["series"] + "\0" + long["region"]).map(order).fillna(-1).to_numpy()
    long = long.iloc[np.argsort(rank, kind="stable")].reset_index(drop=True)
    phases = {s.name: (wide_phase[s.name], s.modality.value) for s in study if s.name in kinetic_stats}
    kin = pd.DataFrame(kinetic_features(kinetic_stats, phases), columns=["phase", "region", "feature", "value",
                                                                        "reason"])
    kin.insert(0, "study", study.study_id)
    diag["seconds"] = round(time.perf_counter() - started, 3)
    diag["failures"] = int((long["reason"] != "").sum())
    progress(1.0, "radiomics done")
    return Extraction(study.study_id, long, kin, diag)


def _cache_key(image_sha: str, mask_sha: str, preset: Preset) -> str:
    text = json.dumps([image_sha, mask_sha, preset.sha256(), versions()], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _cache_get(cache_dir, key: str):
    if not cache_dir:
        return None
    path = Path(cache_dir) / key[:2] / f"{key}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _cache_put(cache_dir, key: str, payload: dict) -> None:
    if not cache_dir:
        return
    from .io import atomic_write

    path = Path(cache_dir) / key[:2] / f"{key}.json"
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(payload, allow_nan=True))


def _run_tasks(tasks: dict, shape_groups: dict, workers: int, progress) -> dict:
    """Shape tasks (one per group of series sharing masks and grid) and series tasks, in `workers` processes."""
    if not tasks:
        return {}
    shape_list = list(shape_groups.values())
    total = len(tasks) + len(shape_list)
    results, shapes = {}, {}
    if workers <= 1:
        for task in shape_list:
            shapes.update(_shape_task(task)["shapes"])
        for done, (name, task) in enumerate(tasks.items()):
            progress(done / len(tasks), f"features of {name}")
            results[name] = _series_task({**task, "shapes": shapes})
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=min(workers, total),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_shape_task, t): ("shape", None) for t in shape_list}
            futures.update({pool.submit(_series_task, {**t, "defer_shapes": True}): ("series", n)
                            for n, t in tasks.items()})
            for done, future in enumerate(as_completed(futures), start=1):
                kind, name = futures[future]
                out = future.result()
                if kind == "shape":
                    shapes.update(out["shapes"])
                else:
                    results[name] = out
                progress(done / total, f"features of {name}" if name else "shape features")
    for res in results.values():  # shapes a series skipped because another process computed them
        for region, key in res["shape_keys"].items():
            if not any("_shape_" in k for k in res["values"][region]):
                res["values"][region].update(shapes.get(key) or res["shapes"].get(key) or {})
    return results


def _rows(study_id, series, wide_phase, region, expected, values, reasons) -> list[dict]:
    rows = []
    for image_type, cls, feature in expected:
        key = f"{image_type}_{cls}_{feature}"
        value = values.get(key)
        reason = reasons.get(cls, "")
        if value is None:
            value = math.nan
            reason = reason or f"not produced by pyradiomics for {image_type} (e.g. filter skipped: image too small)"
        elif math.isnan(value) and not reason:
            reason = "undefined for this region (pyradiomics returned NaN, e.g. zero variance or a single grey level)"
        rows.append({"study": study_id, "series": series.name, "phase": series.phase.value,
                     "modality": series.modality.value, "region": region, "image_type": image_type,
                     "feature_class": cls, "feature": feature, "value": value, "reason": reason,
                     "wide_phase": wide_phase[series.name]})
    return rows


def _failed_rows(study_id, series, wide_phase, region, expected, reason) -> list[dict]:
    return _rows(study_id, series, wide_phase, region, expected, {},
                 {cls: reason for cls in {c for _, c, _ in expected}})


# ---------------------------------------------------------------- stability screening
PERTURBATIONS = ("erode", "dilate", "noise", "rotate", "translate")


def icc_3_1(ratings: np.ndarray) -> float:
    """ICC(3,1) (two-way mixed, consistency, single rater; Shrout & Fleiss 1979) of an n_subjects × k matrix."""
    y = np.asarray(ratings, dtype=np.float64)
    n, k = y.shape
    if n < 2 or k < 2:
        raise InputError(f"ICC needs >= 2 subjects and >= 2 conditions (got {n} × {k}).")
    grand = y.mean()
    ms_rows = k * ((y.mean(1) - grand) ** 2).sum() / (n - 1)
    resid = y - y.mean(1, keepdims=True) - y.mean(0, keepdims=True) + grand
    ms_err = (resid ** 2).sum() / ((n - 1) * (k - 1))
    denom = ms_rows + (k - 1) * ms_err
    return float((ms_rows - ms_err) / denom) if denom > 0 else math.nan


def perturb(image: sitk.Image, mask: sitk.Image, kind: str, rng: np.random.Generator, noise_sd: float,
            rotate_deg: float = 3.0, translate_mm: float = 1.5) -> tuple[sitk.Image, sitk.Image]:
    """One seeded perturbation of (image, mask): mask erosion/dilation by one voxel, additive Gaussian noise,
    or a small rotation/translation of the image about the region centroid (the mask stays)."""
    mask = sitk.Cast(mask > 0, sitk.sitkUInt8)
    if kind == "erode":
        return image, sitk.BinaryErode(mask, [1, 1, 1], sitk.sitkBall)
    if kind == "dilate":
        return image, sitk.BinaryDilate(mask, [1, 1, 1], sitk.sitkBall)
    if kind == "noise":
        arr = sitk.GetArrayFromImage(image).astype(np.float32)
        noisy = sitk.GetImageFromArray(arr + rng.normal(0.0, noise_sd, arr.shape).astype(np.float32))
        noisy.CopyInformation(image)
        return noisy, mask
    if kind in ("rotate", "translate"):
        stats = sitk.LabelShapeStatisticsImageFilter()
        stats.Execute(mask)
        transform = sitk.Euler3DTransform()
        transform.SetCenter(stats.GetCentroid(1))
        if kind == "rotate":
            transform.SetRotation(*np.deg2rad(rng.uniform(-rotate_deg, rotate_deg, 3)))
        else:
            transform.SetTranslation(rng.uniform(-translate_mm, translate_mm, 3).tolist())
        moved = sitk.Resample(image, image, transform, sitk.sitkBSpline, float(np.min(sitk.GetArrayViewFromImage(
            image))), sitk.sitkFloat32)
        return moved, mask
    raise InputError(f"Unknown perturbation '{kind}': use {', '.join(PERTURBATIONS)}.")


def stability_screen(subjects: list, preset: "Preset | str", *, perturbations=PERTURBATIONS, repeats: int = 1,
                     seed: int = 0, threshold: float = 0.75, noise_sd: float | None = None, image_types=("Original",),
                     progress=None):
    """ICC(3,1) of every feature over perturbed re-extractions; features with ICC >= `threshold` are kept.

    `subjects`: list of (subject id, image, mask) — e.g. the tumour of every study, or several lesions. Each is
    extracted unperturbed and under each perturbation × `repeats` (seeded), giving an n_subjects × k table per
    feature. `noise_sd` default: 10% of the intensity SD inside each mask. Returns a DataFrame (feature, icc,
    n_subjects, k, keep) sorted by ICC.
    """
    import pandas as pd

    progress = progress or silent
    if len(subjects) < 2:
        raise InputError("Stability screening needs at least 2 subjects (regions/lesions/studies) for an ICC.")
    preset = load_preset(preset)
    if image_types:
        preset = preset.with_image_types(image_types)
    conditions = [("none", 0)] + [(kind, r) for kind in perturbations for r in range(repeats)]
    table = {}
    for i, (subject, image, mask) in enumerate(subjects):
        rng = np.random.default_rng([seed, i])
        inside = sitk.GetArrayViewFromImage(image)[sitk.GetArrayViewFromImage(mask) > 0]
        sd = noise_sd if noise_sd is not None else 0.1 * float(np.std(inside)) if inside.size else 0.0
        for j, (kind, rep) in enumerate(conditions):
            progress((i * len(conditions) + j) / (len(subjects) * len(conditions)), f"{subject}: {kind}")
            img, msk = (image, mask) if kind == "none" else perturb(image, mask, kind, rng, sd)
            pre = preprocess_image(img, preset)
            found = series_features(pre, {"r": preprocess_mask(msk, img, preset)}, preset)
            for key, value in found.values["r"].items():
                table.setdefault(key, {})[(subject, f"{kind}{rep}")] = value
    rows = []
    names = [s for s, _, _ in subjects]
    cols = [f"{k}{r}" for k, r in conditions]
    for key, values in table.items():
        matrix = np.array([[values.get((s, c), math.nan) for c in cols] for s in names], dtype=float)
        ok = np.isfinite(matrix).all(1)
        icc = icc_3_1(matrix[ok]) if ok.sum() >= 2 else math.nan
        rows.append({"feature": key, "icc": icc, "n_subjects": int(ok.sum()), "k": len(cols),
                     "keep": bool(np.isfinite(icc) and icc >= threshold)})
    progress(1.0, "stability done")
    return pd.DataFrame(rows).sort_values("icc", ascending=False, na_position="last").reset_index(drop=True)


def stability_subjects(studies: list, series_key: str, region_names=("lesions",), segmentation=None,
                       **region_options) -> list:
    """(subject id, image, mask) for `stability_screen`: each region of `region_names` (groups or names) of the
    series `series_key` (name or phase) of every study; empty regions are left out."""
    subjects = []
    for study in studies:
        series = study[series_key]
        labels, how = _label_map(series, segmentation, region_options.pop("resample_masks", False), study)
        if labels is None:
            raise GeometryError(how)
        found = build_regions(labels, names=[n for n in region_names if n in REGION_GROUPS] or DEFAULT_REGIONS,
                              **region_options)
        for name, region in found.items():
            wanted = name in region_names or region.kind in region_names or (
                "lesions" in region_names and region.kind == "lesion") or ("rings" in region_names and
                                                                            region.kind == "ring")
            if wanted and region.voxels:
                subjects.append((f"{study.study_id}/{series.name}/{name}", series.image, region.mask))
    return subjects


# ---------------------------------------------------------------- cohorts
def cohort_extract(table: "str | Path", out: "str | Path", *, progress=None, **options) -> "object":
    """Extract every study of a cohort CSV (study_id, path[, segmentation][, patient_id, timepoint]).

    Each study goes to OUT/studies/<study_id>/radiomics/ (skipped when already complete: resume); a failing
    study is recorded in the status table and the others go on. Combined tables go to OUT/radiomics/
    (features_long/wide, kinetics, definitions, diagnostics.json, cohort_status.csv, and timepoint_deltas.csv
    when patient_id and timepoint are given). Returns the status DataFrame.
    """
    import pandas as pd

    from .io import load_study, read_image

    progress = progress or silent
    table, out = Path(table), Path(out)
    try:
        cohort = pd.read_csv(table, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"Cannot read cohort table '{table}' ({exc}): give a CSV with study_id,path columns.")
    missing = [c for c in ("study_id", "path") if c not in cohort.columns]
    if missing or cohort.empty:
        raise InputError(f"Cohort table '{table}' needs rows and the columns study_id, path (missing: {missing}); "
                         "optional: segmentation, patient_id, timepoint.")
    if cohort["study_id"].duplicated().any():
        dup = cohort["study_id"][cohort["study_id"].duplicated()].tolist()
        raise InputError(f"Cohort table '{table}': study_id values must be unique (repeated: {dup[:5]}).")
    status = []
    for i, row in enumerate(cohort.itertuples(index=False)):
        study_id = str(row.study_id)
        folder = out / "studies" / _safe(study_id)
        step = scaled(progress, i / len(cohort), (i + 1) / len(cohort))
        if outputs_complete(folder / "radiomics"):
            status.append({"study_id": study_id, "status": "skipped (already complete)", "seconds": 0.0,
                           "message": ""})
            step(1.0, f"{study_id}: already done")
            continue
        started = time.perf_counter()
        try:
            path = Path(row.path) if Path(row.path).is_absolute() else table.parent / row.path
            study = load_study(path, study_id=study_id)
            seg_file = getattr(row, "segmentation", "") or ""
            segmentation = read_image(seg_file if Path(seg_file).is_absolute() else table.parent / seg_file) \
                if seg_file else None
            result = extract_study(study, segmentation, progress=step, **options)
            result.save(folder)
            status.append({"study_id": study_id, "status": "done", "seconds": round(time.perf_counter() - started, 2),
                           "message": f"{result.diagnostics['failures']} feature values with a reason"})
        except HCCFusionError as exc:
            log.error("Cohort study %s failed: %s", study_id, exc)
            status.append({"study_id": study_id, "status": "failed", "seconds": round(time.perf_counter() - started,
                                                                                        2), "message": str(exc)})
        except Exception as exc:  # one broken study must not stop the cohort; the message is kept for review
            log.exception("Cohort study %s failed unexpectedly", study_id)
            status.append({"study_id": study_id, "status": "failed", "seconds": round(time.perf_counter() - started,
                                                                                        2),
                           "message": f"{type(exc).__name__}: {exc}"})
    status = pd.DataFrame(status, columns=["study_id", "status", "seconds", "message"])
    _combine(cohort, status, out)
    progress(1.0, "cohort done")
    return status


def _safe(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text) or "study"


def _combine(cohort, status, out: Path) -> None:
    import pandas as pd

    longs, wides, kins = [], [], []
    for study_id in cohort["study_id"]:
        folder = out / "studies" / _safe(study_id) / "radiomics"
        if outputs_complete(folder):
            longs.append(pd.read_csv(folder / "features_long.csv", dtype={"reason": object}).fillna({"reason": ""}))
            wides.append(pd.read_csv(folder / "features_wide.csv", index_col=0))
            kins.append(pd.read_csv(folder / "kinetics.csv", dtype={"reason": object}).fillna({"reason": ""}))
    long = pd.concat(longs, ignore_index=True) if longs else pd.DataFrame(columns=LONG_COLUMNS)
    wide = pd.concat(wides) if wides else pd.DataFrame(index=pd.Index([], name="study"))
    wide.index = wide.index.astype(str)
    wide.index.name = "study"
    kin = pd.concat(kins, ignore_index=True) if kins else pd.DataFrame()
    status_frame = status.set_index("study_id")
    extra = {"cohort_status.csv": status_frame}
    if {"patient_id", "timepoint"} <= set(cohort.columns) and len(wide):
        keys = cohort.set_index("study_id")
        times = pd.to_numeric(keys["timepoint"], errors="coerce")
        deltas = timepoint_deltas(wide, keys["patient_id"].to_dict(), times.to_dict())
        if len(deltas):
            extra["timepoint_deltas.csv"] = deltas
    diag = {"cohort": str(out), "studies": len(cohort), "done": int(status["status"].isin(["done"]).sum()),
            "skipped": int(status["status"].str.startswith("skipped").sum()),
            "failed": int((status["status"] == "failed").sum()), "versions": versions()}
    write_outputs(out / "radiomics", long, wide, kin, diag, extra)
