"""`hccfusion run --deep-model BUNDLE --radiomics-backend/--radiomics-device`: the deep fusion prediction as a stage of
`run` (resumable, in the report) and the radiomics backend recorded in the run's provenance."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from HCCFusionLib import cli, pipeline
from HCCFusionLib.errors import HCCFusionError, InputError
from HCCFusionLib.io import save_image, save_study
from HCCFusionLib.layout import DEEP_STAGE, RunFolder
from HCCFusionLib.phantom import make_patient
from HCCFusionLib.radiomics import PRESET_DIR
from HCCFusionLib.resume import RESUMED

pytest.importorskip("torch")
FAST = ["--mode", "rigid", "--registration-spacing", "6", "--workers", "1"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A small phantom study with its truth label map, a first-order preset and a 1-epoch late-fusion deep bundle
    (AP, PVP, DP; no clinical inputs)."""
    import yaml

    from HCCFusionLib.deepfusion.bundle import save_deep_bundle
    from HCCFusionLib.deepfusion.model import DeepFusion
    from HCCFusionLib.phantom.deep_cohort import planted_cohort

    root = tmp_path_factory.mktemp("inputs")
    patient = make_patient(5, "small", n_tumours=2, misalignment="rigid")
    save_study(patient.study, root / "study")
    save_image(patient.labels, root / "labels.nii.gz")
    preset = yaml.safe_load((PRESET_DIR / "ct_v1.yaml").read_text())
    preset.update(name="ct_fast", featureClass={"firstorder": []}, imageType={"Original": {}})
    preset["preprocess"]["resample_mm"] = None
    (root / "ct_fast_v1.yaml").write_text(yaml.safe_dump(preset))
    cohort = planted_cohort(8, "kinetics", seed=0)
    model = DeepFusion(fusion="late", epochs=1, threads=1, seed=0).fit(cohort.table[["patches"]], cohort.y)
    save_deep_bundle(model, root / "deep", {"endpoint": "label"})
    return root


def _args(root, out, *extra):
    return ["--progress", "none", "run", str(root / "study"), "--out", str(out), "--segmentation",
            str(root / "labels.nii.gz"), "--preset", str(root / "ct_fast_v1.yaml"), *FAST, *extra]


