"""LI-RADS v2018 on MRI: major features on the dynamic series, ancillary features and LR-M features.

Major features are measured by `lirads.assess` on MR_AP / MR_PVP / TP: APHE as relative enhancement (percent
enhancement over MR_PRE, lesion minus liver, in percentage points; without MR_PRE: AP signal in % of the liver),
washout and capsule in % of the liver. With an extracellular agent washout is read in MR_PVP and TP (delayed); on
gadoxetate studies in MR_PVP only (v2018), the capsule in MR_PVP or TP. Measured ancillary features: restricted
diffusion (ADC), mild-moderate and marked T2 hyperintensity, transitional and HBP hypointensity (gadoxetate). LR-M
features measured: rim APHE, targetoid restriction, delayed central enhancement (the core's percent enhancement
gains over the rim's from MR_AP to the delayed phase: TP with an extracellular agent, MR_PVP with gadoxetate),
peripheral washout (a rim darker than both core and liver where washout is read) and targetoid HBP/TP appearance
(gadoxetate: the same in HBP). The others (nodule-in-nodule, mosaic, fat in mass, corona, blood products, iron
sparing, HBP isointensity, size stability/reduction, ...; tumour in vein) need a reader: pass
`ancillary={lesion: {feature: bool}}` with names from `lirads.READER_FEATURES` or a `lirads.Findings` field
(tumour_in_vein, ...), or record them later with `LiradsAssessment.override`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
import SimpleITK as sitk

from . import lirads, lirads_tiv
from .errors import InputError
from .lesions import label_lesions
from .lirads import (READER_FEATURES, Feature, Findings, LiradsAssessment, Thresholds, decide, design_effect, assess,
                     regions, relative_difference)
from .study import Phase

log = logging.getLogger(__name__)

AGENTS = ("extracellular", "gadoxetate")
ENHANCEMENT_UNIT = "% enhancement vs pre (points)"
_FINDINGS = tuple(Findings.__dataclass_fields__)
#: phase names `lirads.assess` reads -> the MR series they come from
_AS_CT = {"AP": Phase.MR_AP, "PVP": Phase.MR_PVP, "DP": Phase.TP}
#: the series `assess_study` reads from an MRI study
_MRI_INPUTS = (Phase.MR_PRE, Phase.MR_AP, Phase.MR_PVP, Phase.TP, Phase.HBP, Phase.T2, Phase.ADC)


@dataclass
class MriThresholds:
    """Ancillary and LR-M thresholds, in percent of the background liver (ADC: of the liver ADC)."""

    restricted_diffusion: float = 15.0  # core ADC lower than liver ADC by more than this
    t2_mild: float = 10.0  # core T2 brighter than liver by more than this ...
    t2_marked: float = 200.0  # ... and by at most this (above: marked, favouring benignity)
    hypointensity: float = 10.0  # core darker than liver by more than this in TP / HBP
    rim_aphe: float = 10.0  # AP rim brighter than core and than liver by more than this
    targetoid_diffusion: float = 15.0  # core ADC higher than rim ADC by more than this (rim restricts)
    delayed_central: float = 30.0  # core gains this many more enhancement points than the rim after the AP
    targetoid_hbp: float = 15.0  # HBP (else TP) rim darker than core and than liver by more than this
    peripheral_washout: float = 15.0  # washout-phase rim darker than core and than liver by more than this


def relative_enhancement(post: sitk.Image, pre: sitk.Image, floor: float = 1.0) -> sitk.Image:
    """Voxelwise percent enhancement 100 (post - pre) / pre on one grid (pre below `floor` is clamped)."""
    a, b = (sitk.GetArrayFromImage(i).astype(np.float32) for i in (post, pre))
    if a.shape != b.shape:
        raise InputError("Percent enhancement needs the post- and pre-contrast series on one grid: register them.")
    out = sitk.GetImageFromArray(100.0 * (a - b) / np.maximum(b, floor))
    out.CopyInformation(post)
    return out


def subtraction(post: sitk.Image, pre: sitk.Image) -> sitk.Image:
    """Subtraction image post - pre (float32) on one grid."""
    return sitk.Cast(post, sitk.sitkFloat32) - sitk.Cast(pre, sitk.sitkFloat32)


def adc_from_dwi(images: dict, floor: float = 1.0) -> sitk.Image:
    """ADC map (1e-6 mm^2/s) from DWI images {b-value (s/mm^2): image} on one grid: per voxel the least-squares
    slope of -ln S against b (mono-exponential decay), clipped to 0..4000; voxels with S below `floor` get 0."""
    if len(images) < 2:
        raise InputError(f"An ADC fit needs DWI at two or more b-values (got {sorted(images)}).")
    b = np.array(sorted(images), float)
    arrays = [sitk.GetArrayFromImage(images[v]).astype(np.float32) for v in sorted(images)]
    if len({a.shape for a in arrays}) != 1:
        raise InputError("The DWI images of an ADC fit must share one grid: resample them first.")
    weights = (b - b.mean()) / ((b - b.mean()) ** 2).sum()
    slope = sum(np.float32(-w) * np.log(np.maximum(a, floor)) for w, a in zip(weights, arrays))
    adc = np.where(np.min(arrays, axis=0) >= floor, np.clip(1e6 * slope, 0.0, 4000.0), 0.0).astype(np.float32)
    out = sitk.GetImageFromArray(adc)
    out.CopyInformation(images[b[0]])
    return out


def subtraction_images(images: dict) -> dict:
    """Subtraction images {"<phase>-MR_PRE": post - pre} of the contrast-enhanced T1 series (MR_AP, MR_PVP, TP, HBP)
    that lie on MR_PRE's grid (a registered dynamic study); {} without MR_PRE."""
    from .study import same_grid

    pre = images.get(Phase.MR_PRE.value)
    if pre is None:
        return {}
    return {f"{p.value}-{Phase.MR_PRE.value}": subtraction(images[p.value], pre)
            for p in (Phase.MR_AP, Phase.MR_PVP, Phase.TP, Phase.HBP)
            if p.value in images and same_grid(images[p.value], pre)}


