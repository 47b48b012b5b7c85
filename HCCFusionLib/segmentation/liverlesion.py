"""The "liverlesion" engine: liver and lesion segmentation of real CT/MR with the ported pyliverlesionseg 0.3
cascade (Tang et al., EJNMMI Research 2020; Apache-2.0 models converted to safetensors bundles).

Cascade, as the original (see liverlesion_prep for each step):
1. reorient the image to the nearest LPS voxel order (a pure axis permutation/flip: no resampling);
2. liver: body/abdomen crop (CT: lungs and pelvis landmarks; MR: intensity profiles), zoom to 1.5 mm,
   3x3x3 median, zoom to 3 mm, normalise, liver net, threshold 0.5, erode, largest component, dilate, back
   onto the original voxels;
3. lesions: the normalised image at 1x1x3 mm, restricted to the dilated liver (-0.5 elsewhere) and cropped to
   its box, lesion net, threshold 0.5, back onto the original voxels;
   If the net sees liver (p > 0.5) in the first or last slice of the scan (a partial scan that ends inside
   the liver), it runs again with the 3 mm input mirrored in z at that end over 70 mm (the context the
   original's crop keeps above the liver dome) instead of its zero (= water) padding, which the net never
   met inside a liver, and the liver post-processing runs on the mirrored grid (its 3x3x3 erosion would
   empty a scan of 1-2 net slices): on a 40 mm slab the zero padding halves the liver (Dice 0.56 vs 0.94
   mirrored); scans that contain the whole liver are unchanged. A CT crop without lung/pelvis landmarks (a
   partial scan) runs the mirrored pass first and keeps it when it sees liver at the ends it mirrored: one
   liver pass instead of two (meta crop.liver_net_passes);
4. labels (study.LABELS: liver 1, tumour 2) on the input's exact grid, then the library's post-processing
   and lesion table (`postprocess_in_box`: tumours only within 5 mm of the liver, no lesion < 0.05 mL).
"""
from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..progress import silent
from ..study import LABELS, Modality, Phase
from . import liverlesion_prep as prep
from .predictor import Segmentation, postprocess_in_box

log = logging.getLogger(__name__)

ENGINE = "liverlesion"
#: Series preference when a study is segmented without a named reference (first present wins).
PREFERENCE = {Modality.CT: (Phase.PVP, Phase.DP, Phase.AP, Phase.NC),
              Modality.MR: (Phase.MR_PVP, Phase.TP, Phase.DCE, Phase.MR_AP, Phase.HBP, Phase.T1, Phase.T2, Phase.DWI,
                            Phase.ADC)}
MIN_SLICES = 2
#: z context mirrored onto a scan end that cuts the liver (the original's crop keeps 70 mm above the dome).
LIVER_MIRROR_MM = 70.0


class UnsupportedImageError(InputError):
    """An image the liverlesion engine cannot segment (modality, dimension, pixel type)."""


# ------------------------------------------------------------------ orientation
def _lps_axes(image: sitk.Image):
    """(perm, flips): LPS axis p is image axis perm[p], reversed when flips[p] (nearest axis-aligned LPS)."""
    d = np.asarray(image.GetDirection(), float).reshape(3, 3)  # columns: image axes in physical LPS
    perm = max(itertools.permutations(range(3)), key=lambda pr: sum(abs(d[p, pr[p]]) for p in range(3)))
    flips = tuple(bool(d[p, perm[p]] < 0) for p in range(3))
    return perm, flips


def to_lps(image: sitk.Image):
    """(array (x, y, z) float32 in LPS voxel order, spacing (x, y, z), perm, flips) of a 3D image."""
    perm, flips = _lps_axes(image)
    arr = sitk.GetArrayFromImage(image).transpose(2, 1, 0)  # image axes (i, j, k)
    arr = arr.transpose(perm)
    arr = np.flip(arr, [p for p in range(3) if flips[p]])
    spacing = tuple(float(image.GetSpacing()[perm[p]]) for p in range(3))
    return np.ascontiguousarray(arr, np.float32), spacing, perm, flips


