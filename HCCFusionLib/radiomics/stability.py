"""Stability screening: perturb (mask erosion/dilation, noise, small rotations/translations), re-extract, keep the
features whose ICC(3,1) over the perturbations reaches a threshold."""
from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk

from ..errors import GeometryError, InputError
from ..progress import silent
from ..regions import DEFAULT_REGIONS, REGION_GROUPS, build_regions
from .extraction import label_map
from .features import preprocess_image, preprocess_mask, series_features
from .presets import Preset, load_preset

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
        labels, how = label_map(series, segmentation, region_options.pop("resample_masks", False), study)
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

