"""Phantom MRI studies (phantom.mri): DICOM with agent and bolus timing -> phase detection -> assess_study.

22 designed HCCs on four small MRI phantoms (two gadoxetate, two extracellular), with ancillary-feature cases
(restricted diffusion, mild and marked T2, HBP/TP hypointensity, both ways). The truth is the phantom's own
`LesionSpec.expected_lirads_mri` (the v2018 table and ancillary rules written out as data), never `lirads`.
"""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from HCCFusionLib.errors import InputError
from HCCFusionLib.io import load_study
from HCCFusionLib.lirads_mri import adc_from_dwi, assess_study, study_agent
from HCCFusionLib.phantom import LesionSpec, make_patient
from HCCFusionLib.study import LABELS

pytest.importorskip("highdicom", reason="highdicom is the [dicom] extra")

# (diameter mm, APHE, washout, capsule, restricted diffusion, T2, HBP hypointensity)
DESIGNS = {
    "gadoxetate": [
        [(25, 1, 1, 0, 1, "mild", 1), (15, 1, 1, 0, 1, "mild", 1), (25, 0, 0, 0, 0, "iso", 0),
         (25, 0, 0, 0, 1, "iso", 0), (15, 1, 0, 0, 0, "iso", 1), (22, 1, 0, 1, 0, "iso", 0)],
        [(25, 0, 0, 0, 0, "marked", 0), (15, 1, 0, 1, 0, "iso", 0), (25, 0, 1, 0, 0, "iso", 0),
         (12, 0, 1, 0, 0, "iso", 0), (25, 1, 1, 0, 0, "marked", 1)]],
    "extracellular": [
        [(25, 1, 1, 1, 1, "mild", 1), (15, 1, 0, 0, 0, "iso", 1), (25, 0, 0, 0, 1, "iso", 1),
         (25, 0, 0, 0, 0, "mild", 0), (15, 0, 1, 0, 0, "iso", 0), (25, 1, 0, 0, 0, "iso", 0)],
        [(25, 1, 1, 0, 0, "marked", 0), (18, 1, 1, 0, 0, "iso", 0), (25, 0, 1, 1, 0, "iso", 0),
         (12, 1, 0, 1, 0, "iso", 0), (25, 0, 0, 0, 0, "iso", 0)]],
}
SERIES = {"MR_PRE": "MR_PRE", "MR_AP": "MR_AP", "MR_PVP": "MR_PVP", "TP": "TP", "HBP": "HBP", "T2": "T2",
          "DWI_b50": "DWI", "DWI_b400": "DWI", "DWI_b800": "DWI", "ADC": "ADC"}


def _patient(agent: str, k: int):
    specs = [LesionSpec(diameter_mm=d, aphe=bool(a), washout=bool(w), capsule=bool(c), diffusion=bool(r), t2=t2,
                        hbp_hypo=bool(h)) for d, a, w, c, r, t2, h in DESIGNS[agent][k]]
    return make_patient(40 + k, "small", phases=(), mr_agent=agent, lesions=specs, misalignment="none",
                        cirrhotic=bool(k % 2))


@pytest.fixture(scope="module")
def patients():
    return [(agent, _patient(agent, k)) for agent in DESIGNS for k in range(len(DESIGNS[agent]))]


def test_mri_phantom_lirads_through_dicom_matches_the_truth(patients, tmp_path):
    from HCCFusionLib.dicom import write_study_dicom

    got, truth, ancillary_cases = [], [], 0
    for n, (agent, patient) in enumerate(patients):
        assert patient.reference == "MR_PVP" and all(t.lirads_mri for t in patient.lesions)
        write_study_dicom(patient.study, tmp_path / f"p{n}")
        study = load_study(tmp_path / f"p{n}")
        # phases come back from the tags: a generic "T1 VIBE dynamic" description + agent + bolus timing
        detected = sorted((s.meta["series_description"], s.phase.value) for s in study)
        assert sorted(s.phase.value for s in study) == sorted(SERIES[s.name] for s in patient.study), detected
        assert {s.meta["series_description"] for s in study if s.phase.value in SERIES} >= {"T1 VIBE dynamic"}
        assert study_agent(study) == agent
        result = assess_study(study, patient.labels, lesions=patient.lesion_labels)
        assert [o.lesion for o in result.observations] == [t.index for t in patient.lesions]
        got += [o.category for o in result.observations]
        truth += [t.lirads_mri for t in patient.lesions]
        ancillary_cases += sum(t.lirads_mri != t.lirads for t in patient.lesions)
    assert len(truth) >= 20 and ancillary_cases >= 6 and len(set(truth)) >= 4
    mismatches = [(i, g, t) for i, (g, t) in enumerate(zip(got, truth)) if g != t]
    assert np.mean([g == t for g, t in zip(got, truth)]) >= 0.95, mismatches