def assess_mri(images: dict, labels: sitk.Image, *, agent: str = "extracellular",
               lesions: "sitk.Image | None" = None, ancillary: "dict[int, dict[str, bool]] | None" = None,
               thresholds: "Thresholds | None" = None, mri: "MriThresholds | None" = None,
               **kwargs) -> LiradsAssessment:
    """LI-RADS v2018 for an MRI study. `images`: phase code (MR_PRE, MR_AP, MR_PVP, TP, HBP, T2, ADC) -> image on
    `labels`' grid; `agent`: one of AGENTS; `ancillary`: reader features per observation. Other keyword
    arguments go to `lirads.assess` (prior, interval_months, findings)."""
    if agent not in AGENTS:
        raise InputError(f"Unknown contrast agent '{agent}': use one of {', '.join(AGENTS)}.")
    for lesion, values in (ancillary or {}).items():
        for name in values:
            if name not in READER_FEATURES + _FINDINGS:
                raise InputError(f"Unknown ancillary feature '{name}' (observation {lesion}): use one of "
                                 f"{', '.join(READER_FEATURES + _FINDINGS)}.")
    images = {Phase.parse(k).value: v for k, v in images.items() if v is not None}
    thresholds, mri = thresholds or Thresholds(), mri or MriThresholds()
    if agent == "gadoxetate":
        thresholds = replace(thresholds, washout_phases=("PVP",))
    lesions = label_lesions(labels) if lesions is None else lesions
    dynamic = {name: images[p.value] for name, p in _AS_CT.items() if p.value in images}
    result = assess(dynamic, labels, modality="MR", lesions=lesions, thresholds=thresholds, **kwargs)
    missing = sorted(set(ancillary or {}) - {o.lesion for o in result.observations})
    if missing:
        raise InputError(f"Ancillary features given for observation(s) {missing} that do not exist: observations "
                         f"are {[o.lesion for o in result.observations]}.")
    arrays = {p: sitk.GetArrayViewFromImage(v) for p, v in images.items()}
    label_array, lesion_array = sitk.GetArrayViewFromImage(labels), sitk.GetArrayViewFromImage(lesions)
    spacing = np.array(labels.GetSpacing())[::-1]
    margin = np.ceil((thresholds.liver_ring_mm[1] + 2 * spacing.max()) / spacing).astype(int)
    for obs in result.observations:
        for feature in obs.features.values():
            feature.phase = _AS_CT[feature.phase].value if feature.phase in _AS_CT else feature.phase
        if agent == "gadoxetate" and obs.features["washout"].present is not None:
            obs.features["washout"].evidence += " (gadoxetate: washout read in the portal venous phase only)"
        where = np.argwhere(lesion_array == obs.lesion)
        box = tuple(slice(max(lo - g, 0), hi + g + 1) for lo, hi, g in zip(where.min(0), where.max(0), margin))
        r = regions(lesion_array[box] == obs.lesion, label_array[box], spacing, thresholds)
        box_arrays = {p: a[box].astype(np.float64) for p, a in arrays.items()}
        if "MR_PRE" in box_arrays and "MR_AP" in box_arrays:
            obs.features["aphe"] = _aphe(box_arrays, r, thresholds.aphe)
        obs.features.update(_ancillary(box_arrays, r, mri, obs.features["aphe"].present, agent))
        obs.features.update(_targetoid(box_arrays, r, mri, agent))
        for name, present in (ancillary or {}).get(obs.lesion, {}).items():
            if name in _FINDINGS:  # tumour in vein and the other reader findings
                setattr(obs.findings, name, bool(present))
            else:
                obs.features[name] = Feature(name, bool(present), evidence="reader", source="reader")
        obs.update_category()
    log.info("LI-RADS MRI (%s): %s", agent, ", ".join(f"{o.lesion}={o.category}" for o in result.observations))
    return result


