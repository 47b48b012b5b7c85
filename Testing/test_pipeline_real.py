"""`hccfusion run` on real patients' series: one contrast CT DICOM series, a T2 + ADC MR study, and a PET-only
study that no engine can serve. The two real runs are session fixtures (Testing/conftest.py), shared with
test_liverlesion.py."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from HCCFusionLib import cli
from HCCFusionLib.study import LABELS

STAGES = ("registration", "segmentation", "radiomics", "lirads", "clinical", "prediction", "report", "dicom")
pytestmark = pytest.mark.filterwarnings("ignore:The string .* is unlikely to represent the intended person name")


def test_single_real_ct_series_runs_end_to_end(real_ct_run):
    out, code, printed = real_ct_run
    assert code == 0, printed
    for stage in STAGES:
        assert (out / stage).is_dir(), stage
    assert (out / "report" / "report.html").is_file()
    info = json.loads((out / "segmentation" / "segmentation.json").read_text())
    assert info["engine"] == "liverlesion" and info["qc_failure"] is None and info["series"] == "PVP"
    assert "segmentation: engine liverlesion" in printed
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "segmentation" / "segmentation.nii.gz")))
    liver_ml = np.isin(labels, (1, 2)).sum() * np.prod(sitk.ReadImage(
        str(out / "segmentation" / "segmentation.nii.gz")).GetSpacing()) / 1000
    assert 800 < liver_ml < 3000
    # every observation gets LI-RADS, with the reason for what a single portal venous phase cannot show
    lirads = pd.read_csv(out / "lirads" / "lirads.csv")
    assert len(lirads) >= 1 and (lirads["category"] == "LR-NC").all()
    assert lirads["reason"].str.contains("aphe \\(needs an arterial phase\\)").all()
    assert "APHE n/a" in printed
    # radiomics per lesion region, ring and background liver; staging as far as the (absent) clinical data allow
    regions = set(pd.read_csv(out / "radiomics" / "features_long.csv")["region"])
    assert {"tumour", "background_liver"} <= regions
    staging = pd.read_csv(out / "clinical" / "staging.csv")
    assert staging["missing"].str.contains("bilirubin").any()
    report = (out / "report" / "report.html").read_text()
    assert "Engine <b>liverlesion</b>" in report and "needs an arterial phase" in report


def test_real_t2_adc_mr_study_runs_end_to_end(real_mr_run):
    out, code, printed = real_mr_run
    assert code == 0, printed
    for stage in (s for s in STAGES if s not in ("prediction", "dicom")):
        assert (out / stage).is_dir(), stage
    info = json.loads((out / "segmentation" / "segmentation.json").read_text())
    assert info["engine"] == "liverlesion" and info["series"] == "T2" and info["qc_failure"] is None
    notes = json.loads((out / "registration" / "channels.json").read_text())["normalisation"]
    assert "N4 bias-corrected" in notes["T2"] and "not N4" in notes["ADC"]  # ADC is a computed map: no bias field
    labels = sitk.ReadImage(str(out / "segmentation" / "segmentation.nii.gz"))
    assert (sitk.GetArrayViewFromImage(labels) == LABELS["liver"]).sum() > 0
    assert (out / "report" / "report.html").is_file()


def test_liver_first_of_the_real_data_engine_is_its_liver_stage(real_mr_run):
    """Before registering, the real-data engine's liver stage finds the reference's liver (the registration's
    fixed mask); the segmentation then reuses that stage on the same fixed image instead of computing it again."""
    out, code, printed = real_mr_run
    assert code == 0, printed
    note = json.loads((out / "registration" / "study.json").read_text())["meta"]["registration"]
    assert note["mask"] == "liver" and note["reference"] == "T2"
    first = note["liver_first"]
    assert first["mask"] == "liver" and first["engine"] == "liverlesion" and first["pass"] == "liver stage"
    assert first["series"] == "T2"
    info = json.loads((out / "segmentation" / "segmentation.json").read_text())
    assert info["series"] == "T2" and info["timings"]["liver_stage_reused"]  # its grid and voxels: the reference's


def test_a_study_no_engine_serves_gets_a_clear_error(shared_data, tmp_path, capsys):
    from HCCFusionLib.io import save_study
    from HCCFusionLib.study import Series, Study

    study = Study("PETONLY")
    study.add(Series("PET", "PET", sitk.ReadImage(str(shared_data / "real" / "sts" / "STS_001" / "PET_image.nii.gz"))))
    save_study(study, tmp_path / "study")
    assert cli.main(["--progress", "none", "run", str(tmp_path / "study"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Stage 'segmentation' failed" in err and "needs a CT series (any phase) or an MR series" in err
    assert "Traceback" not in err and not (tmp_path / "out" / "segmentation").exists()
