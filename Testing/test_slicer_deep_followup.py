"""The panel's deep fusion step (`predict-deep`) and follow-up step (`run --prior --risk-bundle --deep-model`): the jobs
as built from the panel's choices, the .ui widgets bound to the parameter node, and their outputs loaded into real
slicer-core MRML: prediction and attention tables, Grad-CAM maps as volumes on their lesions, the risk curve + chart.

The run folder is a planted deep-fusion patient (phantom.deep_cohort.save_planted_runs); `predict-deep` runs
in-process with a 1-epoch bundle; the risk curve comes from followup_risk.patient_risk with a small landmark bundle.
"""
from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

mrml = pytest.importorskip("HCCFusionLib.scene", reason="slicer-core (MRML) is not installed")
pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "HCCFusion"))
from HCCFusionSlicer import process  # noqa: E402
from HCCFusionSlicer.choices import STEP_INSTALL_STAGES  # noqa: E402
from HCCFusionSlicer.logic import HCCFusionLogic  # noqa: E402

from HCCFusionLib.errors import InputError  # noqa: E402
from HCCFusionLib.layout import RunFolder  # noqa: E402


@pytest.fixture(scope="module")
def deep_run(tmp_path_factory):
    """(run folder of one planted patient, a 1-epoch late-fusion deep bundle on AP/PVP/DP)."""
    from HCCFusionLib.deepfusion.bundle import save_deep_bundle
    from HCCFusionLib.deepfusion.model import DeepFusion
    from HCCFusionLib.phantom.deep_cohort import planted_cohort, save_planted_runs

    root = tmp_path_factory.mktemp("deep")
    cohort = planted_cohort(6, "kinetics", seed=1)
    model = DeepFusion(fusion="late", epochs=1, threads=1, seed=0).fit(cohort.table[["patches"]], cohort.y)
    bundle = save_deep_bundle(model, root / "bundle", {"endpoint": "label"})
    save_planted_runs(planted_cohort(1, "kinetics", seed=2), root / "cohort")
    return root / "cohort" / "runs" / "P000", bundle


@pytest.fixture
def logic(tmp_path):
    return HCCFusionLogic(process.InProcessRunner(), mrml.new_scene(cache_dir=tmp_path / "cache"))


def test_deep_prediction_loads_tables_and_gradcam_volumes_on_the_lesion(logic, deep_run):
    run, bundle = deep_run
    with pytest.raises(InputError, match="deep fusion bundle"):
        logic.prepareDeepPrediction(run, "P000", run / "no bundle")
    prepared = logic.prepareDeepPrediction(run, "P000", bundle)
    assert prepared.job.verb == "predict-deep" and prepared.job.args == [run, "--model", bundle]
    result = logic.run(prepared.job, prepared.load, waitForCompletion=True)
    paths = RunFolder(run)
    assert result.folder == paths.deep_prediction
    prediction = mrml.table_to_dataframe(result.nodes["prediction"])
    written = pd.read_csv(paths.deep_prediction_table)
    assert prediction["p_1"].to_numpy() == pytest.approx(written["p_1"].to_numpy())
    attention = mrml.table_to_dataframe(result.nodes["attention"])
    assert list(attention.columns) == ["lesion", "AP", "PVP", "DP"]
    assert sorted(result.nodes["gradcam"]) == ["1_AP", "1_DP", "1_PVP"]  # late fusion: one map per phase
    # each map lies on its lesion's patch grid: centred on the lesion, the lesion's voxels under its peak region
    lesions = sitk.ReadImage(str(paths.lesion_map))
    with np.load(paths.deep_gradcam) as saved:
        cam = saved["gradcam"][0]
    for k, key in enumerate(["1_AP", "1_PVP", "1_DP"]):
        node = result.nodes["gradcam"][key]
        assert node.GetName() == f"P000_gradcam_{key}" and node.GetSpacing() == pytest.approx((1.0, 1.0, 1.0))
        image = mrml.volume_to_image(node)
        assert sitk.GetArrayFromImage(image) == pytest.approx(cam[k])
        under = sitk.GetArrayFromImage(sitk.Resample(lesions, image, sitk.Transform(), sitk.sitkNearestNeighbor))
        assert under[8, 8, 8] == 1 and under[0, 0, 0] == 0  # the lesion in the middle of the patch
        centre = np.array(image.GetOrigin()) + 7.5 * np.array(image.GetSpacing())
        assert centre == pytest.approx(written[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].iloc[0].to_numpy())
    assert result.summary.startswith("deep fusion lesion 1: p_0 ") and "(attention AP " in result.summary
    again = logic.loadDeepPrediction(run, "P000")  # loading again replaces the nodes
    assert logic.scene.GetNodesByName("P000_gradcam_1_AP").GetNumberOfItems() == 1
    assert logic.scene.GetNodesByName("P000_deep_attention").GetNumberOfItems() == 1 and again.nodes["attention"]


