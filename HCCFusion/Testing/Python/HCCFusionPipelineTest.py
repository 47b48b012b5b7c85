"""Self-test of the HCCFusion panel inside Slicer (run by HCCFusionTest in HCCFusion.py, and by ctest).

Loads the phantom sample through the panel, runs every stage this HCCFusionLib version has with
waitForCompletion=True, checks the nodes each adds to the scene, then starts registration in the background
and cancels it, checking that the child process tree is gone and the panel is usable again; the same for a
cohort run (then resumed to the end), and a bundle's nomogram.
"""
import importlib.util
import time

import qt
import slicer

from HCCFusionLib import scene as mrml


def run(test):
    slicer.mrmlScene.Clear()
    slicer.util.selectModule("HCCFusion")
    panel = slicer.util.getModuleWidget("HCCFusion").panel
    logic = panel.logic
    p = panel._parameterNode
    test.delayDisplay("Phantom sample")
    sample = panel.loadPhantom(seed=2)
    test.assertGreaterEqual(len(p.inputs()), 4)
    test.assertEqual({phase for _, phase in p.inputs()}, set(sample.nodes["volumes"]))
    test.assertTrue(panel.ui.checkInputsButton.enabled)
    text = logic.info(panel.exportStudy())
    for phase in sample.nodes["volumes"]:
        test.assertIn(phase, text)

    if logic.hasVerb("register"):
        test.delayDisplay("Registration (rigid, waitForCompletion)")
        p.registrationMode = "rigid"
        prepared = panel.prepare_registration()
        result = logic.run(prepared.job, prepared.load, waitForCompletion=True)
        moving = [ph for ph in sample.nodes["volumes"] if ph != p.referencePhase]
        test.assertEqual(sorted(result.nodes["transforms"]), sorted(moving))
        for phase in moving:
            node = sample.nodes["volumes"][phase]
            test.assertIs(node.GetParentTransformNode(), result.nodes["transforms"][phase])
        if "fused" in result.nodes:
            test.assertEqual(len(mrml.channel_names(result.nodes["fused"])),
                             result.nodes["fused"].GetImageData().GetNumberOfScalarComponents())
        test.delayDisplay("Registration in the background, then Cancel")
        p.registrationMode = "deformable"
        cancelRunningStage(test, panel, "registration")

    test.delayDisplay("Segmentation from an existing segmentation")
    p.segmentationEngine = "Existing segmentation"
    p.existingSegmentation = sample.nodes["segmentation"]
    panel.onApply("segmentation")
    segmentation = p.outputSegmentation
    test.assertIsNotNone(segmentation)
    names = {segmentation.GetSegmentation().GetNthSegment(i).GetName()
             for i in range(segmentation.GetSegmentation().GetNumberOfSegments())}
    test.assertTrue({"liver", "tumour"} <= names)
    if logic.hasVerb("segment"):
        test.delayDisplay("Segmentation with the engine chosen by the study's phases")
        p.segmentationEngine = "Automatic (by the study's phases)"
        p.outputSegmentation = None
        prepared = panel.prepare_segmentation()
        result = logic.run(prepared.job, prepared.load, waitForCompletion=True)
        test.assertGreater(result.nodes["segmentation"].GetSegmentation().GetNumberOfSegments(), 1)

    if logic.hasVerb("extract"):
        test.delayDisplay("Radiomics")
        p.radiomicsSegmentation = segmentation
        prepared = panel.prepare_radiomics()
        result = logic.run(prepared.job, prepared.load, waitForCompletion=True)
        panel.show_radiomics(result)
        test.assertGreater(result.nodes["features"].GetNumberOfRows(), 0)
        panel.ui.featureFilterLineEdit.text = "tumour"
        test.assertLessEqual(panel.ui.featureTableView.sortFilterProxyModel().rowCount(),
                             result.nodes["features"].GetNumberOfRows())
    if logic.hasVerb("register"):
        test.delayDisplay("LI-RADS on the registered phases, a reader override, the report")
        p.radiomicsSegmentation = sample.nodes["segmentation"]
        panel.onAssessLirads()
        table = panel.ui.liradsTableView.mrmlTableNode()
        test.assertGreater(table.GetNumberOfRows(), 0)
        column = table.GetTable().GetColumnByName("category")
        column.SetValue(0, "LR-M")
        table.Modified()
        panel.onLiradsOverrides()
        test.assertTrue(panel.ui.liradsStatusLabel.text.startswith("1 override"))
        panel.onSaveReport()
        test.assertTrue((panel.outputFolder() / "report" / "report.html").is_file())
    if importlib.util.find_spec("highdicom") is not None:
        test.delayDisplay("DICOM SEG and SR")
        panel.onExportDicom()
        test.assertTrue((panel.outputFolder() / "dicom" / "sr.dcm").is_file())
    if logic.hasVerb("cohort-run"):
        test.delayDisplay("Cohort & Research: a two-study cohort in the background, Cancel, then resumed")
        runCohort(test, panel, sample)
    if logic.hasVerb("nomogram") and importlib.util.find_spec("sklearn") is not None:
        test.delayDisplay("Cohort & Research: nomogram of a bundle")
        drawNomogram(test, panel)
    test.delayDisplay("HCCFusion self-test passed")


