"""The Slicer glue's seams without the application: runner and installer protocols, the in-process runner,
readiness rules (pure), the jobs the logic builds for each panel step, and the import direction."""
from __future__ import annotations

import ast
import logging
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GLUE = ROOT / "HCCFusion" / "HCCFusionSlicer"
sys.path.insert(0, str(ROOT / "HCCFusion"))
from HCCFusionSlicer import interfaces, process, readiness  # noqa: E402
from HCCFusionSlicer.choices import (COHORT_ENGINES, ENGINE_AUTO, ENGINE_EXISTING, ENGINE_FOLDER,  # noqa: E402
                                     ENGINE_NNUNET, ENGINES)

VERBS = frozenset({"register", "segment", "extract", "predict", "pacs", "protocol-qc", "nomogram", "cohort-run",
                   "predict-deep", "run"})


def glue_imports(name: str) -> set:
    tree = ast.parse((GLUE / f"{name}.py").read_text())
    return {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1}


def test_parameters_and_readiness_import_no_logic():
    assert glue_imports("parameters") == {"choices"}
    assert glue_imports("readiness") <= {"choices", "i18n"}


@pytest.mark.parametrize("runner", [process.SubprocessRunner, process.QtProcessRunner, process.InProcessRunner])
def test_runners_follow_the_protocol(runner):
    instance = runner()
    assert isinstance(instance, interfaces.ProcessRunner)
    assert instance.asynchronous is (runner is process.QtProcessRunner)


def test_in_process_runner_forwards_progress_and_leaves_logging_as_it_was(tmp_path):
    from HCCFusionLib import phantom

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    fractions = []
    study = phantom.make_patient(1, "small", phases=("PVP",)).study
    from HCCFusionLib.io import save_study

    folder = save_study(study, tmp_path / "study")
    result = process.InProcessRunner().run(process.CliJob("info", [folder]), lambda f, m: fractions.append(f))
    assert result.returncode == 0 and any("PVP" in line for line in result.output)
    assert root.handlers == handlers and root.level == level
    with pytest.raises(process.CliError, match="invalid choice"):  # argparse's SystemExit becomes a CliError
        process.InProcessRunner().run(process.CliJob("no-such-verb", []))


class DecliningInstaller:
    """An installer whose user declines every install (what the panel sees after "Cancel")."""

    def __init__(self):
        self.asked = []

    def stages(self):
        return ("core", "seg", "radiomics", "fusion", "dicom", "nnunet")

    def onDemand(self):
        return ("nnunet",)

    def ensure(self, stage, ask=True):
        self.asked.append(stage)
        return False

    def report(self):
        return "\n".join(f"{s}: missing" for s in self.stages())


def test_logic_asks_the_injected_installer_for_each_step(tmp_path):
    mrml = pytest.importorskip("HCCFusionLib.scene", reason="slicer-core (MRML) is not installed")
    from HCCFusionSlicer.logic import HCCFusionLogic

    installer = DecliningInstaller()
    assert isinstance(installer, interfaces.Installer)
    logic = HCCFusionLogic(process.InProcessRunner(), mrml.new_scene(cache_dir=tmp_path), installer)
    assert not logic.ensureDependencies("segmentation", ENGINE_NNUNET)
    assert not logic.ensureDependencies("segmentation", ENGINE_AUTO)
    assert not logic.ensureDependencies("pacs")
    assert installer.asked == ["nnunet", "seg", "dicom"]
    assert set(installer.asked) <= set(installer.stages())


def ready(**changes) -> readiness.PanelState:
    """Everything in place for every button; `changes` take something away."""
    values = dict(phases=["AP", "PVP"], referencePhase="PVP", verbs=VERBS, segmentationEngine=ENGINE_AUTO,
                  radiomicsSegmentation=True, segmentation=True, featuresFile=True, predictionBundle=True,
                  featureTable=True, registered=True, liradsAssessed=True, pacsUrl="http://pacs/dicom-web",
                  dicomExported=True, modalityResults=True, protocolQcSource=True, researchBundle=True, cohortTable=True,
                  deepBundle=True, priorRun=True)
    return readiness.PanelState(**(values | changes))


