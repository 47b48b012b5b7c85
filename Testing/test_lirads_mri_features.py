"""lirads_mri: LR-M features (rim APHE, targetoid restriction, delayed central enhancement, targetoid HBP, peripheral
washout), reader LR-TIV, marked T2, the study-level entry
(`assess_study` picks MRI or CT, the agent from ContrastBolusAgent) and the enhancement images.

One small synthetic gadoxetate study (7 lesions in a row, 1.5 mm voxels); signals as in HCC_IMAGING_FACTS.md.
"""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from HCCFusionLib import lirads
from HCCFusionLib.lirads_mri import assess_mri, assess_study, relative_enhancement, study_agent, subtraction
from HCCFusionLib.study import LABELS, Series, Study

SPACING, PITCH, RADIUS = 1.5, 45.0, 12.0
LIVER = {"MR_PRE": 100.0, "MR_AP": 120.0, "MR_PVP": 150.0, "TP": 140.0, "HBP": 220.0, "T2": 100.0, "ADC": 1300.0}
PLAIN = {"MR_PRE": 80.0, "MR_AP": 88.0, "MR_PVP": 155.0, "TP": 145.0, "HBP": 220.0, "T2": 100.0, "ADC": 1300.0}
# (core signal changes, rim (outer 1.5 mm) signal changes, reader input, hand-read category)
CASES = [
    ({"HBP": 100.0}, {"MR_AP": 190.0}, {}, "LR-M"),  # rim APHE
    ({"ADC": 1600.0, "HBP": 100.0}, {"ADC": 800.0}, {}, "LR-M"),  # targetoid restriction
    ({"MR_AP": 176.0, "MR_PVP": 120.0, "TP": 110.0, "HBP": 100.0, "ADC": 900.0}, {}, {}, "LR-5"),  # HCC
    ({}, {}, {"tumour_in_vein": True}, "LR-TIV"),  # reader finding
    ({"T2": 400.0}, {}, {}, "LR-2"),  # LR-3, marked T2 hyperintensity favours benignity
    ({"MR_AP": 85.0, "MR_PVP": 200.0}, {"MR_AP": 110.0, "MR_PVP": 120.0}, {}, "LR-M"),  # delayed central enhancement
    ({"HBP": 150.0}, {"HBP": 60.0}, {}, "LR-M"),  # targetoid HBP: dark rim, less dark core
    ({"MR_PVP": 120.0}, {"MR_AP": 80.0, "MR_PVP": 90.0}, {}, "LR-M"),  # peripheral washout, no other LR-M feature
]


@pytest.fixture(scope="module")
def mri():
    shape = (int(PITCH / SPACING), int(PITCH / SPACING), int(len(CASES) * PITCH / SPACING))
    zz, yy, xx = np.indices(shape, dtype=np.float32) * SPACING
    instance = np.zeros(shape, np.uint16)
    arrays = {k: np.full(shape, v, np.float32) for k, v in LIVER.items()}
    for n, (core, rim, _, _) in enumerate(CASES, start=1):
        depth = RADIUS - np.sqrt((zz - PITCH / 2) ** 2 + (yy - PITCH / 2) ** 2 + (xx - (n - 0.5) * PITCH) ** 2)
        for phase, value in {**PLAIN, **core}.items():
            arrays[phase][depth >= 0] = value
        for phase, value in rim.items():
            arrays[phase][(depth >= 0) & (depth < SPACING)] = value
        instance[depth >= 0] = n
    rng = np.random.default_rng(5)
    images = {p: sitk.GetImageFromArray(a + rng.normal(0, 0.03 * LIVER[p], shape).astype(np.float32))
              for p, a in arrays.items()}
    lesions = sitk.GetImageFromArray(instance)
    labels = sitk.GetImageFromArray(np.where(instance > 0, LABELS["tumour"], LABELS["liver"]).astype(np.uint8))
    for image in [*images.values(), lesions, labels]:
        image.SetSpacing((SPACING,) * 3)
    return images, labels, lesions