def test_followup_job_carries_the_panel_choices(logic, deep_run, tmp_path):
    from HCCFusionLib import phantom

    prior, bundle = deep_run
    patient = phantom.make_patient(1, "small", phases=("AP", "PVP"))
    inputs = [(mrml.image_to_volume(logic.scene, s.image, s.name), s.name) for s in patient.study]
    segmentation = mrml.labels_to_segmentation(logic.scene, patient.labels, "truth", reference_volume=inputs[1][0])
    out = tmp_path / "S"
    with pytest.raises(InputError, match="not a completed run folder"):
        logic.prepareFollowup(inputs, out, "S", {}, "PVP", tmp_path, segmentation)
    with pytest.raises(InputError, match="risk bundle .* is not a folder"):
        logic.prepareFollowup(inputs, out, "S", {}, "PVP", prior, segmentation, riskBundle=tmp_path / "none")
    prepared = logic.prepareFollowup(inputs, out, "S", {"afp": 5.0}, "PVP", prior, segmentation, riskBundle=bundle,
                                     mode="rigid", bundleFolder=None, deepBundle=bundle, preset="ct")
    labels = out / "followup_input" / "segmentation.nii.gz"
    assert prepared.job.verb == "run" and prepared.job.args == [
        out / "study", "--out", out, "--prior", prior, "--segmentation", labels, "--reference", "PVP", "--mode",
        "rigid", "--model", "none", "--overwrite", "--risk-bundle", bundle, "--deep-model", bundle, "--preset", "ct"]
    from HCCFusionLib.cli import build_parser

    parsed = build_parser().parse_args(prepared.job.command("py")[3:])  # the verb takes these options
    assert (parsed.prior, parsed.risk_bundle, parsed.deep_model, parsed.overwrite) == (prior, bundle, bundle, True)
    # the exported segmentation lies on the reference series' grid, as `run --segmentation` requires
    reference = sitk.ReadImage(str(out / "study" / "PVP.nii.gz"))
    written = sitk.ReadImage(str(labels))
    assert written.GetSize() == reference.GetSize() and written.GetOrigin() == pytest.approx(reference.GetOrigin())
    assert (sitk.GetArrayFromImage(written) == sitk.GetArrayFromImage(patient.labels)).all()
    without = logic.prepareFollowup(inputs, out, "S", {}, "PVP", prior, segmentation)
    assert without.job.args[-5:] == ["--mode", "deformable", "--model", "none", "--overwrite"]  # nothing optional
    assert STEP_INSTALL_STAGES["followup"] and STEP_INSTALL_STAGES["deepPrediction"] == ("seg",)
    torch = logic.prepareFollowup(inputs, out, "S", {}, "PVP", prior, segmentation, radiomicsBackend="torch",
                                  radiomicsDevice=" cuda:1 ")
    assert torch.job.args[-4:] == ["--radiomics-backend", "torch", "--radiomics-device", "cuda:1"]
    assert build_parser().parse_args(torch.job.command("py")[3:]).radiomics_backend == "torch"


