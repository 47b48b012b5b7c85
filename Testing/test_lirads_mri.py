"""lirads_mri: LI-RADS v2018 on synthetic MRI studies (pre/AP/PVP/TP/HBP, T2, ADC) with known categories.

Signals follow ../shared/HCC_IMAGING_FACTS.md (MRI): HCC hypointense on pre-contrast T1, arterial hyperenhancement,
washout, mildly T2 hyperintense, ADC ~0.9e-3 vs liver ~1.3e-3 mm²/s, hypointense in the hepatobiliary phase.
Every lesion's category is written by hand from the v2018 table and ancillary rules (not computed by the code).
"""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from HCCFusionLib.errors import InputError
from HCCFusionLib.lirads import apply_ancillary
from HCCFusionLib.lirads_mri import MriThresholds, assess_mri, relative_enhancement
from HCCFusionLib.study import LABELS

SPACING = 1.5  # mm, isotropic
PITCH = 42.0  # mm between lesion centres
LIVER = {"MR_PRE": 100.0, "MR_AP": 120.0, "MR_PVP": 150.0, "TP": 140.0, "HBP": 220.0, "T2": 100.0, "ADC": 1300.0}
# an observation without any feature: hypointense before contrast, enhancing less than the liver, no washout
PLAIN = {"MR_PRE": 80.0, "MR_AP": 88.0, "MR_PVP": 155.0, "TP": 145.0, "HBP": 220.0, "T2": 100.0, "ADC": 1300.0}
TRAITS = {
    "aphe": {"MR_AP": 176.0},  # relative enhancement 120 % vs the liver's 20 %
    "washout": {"MR_PVP": 120.0, "TP": 110.0},
    "tp_only": {"TP": 110.0},  # darker than the liver only in the transitional phase
    "hbp_hypo": {"HBP": 100.0},
    "restricted": {"ADC": 900.0},
    "t2_mild": {"T2": 150.0},
    "t2_marked": {"T2": 400.0},
    "bright_pre": {"MR_PRE": 140.0, "MR_AP": 150.0, "MR_PVP": 175.0, "TP": 160.0},  # AP brighter than liver, RE 7 %
}
RADIUS = {25: 12.0, 15: 7.0, 7: 3.5}  # nominal diameter band (mm) -> sphere radius (mm)

# (size, traits, capsule phases, reader ancillary, hand-read category)
EXTRACELLULAR = [
    (25, ("aphe", "washout"), ("MR_PVP", "TP"), {}, "LR-5"),
    (25, ("aphe", "washout"), (), {}, "LR-5"),
    (15, ("aphe", "washout"), (), {}, "LR-5"),
    (15, ("aphe",), ("MR_PVP", "TP"), {}, "LR-4"),  # 10-19 mm, capsule alone
    (15, ("aphe",), (), {}, "LR-3"),
    (15, ("aphe", "restricted"), (), {}, "LR-4"),  # ancillary up by one
    (25, (), (), {}, "LR-3"),
    (25, ("washout",), (), {}, "LR-4"),
    (25, ("t2_mild",), (), {}, "LR-4"),
    (25, ("t2_marked",), (), {}, "LR-2"),  # marked T2 favours benignity: down by one
    (25, ("washout", "restricted"), ("MR_PVP", "TP"), {}, "LR-4"),  # never up to LR-5
    (25, ("aphe", "washout"), (), {"size_stability": True}, "LR-4"),
    (15, ("aphe", "restricted"), (), {"size_stability": True}, "LR-3"),  # both ways: unchanged
    (25, ("bright_pre",), (), {}, "LR-3"),  # brighter than liver in AP, but no relative hyperenhancement
    (7, ("aphe", "washout"), (), {}, "LR-4"),  # < 10 mm
    (7, ("restricted",), (), {}, "LR-4"),
    (25, (), (), {"nodule_in_nodule": True}, "LR-4"),
    (25, ("aphe", "washout"), (), {"fat_in_mass": True}, "LR-5"),
]
GADOXETATE = [
    (25, ("aphe", "washout", "hbp_hypo"), (), {}, "LR-5"),
    (15, ("aphe", "tp_only", "hbp_hypo"), (), {}, "LR-4"),  # TP darkness is not washout with gadoxetate: LR-3 up
    (25, (), (), {}, "LR-3"),
    (25, ("hbp_hypo",), (), {}, "LR-4"),
    (15, ("aphe",), ("TP",), {}, "LR-4"),  # capsule seen in the transitional phase only
    (25, ("aphe", "hbp_hypo"), (), {"size_reduction": True}, "LR-4"),  # LR-4, ancillary both ways
    (25, ("aphe",), (), {"size_reduction": True}, "LR-3"),  # LR-4 down by one
]


