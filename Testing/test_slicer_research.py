"""The panel's Cohort & Research section: protocol QC, nomogram and cohort run as jobs, their outputs as nodes.

The job command lines are checked as built; the verbs run in-process (`InProcessRunner`) on tiny real inputs
(DICOM headers of the shared CT slab, a phantom-cohort bundle, two small synthetic CT studies) and the logic loads
what they wrote into real slicer-core MRML; Cancel is checked on a real `cohort-run` child process.
"""
from __future__ import annotations

import ast
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

mrml = pytest.importorskip("HCCFusionLib.scene", reason="slicer-core (MRML) is not installed")
import slicer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "HCCFusion"))
from HCCFusionSlicer import process, readiness  # noqa: E402
from HCCFusionSlicer.choices import ENGINE_AUTO, ENGINE_NNUNET, ENGINE_PHANTOM, STEP_INSTALL_STAGES  # noqa: E402
from HCCFusionSlicer.logic import HCCFusionLogic  # noqa: E402
from HCCFusionSlicer.research import RESEARCH_SUBJECT  # noqa: E402

from HCCFusionLib.errors import InputError  # noqa: E402
from HCCFusionLib.io import save_image, save_study  # noqa: E402
from HCCFusionLib.layout import RunFolder  # noqa: E402
from labelmaps import labelmap, two_phase_study  # noqa: E402

STAGES = {"protocolQc": "protocol-qc", "nomogram": "nomogram", "cohortRun": "cohort-run"}
SECTION = "researchCollapsibleButton"
PRESET = """name: tiny
version: 1
modality: CT
preprocess: {resample_mm: null}
setting: {binWidth: 25}
imageType: {Original: {}}
featureClass: {firstorder: []}
"""


@pytest.fixture
def logic(tmp_path):
    return HCCFusionLogic(process.InProcessRunner(), mrml.new_scene(cache_dir=tmp_path / "cache"))


def parent_names(scene, node) -> tuple:
    """(subject, study) item names above a node in subject hierarchy."""
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    study = sh.GetItemParent(sh.GetItemByDataNode(node))
    return sh.GetItemName(sh.GetItemParent(study)), sh.GetItemName(study)


def nodes_named(scene, name) -> int:
    return scene.GetNodesByName(name).GetNumberOfItems()