def from_lps(arr: np.ndarray, perm, flips) -> np.ndarray:
    """Inverse of `to_lps` for an array on the LPS voxels: back to the image's (z, y, x) array order."""
    arr = np.flip(arr, [p for p in range(3) if flips[p]])
    arr = arr.transpose(np.argsort(perm))
    return np.ascontiguousarray(arr.transpose(2, 1, 0))


# ------------------------------------------------------------------ checks
def _modality(modality) -> str:
    text = getattr(modality, "value", modality)
    text = str(text).upper()
    if text in ("CT", "MR"):
        return text
    raise UnsupportedImageError(
        f"The liverlesion engine segments CT or MR images, not '{text}': choose a CT or MR series "
        "(PET and ultrasound are not supported).")


def _check_image(image: sitk.Image, what: str) -> None:
    if image.GetDimension() != 3:
        raise UnsupportedImageError(
            f"{what} is {image.GetDimension()}D: the liverlesion engine needs a 3D volume (load the whole series).")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise UnsupportedImageError(
            f"{what} has {image.GetNumberOfComponentsPerPixel()} components per voxel: give a scalar CT/MR volume.")
    if min(image.GetSize()) < MIN_SLICES:
        raise UnsupportedImageError(
            f"{what} has size {image.GetSize()}: a single slice cannot be segmented in 3D; give at least "
            f"{MIN_SLICES} slices (the whole series).")


def _models():
    from .liverlesion_models import load_liverlesion

    return load_liverlesion


def _model_meta(bundle) -> dict:
    from ..files import sha256_file

    return {"name": bundle.card.get("name", bundle.path.name), "bundle": bundle.path.name,
            "sha256": sha256_file(bundle.path / "weights.safetensors")}


def _predict(net, volume: np.ndarray, plans: dict) -> np.ndarray:
    """Network probabilities of an LPS-ordered volume, in LPS order (the nets take x/y-flipped, RAS arrays)."""
    from .liverlesion_models import predict_volume

    probs = predict_volume(net, np.ascontiguousarray(np.flip(volume, (0, 1))), plans)
    return np.ascontiguousarray(np.flip(probs, (0, 1)))


def _partial_ct_ends(modality: str, box: tuple, nz: int, crop_info: dict) -> tuple[bool, bool]:
    """The scan ends a CT crop touches when its z-range had no lung/pelvis landmarks (a partial scan, likely
    ending inside the liver); (False, False) otherwise (whole scans, MR)."""
    if modality != "CT" or crop_info["z_crop"] == "landmarks":
        return False, False
    return box[2].start == 0, box[2].stop == nz


def _liver_net_mask(net, net_in: np.ndarray, plans: dict, box: tuple, nz: int, crop_info: dict,
                    guess: tuple[bool, bool], progress) -> np.ndarray:
    """Liver mask on the net grid of the crop: the zero-padded pass, or mirrored in z at the scan ends where
    it sees liver (module docstring). With `guess` (`_partial_ct_ends`) the pass mirrored at those ends runs
    first and is kept when it sees liver at exactly those ends (one pass instead of two); otherwise the
    zero-padded pass decides as for any scan (reusing the first pass when it chose the same ends)."""
    margin = int(round(LIVER_MIRROR_MM / float(plans["target_spacing"][2])))

    def mirrored_pass(ends):
        mirrored, keep = prep.mirror_z(net_in, ends, margin, plans["output_segment_size"][2])
        return _predict(net, mirrored, plans), keep

    first = mirrored_pass(guess) if any(guess) else None
    passes = int(first is not None)
    if first is not None and prep.cut_ends(first[0][:, :, first[1]], box, nz) == guess:
        probs, keep = first
    else:
        probs, keep = _predict(net, net_in, plans), None
        passes += 1
        ends = prep.cut_ends(probs, box, nz)
        if any(ends):  # the scan ends inside the liver: mirror those ends instead of the original's zero padding
            if ends != guess:
                progress(0.3, "liverlesion: liver network (scan ends inside the liver)")
                first = mirrored_pass(ends)
                passes += 1
            probs, keep = first
    crop_info["liver_net_passes"] = passes
    if keep is None:
        return prep.liver_net_mask(probs)
    crop_info["mirrored_z_slices"] = [keep.start, probs.shape[2] - keep.stop]
    return prep.liver_net_mask(probs)[:, :, keep]