def test_mri_phantom_signals_follow_the_design(patients):
    agent, patient = patients[0]
    images = {s.name: sitk.GetArrayFromImage(s.image) for s in patient.study}
    lesions, labels = (sitk.GetArrayFromImage(i) for i in (patient.lesion_labels, patient.labels))
    liver = labels == LABELS["liver"]

    def ratio(series, lesion):
        return float(np.median(images[series][lesions == lesion]) / np.median(images[series][liver]))

    # lesion 1: restricted, mild T2, HBP-dark; lesion 3: none of them; lesion 4: restricted only
    assert ratio("ADC", 1) < 0.8 and ratio("ADC", 3) > 0.9 and ratio("ADC", 4) < 0.8
    assert 1.3 < ratio("T2", 1) < 1.8 and 0.85 < ratio("T2", 3) < 1.15
    assert ratio("HBP", 1) < 0.7 and ratio("HBP", 3) > 0.9
    # the ADC series is fitted from DWI b50/400/800: liver within 5 % of the designed liver ADC
    designed = 1300.0  # LIVER_VALUES of a non-cirrhotic liver (patient 0), 1e-6 mm^2/s
    assert abs(np.median(images["ADC"][liver]) / designed - 1) < 0.05
    b = {float(name[5:]): s.image for name, s in patient.study.series.items() if name.startswith("DWI_b")}
    refit = sitk.GetArrayFromImage(adc_from_dwi(b))
    np.testing.assert_allclose(refit, images["ADC"], atol=1e-3)
    # relative enhancement follows CT's wash-in: the portal vein peaks in MR_PVP, far above the liver's
    vein = labels == LABELS["portal_vein"]
    enhancement = {p: np.median(images[p][vein]) / np.median(images["MR_PRE"][vein]) - 1 for p in SERIES if
                   p in ("MR_AP", "MR_PVP", "TP")}
    assert enhancement["MR_PVP"] > max(enhancement["MR_AP"], enhancement["TP"]) and enhancement["MR_PVP"] > 0.7
    assert ratio("MR_PVP", 1) < 0.8 < 1.0 < ratio("MR_AP", 1) and ratio("MR_PRE", 1) < 0.9  # APHE, washout


def test_mri_phantom_errors():
    with pytest.raises(InputError, match="MR contrast agent 'gadolinium'"):
        make_patient(1, "small", phases=(), mr_agent="gadolinium")
    with pytest.raises(InputError, match="not both"):
        make_patient(1, "small", mri=True, mr_agent="gadoxetate")
    with pytest.raises(InputError, match="t2 must be one of"):
        make_patient(1, "small", phases=(), mr_agent="gadoxetate", lesions=[LesionSpec(t2="bright")])
    with pytest.raises(InputError, match="two or more b-values"):
        adc_from_dwi({800.0: sitk.Image(4, 4, 4, sitk.sitkFloat32)})


@pytest.mark.parametrize("case", [0, 3])  # gadoxetate, extracellular (cirrhotic)
def test_mr_phase_from_the_images_when_the_timing_tags_are_silent(patients, tmp_path, case):
    """Bolus start and trigger times removed: the generic "dynamic" series get their phase from the images."""
    import pydicom

    from HCCFusionLib.dicom import write_study_dicom

    agent, patient = patients[case]
    write_study_dicom(patient.study, tmp_path / "dicom")
    for path in (tmp_path / "dicom").rglob("*.dcm"):
        ds = pydicom.dcmread(path)
        if "ContrastBolusStartTime" in ds:
            del ds.ContrastBolusStartTime
            ds.save_as(path)
    study = load_study(tmp_path / "dicom")
    dynamic = [s for s in study if s.meta["series_description"] == "T1 VIBE dynamic"]
    truth = sorted(n for n in patient.study.series if n in ("MR_PRE", "MR_AP", "MR_PVP", "TP", "HBP"))
    assert sorted(s.phase.value for s in dynamic) == truth, [(s.name, s.meta["phase_reason"]) for s in dynamic]
    post = [s for s in dynamic if s.phase.value != "MR_PRE"]
    assert all("image: aorta +" in s.meta["phase_reason"] for s in post)
    assert all(s.meta["phase_confidence"] >= 0.4 for s in post), [(s.name, s.meta["phase_reason"]) for s in post]
    # and LI-RADS on the image-phased study equals the tag-phased one
    result = assess_study(study, patient.labels, lesions=patient.lesion_labels)
    assert [o.category for o in result.observations] == [t.lirads_mri for t in patient.lesions]