@pytest.mark.slow  # ~12 s: a small run (registration 4 s), its resume (2 s) and the 1-epoch bundle (3 s)
def test_run_with_deep_model_and_torch_radiomics_resumes_and_reports(inputs, tmp_path, capsys):
    from HCCFusionLib.report import from_folder, write_report

    out = tmp_path / "out"
    args = _args(inputs, out, "--deep-model", str(inputs / "deep"), "--radiomics-backend", "torch",
                 "--radiomics-device", "cpu")
    assert cli.main(args) == 0
    assert "deep fusion prediction of 2 lesion(s)" in capsys.readouterr().out
    paths = RunFolder(out)
    deep = pd.read_csv(paths.deep_prediction / "prediction.csv", index_col=0)
    attention = pd.read_csv(paths.deep_prediction / "attention.csv", index_col=0)
    lesions = pd.read_csv(paths.lirads_lesions, index_col=0)
    assert list(deep.index) == list(lesions.index) and deep["p_1"].between(0, 1).all()
    assert list(attention.columns) == ["AP", "PVP", "DP"] and (paths.deep_prediction / "gradcam.npz").is_file()
    if pipeline.default_model_path():  # the deep stage runs after the prediction stage: both stay
        assert paths.prediction_table.is_file() and paths.contributions.is_file()
    # provenance: run.json and the radiomics diagnostics name the backend and device; the bundle's hash is listed
    record = json.loads(paths.run_record.read_text())
    assert record["radiomics"] == {"backend": "torch", "device": "cpu"}
    assert record["inputs"]["deep fusion model"] == str(inputs / "deep" / "checksums.sha256")
    assert json.loads(paths.radiomics_diagnostics.read_text())["extraction"]["backend"] == "torch"
    # the report shows the deep fusion section, the same as `report` (from the folder alone) writes it
    html = paths.report_html.read_text()
    assert "Deep multi-phase fusion" in html and "Per-phase attention" in html and "gradcam" in html
    assert write_report(from_folder(out), tmp_path / "again").read_text() == html
    # the stage is recorded in stages.json with its files; a resumed run reads the early stages back and redoes it
    manifest = json.loads(paths.stage_manifest.read_text())["stages"]
    assert sorted(manifest[DEEP_STAGE]["files"]) == [f"prediction/deep/{f}" for f in
                                                      ("attention.csv", "gradcam.npz", "prediction.csv")]
    first = (paths.deep_prediction / "prediction.csv").read_bytes()
    (paths.deep_prediction / "prediction.csv").unlink()  # as if killed during the deep stage
    assert cli.main(args + ["--resume"]) == 0
    assert (paths.deep_prediction / "prediction.csv").read_bytes() == first
    audit = [json.loads(line) for line in paths.audit.read_text().splitlines()]
    assert audit[-1]["stages"]["radiomics"] == f"skipped: {RESUMED}" and audit[-1]["stages"][DEEP_STAGE] == "ok"
    # another backend is another setting: --resume refuses it
    assert cli.main(_args(inputs, out, "--deep-model", str(inputs / "deep"), "--resume")) == 2
    # a run without the models over it: refused without --overwrite; with it, no earlier prediction stays behind
    assert cli.main(_args(inputs, out, "--model", "none")) == 2
    assert cli.main(_args(inputs, out, "--model", "none", "--overwrite")) == 0
    assert not paths.prediction_table.exists() and not paths.deep_prediction.exists()


def test_bad_backend_device_or_bundle_refused_before_any_stage(inputs, tmp_path):
    out = tmp_path / "out"
    run = dict(segmentation=inputs / "labels.nii.gz", model="none")
    with pytest.raises(InputError, match="needs --radiomics-backend torch"):
        pipeline.run(inputs / "study", out, radiomics_device="cpu", **run)
    with pytest.raises(InputError, match="not one of"):
        pipeline.run(inputs / "study", out, radiomics_backend="gpu", **run)
    with pytest.raises(InputError, match="cuda:99"):  # no such GPU here (nor on a one-GPU machine)
        pipeline.run(inputs / "study", out, radiomics_backend="torch", radiomics_device="cuda:99", **run)
    (tmp_path / "empty").mkdir()
    with pytest.raises(HCCFusionError):
        pipeline.run(inputs / "study", out, deep_model=tmp_path / "empty", **run)
    assert not out.exists() or not any(out.iterdir())
    assert cli.main(["--progress", "none", "run", str(inputs / "study"), "--out", str(out), "--radiomics-device",
                     "cpu"]) == 2
    # cohort-run checks the same before any study starts
    from HCCFusionLib.cohort_run import cohort_run

    (tmp_path / "cohort.csv").write_text(f"study_id,path\nA,{inputs / 'study'}\n")
    with pytest.raises(InputError, match="needs --radiomics-backend torch"):
        cohort_run(tmp_path / "cohort.csv", tmp_path / "cohort", radiomics_device="cpu", model="none")
    assert not (tmp_path / "cohort").exists()


def test_deep_stage_skipped_without_lesion_or_phase(inputs):
    from HCCFusionLib.deepfusion.workflow import check_deep_bundle, deep_stage_skip
    from HCCFusionLib.io import load_study

    study = load_study(inputs / "study")
    phases = check_deep_bundle(inputs / "deep")
    assert phases == ("AP", "PVP", "DP") and deep_stage_skip(phases, study, 2) is None
    assert deep_stage_skip(phases, study, 0) == "no lesion found"
    assert "none of the deep model's phases (T2, DWI)" in deep_stage_skip(("T2", "DWI"), study, 2)
