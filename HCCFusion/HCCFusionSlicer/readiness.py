"""Which panel buttons may run now, and why not: pure functions of a `PanelState` (no Slicer, no Qt).

`reasons(state)` maps each button to "" (ready) or the sentence its tooltip shows; the panels build the
state from their parameter node and the run folder, then only copy the answers onto their widgets.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .choices import COHORT_ENGINES, ENGINE_EXISTING, ENGINE_FOLDER, ENGINE_NNUNET
from .i18n import _


@dataclass
class PanelState:
    """What the rules look at: inputs, choices, and which outputs exist already."""

    phases: list = field(default_factory=list)  # phase of every input row with a volume
    referencePhase: str = "PVP"
    running: bool = False
    verbs: frozenset = frozenset()  # `hccfusion` verbs of the installed HCCFusionLib
    segmentationEngine: str = ""
    existingSegmentation: bool = False
    modelFolder: bool = False  # the model path is a folder
    radiomicsSegmentation: bool = False
    segmentation: bool = False  # a segmentation to assess/export (radiomics' or segmentation's output)
    featuresFile: bool = False  # OUT/radiomics/features_wide.csv exists
    predictionBundle: bool = False  # the bundle path is a folder
    featureTable: bool = False
    registered: bool = False  # OUT/registration/study.json exists
    liradsAssessed: bool = False
    pacsUrl: str = ""
    dicomExported: bool = False  # the report folder's dicom/sr.dcm exists
    modalityResults: bool = False  # OUT has PET, CEUS, follow-up or MR subtraction results (results.availableResults)
    protocolQcSource: bool = False  # a DICOM folder or a CSV of them (research.isProtocolSource)
    researchBundle: bool = False  # the research model bundle path is a folder
    cohortTable: bool = False  # the cohort CSV exists
    deepBundle: bool = False  # the deep fusion bundle path is a folder
    priorRun: bool = False  # the prior run path is a run folder (steps.isRunFolder)
    riskBundleChosen: bool = False  # a risk bundle path is given (it is optional)
    riskBundle: bool = False  # ... and it is a folder
    radiomicsBackend: str = "pyradiomics"
    radiomicsDevice: str = ""  # torch device of the torch backend


def verbReason(state: PanelState, verb: str) -> str:
    if verb in state.verbs:
        return ""
    return _("This HCCFusionLib version has no 'hccfusion {verb}' command.").format(verb=verb)


def segmentationReason(state: PanelState) -> str:
    if state.segmentationEngine == ENGINE_EXISTING:
        return _("Select the existing segmentation.") if not state.existingSegmentation else ""
    if state.segmentationEngine in (ENGINE_FOLDER, ENGINE_NNUNET) and not state.modelFolder:
        return _("Choose the model folder.")
    return verbReason(state, "segment")


def reasons(state: PanelState) -> dict:
    """Per button name: why it cannot run now ("" when it can)."""
    s = state
    busy = _("Another HCCFusion step is running.") if s.running else ""
    noInput = _("Select at least one input volume and its phase in Inputs.") if not s.phases else ""
    noSegmentation = _("Segment first (or pick a segmentation in Radiomics).") if not s.segmentation else ""
    device = (_("A radiomics device needs the torch backend: choose torch, or clear the device.")
              if s.radiomicsDevice.strip() and s.radiomicsBackend != "torch" else "")
    notRegistered = _("Run Registration first: {step} reads the phases on one grid.") if not s.registered else ""
    if len(s.phases) < 2:
        registration = _("Registration needs at least two input volumes.")
    elif s.referencePhase not in s.phases:
        registration = _("No input has the reference phase {phase}.").format(phase=s.referencePhase)
    else:
        registration = verbReason(s, "register") or busy
    return {
        "checkInputs": noInput or busy,
        "registration": registration,
        "segmentation": noInput or segmentationReason(s) or busy,
        "radiomics": (noInput or (_("Select the segmentation to measure.") if not s.radiomicsSegmentation else "")
                      or device or verbReason(s, "extract") or busy),
        "prediction": ((_("Run Radiomics first: prediction uses its feature table.") if not s.featuresFile else "")
                       or (_("Choose a model bundle folder.") if not s.predictionBundle else "")
                       or verbReason(s, "predict") or busy),
        "exportFeatures": _("No feature table yet.") if not s.featureTable else "",
        "lirads": noInput or noSegmentation or notRegistered.format(step="LI-RADS") or busy,
        "deepPrediction": (noInput or notRegistered.format(step=_("deep fusion")) or noSegmentation
                           or (_("Choose a deep fusion bundle folder (hccfusion train-deep).") if not s.deepBundle
                               else "") or verbReason(s, "predict-deep") or busy),
        "followup": (noInput or noSegmentation
                     or (_("Choose the prior run folder: an earlier 'hccfusion run' output of this patient.")
                         if not s.priorRun else "")
                     or (_("The risk bundle is not a folder: choose a landmark bundle (train --landmark) or none.")
                         if s.riskBundleChosen and not s.riskBundle else "") or device or verbReason(s, "run") or busy),
        "liradsOverrides": _("Assess LI-RADS first.") if not s.liradsAssessed else "",
        "exportDicom": noInput or noSegmentation or busy,
        "saveReport": noInput or busy,
        "loadResults": (_("No PET (pet-suv), CEUS (ceus), follow-up (run --prior) or MR subtraction results in the "
                          "output folder yet.") if not s.modalityResults else "") or busy,
        "pacs": ((_("Enter the PACS DICOMweb URL.") if not s.pacsUrl.strip() else "")
                 or (_("Export SEG/SR first.") if not s.dicomExported else "") or verbReason(s, "pacs") or busy),
        "protocolQc": ((_("Choose a DICOM folder, or a CSV of DICOM folders with path and site columns.")
                        if not s.protocolQcSource else "") or verbReason(s, "protocol-qc") or busy),
        "nomogram": ((_("Choose a model bundle folder trained with --nomogram.") if not s.researchBundle else "")
                     or verbReason(s, "nomogram") or busy),
        "cohortRun": ((_("Choose the cohort CSV (study_id, path columns).") if not s.cohortTable else "")
                      or (_("A cohort run uses a shipped engine: choose {engines} in Segmentation.").format(
                          engines=", ".join(COHORT_ENGINES)) if s.segmentationEngine not in COHORT_ENGINES else "")
                      or verbReason(s, "cohort-run") or busy),
    }


def engineWidgets(engine: str) -> dict:
    """Which engine-specific inputs are enabled: model folder, existing segmentation, nnU-Net channel map."""
    return {"modelPath": engine in (ENGINE_FOLDER, ENGINE_NNUNET), "existingSegmentation": engine == ENGINE_EXISTING,
            "nnunetChannelMap": engine == ENGINE_NNUNET}