def test_every_button_is_ready_when_everything_is_in_place():
    assert readiness.reasons(ready()) == {name: "" for name in readiness.reasons(ready())}
    assert len(readiness.reasons(ready())) == 17
    assert not readiness.reasons(ready(riskBundleChosen=True, riskBundle=True))["followup"]  # optional, when a folder
    assert not any(readiness.reasons(ready(radiomicsBackend="torch", radiomicsDevice="cuda:1")).values())


@pytest.mark.parametrize("changes, button, reason", [
    ({"phases": []}, "checkInputs", "Select at least one input volume"),
    ({"phases": ["PVP"]}, "registration", "at least two input volumes"),
    ({"referencePhase": "DP"}, "registration", "No input has the reference phase DP"),
    ({"verbs": VERBS - {"register"}}, "registration", "no 'hccfusion register' command"),
    ({"running": True}, "segmentation", "Another HCCFusion step is running"),
    ({"segmentationEngine": ENGINE_EXISTING}, "segmentation", "Select the existing segmentation"),
    ({"segmentationEngine": ENGINE_FOLDER}, "segmentation", "Choose the model folder"),
    ({"radiomicsSegmentation": False}, "radiomics", "Select the segmentation to measure"),
    ({"radiomicsDevice": "cuda"}, "radiomics", "A radiomics device needs the torch backend"),
    ({"featuresFile": False}, "prediction", "Run Radiomics first"),
    ({"predictionBundle": False}, "prediction", "Choose a model bundle folder"),
    ({"registered": False}, "lirads", "Run Registration first: LI-RADS"),
    ({"registered": False}, "deepPrediction", "Run Registration first: deep fusion"),
    ({"deepBundle": False}, "deepPrediction", "Choose a deep fusion bundle folder (hccfusion train-deep)"),
    ({"verbs": VERBS - {"predict-deep"}}, "deepPrediction", "no 'hccfusion predict-deep' command"),
    ({"priorRun": False}, "followup", "Choose the prior run folder"),
    ({"riskBundleChosen": True}, "followup", "The risk bundle is not a folder"),
    ({"verbs": VERBS - {"run"}}, "followup", "no 'hccfusion run' command"),
    ({"segmentation": False}, "exportDicom", "Segment first"),
    ({"liradsAssessed": False}, "liradsOverrides", "Assess LI-RADS first"),
    ({"pacsUrl": "  "}, "pacs", "Enter the PACS DICOMweb URL"),
    ({"dicomExported": False}, "pacs", "Export SEG/SR first"),
    ({"featureTable": False}, "exportFeatures", "No feature table yet"),
    ({"modalityResults": False}, "loadResults", "No PET (pet-suv), CEUS (ceus), follow-up"),
    ({"protocolQcSource": False}, "protocolQc", "Choose a DICOM folder, or a CSV of DICOM folders"),
    ({"verbs": VERBS - {"protocol-qc"}}, "protocolQc", "no 'hccfusion protocol-qc' command"),
    ({"researchBundle": False}, "nomogram", "Choose a model bundle folder trained with --nomogram"),
    ({"cohortTable": False}, "cohortRun", "Choose the cohort CSV"),
    ({"segmentationEngine": ENGINE_NNUNET, "modelFolder": True}, "cohortRun", "A cohort run uses a shipped engine"),
])
def test_a_missing_piece_disables_its_button_and_says_why(changes, button, reason):
    reasons = readiness.reasons(ready(**changes))
    assert reason in reasons[button]
    if "running" not in changes and "phases" not in changes:
        also = {"lirads", "deepPrediction", "followup"} if "segmentation" in changes else set()  # need it too
        also |= {"lirads", "deepPrediction"} if "registered" in changes else set()  # read the registered phases
        also |= {"followup"} if "radiomicsDevice" in changes else set()  # its `run` extracts features too
        if changes.get("segmentationEngine", ENGINE_AUTO) not in COHORT_ENGINES:
            also |= {"cohortRun"} - {button}  # a cohort run uses the Segmentation engine choice
        assert {b for b, r in reasons.items() if r} == {button} | also  # nothing else is affected


