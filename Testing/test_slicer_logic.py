"""The Slicer module's logic on real MRML (slicer-core wheel) driving the real `hccfusion` verbs.

The logic is the part of HCCFusion/HCCFusionSlicer without Qt: scene nodes → study folder → verb → nodes back
in the scene. The verbs run in-process (`InProcessRunner`, calling `HCCFusionLib.cli.main`: fast); the tests
marked "child process" run them through `SubprocessRunner`, as the panel does. The widget and the Qt runner are covered by the self-test inside Slicer (HCCFusion/Testing/Python).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

mrml = pytest.importorskip("HCCFusionLib.scene", reason="slicer-core (MRML) is not installed")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "HCCFusion"))
from HCCFusionSlicer import process  # noqa: E402
from HCCFusionSlicer.choices import UNKNOWN, clinicalFromPanel  # noqa: E402
from HCCFusionSlicer.logic import HCCFusionLogic, predictionText  # noqa: E402

from HCCFusionLib import io  # noqa: E402
from HCCFusionLib.errors import InputError  # noqa: E402
from HCCFusionLib.study import LABELS  # noqa: E402


@pytest.fixture
def logic(tmp_path):
    return HCCFusionLogic(process.InProcessRunner(), mrml.new_scene(cache_dir=tmp_path / "cache"))


@pytest.fixture
def child_logic(tmp_path):
    """The logic with the real runner: each verb in a child process."""
    return HCCFusionLogic(process.SubprocessRunner(), mrml.new_scene(cache_dir=tmp_path / "cache"))


def phase_image(value: float, seed: int, oblique: bool = True) -> sitk.Image:
    """Small CT-like volume with an oblique direction and anisotropic spacing."""
    rng = np.random.default_rng(seed)
    array = (value + rng.normal(0, 12, (9, 21, 24))).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.5, 1.2, 4.0))
    image.SetOrigin((-30.0, 12.5, 100.0))
    if oblique:
        image.SetDirection(sitk.VersorTransform((0.2, -0.4, 0.9), 0.3).GetMatrix())
    return image


def test_export_study_writes_contract_manifest_with_exact_geometry(logic, tmp_path):
    images = {"AP": phase_image(80, 1), "PVP": phase_image(120, 2)}
    nodes = {p: mrml.image_to_volume(logic.scene, img, f"vol_{p}") for p, img in images.items()}
    folder = logic.exportStudy([(nodes["AP"], "AP"), (nodes["PVP"], "PVP")], tmp_path / "S1" / "study", "S1",
                               clinical={"afp": 250.0, "etiology": "HBV"})
    manifest = json.loads((folder / "study.json").read_text())
    assert manifest["study_id"] == "S1"
    assert [(s["name"], s["phase"]) for s in manifest["series"]] == [("AP", "AP"), ("PVP", "PVP")]
    assert manifest["clinical"] == {"afp": 250.0, "etiology": "HBV"}
    study = io.load_study(folder)
    for phase, image in images.items():
        back = study[phase].image
        np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
        np.testing.assert_allclose(back.GetDirection(), image.GetDirection(), atol=1e-6)
        np.testing.assert_allclose(back.GetOrigin(), image.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), atol=1e-6)


def test_export_study_with_mask_from_segmentation_node(logic, tmp_path):
    image = phase_image(120, 3)
    labels = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    labels.CopyInformation(image)
    labels[4:15, 5:16, 2:7] = LABELS["liver"]
    labels[8:11, 8:11, 3:5] = LABELS["tumour"]
    volume = mrml.image_to_volume(logic.scene, image, "PVP")
    segmentation = mrml.labels_to_segmentation(logic.scene, labels, "seg", reference_volume=volume)
    folder = logic.exportStudy([(volume, "PVP")], tmp_path / "study", "S2", masks={"PVP": segmentation})
    mask = io.load_study(folder)["PVP"].masks["labels"]
    np.testing.assert_array_equal(sitk.GetArrayFromImage(mask), sitk.GetArrayFromImage(labels))


def test_export_study_bad_inputs_write_nothing(logic, tmp_path):
    node = mrml.image_to_volume(logic.scene, phase_image(80, 4), "a")
    other = mrml.image_to_volume(logic.scene, phase_image(80, 5), "b")
    with pytest.raises(InputError, match="AP assigned to more than one input"):
        logic.exportStudy([(node, "AP"), (other, "AP")], tmp_path / "dup", "S")
    with pytest.raises(InputError, match="No input volume"):
        logic.exportStudy([], tmp_path / "none", "S")
    assert not (tmp_path / "dup").exists() and not (tmp_path / "none").exists()
    with pytest.raises(InputError, match="cannot name a folder"):
        logic.outputFolder(tmp_path, "../escape")


def test_info_verb_runs_in_child_process_on_exported_study(child_logic, tmp_path):
    logic = child_logic
    nodes = [(mrml.image_to_volume(logic.scene, phase_image(v, s), f"v{s}"), p)
             for v, s, p in ((40, 1, "NC"), (90, 2, "AP"), (120, 3, "PVP"))]
    folder = logic.exportStudy(nodes, logic.outputFolder(tmp_path, "S3") / "study", "S3")
    text = logic.info(folder)
    assert "Study S3" in text
    for phase in ("NC", "AP", "PVP"):
        assert phase in text


@pytest.mark.parametrize("runner", [process.SubprocessRunner, process.InProcessRunner])
def test_failed_verb_raises_its_own_error_message(runner, tmp_path):
    missing = tmp_path / "no_such_study"
    with pytest.raises(process.CliError) as err:
        runner().run(process.CliJob("info", [missing]))
    assert str(missing) in str(err.value)
    assert "Traceback" not in str(err.value)
    finished = []
    runner().start(process.CliJob("info", [missing]), None, lambda result, error: finished.append((result, error)))
    assert finished[0][0] is None and str(missing) in str(finished[0][1])


def test_progress_lines_are_parsed():
    assert process.parseProgress("PROGRESS 0.250 registering AP") == (0.25, "registering AP")
    assert process.parseProgress("PROGRESS 1.7 done") == (1.0, "done")
    assert process.parseProgress("PROGRESS x y") is None
    assert process.parseProgress("INFO something") is None
    command = process.CliJob("register", ["s", "--mode", "rigid"]).command("py")
    assert command == ["py", "-m", "HCCFusionLib.cli", "--progress", "lines", "register", "s", "--mode", "rigid"]


def test_kill_process_tree_ends_grandchildren():
    psutil = pytest.importorskip("psutil")
    script = ("import subprocess, sys, time; "
              "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", script], start_new_session=True)
    deadline = time.time() + 20
    while not psutil.Process(proc.pid).children() and time.time() < deadline:
        time.sleep(0.05)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children, "the test process did not start its child"
    process.killProcessTree(proc)
    assert proc.poll() is not None
    gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive


def test_phantom_sample_and_segmentation_round_trip(logic, tmp_path):
    sample = logic.loadPhantom(seed=3, size="small")
    volumes = sample.nodes["volumes"]
    assert set(volumes) >= {"NC", "AP", "PVP", "DP"}
    truth = sample.nodes["segmentation"]
    names = {truth.GetSegmentation().GetNthSegment(i).GetName()
             for i in range(truth.GetSegmentation().GetNumberOfSegments())}
    assert {"liver", "tumour"} <= names
    sh = logic.scene.GetSubjectHierarchyNode()
    study_item = sh.GetItemParent(sh.GetItemByDataNode(volumes["PVP"]))
    assert sh.GetItemLevel(study_item) == "Study"
    # existing-segmentation path: export on the reference grid, load back as the "segment" output layout
    out = tmp_path / "out"
    labels_file = logic.exportSegmentation(truth, volumes["PVP"], out / "segmentation" / "segmentation.nii.gz")
    exported = sitk.ReadImage(str(labels_file))
    reference = mrml.volume_to_image(volumes["PVP"])
    assert exported.GetSize() == reference.GetSize()
    loaded = logic.loadSegmentation(out, volumes["PVP"], "P3").nodes["segmentation"]
    again = mrml.segmentation_to_labels(loaded, reference)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(again), sitk.GetArrayFromImage(exported))
    assert sh.GetItemParent(sh.GetItemByDataNode(loaded)) == sh.GetItemChildWithName(
        sh.GetItemChildWithName(sh.GetSceneItemID(), "Anonymous"), "P3")


@pytest.fixture(scope="module")
def fusion_bundle(tmp_path_factory):
    """A small MVI model trained with `hccfusion train` on a phantom cohort's simulated features."""
    from HCCFusionLib import phantom

    folder = tmp_path_factory.mktemp("fusion")
    cohort = phantom.make_cohort(40, 3)
    features = cohort.simulated_features(seed=0)
    features.to_csv(folder / "features.csv")
    cohort.table.to_csv(folder / "clinical.csv")
    process.InProcessRunner().run(process.CliJob("train", [folder / "features.csv", folder / "clinical.csv",
                                                            "--endpoint", "mvi", "--cv", "3", "--out", folder / "bundle"]))
    return folder / "bundle", features, cohort.table