def runCohort(test, panel, sample):
    """The phantom study twice as a cohort CSV (with its segmentation): Cancel mid-cohort, then a rerun resumes."""
    import shutil

    p, logic = panel._parameterNode, panel.logic
    folder = panel.outputFolder() / "cohort_input"
    logic.exportStudy(p.inputs(), folder / "study", p.studyId)
    logic.exportSegmentation(sample.nodes["segmentation"], logic.referenceNode(p.inputs(), p.referencePhase),
                             folder / "labels.nii.gz")
    (folder / "selftest.csv").write_text("study_id,path,segmentation\nC1,study,labels.nii.gz\nC2,study,labels.nii.gz\n")
    shutil.rmtree(panel.outputFolder() / "research", ignore_errors=True)
    p.researchFolder = panel.outputFolder() / "research"
    p.cohortTable = folder / "selftest.csv"
    p.segmentationEngine = "Automatic (by the study's phases)"
    p.registrationMode = "rigid"
    panel.updateButtons()
    test.assertTrue(panel.ui.cohortRunApplyButton.enabled, panel.ui.cohortRunApplyButton.toolTip)
    cancelRunningStage(test, panel, "cohortRun")
    prepared = panel.prepare_cohortRun()
    result = logic.run(prepared.job, prepared.load, waitForCompletion=True)
    status = mrml.table_to_dataframe(result.nodes["cohort_status"])
    test.assertEqual(sorted(status["study_id"]), ["C1", "C2"])
    test.assertFalse((status["status"] == "failed").any(), str(status))


def drawNomogram(test, panel):
    """A phantom-cohort MVI bundle trained with --nomogram; its figure and points table in the panel."""
    from HCCFusionLib import phantom

    from HCCFusionSlicer.process import CliJob

    folder = panel.outputFolder() / "nomogram_input"
    folder.mkdir(parents=True, exist_ok=True)
    cohort = phantom.make_cohort(40, 3)
    cohort.simulated_features(seed=0).to_csv(folder / "features.csv")
    cohort.table.to_csv(folder / "clinical.csv")
    panel.logic.runner.run(CliJob("train", [folder / "features.csv", folder / "clinical.csv", "--endpoint", "mvi",
                                            "--cv", "3", "--nomogram", "--out", folder / "bundle"]))
    panel._parameterNode.researchBundle = folder / "bundle"
    panel.updateButtons()
    test.assertTrue(panel.ui.nomogramApplyButton.enabled, panel.ui.nomogramApplyButton.toolTip)
    prepared = panel.prepare_nomogram()
    result = panel.logic.run(prepared.job, prepared.load, waitForCompletion=True)
    panel.show_nomogram(result)
    test.assertIs(panel.ui.researchTableSelector.currentNode(), result.nodes["table"])
    test.assertEqual(result.nodes["figure"].GetImageData().GetNumberOfScalarComponents(), 3)


def cancelRunningStage(test, panel, name):
    """Start `name` in the background, cancel it at its first progress line, check the process tree is gone."""
    stage = panel.stages[name]
    panel.onApply(name)
    test.assertIs(panel._running, stage)
    test.assertEqual(stage.button.text, "Cancel")
    proc = panel.runner._proc
    deadline = time.time() + 120
    while panel._running and stage.progressBar.value == 0 and time.time() < deadline:
        slicer.app.processEvents(qt.QEventLoop.AllEvents, 50)
    if not panel._running:
        test.delayDisplay(f"{name} finished before it could be cancelled")
        return
    panel.onApply(name)  # the button is Cancel now
    while panel._running and time.time() < deadline:
        slicer.app.processEvents(qt.QEventLoop.AllEvents, 50)
    test.assertIsNone(panel._running)
    test.assertIsNotNone(proc.poll())
    test.assertEqual(stage.statusLabel.text, "Cancelled.")
    test.assertEqual(stage.button.text, stage.applyText)