def cohort_csv(folder: Path, studies: int, broken: bool = False) -> Path:
    """FOLDER/<folder name>.csv of `studies` small two-phase CT studies with their label maps (+ one study folder
    with no images)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.yaml").write_text(PRESET)
    rows = ["study_id,path,segmentation"]
    for i in range(studies):
        labels = labelmap((40, 40, 12), (2.0, 2.0, 4.0), (((4.0, 2.0, 0.0), 8.0 + 2 * i),), liver_axes=(30, 28, 20))
        save_study(two_phase_study(f"S{i}", labels, 10 * i, air_columns=4), folder / f"s{i}")
        save_image(labels, folder / f"s{i}_labels.nii.gz")
        rows.append(f"S{i},s{i},s{i}_labels.nii.gz")
    if broken:
        (folder / "empty").mkdir()
        rows.append("BROKEN,empty,")
    (folder / f"{folder.name}.csv").write_text("\n".join(rows) + "\n")
    return folder / f"{folder.name}.csv"


# ---------------------------------------------------------------- jobs and rules
def test_research_jobs_carry_the_panel_choices(logic, tmp_path):
    research = logic.researchFolder("", tmp_path)
    assert research == tmp_path / "research" and logic.researchFolder(tmp_path / "R", tmp_path) == tmp_path / "R"
    dicom = tmp_path / "site A dicom"
    dicom.mkdir()
    qc = logic.prepareProtocolQc(dicom, research)
    out = research / "site_A_dicom"  # the library's safe-name rule
    assert qc.job.verb == "protocol-qc" and qc.job.args[1:] == ["--out", out]
    cohort = pd.read_csv(qc.job.args[0])  # a one-site table of the folder, for the verb
    assert cohort.to_dict("records") == [{"path": str(dicom.resolve()), "site": "site_A_dicom"}]
    table = tmp_path / "sites.csv"
    table.write_text("path,site\nx,A\n")
    assert logic.prepareProtocolQc(table, research).job.args == [table, "--out", research / "sites"]
    with pytest.raises(InputError, match="neither a DICOM folder nor a CSV"):
        logic.prepareProtocolQc(tmp_path / "missing", research)
    bundle = tmp_path / "mvi_bundle"
    bundle.mkdir()
    assert logic.prepareNomogram(bundle, research).job.command("py")[3:] == [
        "--progress", "lines", "nomogram", str(bundle), "--out", str(research / "mvi_bundle")]
    run = logic.prepareCohortRun(table, research, ENGINE_PHANTOM, "rigid", bundle, "ct", dask=False)
    assert run.job.verb == "cohort-run" and run.job.args == [
        table, "--out", research / "sites", "--engine", "phantom", "--mode", "rigid", "--model", bundle,
        "--preset", "ct", "--sequential"]
    run = logic.prepareCohortRun(table, research, ENGINE_AUTO, bundleFolder=tmp_path / "no bundle", dask=True)
    assert run.job.args[3:] == ["--engine", "auto", "--mode", "deformable", "--model", "none"]  # Dask: no flag
    with pytest.raises(InputError, match="cannot use 'nnU-Net v2 folder'"):
        logic.prepareCohortRun(table, research, ENGINE_NNUNET)
    with pytest.raises(InputError, match="not a CSV file"):
        logic.prepareCohortRun(dicom, research, ENGINE_AUTO)


def test_research_section_widgets_exist_and_are_wired():
    """The section's widgets are in HCCFusion.ui (below the per-study sections), its stages run its verbs with
    install stages and readiness rules, and the panel has a prepare_/show_ method for each."""
    root = ET.parse(ROOT / "HCCFusion" / "Resources" / "UI" / "HCCFusion.ui").getroot()
    sections = [w.get("name") for w in root.find("widget/layout").iter("widget")
                if w.get("class") == "ctkCollapsibleButton"]
    assert (sections.index("resultsCollapsibleButton") < sections.index(SECTION)
            < sections.index("setupCollapsibleButton"))
    section = next(w for w in root.iter("widget") if w.get("name") == SECTION)
    names = {w.get("name") for w in section.iter("widget")}
    bound = {p.findtext("string") for p in section.iter("property") if p.get("name") == "SlicerParameterName"}
    assert bound == {"researchFolder", "protocolQcSource", "researchBundle", "cohortTable", "cohortDask"}
    widget = ast.parse((ROOT / "HCCFusion" / "HCCFusionSlicer" / "widget.py").read_text())
    table = next(node.value for node in widget.body if isinstance(node, ast.Assign)
                 and getattr(node.targets[0], "id", "") == "STAGES")
    stages = {k.value: [e.value for e in v.elts[:3]] for k, v in zip(table.keys, table.values)}
    methods = {f.name for c in widget.body if isinstance(c, ast.ClassDef)
               for f in c.body if isinstance(f, ast.FunctionDef)}
    state = readiness.PanelState(verbs=frozenset(STAGES.values()), segmentationEngine=ENGINE_AUTO)
    for stage, verb in STAGES.items():
        assert set(stages[stage]) <= names, stages[stage]  # button, progress bar, status label of the section
        assert {f"prepare_{stage}", f"show_{stage}"} <= methods and STEP_INSTALL_STAGES[stage]
        assert readiness.reasons(state)[stage]  # nothing chosen yet: disabled, with a reason
        assert verb in readiness.reasons(readiness.PanelState(segmentationEngine=ENGINE_AUTO, protocolQcSource=True,
                                                              researchBundle=True, cohortTable=True))[stage]
    assert not any(readiness.reasons(readiness.PanelState(
        verbs=frozenset(STAGES.values()), segmentationEngine=ENGINE_AUTO, protocolQcSource=True, researchBundle=True,
        cohortTable=True))[stage] for stage in STAGES)
    text = (ROOT / "HCCFusion" / "HCCFusionSlicer" / "widget.py").read_text()
    assert '("researchTableSelector", "researchTableView")' in text  # the selector drives the section's table view
    assert {"researchTableSelector", "researchTableView", "nomogramFigureLabel"} <= names


# ---------------------------------------------------------------- outputs of the real verbs as nodes
def _copy_series(source: Path, folder: Path, number: int, **changes) -> None:
    """Two slices of a real DICOM series as a new series (new UIDs), with header changes."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True)
    uid = generate_uid()
    for k, path in enumerate(sorted(source.iterdir())[:2]):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.SeriesNumber = uid, generate_uid(), number
        for key, value in changes.items():
            setattr(ds, key, value)
        ds.save_as(folder / f"{k}.dcm")


def test_protocol_qc_of_a_dicom_folder_flags_the_outlier_series(logic, shared_data, tmp_path):
    slab = shared_data / "real" / "ct_dicom_slab"
    if not slab.is_dir():
        pytest.skip(f"shared reference data not found at {slab}")
    dicom = tmp_path / "siteX"
    for i in range(4):
        _copy_series(slab, dicom / f"series{i}", i + 1)
    _copy_series(slab, dicom / "low_kvp", 9, KVP=80)
    prepared = logic.prepareProtocolQc(dicom, tmp_path / "research")
    result = logic.run(prepared.job, prepared.load, waitForCompletion=True)
    node = result.nodes["table"]
    assert node.GetName() == "siteX_protocol_QC" and parent_names(logic.scene, node) == (RESEARCH_SUBJECT, "siteX")
    table = mrml.table_to_dataframe(node)
    assert list(table.columns[:3]) == ["site", "outlier", "flags"] and len(table) == 5
    assert table.outlier.tolist() == [True, False, False, False, False]  # flagged series first
    assert table.kvp[0] == 80 and "kvp 80 vs site median 120" in table["flags"][0] and set(table.site) == {"siteX"}
    written = pd.read_csv(RunFolder(tmp_path / "research" / "siteX").protocol_qc)
    assert sorted(written.series_uid) == sorted(table.series_uid)  # the verb's table, reordered only
    assert result.summary == "1 of 5 series flagged (siteX: 1)"
    logic.run(prepared.job, prepared.load, waitForCompletion=True)  # a rerun replaces the node
    assert nodes_named(logic.scene, "siteX_protocol_QC") == 1