def test_lr_m_tiv_and_benign_ancillary(mri):
    images, labels, lesions = mri
    reader = {n: case[2] for n, case in enumerate(CASES, start=1) if case[2]}
    result = assess_mri(images, labels, agent="gadoxetate", lesions=lesions, ancillary=reader)
    assert [o.category for o in result.observations] == [case[-1] for case in CASES]
    rim, targetoid = result[1].features["rim_aphe"], result[2].features["targetoid_diffusion"]
    assert rim.present and rim.phase == "MR_AP" and rim.value > 30 and rim.confidence > 0.99
    assert targetoid.present and targetoid.phase == "ADC" and targetoid.value > 30
    assert not result[2].features["restricted_diffusion"].present  # the core does not restrict
    assert result[3].features["restricted_diffusion"].present and result[3].features["hbp_hypointensity"].present
    assert "t2_marked" in result[5].category_reason and not result[5].features["t2_mild_moderate"].present
    central, target_hbp = result[6].features["delayed_central_enhancement"], result[7].features["targetoid_hbp"]
    assert central.present and central.phase == "MR_PVP" and central.value > 100 and central.confidence > 0.99
    assert central.threshold == 30.0 and central.unit.startswith("% enhancement") and not result[6].features[
        "rim_aphe"].present  # the rim does not hyperenhance: delayed central enhancement alone makes LR-M
    assert target_hbp.present and target_hbp.phase == "HBP" and 30 < target_hbp.value < 50
    assert "targetoid_hbp" in result[7].category_reason and target_hbp.confidence > 0.99
    peripheral = result[8].features["peripheral_washout"]
    assert peripheral.present and peripheral.phase == "MR_PVP" and 15 < peripheral.value < 25  # (120 - 90) / 150
    assert [n for n in lirads.LR_M_FEATURES if n in result[8].features and result[8].features[n].present] == [
        "peripheral_washout"]
    for n in (3, 4, 5):  # homogeneous observations show none
        for name in ("delayed_central_enhancement", "targetoid_hbp", "peripheral_washout"):
            assert not result[n].features[name].present, (n, name)
    # a reader override of an LR-M feature recomputes the category; the CT table keeps every row
    result.override(5, "targetoid_diffusion", True, reader="dr. y")
    assert result[5].category == "LR-M"
    assert {"rim_aphe", "targetoid_diffusion", "t2_marked", "hbp_hypointensity"} <= set(result.evidence().feature)


def test_study_entry_picks_modality_and_agent(mri):
    images, labels, lesions = mri
    study = Study("mr")
    for phase, image in images.items():
        study.add(Series(phase, phase, image, meta={"contrast_agent": "Gd-EOB-DTPA (Primovist)"}))
    assert study_agent(study) == "gadoxetate"
    result = assess_study(study, labels, lesions=lesions)
    assert result.modality == "MR" and result[3].category == "LR-5"
    assert result[3].features["washout"].phase == "MR_PVP"  # gadoxetate: portal venous phase only
    ct = Study("ct")
    for phase in ("AP", "PVP", "DP"):
        ct.add(Series(phase, phase, images[{"AP": "MR_AP", "PVP": "MR_PVP", "DP": "TP"}[phase]]))
    ct.add(Series("T2", "T2", images["T2"]))  # a CT study with an MR series stays a CT assessment
    result = assess_study(ct, labels, lesions=lesions)
    assert result.modality == "CT" and "restricted_diffusion" not in result[3].features


def test_enhancement_images(mri):
    images, labels, _ = mri
    liver = sitk.GetArrayViewFromImage(labels) == LABELS["liver"]
    ratio = sitk.GetArrayViewFromImage(relative_enhancement(images["MR_PVP"], images["MR_PRE"]))[liver]
    assert abs(float(np.median(ratio)) - 50.0) < 1.5  # (150 - 100) / 100
    difference = sitk.GetArrayViewFromImage(subtraction(images["MR_PVP"], images["MR_PRE"]))[liver]
    assert abs(float(np.median(difference)) - 50.0) < 1.0
    with pytest.raises(lirads.InputError, match="one grid"):
        relative_enhancement(images["MR_AP"], sitk.Image(3, 3, 3, sitk.sitkFloat32))
