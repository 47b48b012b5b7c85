"""A segmentation model's domain (what its training data looked like, from its model card's "domain") and
the quality checks made against it.

Before the model runs, `check_input` lists QC warnings for a study outside the domain: another modality,
a real study given to a phantom-trained model, spacing far off, intensities unlike the training data. After
it ran, `check_output` names a QC failure: no liver, or a liver far smaller than any training case. Neither
changes the label map; callers report them (CLI, report, panel) and a failure stops `run` after the
segmentation folder is written.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..study import LABELS

PERCENTILES = (5, 50, 95)
#: CT voxels above this (HU) count as the body for the intensity statistics
BODY_HU = -500.0
#: spacing is "far off" beyond this factor of the training range; intensities beyond this many HU of it
SPACING_FACTOR, INTENSITY_MARGIN_HU = 2.0, 30.0
#: a liver below this fraction of the smallest training liver is a QC failure
LIVER_FRACTION = 0.5


def describe(image: sitk.Image) -> dict:
    """Spacing (mm) and body intensity percentiles (CT: voxels above BODY_HU) of one image."""
    array = sitk.GetArrayViewFromImage(image)
    body = array[array > BODY_HU]
    values = np.percentile(body, PERCENTILES) if body.size else [float("nan")] * len(PERCENTILES)
    return {"spacing_mm": [round(float(s), 3) for s in image.GetSpacing()],
            **{f"p{p}": round(float(v), 1) for p, v in zip(PERCENTILES, values)}}


def domain_of(rows: list[dict], **fixed) -> dict:
    """A card's "domain" from `describe` rows of its training cases (plus "liver_ml" per case) and fixed keys
    (modality, phases, synthetic, cases)."""
    spacing = np.array([c["spacing_mm"] for c in rows])
    out = {**fixed, "spacing_mm": [spacing.min(0).round(3).tolist(), spacing.max(0).round(3).tolist()],
           "intensity": {f"p{p}": [min(c[f"p{p}"] for c in rows), max(c[f"p{p}"] for c in rows)]
                         for p in PERCENTILES}}
    if all("liver_ml" in c for c in rows):
        out["liver_ml"] = [round(min(c["liver_ml"] for c in rows), 1), round(max(c["liver_ml"] for c in rows), 1)]
    return out


def check_input(study, series_names, domain: dict | None) -> list[str]:
    """QC warnings for the series a model will read (empty when inside its domain or it states none)."""
    if not domain:
        return []
    warnings = []
    if domain.get("synthetic") and not all(study[name].meta.get("phantom") for name in series_names):
        warnings.append("the model was trained on synthetic phantoms only and this is not a phantom study: its "
                        "output says nothing reliable about a patient (use the engine 'liverlesion')")
    for name in series_names:
        series = study[name]
        if domain.get("modality") and series.phase.modality.value not in domain["modality"]:
            warnings.append(f"{name} is {series.phase.modality.value}, the model was trained on "
                            f"{'/'.join(domain['modality'])}")
            continue
        seen = describe(series.image)
        low, high = (np.asarray(v, float) for v in domain.get("spacing_mm", [[0, 0, 0], [np.inf] * 3]))
        spacing = np.asarray(seen["spacing_mm"])
        if (spacing < low / SPACING_FACTOR).any() or (spacing > high * SPACING_FACTOR).any():
            warnings.append(f"{name} spacing {_mm(spacing)} mm is far from the training range {_mm(low)}–{_mm(high)}")
        for key, (lo, hi) in (domain.get("intensity") or {}).items() if series.phase.modality.value == "CT" else ():
            if not lo - INTENSITY_MARGIN_HU <= seen[key] <= hi + INTENSITY_MARGIN_HU:
                warnings.append(f"{name} body intensity {key} {seen[key]:g} HU is outside the training range "
                                f"{lo:g}..{hi:g} HU")
    return warnings


def check_output(labels: sitk.Image, domain: dict | None) -> str | None:
    """The QC failure of a model's label map (no liver, or far smaller than any training case), or None."""
    array = sitk.GetArrayViewFromImage(labels)
    liver_ml = float(np.isin(array, (LABELS["liver"], LABELS["tumour"])).sum() * np.prod(labels.GetSpacing())) / 1e3
    if liver_ml == 0:
        return "no liver found"
    smallest = ((domain or {}).get("liver_ml") or [0])[0]
    if liver_ml < LIVER_FRACTION * smallest:
        return (f"liver {liver_ml:.0f} ml, far smaller than any training case ({smallest:.0f} ml): the input is "
                "probably outside what the model knows")
    return None


def _mm(values) -> str:
    return "x".join(f"{v:g}" for v in values)
