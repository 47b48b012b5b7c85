"""Kinetic and reviewable features (region intensity statistics across phases, each with a one-line definition)
and deltas between phases and between time points."""
from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk

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