def test_predict_verb_gives_result_text_evidence_and_contribution_chart(logic, tmp_path, fusion_bundle):
    bundle, features, clinical = fusion_bundle
    study = features.index[0]
    features.loc[[study]].rename_axis("study_id").to_csv(tmp_path / "features_wide.csv")
    values = {k: v for k, v in clinical.loc[study].items() if k in ("afp", "bilirubin", "albumin", "inr", "ascites",
              "encephalopathy", "etiology", "performance_status", "vascular_invasion", "extrahepatic_spread",
              "tumour_number", "tumour_size_mm", "center", "age", "sex") and not pd.isna(v)}
    clinical_file = logic.writeClinical(values, study, tmp_path / "prediction_input" / "clinical.csv")
    job = logic.predictionJob(tmp_path / "features_wide.csv", bundle, tmp_path, clinical_file)
    result = logic.run(job, lambda: logic.loadPrediction(tmp_path, study), waitForCompletion=True)
    written = pd.read_csv(tmp_path / "prediction" / "prediction.csv")
    probability, low, high = written.loc[0, ["probability", "low", "high"]]
    assert result.summary == f"mvi: probability {probability:.2f} (95% CI {low:.2f}–{high:.2f})"
    assert 0 <= low <= probability <= high <= 1
    top = mrml.table_to_dataframe(result.nodes["top"])
    assert 0 < len(top) <= 15 and list(top["contribution"].abs()) == sorted(top["contribution"].abs(), reverse=True)
    series = result.nodes["chart"].GetNthPlotSeriesNode(0)
    assert series.GetPlotType() == series.PlotTypeBar and series.GetTableNode() is result.nodes["top"]
    assert series.GetYColumnName() == "contribution" and series.GetLabelColumnName() == "name"
    evidence = mrml.table_to_dataframe(result.nodes["evidence"])
    assert {"feature", "value", "definition", "contribution"} <= set(evidence.columns)