# ------------------------------------------------------------------ engine
@dataclass
class LiverStage:
    """The liver stage of one image (cascade step 2), reusable by a later `segment_image_liverlesion` of the
    same image (the pipeline's liver before registration seeds its segmentation: the reference series is the
    registration's fixed image, so its liver does not change). `liver`: bool mask on the LPS voxels."""
    image: sitk.Image
    modality: str
    liver: np.ndarray
    box: tuple
    crop_info: dict
    times: dict
    bundle: object  # the liver model's bundle (named in the segmentation's meta)

    def fits(self, image: sitk.Image, modality: str) -> bool:
        """Whether this stage was computed from `image` (same grid and voxels) as `modality`."""
        from ..study import same_grid

        return self.modality == modality and (image is self.image or (
            same_grid(image, self.image) and np.array_equal(sitk.GetArrayViewFromImage(image),
                                                            sitk.GetArrayViewFromImage(self.image))))


def liver_stage(image: sitk.Image, modality, *, progress=None, models=None) -> LiverStage:
    """Cascade steps 1-2 (reorient, crop, liver net and its post-processing) of one CT or MR image."""
    modality = _modality(modality)
    _check_image(image, "The image")
    vol, spacing, _, _ = to_lps(image)
    return _liver_stage(image, vol, spacing, modality, (models or {}).get("liver") or _models()("liver"),
                        progress or silent)


def _liver_stage(image, vol, spacing, modality: str, model, progress) -> LiverStage:
    t = time.time()
    liver_bundle, liver_net = model
    target = np.asarray(liver_bundle.plans["target_spacing"], float)
    box, crop_info = (prep.crop_ct_box if modality == "CT" else prep.crop_mr_box)(vol, spacing)
    net_in = prep.liver_input(vol[box], spacing, target, modality)
    times = {"liver_preprocess_s": round(time.time() - t, 2)}
    progress(0.1, "liverlesion: liver network")
    t = time.time()
    guess = _partial_ct_ends(modality, box, vol.shape[2], crop_info)
    small = _liver_net_mask(liver_net, net_in, liver_bundle.plans, box, vol.shape[2], crop_info, guess, progress)
    liver = prep.liver_to_full(small, box, vol.shape)
    times["liver_network_s"] = round(time.time() - t, 2)
    log.info("liverlesion: %s crop %s (%s), liver %.0f mL", modality, [[s.start, s.stop] for s in box],
             crop_info["z_crop"], liver.sum() * np.prod(spacing) / 1000.0)
    return LiverStage(image, modality, liver, box, crop_info, times, liver_bundle)