def _aphe(arrays: dict, r: dict, threshold: float) -> Feature:
    """Nonrim APHE as relative enhancement: core minus background liver, in percentage points."""
    enhancement = 100.0 * (arrays["MR_AP"] - arrays["MR_PRE"]) / np.maximum(arrays["MR_PRE"], 1.0)
    core, ring = enhancement[r["core"]], enhancement[r["ring"]]
    value, se = relative_difference(core, ring, ring, design_effect(enhancement, r["ring"]), "CT")
    return decide("aphe", value, threshold, se, ENHANCEMENT_UNIT, "MR_AP",
                   f"{r['core_note']}: {core.mean():.1f} % vs liver ring {ring.mean():.1f} % enhancement over MR_PRE")


def _ancillary(arrays: dict, r: dict, t: MriThresholds, nonrim_aphe, agent: str) -> dict[str, Feature]:
    """Measured ancillary and LR-M features of one observation (`r`: `lirads.regions`)."""
    core, rim, ring = r["core"], r["rim"], r["ring"]
    unit, out = "% of liver", {}

    def diff(phase, a, b):  # mean(a) - mean(b) in % of the liver, with its standard error
        return relative_difference(a, b, arrays[phase][ring], design_effect(arrays[phase], ring), "MR")

    def add(name, phase, value_se, threshold, evidence):
        out[name] = decide(name, value_se[0], threshold, value_se[1], unit, phase, evidence)

    if "ADC" in arrays:
        adc = arrays["ADC"]
        add("restricted_diffusion", "ADC", diff("ADC", adc[ring], adc[core]), t.restricted_diffusion,
            "liver ADC minus core ADC")
        if rim.sum() >= 2:
            add("targetoid_diffusion", "ADC", diff("ADC", adc[core], adc[rim]), t.targetoid_diffusion,
                "core ADC minus rim ADC (restricting rim)")
    if "T2" in arrays:
        value, se = diff("T2", arrays["T2"][core], arrays["T2"][ring])
        add("t2_marked", "T2", (value, se), t.t2_marked, "core T2 minus liver T2 (marked: favours benignity)")
        mild = decide("t2_mild_moderate", value, t.t2_mild, se, unit, "T2",
                       f"core T2 minus liver T2, above {t.t2_mild:g} and up to {t.t2_marked:g}")
        mild.present = bool(mild.present and not out["t2_marked"].present)
        out["t2_mild_moderate"] = mild
    # with an extracellular agent, delayed-phase hypointensity is washout (a major feature), not an ancillary one
    for phase, name in (("TP", "tp_hypointensity"), ("HBP", "hbp_hypointensity")):
        if phase in arrays and agent == "gadoxetate":
            add(name, phase, diff(phase, arrays[phase][ring], arrays[phase][core]), t.hypointensity,
                f"liver minus core in {phase}")
    if "MR_AP" in arrays and rim.sum() >= 2 and not nonrim_aphe:
        ap = arrays["MR_AP"]
        over_core, over_liver = diff("MR_AP", ap[rim], ap[core]), diff("MR_AP", ap[rim], ap[ring])
        add("rim_aphe", "MR_AP", min(over_core, over_liver), t.rim_aphe, "AP rim minus the brighter of core/liver")
    return out