def test_prediction_text_formats():
    assert predictionText(pd.DataFrame({"endpoint": ["os"], "risk": [1.5], "risk_group": ["high"], "low": [np.nan],
                                        "high": [np.nan], "interval": ["none"]})) == "os: risk 1.50, risk group high"
    assert predictionText(pd.DataFrame({"endpoint": ["diagnosis"], "predicted": ["HCC"]})) == "diagnosis: predicted HCC"


def test_bclc_stage_uses_lesion_table(logic):
    lesions = mrml.dataframe_to_table(logic.scene, pd.DataFrame({"lesion": [1], "max_diameter_mm": [18.0]}), "les")
    clinical = {"bilirubin": 1.0, "albumin": 4.0, "inr": 1.0, "ascites": "none", "encephalopathy": "none",
                "performance_status": 0, "vascular_invasion": False, "extrahepatic_spread": False}
    assert logic.bclcStage(clinical, lesions).startswith("BCLC 0")
    assert "cannot stage" in logic.bclcStage({"bilirubin": 1.0})


def test_panel_clinical_values_become_study_clinical_fields(logic, tmp_path):
    panel = {"afp": 420.0, "bilirubin": -1.0, "albumin": 3.4, "inr": -1.0, "ascites": "mild",
             "encephalopathy": UNKNOWN, "etiology": "HCV", "performance_status": "1", "vascular_invasion": "no",
             "extrahepatic_spread": UNKNOWN}
    clinical = clinicalFromPanel(panel)
    assert clinical == {"afp": 420.0, "albumin": 3.4, "ascites": "mild", "etiology": "HCV",
                        "performance_status": 1, "vascular_invasion": False}
    node = mrml.image_to_volume(logic.scene, phase_image(120, 6), "PVP")
    folder = logic.exportStudy([(node, "PVP")], tmp_path / "study", "S6", clinical=clinical)
    assert io.load_study(folder).clinical.to_dict() | clinical == io.load_study(folder).clinical.to_dict()