def _study(cases, seed: int):
    """Images (phase -> sitk), label map and lesion instance map (1..n in case order) on one isotropic grid."""
    per_row = 3
    layers = -(-len(cases) // (per_row * per_row))
    shape = (int(layers * PITCH / SPACING), int(per_row * PITCH / SPACING), int(per_row * PITCH / SPACING))
    zz, yy, xx = np.indices(shape, dtype=np.float32) * SPACING
    instance = np.zeros(shape, np.uint16)
    arrays = {k: np.full(shape, v, np.float32) for k, v in LIVER.items()}
    for n, (size, traits, capsule, _, _) in enumerate(cases, start=1):
        k = n - 1
        centre = ((k // 9 + 0.5) * PITCH, (k % 9 // 3 + 0.5) * PITCH, (k % 3 + 0.5) * PITCH)
        distance = np.sqrt((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2) - RADIUS[size]
        inside, shell = distance <= 0, (distance > 0) & (distance <= SPACING)
        signal = dict(PLAIN)
        for trait in traits:
            signal.update(TRAITS[trait])
        for phase, value in signal.items():
            arrays[phase][inside] = value
        for phase in capsule:
            arrays[phase][shell] = 1.4 * LIVER[phase]
        instance[inside] = n
    rng = np.random.default_rng(seed)
    images = {}
    for phase, array in arrays.items():
        noisy = array + rng.normal(0, 0.03 * LIVER[phase], shape).astype(np.float32)
        images[phase] = sitk.GetImageFromArray(noisy)
    labels = np.where(instance > 0, LABELS["tumour"], LABELS["liver"]).astype(np.uint8)
    out = []
    for array in (labels, instance):
        image = sitk.GetImageFromArray(array)
        out.append(image)
    for image in list(images.values()) + out:
        image.SetSpacing((SPACING,) * 3)
    return images, out[0], out[1]


@pytest.fixture(scope="module")
def extracellular():
    images, labels, lesions = _study(EXTRACELLULAR, seed=1)
    images.pop("HBP")
    return images, labels, lesions


def _reader(cases):
    return {n: reader for n, (_, _, _, reader, _) in enumerate(cases, start=1) if reader}


def test_mri_lirads_categories_match_the_truth(extracellular):
    images, labels, lesions = extracellular
    results = [assess_mri(images, labels, agent="extracellular", lesions=lesions, ancillary=_reader(EXTRACELLULAR))]
    g_images, g_labels, g_lesions = _study(GADOXETATE, seed=2)
    results.append(assess_mri(g_images, g_labels, agent="gadoxetate", lesions=g_lesions,
                              ancillary=_reader(GADOXETATE)))
    got, truth = [], []
    for result, cases in zip(results, (EXTRACELLULAR, GADOXETATE)):
        assert [o.lesion for o in result.observations] == list(range(1, len(cases) + 1))
        got += [o.category for o in result.observations]
        truth += [case[-1] for case in cases]
    assert len(truth) >= 20 and sum(c[-2] != {} or any(t in ("restricted", "t2_mild", "t2_marked", "hbp_hypo",
                                                                 "tp_only") for t in c[1])
                                    for c in EXTRACELLULAR + GADOXETATE) >= 10
    agreement = np.mean([g == t for g, t in zip(got, truth)])
    mismatches = [(i + 1, g, t) for i, (g, t) in enumerate(zip(got, truth)) if g != t]
    assert agreement >= 0.95, mismatches
    # every feature carries value, threshold, unit, phase and confidence; reader features say so
    evidence = results[0].evidence()
    aphe = evidence[evidence.feature == "aphe"]
    assert (aphe.unit.str.startswith("% enhancement")).all() and aphe.confidence.min() > 0.9
    diffusion = evidence[evidence.feature == "restricted_diffusion"]
    assert diffusion.phase.eq("ADC").all() and diffusion.threshold.eq(MriThresholds().restricted_diffusion).all() and diffusion.value.notna().all()
    assert set(evidence[evidence.source == "reader"].feature) == {"size_stability", "nodule_in_nodule", "fat_in_mass"}
    g_evidence = results[1].evidence()
    washout = g_evidence[g_evidence.feature == "washout"]
    assert washout.phase.eq("MR_PVP").all() and "portal venous phase only" in washout.evidence.iloc[0]
    assert results[1][5].features["capsule"].phase == "TP"
    assert results[0][11].features["restricted_diffusion"].present and "restricted_diffusion" in (
        results[0][11].category_reason)  # present, but ancillary features never make LR-5


def test_relative_enhancement_decides_aphe_not_the_signal(extracellular):
    """Lesion 14 is brighter than the liver in AP only because it is bright before contrast."""
    images, labels, lesions = extracellular
    with_pre = assess_mri(images, labels, lesions=lesions)[14].features["aphe"]
    without = assess_mri({k: v for k, v in images.items() if k != "MR_PRE"}, labels, lesions=lesions)[14]
    assert with_pre.present is False and with_pre.value < 0
    assert without.features["aphe"].present is True and without.features["aphe"].unit == "% of liver"
    ratio = sitk.GetArrayViewFromImage(relative_enhancement(images["MR_AP"], images["MR_PRE"]))
    liver = sitk.GetArrayViewFromImage(labels) == LABELS["liver"]
    assert abs(float(np.median(ratio[liver])) - 20.0) < 1.0


def test_ancillary_rules_and_errors(extracellular):
    images, labels, lesions = extracellular
    feature = type("F", (), {"present": True})
    assert apply_ancillary("LR-3", "r", {"corona": feature})[0] == "LR-4"
    assert apply_ancillary("LR-4", "r", {"mosaic": feature})[0] == "LR-4"
    assert apply_ancillary("LR-5", "r", {"iron_in_mass": feature})[0] == "LR-4"
    assert apply_ancillary("LR-M", "r", {"iron_in_mass": feature})[0] == "LR-M"
    with pytest.raises(InputError, match="Unknown ancillary feature 'glow'"):
        assess_mri(images, labels, lesions=lesions, ancillary={1: {"glow": True}})
    with pytest.raises(InputError, match="agent 'gadolinium'"):
        assess_mri(images, labels, lesions=lesions, agent="gadolinium")
    with pytest.raises(InputError, match="do not exist"):
        assess_mri(images, labels, lesions=lesions, ancillary={99: {"corona": True}})
    # a reader override of an ancillary feature recomputes the category
    result = assess_mri(images, labels, lesions=lesions)
    assert result[7].category == "LR-3"
    result.override(7, "corona", True, reader="dr. x")
    assert result[7].category == "LR-4" and "corona" in result[7].category_reason
