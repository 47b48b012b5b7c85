"""HCCFusion panels: wiring between a .ui file, the shared parameter node and the logic. No science, no rules.

One class serves the workflow module (Resources/UI/HCCFusion.ui, every section) and the per-stage modules
(their own small .ui with one section): it connects only the widgets its .ui has. Jobs come from the
logic's `prepare...` methods, button states from `readiness.reasons`; the runner and the installer are
injected (`interfaces.ProcessRunner`, `interfaces.Installer`). Each Apply button runs its verb in the
background and turns into a Cancel button meanwhile; disabled buttons say in their tooltip what is missing.
"""
import getpass
import logging
from pathlib import Path

import qt
import slicer
import vtk
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic
from slicer.util import VTKObservationMixin

from HCCFusionLib.errors import HCCFusionError
from HCCFusionLib.layout import RunFolder

from . import readiness
from .choices import INPUT_ROWS
from .i18n import _
from .logic import HCCFusionLogic
from .parameters import HCCFusionParameterNode
from .process import CancelledError
from .research import isCsv, isProtocolSource
from .results import availableResults
from .steps import isFolder, isRunFolder

MODULE_NAME = "HCCFusion"  # the parameter node all HCCFusion modules share
#: link button → module it selects (the workflow links to the stages, each stage back to the workflow)
MODULE_LINKS = {"openRegistrationModuleButton": "HCCFusionRegistration",
                "openSegmentationModuleButton": "HCCFusionSegmentation",
                "openRadiomicsModuleButton": "HCCFusionRadiomics", "openPredictionModuleButton": "HCCFusionPrediction",
                "openWorkflowModuleButton": "HCCFusion"}
#: stage → (apply button, progress bar, status label, tooltip when ready)
STAGES = {
    "registration": ("registrationApplyButton", "registrationProgressBar", "registrationStatusLabel",
                     _("Align the moving volumes to the reference (background process).")),
    "segmentation": ("segmentationApplyButton", "segmentationProgressBar", "segmentationStatusLabel",
                     _("Segment liver and tumours (background process, except an existing segmentation).")),
    "radiomics": ("radiomicsApplyButton", "radiomicsProgressBar", "radiomicsStatusLabel",
                  _("Extract features per phase and region (background process).")),
    "prediction": ("predictApplyButton", "predictionProgressBar", "predictionStatusLabel",
                   _("Predict with the model bundle (background process).")),
    "deepPrediction": ("deepPredictApplyButton", "predictionProgressBar", "deepPredictionStatusLabel",
                       _("Apply the deep fusion bundle to the registered phases: prediction, phase attention and "
                         "Grad-CAM per lesion (background process).")),
    "followup": ("followupApplyButton", "followupProgressBar", "followupStatusLabel",
                 _("Run every stage of this study against the prior run: lesion matching, RECIST/mRECIST, delta "
                   "radiomics and, with a risk bundle, the risk curve; replaces this study's stage outputs "
                   "(background process).")),
    "pacs": ("pushPacsButton", "predictionProgressBar", "reportStatusLabel",
             _("Store the exported SEG and SR in the PACS (STOW-RS, background process).")),
    "protocolQc": ("protocolQcApplyButton", "researchProgressBar", "researchStatusLabel",
                   _("Read the DICOM headers and flag acquisition-protocol outliers per site (background process).")),
    "nomogram": ("nomogramApplyButton", "researchProgressBar", "researchStatusLabel",
                 _("Draw the bundle's nomogram and its points table (background process).")),
    "cohortRun": ("cohortRunApplyButton", "researchProgressBar", "researchStatusLabel",
                  _("Run every stage for every study of the cohort CSV (background process; rerun to resume).")),
}
#: in-process buttons → (handler name, tooltip when ready)
ACTIONS = {
    "checkInputs": ("checkInputsButton", "onCheckInputs", _("Save the study folder and summarise it.")),
    "exportFeatures": ("exportFeaturesButton", "onExportFeatures", _("Save the feature table as CSV.")),
    "lirads": ("liradsApplyButton", "onAssessLirads", _("Measure APHE, washout, capsule and size per observation.")),
    "liradsOverrides": ("liradsOverridesButton", "onLiradsOverrides",
                        _("Record your edits of the LI-RADS table as overrides (with your name).")),
    "exportDicom": ("exportDicomButton", "onExportDicom", _("Write DICOM SEG and a TID 1500 SR into the output folder.")),
    "saveReport": ("saveReportButton", "onSaveReport", _("Write the HTML report.")),
    "loadResults": ("loadResultsButton", "onLoadResults",
                    _("Load the PET, CEUS, follow-up and MR subtraction results of the output folder.")),
}
NOMOGRAM_WIDTH = 480  # pixels of the nomogram figure in the panel
#: readiness.engineWidgets key → the widget it enables
ENGINE_WIDGETS = {"modelPath": "modelPathLineEdit", "existingSegmentation": "existingSegmentationSelector",
                  "nnunetChannelMap": "nnunetChannelMapLineEdit"}