@pytest.fixture
def aligned_phantom(logic, tmp_path):
    """A small phantom whose phases share one grid (as after registration), saved as a study folder."""
    from HCCFusionLib import phantom

    patient = phantom.make_patient(2, "small", misalignment="none")
    folder = io.save_study(patient.study, tmp_path / "registration")
    reference = mrml.image_to_volume(logic.scene, patient.study["PVP"].image, "PVP")
    truth = mrml.labels_to_segmentation(logic.scene, patient.labels, "truth", reference_volume=reference)
    return patient, folder, truth


def test_lirads_assessment_and_reader_overrides_are_recorded(logic, tmp_path, aligned_phantom):
    patient, folder, truth = aligned_phantom
    result = logic.assessLirads(folder, truth, tmp_path / "out", "P2")
    table = result.nodes["lirads"]
    frame = mrml.table_to_dataframe(table)
    assert len(frame) >= 1 and {"lesion", "aphe", "washout", "capsule", "diameter_mm", "category"} <= set(frame.columns)
    assert (tmp_path / "out" / "lirads" / "lirads.csv").exists()
    assert result.summary.startswith(f"{len(frame)} observation(s)")
    # the reader flips the first observation's washout and sets another's category, in the table node
    lesion = int(frame["lesion"].iloc[0])
    row = frame.index[0]
    frame.loc[row, "washout"] = not bool(frame.loc[row, "washout"])
    edited = mrml.dataframe_to_table(logic.scene, frame.assign(category=frame["category"].where(
        frame.index != row, "LR-M")), "edited")
    made = logic.applyLiradsOverrides(edited, reader="Dr Test")
    assert {(o.lesion, o.what) for o in made} == {(lesion, "washout"), (lesion, "category")}
    assert all(o.reader == "Dr Test" for o in made)
    after = mrml.table_to_dataframe(edited)
    assert after.loc[after["lesion"] == lesion, "category"].item() == "LR-M"
    overrides = pd.read_csv(tmp_path / "out" / "lirads" / "lirads_overrides.csv")
    assert len(overrides) == 2 and set(overrides["what"]) == {"washout", "category"}
    (record,) = [json.loads(line) for line in (tmp_path / "out" / "audit.jsonl").read_text().splitlines()]
    assert record["event"] == "lirads_override" and record["reader"] == "Dr Test"  # the panel's edits are audited
    assert {(o["lesion"], o["what"]) for o in record["overrides"]} == {(lesion, "washout"), (lesion, "category")}
    assert logic.applyLiradsOverrides(edited, reader="Dr Test") == []  # nothing changed since


