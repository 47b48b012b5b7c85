"""The verbs that run one late stage alone from a run folder's files: `report`, `export-dicom`, `stage`.

One small phantom run folder (`pipeline.run`, as in test_pipeline.py) is shared by the module; tests that change
a run folder work on a copy. The report test compares, byte for byte, the HTML that `run` wrote
(report.from_results), the `report` verb's in a child process (report.from_folder) and the Slicer panel's
(HCCFusionLogic on real MRML, its report action running the verb).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from HCCFusionLib import cli, pipeline
from HCCFusionLib.io import save_image, save_study
from HCCFusionLib.layout import RunFolder
from HCCFusionLib.phantom import make_patient
from HCCFusionLib.radiomics import PRESET_DIR

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:The string .* is unlikely to represent the intended person name")


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    """`run` on a two-lesion phantom with its truth segmentation, first-order features only, the demo model."""
    import yaml

    root = tmp_path_factory.mktemp("verbs")
    preset = yaml.safe_load((PRESET_DIR / "ct_v1.yaml").read_text())
    preset.update(name="ct_fast", featureClass={"firstorder": []}, imageType={"Original": {}})
    preset["preprocess"]["resample_mm"] = None
    (root / "ct_fast_v1.yaml").write_text(yaml.safe_dump(preset))
    patient = make_patient(5, "small", n_tumours=2, misalignment="rigid")
    save_study(patient.study, root / "study")
    save_image(patient.labels, root / "labels.nii.gz")
    pipeline.run(root / "study", root / "out", segmentation=root / "labels.nii.gz",
                 presets={"*": root / "ct_fast_v1.yaml"}, mode="rigid", registration_options={"spacing_mm": 6.0},
                 workers=1)
    return root / "out"


@pytest.fixture
def run_copy(run_folder, tmp_path) -> Path:
    return Path(shutil.copytree(run_folder, tmp_path / "out"))


def verb(capsys, *argv) -> tuple[int, str, str]:
    """Run `hccfusion VERB ...` in-process: (exit status, stdout, stderr)."""
    status = cli.main(["--progress", "none", *map(str, argv)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def last_audit(out: Path) -> dict:
    return json.loads(RunFolder(out).audit.read_text().splitlines()[-1])


# ---------------------------------------------------------------- report
def test_report_is_identical_from_run_cli_and_panel(run_folder, tmp_path):
    """One report assembly: the HTML `run` wrote == `hccfusion report` (child process) == the panel's report."""
    paths = RunFolder(run_folder)
    written = paths.report_html.read_bytes()
    assert b"generated" not in written and b"sha256:" in written  # no wall-clock time; input hashes
    record = json.loads(paths.run_record.read_text())
    assert {"study", "segmentation"} <= set(record["inputs"])
    if pipeline.default_model_path():  # shipped demo bundle: prediction, contributions and model card
        assert b"prediction mvi" in written and b"contributions.png" in written
        assert Path(record["model"]).name == pipeline.DEMO_MODEL and "prediction model" in record["inputs"]

    cli_html = tmp_path / "cli" / "report.html"
    done = subprocess.run([sys.executable, "-m", "HCCFusionLib.cli", "--progress", "none", "report", str(run_folder),
                           "--to", str(cli_html.parent)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert cli_html.read_bytes() == written

    mrml = pytest.importorskip("HCCFusionLib.scene", reason="slicer-core (MRML) is not installed")
    sys.path.insert(0, str(ROOT / "HCCFusion"))
    from HCCFusionSlicer import process
    from HCCFusionSlicer.logic import HCCFusionLogic

    from HCCFusionLib.io import read_image

    logic = HCCFusionLogic(process.InProcessRunner(), mrml.new_scene(cache_dir=tmp_path / "cache"))
    reference = mrml.image_to_volume(logic.scene, read_image(paths.registration / "PVP.nii.gz"), "PVP")
    segmentation = logic.loadSegmentation(run_folder, reference, "phantom-5").nodes["segmentation"]
    before = {p: p.stat().st_mtime_ns for p in paths.segmentation.iterdir()}
    panel_html = logic.saveReport(run_folder, tmp_path / "panel" / "report", segmentationNode=segmentation,
                                  referenceNode=reference)
    assert panel_html.read_bytes() == written
    assert {p: p.stat().st_mtime_ns for p in paths.segmentation.iterdir()} == before  # same labels: not rewritten
    # the key images and plots behind the HTML are rendered from the same files by both verb runs
    images = sorted(p.name for p in (paths.report / "images").glob("*.png"))
    assert images and images == sorted(p.name for p in (cli_html.parent / "images").glob("*.png"))
    for name in images:
        assert (cli_html.parent / "images" / name).read_bytes() == (panel_html.parent / "images" / name).read_bytes()


def test_report_verb_replaces_the_report_and_is_audited(run_copy, capsys):
    paths = RunFolder(run_copy)
    expected = paths.report_html.read_bytes()
    shutil.rmtree(paths.report)
    status, out, _ = verb(capsys, "report", run_copy)
    assert status == 0 and out.strip() == str(paths.report_html)
    assert paths.report_html.read_bytes() == expected
    entry = last_audit(run_copy)
    assert entry["stages"] == {"report": "ok"} and str(paths.report_html) in entry["outputs"]


def test_report_verb_bad_inputs(run_copy, tmp_path, capsys):
    status, _, err = verb(capsys, "report", tmp_path / "missing")
    assert status == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "empty").mkdir()
    status, _, err = verb(capsys, "report", tmp_path / "empty")
    assert status == 2 and "is not a run folder" in err and "registration/study.json" in err
    if RunFolder(run_copy).prediction_table.is_file():  # the card is read for a run folder with a prediction
        status, _, err = verb(capsys, "report", run_copy, "--model", tmp_path / "no_bundle")
        assert status == 2 and "Cannot read the model card" in err
    RunFolder(run_copy).run_record.write_text("{not json")
    status, _, err = verb(capsys, "report", run_copy)
    assert status == 2 and "run.json' is not valid JSON" in err
    assert last_audit(run_copy)["stages"]["report"].startswith("failed: ")


# ---------------------------------------------------------------- export-dicom
def test_export_dicom_verb_writes_seg_and_sr_of_the_run_folder(run_copy, tmp_path, capsys):
    pytest.importorskip("highdicom")
    from HCCFusionLib.dicom import read_seg, read_sr
    from HCCFusionLib.io import read_image

    paths = RunFolder(run_copy)
    status, _, err = verb(capsys, "export-dicom", run_copy)  # `run` already wrote dicom/
    assert status == 2 and "already exists" in err
    status, out, _ = verb(capsys, "export-dicom", run_copy, "--overwrite")
    assert status == 0 and str(paths.sr) in out
    labels, _ = read_seg(paths.seg, reference=read_image(paths.registration / "PVP.nii.gz"))
    np.testing.assert_array_equal(np.asarray(labels), np.asarray(read_image(paths.labels)))
    sr = read_sr(paths.sr)
    rows = sr[sr["lesion"].str.startswith("Lesion")].reset_index(drop=True)
    lesions = pd.read_csv(paths.lesions)
    lirads = pd.read_csv(paths.lirads_table, index_col="lesion")
    assert list(rows["lesion"]) == [f"Lesion {n}" for n in lesions["lesion"]]
    np.testing.assert_allclose(rows["volume_mm3"], lesions["volume_ml"] * 1000.0, rtol=1e-6)
    np.testing.assert_allclose(rows["diameter_mm"], lesions["max_diameter_mm"], atol=0.01)
    assert list(rows["lirads"]) == list(lirads.loc[lesions["lesion"], "category"])
    if paths.prediction_table.is_file():
        prediction = pd.read_csv(paths.prediction_table, index_col=0)
        assert sr.loc[sr["lesion"] == "Prediction", "p_mvi"].item() == pytest.approx(prediction["probability"].item())
    assert last_audit(run_copy)["stages"] == {"export-dicom": "ok"}
    status, _, _ = verb(capsys, "export-dicom", run_copy, "--to", tmp_path / "elsewhere", "--reference", "PVP")
    assert status == 0 and (tmp_path / "elsewhere" / "seg.dcm").is_file()


def test_export_dicom_verb_bad_inputs(run_copy, tmp_path, capsys):
    pytest.importorskip("highdicom")
    paths = RunFolder(run_copy)
    status, _, err = verb(capsys, "export-dicom", run_copy, "--reference", "HBP", "--to", tmp_path / "a")
    assert status == 2 and "no series or phase 'HBP'" in err and len(err.strip().splitlines()) == 1
    status, _, err = verb(capsys, "export-dicom", run_copy, "--study", RunFolder(run_copy).registration,
                          "--to", tmp_path / "b")
    assert status == 2 and "has no DICOM series of phase PVP" in err
    manifest = json.loads(paths.registered_study.read_text())  # a DICOM study whose files were moved away
    reference = next(s for s in manifest["series"] if s["name"] == "PVP")
    reference["meta"]["files"] = [str(tmp_path / "moved" / "IM0001.dcm")]
    paths.registered_study.write_text(json.dumps(manifest))
    status, _, err = verb(capsys, "export-dicom", run_copy, "--to", tmp_path / "c")
    assert status == 2 and "are gone" in err and "--study" in err
    shutil.rmtree(paths.segmentation)
    status, _, err = verb(capsys, "export-dicom", run_copy, "--to", tmp_path / "d")
    assert status == 2 and "segmentation.nii.gz' is missing" in err
    assert not any((tmp_path / name).exists() for name in "abcd")  # nothing half-written


# ---------------------------------------------------------------- stage
def test_stage_verb_rewrites_the_staging_file_from_lesions_and_clinical_values(run_copy, tmp_path, capsys):
    paths = RunFolder(run_copy)
    written = paths.staging.read_bytes()
    paths.staging.unlink()
    status, out, _ = verb(capsys, "stage", run_copy)  # the study's clinical values + segmentation/lesions.csv
    assert status == 0 and "BCLC C (performance status 1)" in out
    assert paths.staging.read_bytes() == written  # what `run` wrote
    assert last_audit(run_copy)["stages"] == {"stage": "ok"}
    # performance status 0: two lesions of at most 3 cm with Child-Pugh A are BCLC A (early)
    (tmp_path / "clinical.json").write_text(json.dumps({"performance_status": 0}))
    status, out, _ = verb(capsys, "stage", run_copy, "--clinical", tmp_path / "clinical.json")
    staging = pd.read_csv(paths.staging).set_index("system")
    assert status == 0 and staging.loc["bclc", "result"] == "A" and staging.loc["child_pugh", "result"] == "A"
    # from a lesion table and clinical values alone, into a new folder
    pd.DataFrame([{"study_id": "X", "bilirubin": 1.0, "albumin": 4.0, "inr": 1.0, "ascites": "none",
                   "encephalopathy": "none", "performance_status": 0, "vascular_invasion": False,
                   "extrahepatic_spread": False}]).to_csv(tmp_path / "clinical.csv", index=False)
    lesions = pd.read_csv(paths.lesions).head(1)
    lesions.to_csv(tmp_path / "one_lesion.csv", index=False)
    status, _, _ = verb(capsys, "stage", tmp_path / "new", "--lesions", tmp_path / "one_lesion.csv",
                        "--clinical", tmp_path / "clinical.csv")
    staging = pd.read_csv(RunFolder(tmp_path / "new").staging).set_index("system")
    expected = "0" if lesions["max_diameter_mm"].item() <= 20 else "A"  # single nodule: <= 2 cm is very early
    assert status == 0 and staging.loc["bclc", "result"] == expected


def test_stage_verb_bad_inputs(run_copy, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    status, _, err = verb(capsys, "stage", tmp_path / "empty")
    assert status == 2 and "No clinical values" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "bad.json").write_text(json.dumps({"bilirubin": 1.0, "lactate": 2.0}))
    status, _, err = verb(capsys, "stage", run_copy, "--clinical", tmp_path / "bad.json")
    assert status == 2 and "Unknown clinical variable(s) ['lactate']" in err
    pd.DataFrame({"bilirubin": [1.0, 2.0]}).to_csv(tmp_path / "two.csv", index=False)
    status, _, err = verb(capsys, "stage", run_copy, "--clinical", tmp_path / "two.csv")
    assert status == 2 and "has 2 rows" in err
    pd.DataFrame({"lesion": [1], "diameter": [12.0]}).to_csv(tmp_path / "lesions.csv", index=False)
    status, _, err = verb(capsys, "stage", run_copy, "--lesions", tmp_path / "lesions.csv")
    assert status == 2 and "lacks column(s)" in err
    status, _, err = verb(capsys, "stage", run_copy, "--clinical", tmp_path / "none.json")
    assert status == 2 and "does not exist" in err