def _targetoid(arrays: dict, r: dict, t: MriThresholds, agent: str) -> dict[str, Feature]:
    """LR-M targetoid dynamic features: delayed central enhancement, peripheral washout, targetoid HBP/TP appearance."""
    core, rim, ring, out = r["core"], r["rim"], r["ring"], {}
    if rim.sum() < 2 or core.sum() < 2:
        return out
    late = "TP" if agent == "extracellular" else "MR_PVP"
    if all(p in arrays for p in ("MR_PRE", "MR_AP", late)):
        pre = np.maximum(arrays["MR_PRE"], 1.0)
        gain = 100.0 * (arrays[late] - arrays["MR_AP"]) / pre  # enhancement points gained after the AP
        value, se = relative_difference(gain[core], gain[rim], gain[ring], design_effect(gain, ring), "CT")
        out["delayed_central_enhancement"] = decide(
            "delayed_central_enhancement", value, t.delayed_central, se, ENHANCEMENT_UNIT, late,
            f"core minus rim enhancement gained from MR_AP to {late}: {gain[core].mean():.1f} vs "
            f"{gain[rim].mean():.1f} points")
    def dark_rim(name, phase, threshold, what):  # rim darker than the lesser of core and liver, in % of liver
        a = arrays[phase]
        liver_se = (a[ring], design_effect(a, ring))
        value, se = min(relative_difference(a[core], a[rim], *liver_se, "MR"),
                        relative_difference(a[ring], a[rim], *liver_se, "MR"))
        out[name] = decide(name, value, threshold, se, "% of liver", phase,
                           f"{phase} rim darker than the lesser of core and liver ({what})")

    # peripheral washout: read where washout is (gadoxetate: the portal venous phase only)
    washout = next((p for p in ("MR_PVP", "TP")[:1 if agent == "gadoxetate" else 2] if p in arrays), None)
    if washout is not None:
        dark_rim("peripheral_washout", washout, t.peripheral_washout, "peripheral washout")
    phase = "HBP" if "HBP" in arrays else "TP"
    if agent == "gadoxetate" and phase in arrays:
        dark_rim("targetoid_hbp", phase, t.targetoid_hbp, "targetoid appearance")
    return out


def study_agent(study) -> str:
    """"gadoxetate" when a series names a hepatobiliary agent (ContrastBolusAgent) or is an HBP, else extracellular."""
    from .phases import HEPATOBILIARY_AGENTS

    named = " ".join(str(s.meta.get("contrast_agent", "")) for s in study).upper()
    hepatobiliary = any(word in named for word in HEPATOBILIARY_AGENTS) or study.get(Phase.HBP) is not None
    return "gadoxetate" if hepatobiliary else "extracellular"


def assess_study(study, labels: sitk.Image, **kwargs) -> LiradsAssessment:
    """LI-RADS of a registered Study: CT through `lirads.assess_ct` when it has a CT contrast phase (AP, PVP,
    DP), else MRI (any MR series) through `assess_mri` with the study's agent (`study_agent`, unless given); then
    tumour in vein measured in the portal vein label (`lirads_tiv`; LR-TIV overrides the table)."""
    ct = any(study.get(p) is not None for p in (Phase.AP, Phase.PVP, Phase.DP))
    kwargs["lesions"] = label_lesions(labels) if kwargs.get("lesions") is None else kwargs["lesions"]
    if ct or not any(s.modality.value == "MR" for s in study):
        result, modality = lirads.assess_ct(study, labels, **kwargs), "CT"
    else:
        images = {p.value: study.get(p).image for p in _MRI_INPUTS if study.get(p) is not None}
        kwargs.setdefault("agent", study_agent(study))
        result, modality = assess_mri(images, labels, **kwargs), "MR"
    vein_phases = (Phase.NC, Phase.AP, Phase.PVP) if modality == "CT" else (Phase.MR_PRE, Phase.MR_AP, Phase.MR_PVP)
    images = {role: study.get(p).image for role, p in zip(("NC", "AP", "PVP"), vein_phases) if study.get(p) is not None}
    return lirads_tiv.add_to(result, images, labels, kwargs["lesions"], modality)