def test_lirads_table_rejects_non_boolean_edit(logic, tmp_path, aligned_phantom):
    _, folder, truth = aligned_phantom
    frame = mrml.table_to_dataframe(logic.assessLirads(folder, truth, tmp_path / "out", "P2").nodes["lirads"])
    edited = mrml.dataframe_to_table(logic.scene, frame.astype({"aphe": object}).assign(aphe="maybe"), "bad")
    with pytest.raises(InputError, match="not yes/no"):
        logic.applyLiradsOverrides(edited, reader="Dr Test")


def test_export_dicom_seg_and_sr_reload(logic, tmp_path, aligned_phantom):
    """The panel's DICOM action is the `export-dicom` verb on the run folder (its segmentation node written there)."""
    pytest.importorskip("highdicom")
    from HCCFusionLib import dicom
    from HCCFusionLib.lesions import LesionTable

    patient, folder, truth = aligned_phantom
    out = folder.parent
    reference = logic.scene.GetFirstNodeByName("PVP")
    written = logic.exportDicom(out, "PVP", segmentationNode=truth, referenceNode=reference)
    assert written["seg"] == out / "dicom" / "seg.dcm" and (out / "segmentation" / "lesions.csv").is_file()
    import pydicom

    assert pydicom.dcmread(written["seg"], stop_before_pixels=True).PatientID.startswith("HCCF-")  # de-identified
    pushed = logic.preparePacs(out / "dicom", "http://pacs").job.args
    assert pushed[1:3] == [written["seg"], written["sr"]] and written["source"] and set(written["source"]) <= set(pushed)
    labels, _ = dicom.read_seg(written["seg"], reference=patient.study["PVP"].image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels) > 0, sitk.GetArrayFromImage(patient.labels) > 0)
    measured = dicom.read_sr(written["sr"])
    assert measured["lesion"].tolist()[-1] == "Liver"  # the liver volume follows the lesions
    measured = measured[measured["lesion"].str.startswith("Lesion")]
    expected = LesionTable.from_labels(patient.labels)[1].frame
    assert len(measured) == len(expected) == len(patient.lesions)
    np.testing.assert_allclose(sorted(measured["diameter_mm"]), sorted(expected["max_diameter_mm"]), atol=0.1)
    # after a LI-RADS assessment the SR carries each observation's category and features
    assessment = logic.assessLirads(folder, truth, out, "P2")
    measured = dicom.read_sr(logic.exportDicom(out, "PVP", tmp_path / "dicom2", truth, reference)["sr"]).dropna(
        subset=["lirads"])
    categories = mrml.table_to_dataframe(assessment.nodes["lirads"])["category"].tolist()
    assert sorted(measured["lirads"]) == sorted(categories)


def test_radiomics_verb_on_selected_series_fills_feature_tables(logic, tmp_path, aligned_phantom):
    patient, folder, truth = aligned_phantom
    out = tmp_path / "out"
    study = logic.subsetStudy(folder, ["AP", "PVP"], out / "radiomics_input" / "study")
    assert [s["name"] for s in json.loads((study / "study.json").read_text())["series"]] == ["AP", "PVP"]
    with pytest.raises(InputError, match="has no series HBP"):
        logic.subsetStudy(folder, ["HBP"], tmp_path / "nope")
    segmentation = logic.exportSegmentation(truth, logic.scene.GetFirstNodeByName("PVP"),
                                            out / "radiomics_input" / "segmentation.nii.gz")
    job = logic.radiomicsJob(study, segmentation, out, preset="ct", regions="tumour", imageTypes="Original")
    assert job.args[-6:] == ["--preset", "ct", "--regions", "tumour", "--image-types", "Original"]
    fractions = []
    result = logic.run(job, lambda: logic.loadFeatures(out, "P2"), progress=lambda f, m: fractions.append(f),
                       waitForCompletion=True)
    assert fractions and fractions[-1] == 1.0 and fractions == sorted(fractions)
    features = mrml.table_to_dataframe(result.nodes["features"])
    written = pd.read_csv(out / "radiomics" / "features_long.csv")
    assert len(features) == len(written) > 50
    assert set(features["series"]) == {"AP", "PVP"} and set(features["region"]) == {"tumour"}
    assert "kinetics" in result.nodes and "definitions" in result.nodes


