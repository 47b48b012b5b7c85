"""Optional torch backend of the radiomics features (``extract_study(..., backend="torch")``, CLI
``--radiomics-backend torch``): filters (`torch_filters`: LoG, wavelet), grey-level discretisation, first-order and
texture features (`torch_texture`: GLCM, GLRLM, GLSZM, GLDM, NGTDM) on a torch device: CPU, or CUDA when present.
torch (the "seg" extra) is imported only when this backend runs.

What stays as in the pyradiomics path: preprocessing (resampling, IBSI re-segmentation), the region checks and
failure reasons (`features.prepare_regions`), and shape features (pyradiomics; they depend on the mask only and are
computed once per distinct mask). Keys and names are pyradiomics'.

Agreement with pyradiomics (checked in Testing/test_radiomics_torch.py on the project's regions and on the IBSI
digital phantom): Original and LoG features within 1e-5 relative (`TOLERANCE` = 1e-4 stated). Wavelet sub-bands
equal PyWavelets' up to its float32 rounding (ours are float64, rounded to float32 at the end): a region voxel whose
band value sits within that rounding of a bin edge (high-pass values near 0 with a bin width of 25) can change
bin, and that band's texture features then differ beyond 1e-4 (bench_radiomics_torch.py counts these
`wavelet_bin_flips`; 1 flip gave 2e-2 on one GLCM feature); means and medians near 0 are compared absolutely
(`compare_features`). Not reproduced: 2D and 2.5D aggregation (``force2D``, IBSI "2D"/"2.5D"), GLCM distances
other than 1, angle weighting (``weightingNorm``), asymmetric GLCM, and voxel-based extraction: such presets raise
an InputError.
"""
from __future__ import annotations

import functools
import logging
import math
import time

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .features import CROP_TOLERANCE, SeriesFeatures, _lower_bound, copy_duplicates, prepare_regions
from .parallel import TaskRunner, series_task
from .presets import Preset, pyradiomics

log = logging.getLogger(__name__)

BACKENDS = ("pyradiomics", "torch")
#: Largest relative difference from pyradiomics the torch backend is checked against: the crop mode's
TOLERANCE = CROP_TOLERANCE
TEXTURE = ("glcm", "glrlm", "glszm", "gldm", "ngtdm")
#: First-order features compared absolutely (not relatively) where a wavelet band's value is near 0
NEAR_ZERO_CHECKED = ("Mean", "Median", "Minimum", "Maximum", "10Percentile", "90Percentile")


def torch_device(device=None):
    """The torch device: `device` ("cpu", "cuda", "cuda:1", …), or CUDA when available, else the CPU."""
    try:
        import torch
    except ImportError as exc:
        raise InputError("The torch radiomics backend needs PyTorch: install it (pip install torch) or use "
                         "--radiomics-backend pyradiomics.") from exc
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"Radiomics device '{device}' is not a torch device: give cpu, cuda or cuda:N.") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"Radiomics device '{device}' asked for, but torch sees no CUDA GPU: use device 'cpu' "
                         "(or leave it out to pick the GPU when present).")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        raise InputError(f"Radiomics device '{device}': torch sees only {torch.cuda.device_count()} CUDA GPU(s); "
                         "give cuda:0 to cuda:N-1, or cpu.")
    return dev


def check_preset(preset: Preset) -> None:
    """InputError when `preset` asks for something the torch backend does not reproduce (see the module doc)."""
    settings = preset.extractor().settings
    problems = []
    if preset.mode == "ibsi" and preset.preprocess.get("aggregation", "3D") != "3D":
        problems.append(f"aggregation {preset.preprocess['aggregation']}")
    if settings.get("force2D"):
        problems.append("force2D")
    if list(settings.get("distances", [1])) != [1]:
        problems.append(f"distances {settings['distances']}")
    if settings.get("weightingNorm"):
        problems.append(f"weightingNorm {settings['weightingNorm']}")
    if not settings.get("symmetricalGLCM", True):
        problems.append("asymmetric GLCM")
    if settings.get("voxelBased"):
        problems.append("voxel-based extraction")
    if problems:
        raise InputError(f"Radiomics preset '{preset.key}' uses {', '.join(problems)}, which the torch backend does "
                         "not reproduce: use backend 'pyradiomics' for it.")