def segment_image_liverlesion(image: sitk.Image, modality, *, lesions: bool = True, progress=None,
                              min_lesion_ml: float = 0.05, liver_margin_mm: float = 5.0,
                              models=None, liver: LiverStage | None = None) -> Segmentation:
    """Liver (and lesions) of one CT or MR image; labels on the image's exact grid (study.LABELS values).

    `models`: optional {"liver": (bundle, net), "lesion": (bundle, net)} already loaded (reused across calls).
    `liver`: this image's `liver_stage`, already computed (reused; recomputed, with a warning, if it is another
    image's).
    """
    progress = progress or silent
    modality = _modality(modality)
    _check_image(image, "The image")
    t0 = time.time()
    progress(0.0, "liverlesion: preparing")
    models = dict(models or {})
    if liver is not None and not liver.fits(image, modality):
        log.warning("liverlesion: the liver stage given was computed from another image: computing it anew")
        liver = None
    load = None
    for kind in ("liver", "lesion") if lesions else ("liver",):
        if kind not in models and not (kind == "liver" and liver is not None):
            load = load or _models()
            models[kind] = load(kind)
    vol, spacing, perm, flips = to_lps(image)
    times: dict = {"load_s": round(time.time() - t0, 2)}
    reused = liver is not None
    stage = liver or _liver_stage(image, vol, spacing, modality, models["liver"], progress)
    models["liver"] = (stage.bundle, None)
    box, crop_info, liver = stage.box, stage.crop_info, stage.liver
    times.update(stage.times, liver_stage_reused=reused)

    lesion = np.zeros(vol.shape, bool)
    lesion_meta: dict = {}
    if lesions and liver.any():
        progress(0.5, "liverlesion: lesion network")
        lesion_bundle, lesion_net = models["lesion"]
        t = time.time()
        ltarget = np.asarray(lesion_bundle.plans["target_spacing"], float)
        les_in, les_box, resized = prep.lesion_input(vol, liver, spacing, ltarget, modality)
        times["lesion_preprocess_s"] = round(time.time() - t, 2)
        if les_in is not None:
            t = time.time()
            lprobs = _predict(lesion_net, les_in, lesion_bundle.plans)
            times["lesion_network_s"] = round(time.time() - t, 2)
            t = time.time()
            lesion = prep.lesion_mask_from_probs(lprobs, les_box, resized, vol.shape)
            times["lesion_postprocess_s"] = round(time.time() - t, 2)
            lesion_meta = {"lesion_input_shape": list(les_in.shape),
                           "lesion_box": [[s.start, s.stop] for s in les_box]}
    progress(0.9, "liverlesion: post-processing")
    t = time.time()
    arr = np.zeros(vol.shape, np.uint8)
    arr[liver] = LABELS["liver"]
    arr[lesion] = LABELS["tumour"]
    labels = sitk.GetImageFromArray(from_lps(arr, perm, flips))
    labels.CopyInformation(image)
    labels, lesion_map, table = postprocess_in_box(labels, True, min_lesion_ml, liver_margin_mm)
    times["postprocess_s"] = round(time.time() - t, 2)
    times["seconds"] = round(time.time() - t0, 2)
    meta = {"engine": ENGINE, "modality": modality, "timings": times, "crop": crop_info,
            "crop_box_lps": [[s.start, s.stop] for s in box], "liver_input_shape": list(vol[box].shape),
            "models": {kind: _model_meta(models[kind][0]) for kind in ("liver", "lesion") if kind in models},
            "lesions_run": bool(lesions),
            "min_lesion_ml": min_lesion_ml, "liver_margin_mm": liver_margin_mm, **lesion_meta}
    progress(1.0, "liverlesion: done")
    return Segmentation(labels, table, lesion_map, meta)


def choose_series(study, reference: str | None = None):
    """The series to segment: `reference` (name or phase) if given, else CT PVP > DP > AP > NC, then MR
    MR_PVP > TP > DCE > MR_AP > HBP > T1 > T2 > DWI > ADC (post-contrast T1 first), else the first CT/MR series."""
    if reference:
        series = study.get(reference)
        if series is None:
            raise InputError(f"Study '{study.study_id}' has no series '{reference}'; it has: "
                             f"{', '.join(s.name for s in study) or 'none'}.")
        return series, f"the requested reference '{reference}'"
    for modality in (Modality.CT, Modality.MR):
        for phase in PREFERENCE[modality]:
            found = [s for s in study if s.phase is phase and s.modality is modality]
            if found:
                return found[0], f"best available phase {phase.value} ({modality.value} preference " \
                                 f"{' > '.join(p.value for p in PREFERENCE[modality])})"
    found = [s for s in study if s.modality in (Modality.CT, Modality.MR)]
    if found:
        return found[0], "first CT/MR series"
    raise UnsupportedImageError(
        f"Study '{study.study_id}' has no CT or MR series (it has: "
        f"{', '.join(f'{s.name} ({s.modality.value})' for s in study) or 'none'}): the liverlesion engine "
        "segments CT or MR only.")


def segment_study_liverlesion(study, reference: str | None = None, **kw) -> Segmentation:
    """Segment the chosen series of a study (see `choose_series`); meta names the series and why."""
    series, why = choose_series(study, reference)
    log.info("liverlesion: segmenting series '%s' (%s %s): %s", series.name, series.modality.value,
             series.phase.value, why)
    seg = segment_image_liverlesion(series.image, series.modality, **kw)
    seg.meta.update(series=series.name, phase=series.phase.value, series_choice=why)
    return seg