def getParameterNode() -> HCCFusionParameterNode:
    """The shared HCCFusion parameter node of the current scene (created on first use)."""
    moduleLogic = ScriptedLoadableModuleLogic()
    moduleLogic.moduleName = MODULE_NAME
    return HCCFusionParameterNode(moduleLogic.getParameterNode())


class Stage:
    """An Apply/Cancel button with its progress bar and status label."""

    def __init__(self, name, button, progressBar, statusLabel):
        self.name, self.button, self.progressBar, self.statusLabel = name, button, progressBar, statusLabel
        self.applyText = button.text
        self.progressBar.hide()

    def started(self):
        self.button.text = _("Cancel")
        self.button.toolTip = _("Stop this step (kills its background process)")
        self.button.enabled = True
        self.progressBar.value = 0
        self.progressBar.show()
        self.statusLabel.text = _("Starting…")

    def progress(self, fraction, message):
        self.progressBar.value = int(round(fraction * 100))
        self.statusLabel.text = message

    def stopped(self, text):
        self.button.text = self.applyText
        self.progressBar.hide()
        self.statusLabel.text = text


class HCCFusionPanel(VTKObservationMixin):
    """Builds a panel from a .ui file and keeps it in sync with the shared parameter node."""

    def __init__(self, uiPath: str, runner=None, installer=None, logic=None):
        """`runner` (interfaces.ProcessRunner): default a QtProcessRunner; `installer` (interfaces.Installer):
        default install.SlicerInstaller; `logic`: default an HCCFusionLogic on them and the current scene."""
        from .install import SlicerInstaller
        from .process import QtProcessRunner

        VTKObservationMixin.__init__(self)
        self.uiWidget = slicer.util.loadUI(uiPath)
        self.ui = slicer.util.childWidgetVariables(self.uiWidget)
        self.uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = logic or HCCFusionLogic(runner or QtProcessRunner(), slicer.mrmlScene,
                                             installer or SlicerInstaller())
        self.runner = self.logic.runner
        self._parameterNode = None
        self._guiTag = None
        self._running = None  # the Stage whose verb is running
        self.stages = {name: Stage(name, *(self._widget(w) for w in widgets[:3]))
                       for name, widgets in STAGES.items() if self._widget(widgets[0])}
        for name, stage in self.stages.items():
            stage.button.connect("clicked(bool)", lambda _checked=False, n=name: self.onApply(n))
        for buttonName, handler, _tip in ACTIONS.values():
            self._connect(buttonName, "clicked(bool)", getattr(self, handler))
        for buttonName, module in MODULE_LINKS.items():
            self._connect(buttonName, "clicked(bool)", lambda _checked=False, m=module: slicer.util.selectModule(m))
        self._connect("loadPhantomButton", "clicked(bool)", self.onLoadPhantom)
        self._connect("featureFilterLineEdit", "textChanged(QString)", self.onFeatureFilter)
        self._connect("dependenciesButton", "clicked(bool)", self.onDependencies)
        for selector, view in (("featureTableSelector", "featureTableView"),
                               ("resultsTableSelector", "resultsTableView"),
                               ("researchTableSelector", "researchTableView")):
            if self._widget(selector) and self._widget(view):
                self._widget(selector).connect("currentNodeChanged(vtkMRMLNode*)", self._widget(view).setMRMLTableNode)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def _widget(self, name):
        """The widget of that name in this panel's .ui, or None (a stage module's .ui has one section)."""
        return getattr(self.ui, name, None)

    def _connect(self, name, signal, slot):
        widget = self._widget(name)
        if widget is not None:
            widget.connect(signal, slot)

    # ------------------------------------------------------------ parameter node
    def initializeParameterNode(self):
        self.setParameterNode(getParameterNode())

    def setParameterNode(self, parameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._guiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = parameterNode
        if parameterNode:
            self._guiTag = parameterNode.connectGui(self.ui)
            self.addObserver(parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
            self.updateButtons()

    def onSceneStartClose(self, caller, event):
        if self._running:
            self.runner.cancel()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        self.initializeParameterNode()

    def cleanup(self):
        if self._running:
            self.runner.cancel()
        self.setParameterNode(None)
        self.removeObservers()

    # ------------------------------------------------------------ enabling
    def _outputOrNone(self):
        try:
            return self.outputFolder()
        except HCCFusionError:  # no valid study ID yet
            return None

    def _reportBase(self) -> Path:
        return self.logic.reportBase(self._parameterNode.reportFolder, self.outputFolder())

    def _segmentationNode(self):
        p = self._parameterNode
        return (p.radiomicsSegmentation or p.outputSegmentation) if p else None

    def state(self) -> readiness.PanelState:
        """What the readiness rules look at, from the parameter node and the run folder."""
        from HCCFusionLib import cli

        p, out = self._parameterNode, self._outputOrNone()
        return readiness.PanelState(
            phases=[phase for _node, phase in p.inputs()], referencePhase=p.referencePhase,
            running=self._running is not None, verbs=frozenset(cli.VERBS), segmentationEngine=p.segmentationEngine,
            existingSegmentation=bool(p.existingSegmentation), modelFolder=isFolder(p.modelPath),
            radiomicsSegmentation=bool(p.radiomicsSegmentation), segmentation=bool(self._segmentationNode()),
            featuresFile=self.logic.featuresFile(out).is_file(), predictionBundle=isFolder(p.predictionBundle),
            featureTable=bool(p.featureTable), registered=bool(out and RunFolder(out).registered_study.exists()),
            liradsAssessed=self.logic.lirads is not None, pacsUrl=p.pacsUrl,
            dicomExported=bool(out and RunFolder(self._reportBase()).sr.exists()),
            modalityResults=bool(availableResults(out)), protocolQcSource=isProtocolSource(p.protocolQcSource),
            researchBundle=isFolder(p.researchBundle), cohortTable=isCsv(p.cohortTable),
            deepBundle=isFolder(p.deepBundle), priorRun=isRunFolder(p.priorRun),
            riskBundleChosen=bool(p.riskBundle) and str(p.riskBundle) not in ("", "."),
            riskBundle=isFolder(p.riskBundle), radiomicsBackend=p.radiomicsBackend, radiomicsDevice=p.radiomicsDevice)

    def updateButtons(self, caller=None, event=None):
        if not self._parameterNode:
            return
        reasons = readiness.reasons(self.state())
        buttons = {name: (self._widget(button), tip) for name, (button, _handler, tip) in ACTIONS.items()}
        buttons.update({name: (stage.button, STAGES[name][3]) for name, stage in self.stages.items()
                        if stage is not self._running})
        for name, (button, tip) in buttons.items():
            if button is not None:
                button.enabled = not reasons[name]
                button.toolTip = reasons[name] or tip
        engine = self._parameterNode.segmentationEngine
        for name, enabled in readiness.engineWidgets(engine).items():
            widget = self._widget(ENGINE_WIDGETS[name])
            if widget is not None:
                widget.enabled = enabled
        if self._widget("segmentationChannelsLabel"):
            self.ui.segmentationChannelsLabel.text = self.logic.modelChannels(engine, self._parameterNode.modelPath)
        if self._widget("bclcStageLabel"):
            lesions = self.ui.lesionTableView.mrmlTableNode() if self._widget("lesionTableView") else None
            try:
                self.ui.bclcStageLabel.text = self.logic.bclcStage(self._parameterNode.clinical(), lesions)
            except HCCFusionError as error:
                self.ui.bclcStageLabel.text = str(error)

    # ------------------------------------------------------------ inputs
    def onLoadPhantom(self):
        with slicer.util.tryWithErrorDisplay(_("Failed to generate the phantom sample."), waitCursor=True):
            self.loadPhantom()

    def loadPhantom(self, seed=1):
        """Generate the phantom sample and assign its phases to the input rows."""
        if not self.logic.ensureDependencies("inputs"):
            return None
        sample = self.logic.loadPhantom(seed=seed)
        p = self._parameterNode
        wasModified = p.StartModify()
        for row, (phase, node) in enumerate(sample.nodes["volumes"].items(), start=1):
            if row > INPUT_ROWS:
                break
            setattr(p, f"input{row}Volume", node)
            setattr(p, f"input{row}Phase", phase)
        p.studyId = sample.studyId
        p.existingSegmentation = sample.nodes["segmentation"]
        p.EndModify(wasModified)
        slicer.util.setSliceViewerLayers(background=sample.nodes["volumes"].get(p.referencePhase), fit=True)
        if self._widget("inputsSummaryTextEdit"):
            self.ui.inputsSummaryTextEdit.setPlainText(sample.summary)
        return sample

    def outputFolder(self) -> Path:
        p = self._parameterNode
        return self.logic.outputFolder(p.workFolder, p.studyId)

    def exportStudy(self, masks=None) -> Path:
        p = self._parameterNode
        return self.logic.exportStudy(p.inputs(), self.outputFolder() / "study", p.studyId, p.clinical(), masks)

    def onCheckInputs(self):
        with slicer.util.tryWithErrorDisplay(_("The inputs cannot be used as given."), waitCursor=True):
            if self.logic.ensureDependencies("inputs"):
                self.ui.inputsSummaryTextEdit.setPlainText(self.logic.info(self.exportStudy()))

    def _studyForNextStage(self, useRegistered=True) -> Path:
        p = self._parameterNode
        return self.logic.studyForNextStage(p.inputs(), self.outputFolder(), p.studyId, p.clinical(), useRegistered)

    # ------------------------------------------------------------ stages
    def onApply(self, name):
        stage = self.stages[name]
        if self._running is stage:
            self.runner.cancel()
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start {name}.").format(name=name), waitCursor=True):
            p = self._parameterNode
            if not self.logic.ensureDependencies(name, p.segmentationEngine, p.radiomicsBackend):
                return
            prepared = getattr(self, f"prepare_{name}")()
            if prepared.job is None:  # done in-process
                self._done(stage, prepared.load(), None)
                return
            self._running = stage
            stage.started()
            self.updateButtons()
            self.logic.run(prepared.job, prepared.load, progress=stage.progress,
                           finished=lambda result, error: self._done(stage, result, error))

    def _done(self, stage, result, error):
        self._running = None
        if error is None:
            stage.stopped(result.summary)
            show = getattr(self, f"show_{stage.name}", None)
            if show:
                show(result)
        elif isinstance(error, CancelledError):
            stage.stopped(_("Cancelled."))
        else:
            stage.stopped(_("Failed."))
            if stage.name == "cohortRun":  # the status table says which studies failed and why
                self._showCohortStatus()
            slicer.util.errorDisplay(_("{name} failed:").format(name=stage.name) + f"\n{error}")
            logging.error("HCCFusion %s failed: %s", stage.name, error)
        self.updateButtons()

    def _common(self) -> dict:
        p = self._parameterNode
        return {"inputs": p.inputs(), "out": self.outputFolder(), "studyId": p.studyId, "clinical": p.clinical()}

    def prepare_registration(self):
        p = self._parameterNode
        moving = {node.GetID() for node in self.ui.movingVolumesSelector.checkedNodes()}
        return self.logic.prepareRegistration(**self._common(), referencePhase=p.referencePhase,
                                              mode=p.registrationMode, useLiverMask=p.registrationUseLiverMask,
                                              maskSegmentation=p.registrationMaskSegmentation, movingIds=moving)

    def show_registration(self, result):
        p = self._parameterNode or getParameterNode()
        reference = self.logic.referenceNode(p.inputs(), p.referencePhase)
        moving = next(iter(result.nodes["resampled"].values()), None)
        slicer.util.setSliceViewerLayers(background=reference, foreground=moving, foregroundOpacity=0.5, fit=True)

    def prepare_segmentation(self):
        p = self._parameterNode
        return self.logic.prepareSegmentation(
            **self._common(), referencePhase=p.referencePhase, engine=p.segmentationEngine, modelPath=p.modelPath,
            existingSegmentation=p.existingSegmentation, channelMap=p.nnunetChannelMap,
            useRegistered=p.segmentationUseRegistered, tta=p.segmentationTTA, outputNode=p.outputSegmentation)

    def show_segmentation(self, result):
        p = self._parameterNode or getParameterNode()  # the module may have been left while the step ran
        node = result.nodes["segmentation"]
        wasModified = p.StartModify()
        p.outputSegmentation = node
        p.radiomicsSegmentation = node
        p.EndModify(wasModified)
        if "lesions" in result.nodes and self._widget("lesionTableView"):
            self.ui.lesionTableView.setMRMLTableNode(result.nodes["lesions"])
            self.updateButtons()  # BCLC uses the lesion count and size

    def prepare_radiomics(self):
        p = self._parameterNode
        selected = {n.GetID() for n in self.ui.radiomicsVolumesSelector.checkedNodes()}
        return self.logic.prepareRadiomics(**self._common(), referencePhase=p.referencePhase,
                                           segmentationNode=p.radiomicsSegmentation, preset=p.radiomicsPreset,
                                           regions=p.radiomicsRegions, selectedIds=selected, tableNode=p.featureTable,
                                           backend=p.radiomicsBackend, device=p.radiomicsDevice)

    def show_radiomics(self, result):
        (self._parameterNode or getParameterNode()).featureTable = result.nodes["features"]
        self.ui.featureTableView.setMRMLTableNode(result.nodes["features"])
        self.onFeatureFilter(self.ui.featureFilterLineEdit.text)

    def prepare_prediction(self):
        p = self._parameterNode
        return self.logic.preparePrediction(self.outputFolder(), p.studyId, p.clinical(), p.predictionBundle)

    def show_prediction(self, result):
        self.ui.predictionResultLabel.text = result.summary
        if "evidence" in result.nodes:
            self.ui.evidenceTableView.setMRMLTableNode(result.nodes["evidence"])
        if "chart" in result.nodes:
            slicer.modules.plots.logic().ShowChartInLayout(result.nodes["chart"])

    def prepare_deepPrediction(self):
        p = self._parameterNode
        return self.logic.prepareDeepPrediction(self.outputFolder(), p.studyId, p.deepBundle, self._segmentationNode(),
                                                self.logic.referenceNode(p.inputs(), p.referencePhase))

    def show_deepPrediction(self, result):
        maps = list(result.nodes["gradcam"].values())
        if maps:  # the first lesion's first Grad-CAM map over the reference phase
            slicer.util.setSliceViewerLayers(foreground=maps[0], foregroundOpacity=0.4)

    def prepare_followup(self):
        p = self._parameterNode
        return self.logic.prepareFollowup(**self._common(), referencePhase=p.referencePhase, priorRun=p.priorRun,
                                          segmentationNode=self._segmentationNode(), riskBundle=p.riskBundle,
                                          mode=p.registrationMode, bundleFolder=p.predictionBundle,
                                          deepBundle=p.deepBundle, preset=p.radiomicsPreset,
                                          radiomicsBackend=p.radiomicsBackend, radiomicsDevice=p.radiomicsDevice)

    def show_followup(self, result):
        self.ui.resultsListTextEdit.setPlainText(result.summary)
        tables = result.nodes["tables"]
        first = tables.get("followup_response", next(iter(tables.values()), None))
        if first is not None:
            self.ui.resultsTableSelector.setCurrentNode(first)
        if "chart" in result.nodes:
            slicer.modules.plots.logic().ShowChartInLayout(result.nodes["chart"])

    def prepare_pacs(self):
        return self.logic.preparePacs(RunFolder(self._reportBase()).dicom, self._parameterNode.pacsUrl)

    # ------------------------------------------------------------ cohort & research
    def _researchFolder(self) -> Path:
        p = self._parameterNode
        return self.logic.researchFolder(p.researchFolder, p.workFolder)

    def prepare_protocolQc(self):
        return self.logic.prepareProtocolQc(self._parameterNode.protocolQcSource, self._researchFolder())

    def prepare_nomogram(self):
        return self.logic.prepareNomogram(self._parameterNode.researchBundle, self._researchFolder())

    def prepare_cohortRun(self):
        p = self._parameterNode
        return self.logic.prepareCohortRun(p.cohortTable, self._researchFolder(), p.segmentationEngine,
                                           p.registrationMode, p.researchBundle, p.radiomicsPreset, p.cohortDask)

    def show_protocolQc(self, result):
        self.ui.researchTableSelector.setCurrentNode(result.nodes["table"])

    def show_nomogram(self, result):
        self.ui.researchTableSelector.setCurrentNode(result.nodes["table"])
        pixmap = qt.QPixmap(str(RunFolder(result.folder).nomogram_chart))
        self.ui.nomogramFigureLabel.setPixmap(pixmap.scaledToWidth(NOMOGRAM_WIDTH, qt.Qt.SmoothTransformation))

    def show_cohortRun(self, result):
        self.ui.researchTableSelector.setCurrentNode(result.nodes["cohort_status"])

    def _showCohortStatus(self):
        """After a failed cohort run: load its status table (which studies failed and why), if it was written."""
        name, out = self.logic.researchOutput(self._parameterNode.cohortTable, self._researchFolder())
        try:
            result = self.logic.loadCohort(out, name)
        except HCCFusionError:
            return
        self.show_cohortRun(result)
        self.ui.researchStatusLabel.text = _("Failed.") + " " + result.summary

    # ------------------------------------------------------------ LI-RADS, DICOM and report (in-process)
    def onAssessLirads(self):
        with slicer.util.tryWithErrorDisplay(_("LI-RADS assessment failed."), waitCursor=True):
            if not self.logic.ensureDependencies("inputs"):
                return
            p, out = self._parameterNode, self.outputFolder()
            result = self.logic.assessLirads(out / "registration", self._segmentationNode(), out, p.studyId)
            self.ui.liradsTableView.setMRMLTableNode(result.nodes["lirads"])
            self.ui.liradsStatusLabel.text = result.summary
            self.updateButtons()

    def onLiradsOverrides(self):
        with slicer.util.tryWithErrorDisplay(_("The LI-RADS edits could not be recorded."), waitCursor=True):
            made = self.logic.applyLiradsOverrides(self.ui.liradsTableView.mrmlTableNode(), getpass.getuser())
            self.ui.liradsStatusLabel.text = _("{n} override(s) recorded; categories updated.").format(n=len(made))

    def onExportDicom(self):
        with slicer.util.tryWithErrorDisplay(_("DICOM export failed."), waitCursor=True):
            if not self.logic.ensureDependencies("dicom"):
                return
            p = self._parameterNode
            self._studyForNextStage()  # the run folder holds the study the SEG references
            written = self.logic.exportDicom(self.outputFolder(), p.referencePhase,
                                             RunFolder(self._reportBase()).dicom, self._segmentationNode(),
                                             self.logic.referenceNode(p.inputs(), p.referencePhase))
            self.ui.reportStatusLabel.text = _("DICOM SEG and SR written to {folder}").format(
                folder=written["seg"].parent)
            self.updateButtons()

    def onSaveReport(self):
        with slicer.util.tryWithErrorDisplay(_("The report could not be written."), waitCursor=True):
            if not self.logic.ensureDependencies("inputs"):
                return
            p = self._parameterNode
            bundle = p.predictionBundle if isFolder(p.predictionBundle) else None
            self._studyForNextStage()  # the run folder holds the study the report shows
            reference = self.logic.referenceNode(p.inputs(), p.referencePhase)
            path = self.logic.saveReport(self.outputFolder(), RunFolder(self._reportBase()).report, bundle,
                                         self._segmentationNode(), reference)
            self.ui.reportStatusLabel.text = _("Report written to {path}").format(path=path)
            if not slicer.app.testingEnabled():
                qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(path)))

    # ------------------------------------------------------------ radiomics table and setup
    def onLoadResults(self):
        """PET, CEUS, follow-up and MR subtraction results of the output folder as nodes, listed in the panel."""
        with slicer.util.tryWithErrorDisplay(_("Loading the MRI/PET/CEUS/follow-up results failed."), waitCursor=True):
            result = self.logic.loadModalityResults(self.outputFolder(), self._parameterNode.studyId)
            self.ui.resultsListTextEdit.setPlainText(result.summary)
            tables = result.nodes["tables"]
            if tables:
                self.ui.resultsTableSelector.setCurrentNode(next(iter(tables.values())))
            if "chart" in result.nodes:  # the risk curve of `run --prior --risk-bundle`
                slicer.modules.plots.logic().ShowChartInLayout(result.nodes["chart"])
            suv = result.nodes["volumes"].get("PET_SUV")
            if suv is not None:
                slicer.util.setSliceViewerLayers(foreground=suv, foregroundOpacity=0.5)

    def onFeatureFilter(self, text):
        proxy = self.ui.featureTableView.sortFilterProxyModel()
        proxy.setFilterKeyColumn(-1)  # any column
        proxy.setFilterRegularExpression("(?i)" + text)

    def onExportFeatures(self):
        table = self._parameterNode.featureTable
        with slicer.util.tryWithErrorDisplay(_("Failed to export the feature table."), waitCursor=True):
            path = qt.QFileDialog.getSaveFileName(self.uiWidget, _("Export feature table"),
                                                  str(self.outputFolder() / f"{table.GetName()}.csv"), "CSV (*.csv)")
            if path:
                self.logic.exportTable(table, path)

    def onDependencies(self):
        installer = self.logic.installer
        with slicer.util.tryWithErrorDisplay(_("Failed to install the Python packages."), waitCursor=True):
            self.ui.dependenciesLabel.text = installer.report()
            if all(installer.ensure(stage) for stage in installer.stages() if stage not in installer.onDemand()):
                self.ui.dependenciesLabel.text = installer.report()