def filtered_images(image, spacing_xyz, image_types: dict, box=None) -> list[tuple[str, object, dict, tuple]]:
    """[(pyradiomics image type name, tensor (z, y, x) rounded to float32 as pyradiomics' images are, the type's
    arguments, offset (z, y, x) of the tensor in `image`)] for the preset's image types. `box` ((z, y, x) start,
    stop) of the regions: the wavelet, a local transform, runs on it plus its support (values inside unchanged)."""
    import torch

    from . import torch_filters

    out = []
    size_xyz = tuple(image.shape[::-1])
    zero = (0, 0, 0)
    for image_type, custom in image_types.items():
        if image_type == "Original":
            out.append(("original", image, custom, zero))
        elif image_type == "LoG":
            for sigma in custom.get("sigma", []):
                if torch_filters.log_applies(size_xyz, spacing_xyz, float(sigma)):
                    filtered = torch_filters.log(image, spacing_xyz, float(sigma))
                    out.append((torch_filters.log_name(sigma), filtered.to(torch.float32), custom, zero))
        elif image_type == "Wavelet":
            name, level, start = custom.get("wavelet", "coif1"), int(custom.get("level", 1)), int(
                custom.get("start_level", 0))
            lo, hi = _wavelet_crop(image.shape, box, name, start + level)
            part = image[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            bands = torch_filters.wavelet(part, name, level, start)
            out += [(n, band.to(torch.float32), custom, lo) for n, band in bands.items()]
        else:
            raise InputError(f"Image type '{image_type}' is not available in the torch radiomics backend (Original, "
                             "LoG, Wavelet): use backend 'pyradiomics'.")
    return out


def _wavelet_crop(shape, box, name: str, levels: int) -> tuple[tuple, tuple]:
    """(start, stop) (z, y, x) of the wavelet's crop: `box` plus the filter's support (as `features._variants`),
    or the whole image when the crop would touch its border (the periodic extension wraps there)."""
    import pywt

    whole = ((0, 0, 0), tuple(shape))
    if box is None:
        return whole
    margin = pywt.Wavelet(name).dec_len * 2 ** levels + 2
    lo = tuple(b - margin for b in box[0])
    hi = tuple(b + margin for b in box[1])
    if min(lo) < 0 or any(h > n for h, n in zip(hi, shape)):
        return whole
    return lo, hi


def region_features(values_image, mask, classes, enabled: dict, settings: dict, spacing_xyz,
                    lower_bound=False) -> dict:
    """{class: {feature: float}} of one (image type, region): `values_image` and `mask` are the region's crop
    (tensors (z, y, x)); `lower_bound`: False = pyradiomics' binning, else IBSI's (`ibsi.discretise`)."""
    import torch

    from . import torch_texture

    roi = values_image[mask]
    width, count = settings.get("binWidth", 25), settings.get("binCount")
    if lower_bound is False:
        roi_levels = torch_texture.pyradiomics_levels(roi, width, count)
    else:
        roi_levels = torch_texture.ibsi_levels(roi, width, count, lower_bound)
    levels = torch.zeros(mask.shape, dtype=torch.long, device=mask.device)
    levels[mask] = roi_levels
    gray = torch.unique(roi_levels)
    ng = int(gray[-1])
    out = {}
    for cls in classes:
        if cls == "firstorder":
            found = torch_texture.firstorder(roi.double(), roi_levels, spacing_xyz,
                                             float(settings.get("voxelArrayShift", 0)))
        elif cls == "ngtdm":
            found = torch_texture.ngtdm(levels, mask, ng)
        elif cls == "gldm":
            found = torch_texture.gldm(levels, mask, gray, ng, float(settings.get("gldm_a", 0)))
        else:
            found = getattr(torch_texture, cls)(levels, mask, gray, ng)
        missing = [name for name in enabled[cls] if name not in found]
        if missing:
            raise InputError(f"{cls} features {missing} (deprecated in pyradiomics) are not in the torch backend: "
                             "leave them out of the preset or use backend 'pyradiomics'.")
        out[cls] = {name: found[name] for name in enabled[cls]}
    flat = [(cls, name, v) for cls, feats in out.items() for name, v in feats.items()]
    numbers = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=mask.device).reshape(())
                           for _, _, v in flat]).cpu().tolist() if flat else []
    result = {}
    for (cls, name, _), number in zip(flat, numbers):
        result.setdefault(cls, {})[name] = float(number)
    return result


