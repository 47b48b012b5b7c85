"""Versioned extraction presets (``HCCFusionLib/presets/*.yaml``), pyradiomics access and feature naming."""
from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .. import __version__
from ..errors import InputError, require
from ..study import Series
from .ibsi import MODES, check_preprocess

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"
DEFAULT_PRESETS = {"CT": "ct", "MR": "mr", "PT": "pet"}
IMAGE_TYPES = ("Original", "LoG", "Wavelet")
DEFAULT_IMAGE_TYPE_ARGS = {"Original": {}, "LoG": {"sigma": [1.0, 3.0, 5.0]}, "Wavelet": {}}
#: Bumped whenever this package's results change, so cached results are not reused across versions.
CACHE_VERSION = 1


def pyradiomics():
    """(radiomics, featureextractor, imageoperations, feature classes), with pyradiomics' logging kept quiet."""
    radiomics = require("radiomics", "radiomics")
    radiomics.setVerbosity(60)  # pyradiomics' own stderr handler stays quiet …
    for name in ("radiomics", "pykwalify"):  # … and their chatter stays out of the caller's log
        logging.getLogger(name).setLevel(logging.ERROR)
    from radiomics import featureextractor, getFeatureClasses, imageoperations

    return radiomics, featureextractor, imageoperations, getFeatureClasses()


def versions() -> dict:
    import pywt

    radiomics = pyradiomics()[0]
    return {"hccfusion": __version__, "pyradiomics": radiomics.__version__, "numpy": np.__version__,
            "SimpleITK": sitk.Version_VersionString(), "pywavelets": pywt.__version__, "cache": CACHE_VERSION}


@functools.lru_cache(maxsize=32)
def _extractor(params_json: str):
    """One validated `RadiomicsFeatureExtractor` per parameter set (its schema validation is the slow part);
    callers only read it."""
    return pyradiomics()[1].RadiomicsFeatureExtractor(json.loads(params_json))


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

    def __post_init__(self):
        if self.mode not in MODES:
            raise InputError(f"Radiomics preset '{self.source or self.key}': preprocess.mode '{self.mode}' is not "
                             f"one of {', '.join(MODES)}.")
        if self.mode == "ibsi":  # completed with the defaults and validated, so each preset records every choice
            object.__setattr__(self, "preprocess", check_preprocess(self.preprocess, self.source or self.key))
            if "resegmentRange" in self.setting:
                raise InputError(f"Radiomics preset '{self.source or self.key}': mode 'ibsi' re-segments in "
                                 "preprocessing: put the range under preprocess.resegment_range, not "
                                 "setting.resegmentRange.")

    @property
    def key(self) -> str:
        return f"{self.name}_v{self.version}"

    @property
    def mode(self) -> str:
        """'ibsi' (IBSI-1 preprocessing, `ibsi`) or 'legacy' (HCCFusion v1 presets: pyradiomics-style grid, masks
        resampled by nearest neighbour, pyradiomics' re-segmentation and binning)."""
        return self.preprocess.get("mode", "legacy")

    def params(self) -> dict:
        """pyradiomics parameter dictionary (no resampling/normalisation inside pyradiomics: done per series)."""
        setting = {**self.setting, "additionalInfo": False, "label": 1}
        if self.mode == "ibsi" and self.preprocess.get("aggregation") in ("2D", "2.5D"):
            setting.update(force2D=True, force2Ddimension=0)  # in-plane neighbourhoods, merged over slices
        classes = self.feature_classes
        if self.mode == "ibsi" and not classes:  # all classes but shape2D (3D shape only, also for 2.5D texture)
            classes = {c: [] for c in pyradiomics()[3] if c != "shape2D"}
        return {"setting": setting, "imageType": self.image_types, "featureClass": classes}

    def extractor(self):
        """The pyradiomics extractor of this preset (shared: do not modify it)."""
        try:
            return _extractor(json.dumps(self.params()))
        except Exception as exc:  # pykwalify SchemaError and friends
            raise InputError(f"Radiomics preset '{self.source or self.key}' is not valid for pyradiomics: "
                             f"{str(exc).strip()[:300]}") from None

    def with_image_types(self, names) -> "Preset":
        names = [_image_type(n) for n in names]
        return replace(self, image_types={n: self.image_types.get(n, DEFAULT_IMAGE_TYPE_ARGS[n]) for n in names})

    def as_dict(self) -> dict:
        return asdict(self)

    def card(self) -> dict:
        """The preprocessing and discretisation choices, as a report's model/feature card lists them."""
        from .ibsi import describe

        return {"preset": self.key, "modality": self.modality, **describe(self.preprocess, self.setting),
                "image types": ", ".join(self.image_types)}

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
    prep = dict(data.get("preprocess") or {})
    if prep.get("mode", "legacy") == "legacy":  # presets without a mode predate it and keep their (v1) meaning
        prep = {"resample_mm": None, "interpolator": "sitkBSpline", "normalize": None, **prep}
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
    classes = pyradiomics()[3]
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