def test_report_from_stage_outputs(logic, tmp_path, aligned_phantom):
    """The panel's report action is the `report` verb on the run folder (its segmentation node written there)."""
    patient, folder, truth = aligned_phantom
    out = folder.parent
    logic.assessLirads(folder, truth, out, "P2")
    (out / "prediction").mkdir(parents=True)
    pd.DataFrame({"endpoint": ["mvi"], "probability": [0.7]}, index=pd.Index(["P2"], name="study_id")).to_csv(
        out / "prediction" / "prediction.csv")  # the layout `hccfusion predict` writes
    from HCCFusionLib.registration import quality

    (out / "registration" / "qc").mkdir(parents=True)
    board = quality.checkerboard(patient.study["PVP"].image, patient.study["AP"].image)
    io.save_image(board, out / "registration" / "qc" / "AP_checkerboard.nii.gz")
    path = logic.saveReport(out, tmp_path / "reports" / "report", segmentationNode=truth,
                            referenceNode=logic.scene.GetFirstNodeByName("PVP"))
    html = path.read_text()
    assert path == tmp_path / "reports" / "report" / "report.html"
    assert patient.study.study_id in html  # the run folder's study
    assert "LR-5" in html and "mvi" in html and "segmentation node &#39;truth&#39;" in html
    images = list((path.parent / "images").glob("*.png"))
    assert images and all(f'images/{image.name}' in html for image in images)  # key images with contours
    assert "images/checkerboard_AP.png" in html  # the registration QC checkerboard
    with pytest.raises(process.CliError, match="not a run folder"):
        logic.saveReport(tmp_path / "reports")


def test_register_verb_places_moving_volume_under_a_transform_that_aligns_it(logic, tmp_path):
    from HCCFusionLib import phantom

    patient = phantom.make_patient(5, "small", phases=("AP", "PVP"), misalignment="rigid")
    nodes = {s.name: mrml.image_to_volume(logic.scene, s.image, s.name) for s in patient.study}
    out = logic.outputFolder(tmp_path, "P5")
    liver = mrml.labels_to_segmentation(logic.scene, patient.labels, "truth", reference_volume=nodes["PVP"])
    for mask in (False, True):  # the second run (liver-masked) replaces the first (files.atomic_folder's policy)
        study = logic.exportStudy([(nodes["AP"], "AP"), (nodes["PVP"], "PVP")], out / "study", "P5",
                                  masks={"PVP": liver} if mask else None)
        job = logic.registrationJob(study, out, "PVP", "rigid", liverMask=mask)
        assert ("--mask" in job.args) == mask
        result = logic.run(job, lambda: logic.loadRegistration(out, {"AP": nodes["AP"]}, "P5"),
                           waitForCompletion=True)
    assert sorted(p.name for p in out.iterdir()) == ["audit.jsonl", "registration", "study"]  # no staging or old folder left
    assert logic.scene.GetNodesByName("P5_AP_to_reference").GetNumberOfItems() == 1  # the re-run replaced its nodes
    transform = result.nodes["transforms"]["AP"]
    assert nodes["AP"].GetParentTransformNode() is transform
    assert nodes["PVP"].GetParentTransformNode() is None
    # the transform node maps reference points onto the moving series' anatomy (landmark TRE)
    mapped = np.array([mrml.node_to_transform(transform).TransformPoint(tuple(p)) for p in patient.landmarks["PVP"]])
    tre = np.linalg.norm(mapped - patient.landmarks["AP"], axis=1)
    assert np.median(tre) < 2.0
    resampled = mrml.volume_to_image(result.nodes["resampled"]["AP"])
    assert resampled.GetSize() == patient.study["PVP"].image.GetSize()
    if "fused" in result.nodes:
        assert mrml.channel_names(result.nodes["fused"]) and result.nodes["fused"].IsA("vtkMRMLVectorVolumeNode")
    assert result.nodes["qc"].GetNumberOfRows() >= 1
    sh = logic.scene.GetSubjectHierarchyNode()
    assert sh.GetItemParent(sh.GetItemByDataNode(transform)) == sh.GetItemChildWithName(
        sh.GetItemChildWithName(sh.GetSceneItemID(), "Anonymous"), "P5")