@pytest.mark.slow  # ~45 s on 2 busy cores: the whole `run` (registration, radiomics, report)
def test_run_writes_mr_subtraction_images_shown_as_key_images(tmp_path):
    """`run` on a small gadoxetate MRI phantom: subtraction images in OUT/lirads and as report key images."""
    import yaml

    from HCCFusionLib import pipeline
    from HCCFusionLib.io import read_image, save_image, save_study
    from HCCFusionLib.layout import RunFolder
    from HCCFusionLib.radiomics import PRESET_DIR

    patient = make_patient(3, "small", phases=(), mr_agent="gadoxetate", misalignment="none", n_tumours=1,
                           lesions=[LesionSpec(diameter_mm=25)])
    for name in ("T2", "DWI_b50", "DWI_b400", "DWI_b800", "ADC"):  # the dynamic series are what this checks
        del patient.study.series[name]
    save_study(patient.study, tmp_path / "study")
    save_image(patient.labels, tmp_path / "labels.nii.gz")
    preset = yaml.safe_load((PRESET_DIR / "mr_v1.yaml").read_text())
    preset.update(name="mr_fast", featureClass={"firstorder": []}, imageType={"Original": {}})
    (tmp_path / "mr_fast_v1.yaml").write_text(yaml.safe_dump(preset))
    out = RunFolder(tmp_path / "out")
    pipeline.run(tmp_path / "study", out.root, segmentation=tmp_path / "labels.nii.gz", model="none", mode="rigid",
                 registration_options={"spacing_mm": 6.0}, workers=1, presets={"*": tmp_path / "mr_fast_v1.yaml"})
    for name in ("MR_AP-MR_PRE", "MR_PVP-MR_PRE", "TP-MR_PRE", "HBP-MR_PRE"):
        image = sitk.GetArrayFromImage(read_image(out.subtraction(name)))
        lesion = sitk.GetArrayFromImage(patient.lesion_labels) == 1
        liver = sitk.GetArrayFromImage(patient.labels) == LABELS["liver"]
        if name == "MR_AP-MR_PRE":  # APHE: the lesion gains more signal than the liver in the arterial phase
            assert np.median(image[lesion]) > 2 * np.median(image[liver]) > 0
        elif name == "HBP-MR_PRE":  # hepatocyte uptake in the liver, none in the HCC
            assert np.median(image[liver]) > 2 * np.median(image[lesion])
    html = out.report_html.read_text(encoding="utf-8")
    assert "MR_AP-MR_PRE · axial slice" in html and "HBP-MR_PRE · axial slice" in html


def test_report_shows_adc_per_lesion(patients):
    """The report's radiomics summary carries each lesion's mean ADC (issue 15: ADC per lesion in the report)."""
    import pandas as pd

    from HCCFusionLib.radiomics import kinetic_features, region_statistics
    from HCCFusionLib.report import radiomics_summary

    _, patient = patients[0]
    adc = patient.study["ADC"].image
    masks = {"lesion_1": patient.lesion_labels == 1, "lesion_3": patient.lesion_labels == 3,
             "background_liver": patient.labels == LABELS["liver"]}
    stats = {"ADC": {name: region_statistics(adc, mask) for name, mask in masks.items()}}
    summary = radiomics_summary(pd.DataFrame(kinetic_features(stats, {"ADC": ("ADC", "MR")})))
    row = summary.loc["ADC adc_mean"]
    assert row["lesion_1"] < 0.8 * 1300 < 0.9 * 1300 < row["lesion_3"]  # restricted vs not (liver ADC 1300)


def test_cli_phantom_writes_an_mri_study(tmp_path):
    import pandas as pd

    from HCCFusionLib.cli import main
    from HCCFusionLib.io import load_study

    assert main(["--progress", "none", "phantom", "--out", str(tmp_path / "p"), "--mr-agent", "extracellular",
                 "--tumours", "2", "--misalignment", "none", "--seed", "4"]) == 0
    study = load_study(tmp_path / "p")
    assert sorted(s.phase.value for s in study) == sorted(
        ["MR_PRE", "MR_AP", "MR_PVP", "TP", "T2", "DWI", "DWI", "DWI", "ADC"])
    truth = pd.read_csv(tmp_path / "p" / "truth" / "lesions.csv")
    assert "lirads_mri" in truth.columns and len(truth) == 2


def test_every_mri_series_has_its_true_transform():
    patient = make_patient(2, "small", phases=(), mr_agent="extracellular", n_tumours=1, misalignment="rigid")
    assert set(patient.transforms) == set(patient.landmarks) == set(patient.study.series)
    dwi = [patient.transforms[n].GetParameters() for n in ("DWI_b50", "DWI_b800", "ADC")]
    assert dwi[0] == dwi[1] == dwi[2] != patient.transforms["MR_AP"].GetParameters()  # one DWI acquisition