def test_engine_widgets_follow_the_engine():
    enabled = {engine: readiness.engineWidgets(engine) for engine in ENGINES}
    assert enabled[ENGINE_NNUNET] == {"modelPath": True, "existingSegmentation": False, "nnunetChannelMap": True}
    assert enabled[ENGINE_EXISTING] == {"modelPath": False, "existingSegmentation": True, "nnunetChannelMap": False}
    assert enabled[ENGINE_AUTO] == {"modelPath": False, "existingSegmentation": False, "nnunetChannelMap": False}


def test_prepared_jobs_carry_the_panel_choices(tmp_path):
    mrml = pytest.importorskip("HCCFusionLib.scene", reason="slicer-core (MRML) is not installed")
    from HCCFusionLib import phantom
    from HCCFusionSlicer.logic import HCCFusionLogic

    logic = HCCFusionLogic(process.InProcessRunner(), mrml.new_scene(cache_dir=tmp_path / "cache"), DecliningInstaller())
    patient = phantom.make_patient(1, "small", phases=("AP", "PVP", "DP"))
    inputs = [(mrml.image_to_volume(logic.scene, s.image, s.name), s.name) for s in patient.study]
    out = tmp_path / "S"
    registration = logic.prepareRegistration(inputs, out, "S", {"afp": 10.0}, "PVP", "affine", useLiverMask=True,
                                             movingIds={inputs[0][0].GetID()})
    assert registration.job.verb == "register" and registration.job.args[1:5] == ["--reference", "PVP", "--mode", "affine"]
    assert registration.job.args[-2:] == ["--mask", "liver"]
    import json

    manifest = json.loads((out / "study" / "study.json").read_text())
    assert [s["name"] for s in manifest["series"]] == ["AP", "PVP"]  # DP not checked as moving: left out
    assert manifest["clinical"] == {"afp": 10.0}
    segmentation = logic.prepareSegmentation(inputs, out, "S", {}, "PVP", ENGINE_NNUNET, modelPath=tmp_path,
                                             channelMap="0=AP", tta=False)
    assert segmentation.job.args[3:] == ["--nnunet", tmp_path, "--channel", "0", "AP", "--reference", "PVP", "--no-tta"]
    assert logic.preparePrediction(out, "S", {}, tmp_path / "bundle").job.args[0] == out / "radiomics" / "features_wide.csv"
    pacs = logic.preparePacs(out / "dicom", " http://pacs ")
    assert pacs.job.args == ["push", out / "dicom" / "seg.dcm", out / "dicom" / "sr.dcm", "--pacs-url", "http://pacs"]
    assert pacs.load().summary == "SEG and SR stored on http://pacs"
    assert logic.reportBase("", out) == out and logic.reportBase(tmp_path, out) == tmp_path


def test_in_process_runner_in_a_script_without_logging_set_up():
    """The verb's log handler writes into the runner's sink: its lines must not be logged again (recursion)."""
    import subprocess

    script = ("import sys; sys.path.insert(0, sys.argv[1]); from HCCFusionSlicer import process\n"
              "try:\n    process.InProcessRunner().run(process.CliJob('info', ['/no/such/study']))\n"
              "except process.CliError as error:\n    print('CliError:', error)")
    done = subprocess.run([sys.executable, "-c", script, str(ROOT / "HCCFusion")], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert done.returncode == 0 and "CliError:" in done.stdout and "/no/such/study" in done.stdout, done.stderr[-2000:]