def _enabled(extractor, classes) -> dict:
    impl = pyradiomics()[3]
    return {cls: list(extractor.enabledFeatures[cls] or
                      [n for n, deprecated in impl[cls].getFeatureNames().items() if not deprecated])
            for cls in classes}


def series_features_torch(image: sitk.Image, masks: dict, preset: Preset, shapes: dict | None = None,
                          defer_shapes: bool = False, device=None) -> SeriesFeatures:
    """`features.series_features` on the torch backend: same arguments, keys and failure reasons; filters, binning,
    first-order and texture features on `device` (`torch_device`; on the CPU with one torch thread: run series in
    parallel processes instead)."""
    import torch

    check_preset(preset)
    dev = torch_device(device)
    threads = torch.get_num_threads()
    if dev.type == "cpu":  # small tensors: intra-op threads only add their synchronisation (50x on a busy machine)
        torch.set_num_threads(1)
    try:
        return _series_features(image, masks, preset, shapes, defer_shapes, dev)
    finally:
        torch.set_num_threads(threads)


def _series_features(image, masks, preset, shapes, defer_shapes, dev) -> SeriesFeatures:
    import torch

    start = time.perf_counter()
    extractor = preset.extractor()
    settings = {**extractor.settings, "label": 1}
    classes = [c for c in extractor.enabledFeatures if c != "shape2D"]
    unknown = [c for c in classes if c not in ("shape", "firstorder") + TEXTURE]
    if unknown:
        raise InputError(f"Feature classes {unknown} are not available in the torch radiomics backend.")
    enabled = _enabled(extractor, [c for c in classes if c != "shape"])
    prep = preset.preprocess if preset.mode == "ibsi" else None
    result = SeriesFeatures()
    regions, duplicates = prepare_regions(image, masks, extractor, settings, classes, prep, result, shapes,
                                          defer_shapes)
    prepared = {}
    for name, (bb, feature_mask, todo) in regions.items():
        crop = (slice(bb[4], bb[5] + 1), slice(bb[2], bb[3] + 1), slice(bb[0], bb[1] + 1))
        roi = torch.from_numpy(sitk.GetArrayFromImage(feature_mask)[crop] > 0).to(dev)
        prepared[name] = (crop, roi, todo)
    if prepared:
        spacing = image.GetSpacing()
        arr = torch.from_numpy(sitk.GetArrayFromImage(image).astype(np.float32)).to(dev)
        crops = [c for c, _, _ in prepared.values()]
        box = (tuple(min(c[i].start for c in crops) for i in range(3)),
               tuple(max(c[i].stop for c in crops) for i in range(3)))
        for type_name, filtered, custom, offset in filtered_images(arr, spacing, extractor.enabledImagetypes, box):
            args = {**settings, **custom}
            for name, (crop, roi, todo) in prepared.items():
                local = tuple(slice(c.start - o, c.stop - o) for c, o in zip(crop, offset))
                found = region_features(filtered[local], roi, todo, enabled, args, spacing,
                                        _lower_bound(prep, type_name))
                result.values[name].update({f"{type_name}_{cls}_{feature}": value for cls, feats in found.items()
                                            for feature, value in feats.items()})
    copy_duplicates(result, duplicates)
    result.seconds = time.perf_counter() - start
    log.debug("torch radiomics on %s: %d regions in %.2f s", dev, len(masks), result.seconds)
    return result


def series_task_torch(task: dict) -> dict:
    """`parallel.series_task` on the torch backend (task["device"]: the torch device)."""
    return series_task(task, features=functools.partial(series_features_torch, device=task["device"]))


