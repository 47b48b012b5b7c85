"""The HCCFusion panel: wiring between Resources/UI/HCCFusion.ui, the parameter node and the logic.

No science here. Each Apply button starts its stage's `hccfusion` verb in the background (QtProcessRunner)
and turns into a Cancel button while it runs; disabled buttons say in their tooltip what is missing.
"""
import getpass
import json
import logging
from pathlib import Path

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic
from slicer.util import VTKObservationMixin

from HCCFusionLib.errors import HCCFusionError

from . import install
from .logic import HCCFusionLogic, StageResult
from .parameters import (ENGINE_EXISTING, ENGINE_FOLDER, ENGINE_NAMES, ENGINE_NNUNET, INPUT_ROWS,
                         HCCFusionParameterNode)
from .process import CancelledError, QtProcessRunner

MODULE_NAME = "HCCFusion"


def getParameterNode() -> HCCFusionParameterNode:
    """The module's parameter node in the current scene (created on first use)."""
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
    """Builds the panel from the .ui file and keeps it in sync with the parameter node."""

    def __init__(self, uiPath: str):
        VTKObservationMixin.__init__(self)
        self.uiWidget = slicer.util.loadUI(uiPath)
        self.ui = slicer.util.childWidgetVariables(self.uiWidget)
        self.uiWidget.setMRMLScene(slicer.mrmlScene)
        self.runner = QtProcessRunner()
        self.logic = HCCFusionLogic(self.runner, slicer.mrmlScene)
        self._parameterNode = None
        self._guiTag = None
        self._running = None  # the Stage whose verb is running
        ui = self.ui
        self.stages = {
            "registration": Stage("registration", ui.registrationApplyButton, ui.registrationProgressBar,
                                  ui.registrationStatusLabel),
            "segmentation": Stage("segmentation", ui.segmentationApplyButton, ui.segmentationProgressBar,
                                  ui.segmentationStatusLabel),
            "radiomics": Stage("radiomics", ui.radiomicsApplyButton, ui.radiomicsProgressBar, ui.radiomicsStatusLabel),
            "prediction": Stage("prediction", ui.predictApplyButton, ui.predictionProgressBar, ui.predictionStatusLabel),
            "pacs": Stage("pacs", ui.pushPacsButton, ui.predictionProgressBar, ui.reportStatusLabel),
        }
        ui.loadPhantomButton.connect("clicked(bool)", self.onLoadPhantom)
        ui.checkInputsButton.connect("clicked(bool)", self.onCheckInputs)
        ui.registrationApplyButton.connect("clicked(bool)", lambda: self.onApply("registration", self.startRegistration))
        ui.segmentationApplyButton.connect("clicked(bool)", lambda: self.onApply("segmentation", self.startSegmentation))
        ui.radiomicsApplyButton.connect("clicked(bool)", lambda: self.onApply("radiomics", self.startRadiomics))
        ui.predictApplyButton.connect("clicked(bool)", lambda: self.onApply("prediction", self.startPrediction))
        ui.pushPacsButton.connect("clicked(bool)", lambda: self.onApply("pacs", self.startPacs))
        ui.liradsApplyButton.connect("clicked(bool)", self.onAssessLirads)
        ui.liradsOverridesButton.connect("clicked(bool)", self.onLiradsOverrides)
        ui.exportDicomButton.connect("clicked(bool)", self.onExportDicom)
        ui.saveReportButton.connect("clicked(bool)", self.onSaveReport)
        ui.featureFilterLineEdit.connect("textChanged(QString)", self.onFeatureFilter)
        ui.exportFeaturesButton.connect("clicked(bool)", self.onExportFeatures)
        ui.dependenciesButton.connect("clicked(bool)", self.onDependencies)
        ui.featureTableSelector.connect("currentNodeChanged(vtkMRMLNode*)", ui.featureTableView.setMRMLTableNode)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

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
    def _reasons(self):
        """Per button: why it cannot run now ("" when it can)."""
        p = self._parameterNode
        inputs = p.inputs() if p else []
        phases = [phase for _node, phase in inputs]
        busy = _("Another HCCFusion step is running.") if self._running else ""
        noInput = _("Select at least one input volume and its phase in Inputs.") if not inputs else ""
        reasons = {"checkInputs": noInput or busy}
        if len(inputs) < 2:
            reasons["registration"] = _("Registration needs at least two input volumes.")
        elif p.referencePhase not in phases:
            reasons["registration"] = _("No input has the reference phase {phase}.").format(phase=p.referencePhase)
        else:
            reasons["registration"] = self._verbReason("register") or busy
        reasons["segmentation"] = noInput or self._segmentationReason(p) or busy
        reasons["radiomics"] = (noInput or (_("Select the segmentation to measure.") if not p.radiomicsSegmentation else "")
                                or self._verbReason("extract") or busy)
        bundle = p.predictionBundle if p else None
        reasons["prediction"] = (
            (_("Run Radiomics first: prediction uses its feature table.") if not self._featuresFile().is_file() else "")
            or (_("Choose a model bundle folder.") if not _isFolder(bundle) else "") or self._verbReason("predict") or busy)
        reasons["exportFeatures"] = _("No feature table yet.") if not (p and p.featureTable) else ""
        segmentation = self._segmentationNode()
        noSegmentation = _("Segment first (or pick a segmentation in Radiomics).") if not segmentation else ""
        registered = (self._outputOrNone() / "registration" / "study.json") if self._outputOrNone() else None
        reasons["lirads"] = (noInput or noSegmentation or (
            _("Run Registration first: LI-RADS compares the phases on one grid.")
            if not (registered and registered.exists()) else "") or busy)
        reasons["liradsOverrides"] = _("Assess LI-RADS first.") if getattr(self.logic, "lirads", None) is None else ""
        reasons["exportDicom"] = noInput or noSegmentation or busy
        reasons["saveReport"] = noInput or busy
        dicomFolder = self._reportBase() / "dicom" if self._outputOrNone() else None
        reasons["pacs"] = ((_("Enter the PACS DICOMweb URL.") if not (p and p.pacsUrl.strip()) else "")
                           or (_("Export SEG/SR first.") if not (dicomFolder and (dicomFolder / "sr.dcm").exists()) else "")
                           or self._verbReason("pacs") or busy)
        return reasons

    def _outputOrNone(self):
        try:
            return self.outputFolder()
        except HCCFusionError:  # no valid study ID yet
            return None

    def _reportBase(self) -> Path:
        """Where reports and DICOM objects go: the Output folder of Prediction & Report, else the study's."""
        folder = self._parameterNode.reportFolder
        return Path(folder) if _isFolder(folder) else self.outputFolder()

    def _lesionTable(self):
        """The lesion table node shown in Segmentation, if any (tumour number and size for BCLC)."""
        return self.ui.lesionTableView.mrmlTableNode()

    def _segmentationNode(self):
        p = self._parameterNode
        return (p.radiomicsSegmentation or p.outputSegmentation) if p else None

    def _segmentationReason(self, p):
        if p.segmentationEngine == ENGINE_EXISTING:
            return _("Select the existing segmentation.") if not p.existingSegmentation else ""
        if p.segmentationEngine in (ENGINE_FOLDER, ENGINE_NNUNET) and not _isFolder(p.modelPath):
            return _("Choose the model folder.")
        return self._verbReason("segment")

    def _verbReason(self, verb):
        if self.logic.hasVerb(verb):
            return ""
        return _("This HCCFusionLib version has no 'hccfusion {verb}' command.").format(verb=verb)

    def updateButtons(self, caller=None, event=None):
        if not self._parameterNode:
            return
        reasons = self._reasons()
        buttons = {"checkInputs": (self.ui.checkInputsButton, _("Save the study folder and summarise it.")),
                   "exportFeatures": (self.ui.exportFeaturesButton, _("Save the feature table as CSV.")),
                   "lirads": (self.ui.liradsApplyButton, _("Measure APHE, washout, capsule and size per observation.")),
                   "liradsOverrides": (self.ui.liradsOverridesButton,
                                       _("Record your edits of the LI-RADS table as overrides (with your name).")),
                   "exportDicom": (self.ui.exportDicomButton,
                                   _("Write DICOM SEG and a TID 1500 SR into the output folder.")),
                   "saveReport": (self.ui.saveReportButton, _("Write the HTML report."))}
        tips = {"registration": _("Align the moving volumes to the reference (background process)."),
                "segmentation": _("Segment liver and tumours (background process, except an existing segmentation)."),
                "radiomics": _("Extract features per phase and region (background process)."),
                "prediction": _("Predict with the model bundle (background process)."),
                "pacs": _("Store the exported SEG and SR in the PACS (STOW-RS, background process).")}
        for name, stage in self.stages.items():
            if stage is not self._running:
                buttons[name] = (stage.button, tips[name])
        for name, (button, tip) in buttons.items():
            button.enabled = not reasons[name]
            button.toolTip = reasons[name] or tip
        self.ui.modelPathLineEdit.enabled = self._parameterNode.segmentationEngine in (ENGINE_FOLDER, ENGINE_NNUNET)
        self.ui.existingSegmentationSelector.enabled = self._parameterNode.segmentationEngine == ENGINE_EXISTING
        self.ui.nnunetChannelMapLineEdit.enabled = self._parameterNode.segmentationEngine == ENGINE_NNUNET
        self.ui.segmentationChannelsLabel.text = self._modelChannels()
        try:
            self.ui.bclcStageLabel.text = self.logic.bclcStage(self._parameterNode.clinical(), self._lesionTable())
        except HCCFusionError as error:
            self.ui.bclcStageLabel.text = str(error)

    # ------------------------------------------------------------ inputs
    def onLoadPhantom(self):
        with slicer.util.tryWithErrorDisplay(_("Failed to generate the phantom sample."), waitCursor=True):
            self.loadPhantom()

    def loadPhantom(self, seed=1):
        """Generate the phantom sample and assign its phases to the input rows."""
        if not install.ensure("inputs"):
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
            if install.ensure("inputs"):
                self.ui.inputsSummaryTextEdit.setPlainText(self.logic.info(self.exportStudy()))

    def _referenceNode(self):
        p = self._parameterNode or getParameterNode()
        nodes = {phase: node for node, phase in p.inputs()}
        return nodes.get(p.referencePhase) or next(iter(nodes.values()))

    def _studyForNextStage(self, useRegistered=True) -> Path:
        registered = self.outputFolder() / "registration"
        if useRegistered and (registered / "study.json").exists():
            return registered
        return self.exportStudy()

    # ------------------------------------------------------------ stages
    def onApply(self, name, start):
        stage = self.stages[name]
        if self._running is stage:
            self.runner.cancel()
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start {name}.").format(name=name), waitCursor=True):
            if not install.ensure(self._installStage(name)):
                return
            job, load = start()
            if job is None:  # done in-process
                self._done(stage, load(), None)
                return
            self._running = stage
            stage.started()
            self.updateButtons()
            self.logic.run(job, load, progress=stage.progress,
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
            slicer.util.errorDisplay(_("{name} failed:").format(name=stage.name) + f"\n{error}")
            logging.error("HCCFusion %s failed: %s", stage.name, error)
        self.updateButtons()

    def startRegistration(self):
        p = self._parameterNode
        moving = {node.GetID() for node in self.ui.movingVolumesSelector.checkedNodes()}
        inputs = [(n, ph) for n, ph in p.inputs() if ph == p.referencePhase or not moving or n.GetID() in moving]
        masks = {p.referencePhase: p.registrationMaskSegmentation} if p.registrationMaskSegmentation else None
        out = self.outputFolder()
        study = self.logic.exportStudy(inputs, out / "study", p.studyId, p.clinical(), masks)
        staging = self.logic.stagingFolder(out)
        job = self.logic.registrationJob(study, staging, p.referencePhase, p.registrationMode,
                                         p.registrationUseLiverMask)
        nodes = dict((ph, n) for n, ph in inputs if ph != p.referencePhase)
        return job, lambda: self.logic.loadRegistration(self.logic.promote(staging, out, "registration"), nodes,
                                                        p.studyId)

    def show_registration(self, result):
        reference = self._referenceNode()
        moving = next(iter(result.nodes["resampled"].values()), None)
        slicer.util.setSliceViewerLayers(background=reference, foreground=moving, foregroundOpacity=0.5, fit=True)

    def _installStage(self, name):
        """The install.STAGES entry that a stage needs (the nnU-Net v2 engine also needs nnunetv2)."""
        if name == "segmentation" and self._parameterNode.segmentationEngine == ENGINE_NNUNET:
            return "nnunet"
        return name if name in install.STAGES else "dicom"

    def startSegmentation(self):
        p, out = self._parameterNode, self.outputFolder()
        reference = self._referenceNode()
        if p.segmentationEngine == ENGINE_EXISTING:
            path = out / "segmentation" / "segmentation.nii.gz"
            self.logic.exportSegmentation(p.existingSegmentation, reference, path)
            return None, lambda: self.logic.loadSegmentation(out, reference, p.studyId, p.outputSegmentation)
        study = self._studyForNextStage(p.segmentationUseRegistered)
        engine = p.segmentationEngine
        job = self.logic.segmentationJob(study, out, modelFolder=p.modelPath if engine == ENGINE_FOLDER else None,
                                         nnunetFolder=p.modelPath if engine == ENGINE_NNUNET else None,
                                         tta=p.segmentationTTA, reference=p.referencePhase,
                                         channelMap=p.nnunetChannelMap, engine=ENGINE_NAMES[engine])
        return job, lambda: self.logic.loadSegmentation(out, reference, p.studyId, p.outputSegmentation)

    def show_segmentation(self, result):
        p = self._parameterNode or getParameterNode()  # the module may have been left while the step ran
        node = result.nodes["segmentation"]
        wasModified = p.StartModify()
        p.outputSegmentation = node
        p.radiomicsSegmentation = node
        p.EndModify(wasModified)
        if "lesions" in result.nodes:
            self.ui.lesionTableView.setMRMLTableNode(result.nodes["lesions"])
            self.updateButtons()  # BCLC uses the lesion count and size

    def startRadiomics(self):
        p, out = self._parameterNode, self.outputFolder()
        study = self._studyForNextStage()
        selected = {n.GetID() for n in self.ui.radiomicsVolumesSelector.checkedNodes()}
        if selected:
            phases = [ph for n, ph in p.inputs() if n.GetID() in selected]
            study = self.logic.subsetStudy(study, phases, out / "radiomics_input" / "study")
        segmentationFile = self.logic.exportSegmentation(p.radiomicsSegmentation, self._referenceNode(),
                                                         out / "radiomics_input" / "segmentation.nii.gz")
        job = self.logic.radiomicsJob(study, segmentationFile, out, p.radiomicsPreset, p.radiomicsRegions)
        return job, lambda: self.logic.loadFeatures(out, p.studyId, p.featureTable)

    def show_radiomics(self, result):
        (self._parameterNode or getParameterNode()).featureTable = result.nodes["features"]
        self.ui.featureTableView.setMRMLTableNode(result.nodes["features"])
        self.onFeatureFilter(self.ui.featureFilterLineEdit.text)

    def _featuresFile(self) -> Path:
        out = self._outputOrNone()
        return out / "radiomics" / "features_wide.csv" if out else Path()

    def startPrediction(self):
        p, out = self._parameterNode, self.outputFolder()
        clinical = self.logic.writeClinical(p.clinical(), p.studyId, out / "prediction_input" / "clinical.csv")
        job = self.logic.predictionJob(self._featuresFile(), p.predictionBundle, out, clinical)
        return job, lambda: self.logic.loadPrediction(out, p.studyId)

    def show_prediction(self, result):
        self.ui.predictionResultLabel.text = result.summary
        if "evidence" in result.nodes:
            self.ui.evidenceTableView.setMRMLTableNode(result.nodes["evidence"])
        if "chart" in result.nodes:
            slicer.modules.plots.logic().ShowChartInLayout(result.nodes["chart"])

    def startPacs(self):
        p, folder = self._parameterNode, self._reportBase() / "dicom"
        job = self.logic.pacsPushJob([folder / "seg.dcm", folder / "sr.dcm"], p.pacsUrl)
        url = p.pacsUrl.strip()
        return job, lambda: StageResult(folder, {}, _("SEG and SR stored on {url}").format(url=url))

    # ------------------------------------------------------------ LI-RADS and DICOM (in-process)
    def onAssessLirads(self):
        with slicer.util.tryWithErrorDisplay(_("LI-RADS assessment failed."), waitCursor=True):
            if not install.ensure("inputs"):
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
            if not install.ensure("dicom"):
                return
            p = self._parameterNode
            written = self.logic.exportDicom(self._studyForNextStage(), self._segmentationNode(), p.referencePhase,
                                             self._reportBase(), p.studyId)
            self.ui.reportStatusLabel.text = _("DICOM SEG and SR written to {folder}").format(
                folder=written["seg"].parent)
            self.updateButtons()

    def onSaveReport(self):
        with slicer.util.tryWithErrorDisplay(_("The report could not be written."), waitCursor=True):
            if not install.ensure("inputs"):
                return
            p = self._parameterNode
            bundle = p.predictionBundle if _isFolder(p.predictionBundle) else None
            path = self.logic.saveReport(self._studyForNextStage(), self._segmentationNode(), self.outputFolder(),
                                         p.studyId, self._reportBase(), bundle)
            self.ui.reportStatusLabel.text = _("Report written to {path}").format(path=path)
            if not slicer.app.testingEnabled():
                qt.QDesktopServices.openUrl(qt.QUrl.fromLocalFile(str(path)))

    # ------------------------------------------------------------ radiomics table
    def onFeatureFilter(self, text):
        proxy = self.ui.featureTableView.sortFilterProxyModel()
        proxy.setFilterKeyColumn(-1)  # any column
        proxy.setFilterRegularExpression("(?i)" + text)

    def onExportFeatures(self):
        table = self._parameterNode.featureTable
        with slicer.util.tryWithErrorDisplay(_("Failed to export the feature table."), waitCursor=True):
            path = qt.QFileDialog.getSaveFileName(self.uiWidget, _("Export feature table"),
                                                  str(self.outputFolder() / f"{table.GetName()}.csv"), "CSV (*.csv)")
            if not path:
                return
            from HCCFusionLib import scene as mrml
            from HCCFusionLib.io import atomic_write

            with atomic_write(path) as tmp:
                mrml.table_to_dataframe(table).to_csv(tmp, index=False)

    # ------------------------------------------------------------ models and setup
    def _modelChannels(self) -> str:
        """What the chosen engine reads: the catalogue entry of a shipped engine, or a model folder's channels."""
        from HCCFusionLib.segmentation import catalog

        p = self._parameterNode
        name = ENGINE_NAMES.get(p.segmentationEngine)
        if name in ("auto", "liverlesion", "phantom"):
            rows = [r for r in catalog.rows() if name in ("auto", r["engine"])]
            return "\n".join(_("{name}: {phases}; {seconds} s on CPU; {licence}; {status}").format(
                name=r["name"], phases=r["phases"], seconds=r["seconds_cpu"], licence=r["licence"],
                status=r["status"]) for r in rows)
        dataset = Path(p.modelPath) / "dataset.json" if _isFolder(p.modelPath) else None
        if dataset is None or not dataset.is_file():
            return ""
        try:
            description = json.loads(dataset.read_text(encoding="utf-8"))
            if p.segmentationEngine == ENGINE_NNUNET:  # nnU-Net v2: {"0": "CT", ...}
                names = description.get("channel_names") or {}
                return ", ".join(f"{k}: {names[k]}" for k in sorted(names, key=int))
        except (OSError, ValueError):
            return _("dataset.json of the model is unreadable")
        channels = description.get("channels", [])
        return ", ".join(str(c.get("name", c)) if isinstance(c, dict) else str(c) for c in channels)

    def onDependencies(self):
        with slicer.util.tryWithErrorDisplay(_("Failed to install the Python packages."), waitCursor=True):
            self.ui.dependenciesLabel.text = install.report()
            if all(install.ensure(stage) for stage in install.STAGES if stage not in install.ON_DEMAND):
                self.ui.dependenciesLabel.text = install.report()


def _isFolder(path) -> bool:
    return bool(path) and str(path) not in ("", ".") and Path(path).is_dir()