def _shipped_model() -> bool:
    from HCCFusionLib.segmentation.bundle import default_bundle_path

    return (default_bundle_path() / "plans.json").is_file()


@pytest.mark.skipif(not _shipped_model(), reason="the sample segmentation model is not shipped in this checkout yet")
def test_segment_verb_with_shipped_model_gives_segmentation_node_and_lesion_table(logic, tmp_path, aligned_phantom):
    patient, folder, _ = aligned_phantom
    reference = logic.scene.GetFirstNodeByName("PVP")
    out = tmp_path / "out"
    job = logic.segmentationJob(folder, out, tta=False, reference="PVP", overlap=0.0)  # fewest windows: fast
    assert job.args[-5:] == ["--reference", "PVP", "--overlap", "0", "--no-tta"]
    result = logic.run(job, lambda: logic.loadSegmentation(out, reference, "P2"), waitForCompletion=True)
    segmentation = result.nodes["segmentation"]
    labels = mrml.segmentation_to_labels(segmentation, patient.study["PVP"].image)
    got, truth = sitk.GetArrayFromImage(labels), sitk.GetArrayFromImage(patient.labels)
    liver = lambda a: np.isin(a, [LABELS["liver"], LABELS["tumour"]])  # noqa: E731
    dice = 2 * (liver(got) & liver(truth)).sum() / (liver(got).sum() + liver(truth).sum())
    assert dice > 0.8
    assert result.nodes["lesions"].GetNumberOfRows() == len(pd.read_csv(out / "segmentation" / "lesions.csv"))
    segment = segmentation.GetSegmentation().GetSegment(segmentation.GetSegmentation().GetSegmentIdBySegmentName("liver"))
    assert "10200004" in segment.GetTerminology()  # SNOMED-CT liver


def test_segment_verb_with_an_nnunet_folder_and_the_panel_channel_map(logic, tmp_path, aligned_phantom):
    from nnunet_models import interval_labels, interval_model

    from HCCFusionLib.segmentation.predictor import postprocess_in_box

    patient, folder, _ = aligned_phantom
    model = interval_model(tmp_path / "model", {"0": "CT"}, read_channel=0, spacing=[5.0, 3.7, 3.7])
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="'0:AP' is not CHANNEL=PHASE"):
        logic.segmentationJob(folder, out, nnunetFolder=model, channelMap="0:AP")
    job = logic.segmentationJob(folder, out, nnunetFolder=model, tta=False, reference="PVP", channelMap=" 0 = AP ;")
    assert job.args[3:8] == ["--nnunet", model, "--channel", "0", "AP"]
    result = logic.run(job, lambda: logic.loadSegmentation(out, logic.scene.GetFirstNodeByName("PVP"), "P2"),
                       waitForCompletion=True)
    reference = patient.study["PVP"].image
    labels = mrml.segmentation_to_labels(result.nodes["segmentation"], reference)
    expected, _, table = postprocess_in_box(interval_labels(patient.study["AP"].image))
    assert np.array_equal(sitk.GetArrayFromImage(labels), sitk.GetArrayFromImage(expected))
    assert result.nodes["lesions"].GetNumberOfRows() == len(table)