def test_nomogram_of_a_bundle_loads_figure_and_points(logic, tmp_path):
    from HCCFusionLib import phantom
    from HCCFusionLib.fusion.workflow import ModelSpec, train

    cohort = phantom.make_cohort(40, 3)
    bundle = train(cohort.simulated_features(seed=0), cohort.table, "mvi", tmp_path / "mvi_model", ModelSpec(seed=0),
                   cv=2, nomogram=True)
    prepared = logic.prepareNomogram(bundle, tmp_path / "research")
    result = logic.run(prepared.job, prepared.load, waitForCompletion=True)
    paths = RunFolder(tmp_path / "research" / "mvi_model")
    assert result.folder == paths.root
    figure, points = result.nodes["figure"], result.nodes["table"]
    png = sitk.ReadImage(str(paths.nomogram_chart))
    assert figure.IsA("vtkMRMLVectorVolumeNode") and figure.GetName() == "mvi_model_nomogram"
    assert figure.GetImageData().GetDimensions() == (*png.GetSize(), 1)
    assert figure.GetImageData().GetNumberOfScalarComponents() == 3
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(figure)[0], sitk.GetArrayFromImage(png)[..., :3])
    pd.testing.assert_frame_equal(mrml.table_to_dataframe(points), pd.read_csv(paths.nomogram_scales))
    assert points.GetName() == "mvi_model_nomogram_points" and "radiomics_score" in result.summary
    for node in (figure, points):
        assert parent_names(logic.scene, node) == (RESEARCH_SUBJECT, "mvi_model")


def test_cohort_run_reports_progress_and_loads_status_even_when_a_study_fails(logic, tmp_path):
    csv = cohort_csv(tmp_path / "cohortA", 1, broken=True)
    prepared = logic.prepareCohortRun(csv, tmp_path / "research", ENGINE_AUTO, "rigid",
                                      preset=str(csv.parent / "tiny.yaml"))
    fractions = []
    with pytest.raises(process.CliError):  # the verb exits 1 when a study failed
        logic.run(prepared.job, prepared.load, progress=lambda f, m: fractions.append((f, m)), waitForCompletion=True)
    assert fractions[-1] == (1.0, "cohort done") and fractions == sorted(fractions, key=lambda x: x[0])
    assert {m for _, m in fractions} >= {"S0: done", "BROKEN: failed"}
    result = prepared.load()  # what the panel loads after the failure: which study failed and why
    status = mrml.table_to_dataframe(result.nodes["cohort_status"]).set_index("study_id")
    assert status.status.to_dict() == {"S0": "done", "BROKEN": "failed"}
    assert "is empty" in status.message["BROKEN"] and result.summary == "2 studies: 1 done, 1 failed"
    lesions = mrml.table_to_dataframe(result.nodes["cohort_lesions"])
    assert set(lesions.study_id) == {"S0"} and "cohort_prediction" not in result.nodes  # --model none
    assert result.folder == tmp_path / "research" / "cohortA"
    for node in result.all():
        assert node.GetName().startswith("cohortA_cohort_") and parent_names(logic.scene, node) == (RESEARCH_SUBJECT,
                                                                                                   "cohortA")


def test_cancel_kills_the_running_cohort_run(tmp_path):
    """The panel's Cancel (QtProcessRunner.cancel) stops a real `cohort-run` child in its first study: the process
    and its children end, the study is not marked done and the cohort tables are not written."""
    psutil = pytest.importorskip("psutil")
    logic = HCCFusionLogic(process.QtProcessRunner(), mrml.new_scene(cache_dir=tmp_path / "cache"))
    csv = cohort_csv(tmp_path / "cohortB", 2)
    prepared = logic.prepareCohortRun(csv, tmp_path / "research", ENGINE_AUTO, "rigid",
                                      preset=str(csv.parent / "tiny.yaml"))
    runner, paths = logic.runner, RunFolder(tmp_path / "research" / "cohortB")
    runner._proc = runner._popen(prepared.job)  # what QtProcessRunner.start does, without its Qt timer
    threading.Thread(target=runner._read, args=(runner._proc, runner._lines), daemon=True).start()
    deadline = time.time() + 120
    while not paths.cohort_study("S0").is_dir() and runner._proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert runner.isRunning() and runner._proc.poll() is None, "cohort-run ended before it could be cancelled"
    tree = [psutil.Process(runner._proc.pid), *psutil.Process(runner._proc.pid).children(recursive=True)]
    runner.cancel()
    assert runner._cancelled and runner._proc.poll() is not None
    _gone, alive = psutil.wait_procs(tree, timeout=10)
    assert not alive
    assert not RunFolder(paths.cohort_study("S0")).cohort_done.exists() and not paths.cohort_status.exists()
