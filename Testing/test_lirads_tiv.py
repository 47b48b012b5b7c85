"""lirads_tiv: tumour in vein measured in the portal vein label (LR-TIV), on small CT and MRI phantoms.

The phantom plants an occlusive thrombus in the portal vein a lesion abuts (`LesionSpec.vein`): enhancing tumour
(arterial enhancement like its HCC, a portal venous filling defect) or a bland clot (no enhancement). The expected
category is the phantom's own (`LesionTruth.lirads`: LR-TIV for tumour in vein, the table otherwise), never the
code's. The real CT slab's patent portal vein (TotalSegmentator label) must show no filling defect.
"""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from HCCFusionLib.errors import InputError
from HCCFusionLib.lirads import apply_table_edits, reader_table
from HCCFusionLib.lirads_mri import assess_study
from HCCFusionLib.lirads_tiv import BLAND_THROMBUS_HU, ENHANCEMENT_PERCENT, NAME, filling_defect
from HCCFusionLib.followup import VIABLE_ENHANCEMENT_HU
from HCCFusionLib.phantom import LesionSpec, make_patient
from HCCFusionLib.study import LABELS, Study

SPECS = {vein: [LesionSpec(diameter_mm=22, vein=vein), LesionSpec(diameter_mm=15)] for vein in ("tumour", "bland")}


@pytest.fixture(scope="module")
def ct():
    return {vein: make_patient(3, "small", lesions=specs, misalignment="none") for vein, specs in SPECS.items()}


def _without(study: Study, phase: str) -> Study:
    out = Study(study.study_id, clinical=study.clinical, meta=dict(study.meta))
    for series in study:
        if series.phase.value != phase:
            out.add(series)
    return out


def _check(assessment, patient, truth: str = "lirads"):
    """Every observation's category equals the phantom's truth; returns the TIV features by observation."""
    by_truth = {t.index: getattr(t, truth) for t in patient.lesions}
    assert {o.lesion: o.category for o in assessment.observations} == by_truth
    return {o.lesion: o.features[NAME] for o in assessment.observations}


def test_phantom_plants_tumour_in_vein_and_bland_thrombus(ct):
    tumour, bland = ct["tumour"], ct["bland"]
    assert [t.lirads for t in tumour.lesions] == ["LR-TIV", "LR-5"]
    assert [t.lirads for t in bland.lesions] == ["LR-5", "LR-5"]  # a bland thrombus is not TIV
    assert tumour.study.clinical.vascular_invasion and not bland.study.clinical.vascular_invasion
    vein = sitk.GetArrayViewFromImage(tumour.labels) == LABELS["portal_vein"]
    ap, nc = (sitk.GetArrayViewFromImage(tumour.study[p].image).astype(float) for p in ("AP", "NC"))
    ap_b, nc_b = (sitk.GetArrayViewFromImage(bland.study[p].image).astype(float) for p in ("AP", "NC"))
    # same anatomy, vein and noise; inside the vein only the thrombus differs: it enhances (tumour) or not (bland)
    assert np.array_equal(vein, sitk.GetArrayViewFromImage(bland.labels) == LABELS["portal_vein"])
    thrombus = vein & (ap != ap_b)
    assert thrombus.sum() >= 10
    assert (ap - nc)[thrombus].mean() > (ap_b - nc_b)[thrombus].mean() + 30
    assert (ap_b - nc_b)[thrombus].mean() < VIABLE_ENHANCEMENT_HU  # partial volume of blood and liver only
    with pytest.raises(InputError, match="vein must be one of"):
        make_patient(3, "small", lesions=[LesionSpec(vein="hepatic")])


def test_ct_tumour_in_vein_is_lr_tiv_and_bland_thrombus_is_not(ct):
    tiv = _check(assess_study(ct["tumour"].study, ct["tumour"].labels), ct["tumour"])
    assert tiv[1].present and tiv[1].value > VIABLE_ENHANCEMENT_HU + 20 and tiv[1].confidence > 0.99
    assert tiv[1].unit == "HU" and "AP - NC" in tiv[1].evidence and "blood pool" in tiv[1].evidence
    assert tiv[2].present is False and tiv[2].value is None  # the other lesion does not touch the vein
    bland = _check(assess_study(ct["bland"].study, ct["bland"].labels), ct["bland"])
    # the clot is found in the vein (a measured value) but does not enhance
    assert bland[1].present is False and bland[1].value is not None and bland[1].value < VIABLE_ENHANCEMENT_HU