def test_radiomics_backend_choice_reaches_extract_and_the_installer(logic, tmp_path):
    from HCCFusionLib.cli import build_parser

    job = logic.radiomicsJob(tmp_path / "study", tmp_path / "labels.nii.gz", tmp_path, backend="torch", device="cpu")
    assert job.args[-4:] == ["--radiomics-backend", "torch", "--radiomics-device", "cpu"]
    parsed = build_parser().parse_args(job.command("py")[3:])
    assert (parsed.radiomics_backend, parsed.radiomics_device) == ("torch", "cpu")
    assert "--radiomics-backend" not in logic.radiomicsJob(tmp_path, tmp_path, tmp_path).args  # default: pyradiomics
    assert logic.installStages("radiomics", "", "torch") == ("radiomics", "seg")  # torch comes with "seg"
    assert logic.installStages("radiomics", "", "pyradiomics") == ("radiomics",)
    assert logic.installStages("followup", "", "torch") == STEP_INSTALL_STAGES["followup"]


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_followup_results_load_the_risk_curve_as_table_and_chart(logic, deep_run, tmp_path):
    import shutil

    from HCCFusionLib.followup_risk import patient_risk
    from HCCFusionLib.fusion.workflow import ModelSpec, train
    from HCCFusionLib.phantom import followup_cohort

    features, clinical = followup_cohort(40, 0, landmark_months=3.0)
    risk = train(features, clinical, "survival", tmp_path / "risk", ModelSpec(survival_model="coxph"), cv=2,
                 landmark=3.0)
    matches = pd.DataFrame([{"prior_lesion": 1, "lesion": 1, "status": "matched", "prior_diameter_mm": 30.0,
                             "diameter_mm": 36.0, "prior_viable_mm": 30.0, "viable_mm": 36.0}])
    curve, inputs = patient_risk(risk, matches, None)
    run = tmp_path / "S"
    shutil.copytree(deep_run[0], run)
    paths = RunFolder(run)
    paths.followup.mkdir()
    matches.to_csv(paths.followup_matches, index=False)
    curve.to_csv(paths.followup_risk_curve, index=False)
    inputs.to_csv(paths.followup_risk_inputs, index=False)
    from HCCFusionLib.deepfusion.workflow import predict_deep

    predict_deep(run, deep_run[1])
    result = logic.loadFollowup(run, "S")  # what the follow-up step loads after `run`
    tables = result.nodes["tables"]
    assert {"followup_matches", "followup_risk_curve", "followup_risk_inputs"} <= set(tables)
    loaded = mrml.table_to_dataframe(tables["followup_risk_curve"])
    assert loaded["risk"].to_numpy() == pytest.approx(curve["risk"].to_numpy())
    chart = result.nodes["chart"]
    assert chart.GetName() == "S_risk_curve_chart" and chart.GetNumberOfPlotSeriesNodes() == 1
    series = chart.GetNthPlotSeriesNode(0)
    assert (series.GetTableNodeID(), series.GetXColumnName(), series.GetYColumnName()) == (
        tables["followup_risk_curve"].GetID(), "months_since_baseline", "risk")
    assert "S_risk_curve_chart: chart" in result.summary and "deep fusion lesion 1" in result.summary
    assert any(n.GetName() == "S_gradcam_1_AP" for n in result.nodes["deep"])
    logic.loadModalityResults(run, "S")  # loading again replaces the chart, not adds one
    assert logic.scene.GetNodesByName("S_risk_curve_chart").GetNumberOfItems() == 1


def test_deep_and_followup_widgets_are_in_the_ui_and_bound():
    root = ET.parse(ROOT / "HCCFusion" / "Resources" / "UI" / "HCCFusion.ui").getroot()

    def section(name):
        widget = next(w for w in root.iter("widget") if w.get("name") == name)
        names = {w.get("name") for w in widget.iter("widget")}
        bound = {p.findtext("string") for p in widget.iter("property") if p.get("name") == "SlicerParameterName"}
        return names, bound

    names, bound = section("predictionCollapsibleButton")
    assert {"deepBundlePathLineEdit", "deepPredictApplyButton", "deepPredictionStatusLabel"} <= names
    assert "deepBundle" in bound and "predictionBundle" in bound  # beside the other model choice
    assert {"radiomicsBackend", "radiomicsDevice"} <= section("radiomicsCollapsibleButton")[1]
    names, bound = section("resultsCollapsibleButton")
    assert {"priorRunPathLineEdit", "riskBundlePathLineEdit", "followupApplyButton", "followupProgressBar",
            "followupStatusLabel", "loadResultsButton"} <= names
    assert bound == {"priorRun", "riskBundle"}