class TorchRunner(TaskRunner):
    """`parallel.TaskRunner` for the torch backend (its series tasks carry the device). On a GPU every task runs in
    this process (one process owns the device): shape features first (pyradiomics, once per mask), then each
    series. On the CPU, `workers` processes as the pyradiomics path (one torch thread each)."""

    def __init__(self, workers: int, progress, device=None):
        self.device = str(torch_device(device))
        super().__init__(workers if self.device == "cpu" else 1, progress)
        if self.device != "cpu":  # the device's one process runs every task, even inside a Dask cohort task
            self.executor, self.parallel = None, False
        self.series_task = series_task_torch

    def add_series(self, name: str, task: dict) -> None:
        super().add_series(name, {**task, "device": self.device})


def compare_features(reference: SeriesFeatures, got: SeriesFeatures) -> tuple[float, int, list]:
    """(largest relative difference of `got` from `reference` (e.g. pyradiomics), features compared, [wavelet
    location features near 0 left out of the relative check]). Those are listed, not hidden: pyradiomics' sub-bands
    are float32 (PyWavelets), ours float64, so a high-pass band's mean or median near 0 differs by the float32
    rounding of the transform; they must agree within 1e-6 × the ROI's intensity scale (the band's range, or the
    Original image's largest |value| in the ROI when larger; else AssertionError). NaN must match NaN (else inf)."""
    worst, count, near_zero = 0.0, 0, []
    for region, values in reference.values.items():
        for key, a in values.items():
            b = got.values.get(region, {}).get(key)
            if b is None:
                continue
            count += 1
            if math.isnan(a) or math.isnan(b):
                worst = worst if math.isnan(a) and math.isnan(b) else math.inf
                continue
            image_type, _, feature = key.rsplit("_", 2)
            spread = values.get(f"{image_type}_firstorder_Range", 0.0)
            if image_type.startswith("wavelet") and feature in NEAR_ZERO_CHECKED and abs(a) < 1e-2 * spread:
                scale = max([spread] + [abs(values.get(f"original_firstorder_{f}", 0.0)) for f in ("Minimum",
                                                                                                  "Maximum")])
                if abs(a - b) > 1e-6 * scale:
                    raise AssertionError(f"{region} {key}: {a} vs {b} (scale {scale})")
                near_zero.append(f"{region}:{key}")
                continue
            worst = max(worst, abs(a - b) / max(abs(a), abs(b), 1e-12))
    return worst, count, near_zero


def check_backend(backend: str, crop_filters: bool = False) -> None:
    if backend not in BACKENDS:
        raise InputError(f"Radiomics backend '{backend}' is not one of {', '.join(BACKENDS)}.")
    if backend == "torch" and crop_filters:
        raise InputError("crop_filters (the pyradiomics tolerance mode) and backend 'torch' do not combine: the "
                         "torch backend filters the whole series; choose one.")


def resolve_backend(backend: str, device: "str | None" = None) -> dict:
    """{"backend", "device"} for extract_study (the torch device resolved), checked before any long work: InputError
    for an unknown backend, a device without the torch backend, or a device torch cannot use."""
    check_backend(backend)
    if backend != "torch" and device:
        raise InputError(f"--radiomics-device {device} needs --radiomics-backend torch (pyradiomics runs on the CPU).")
    return {"backend": backend, "device": str(torch_device(device)) if backend == "torch" else None}


def settings_note(backend: str, device=None) -> dict:
    """What diagnostics.json records about the backend."""
    if backend != "torch":
        return {}
    return {"backend": "torch", "device": str(torch_device(device)), "max_rel_diff_vs_pyradiomics": TOLERANCE,
            "within_tolerance": ["Original", "LoG"], "shape": "pyradiomics",
            "wavelet": "sub-bands equal PyWavelets' up to its float32 rounding; a voxel within it of a bin edge can "
                       "change bin (texture features of that band then differ beyond the tolerance)",
            "not_reproduced": ["2D/2.5D aggregation", "GLCM distances other than 1", "weightingNorm",
                               "asymmetric GLCM", "voxel-based"]}


__all__ = ["BACKENDS", "NEAR_ZERO_CHECKED", "TOLERANCE", "TorchRunner", "check_backend", "check_preset",
           "compare_features", "filtered_images",
           "region_features", "resolve_backend", "series_features_torch", "series_task_torch", "settings_note",
           "torch_device"]