def test_report_shows_tumour_in_vein(ct, tmp_path):
    from HCCFusionLib.report import ReportData, render_html

    assessment = assess_study(ct["tumour"].study, ct["tumour"].labels)
    html = render_html(ReportData("tiv", lirads=assessment.table(), lirads_evidence=assessment.evidence()), tmp_path)
    assert "tumour_in_vein" in html and "LR-TIV" in html and "tumour in vein: enhancing intraluminal tissue" in html
    assert "intraluminal tissue in the portal vein" in html  # the evidence row


def test_ct_without_unenhanced_phase_uses_the_bland_thrombus_threshold(ct):
    tiv = _check(assess_study(_without(ct["tumour"].study, "NC"), ct["tumour"].labels), ct["tumour"])
    assert tiv[1].present and tiv[1].threshold == BLAND_THROMBUS_HU and "PVP contrast" in tiv[1].evidence
    bland = _check(assess_study(_without(ct["bland"].study, "NC"), ct["bland"].labels), ct["bland"])
    assert bland[1].present is False and bland[1].value < BLAND_THROMBUS_HU


def test_reader_override_and_missing_vein_label(ct):
    patient = ct["tumour"]
    assessment = assess_study(patient.study, patient.labels)
    assessment.override(1, NAME, False, reader="dr. a", reason="flow artefact")
    assert assessment[1].category == "LR-5" and assessment[1].features[NAME].source == "reader"
    assert assessment.overrides_table().iloc[-1]["what"] == NAME
    assert "tumour_in_vein" in assessment.evidence().feature.values
    fresh = assess_study(patient.study, patient.labels)  # the reader's table (panel) edits it like the others
    edited = reader_table(fresh)
    edited.loc[edited.lesion == 1, NAME] = False
    assert [(o.lesion, o.what, o.new) for o in apply_table_edits(fresh, edited, "dr. b")] == [(1, NAME, False)]
    assert fresh[1].category == "LR-5" and apply_table_edits(fresh, reader_table(fresh), "dr. b") == []
    no_vein = sitk.ChangeLabel(patient.labels, {LABELS["portal_vein"]: LABELS["liver"]})
    assessment = assess_study(patient.study, no_vein)
    assert assessment[1].features[NAME].present is None and "no portal vein" in assessment[1].features[NAME].evidence
    assert assessment[1].category == "LR-5"  # not measurable: the table decides


@pytest.mark.parametrize("agent", ["extracellular", "gadoxetate"])
def test_mri_tumour_in_vein_on_percent_enhancement(agent):
    for vein, specs in SPECS.items():
        patient = make_patient(5, "small", lesions=specs, misalignment="none", mr_agent=agent, phases=())
        tiv = _check(assess_study(patient.study, patient.labels), patient, "lirads_mri")
        assert tiv[1].present is (vein == "tumour") and tiv[1].threshold == ENHANCEMENT_PERCENT
        assert tiv[1].phase == "AP" and tiv[1].value is not None
    without_pre = _without(patient.study, "MR_PRE")
    assessment = assess_study(without_pre, patient.labels)
    assert assessment[1].features[NAME].present is None and "MR_PRE" in assessment[1].features[NAME].evidence


def test_real_patent_portal_vein_has_no_filling_defect(shared_data):
    from HCCFusionLib.io import load_study, read_image

    slab = shared_data / "real" / "ct_dicom_slab"
    if not slab.is_dir():
        pytest.skip("real CT slab not available")
    image = next(iter(load_study(slab))).image  # portal venous contrast CT
    labels = sitk.Resample(read_image(shared_data / "real" / "ct_dicom_slab_labels.nii.gz"), image,
                           sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    vein = sitk.GetArrayViewFromImage(labels) == 64  # TotalSegmentator: portal/splenic vein
    pieces, blood = filling_defect({"PVP": sitk.GetArrayFromImage(image).astype(float)}, vein, image, "CT")
    assert vein.sum() > 1000 and 60 < blood < 160  # enhanced blood pool (PVP - 40 HU)
    assert not pieces.any()


def test_ct_categories_match_the_truth_across_anatomies():
    """Other seeds: other vein geometry, lesion placement and noise (a thin vein on the 3.7 mm grid included)."""
    for seed in (0, 1, 2):
        for specs in SPECS.values():
            patient = make_patient(seed, "small", lesions=specs, misalignment="none")
            _check(assess_study(patient.study, patient.labels), patient)
