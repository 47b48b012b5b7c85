"""Typed state of the HCCFusion panel, stored in the scene so a saved scene restores the panel.

Widgets in Resources/UI/HCCFusion.ui bind to these fields by their `SlicerParameterName` property.
Clinical numbers use -1 for "not known" (shown by the spin boxes' special value text).
"""
import pathlib
from typing import Annotated

from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper

from .choices import (ASCITES, ENCEPHALOPATHY, ENGINE_AUTO, ENGINES, ETIOLOGY_CHOICES, INPUT_ROWS, PERFORMANCE_STATUS,
                      PHASES, PRESETS, RADIOMICS_BACKENDS, REGISTRATION_MODES, UNKNOWN, YES_NO, clinicalFromPanel)

Lab = Annotated[float, WithinRange(-1.0, 1.0e6)]
Phases = Annotated[str, Choice(PHASES)]
YesNo = Annotated[str, Choice(YES_NO)]


@parameterNodeWrapper
class HCCFusionParameterNode:
    # Inputs: one volume and its phase/sequence per row
    input1Volume: vtkMRMLScalarVolumeNode
    input1Phase: Phases = "NC"
    input2Volume: vtkMRMLScalarVolumeNode
    input2Phase: Phases = "AP"
    input3Volume: vtkMRMLScalarVolumeNode
    input3Phase: Phases = "PVP"
    input4Volume: vtkMRMLScalarVolumeNode
    input4Phase: Phases = "DP"
    input5Volume: vtkMRMLScalarVolumeNode
    input5Phase: Phases = "T1"
    input6Volume: vtkMRMLScalarVolumeNode
    input6Phase: Phases = "HBP"
    studyId: str = "Study1"
    workFolder: pathlib.Path
    # Clinical variables (HCCFusionLib.study.Clinical)
    afp: Lab = -1.0
    bilirubin: Lab = -1.0
    albumin: Lab = -1.0
    inr: Lab = -1.0
    ascites: Annotated[str, Choice(ASCITES)] = UNKNOWN
    encephalopathy: Annotated[str, Choice(ENCEPHALOPATHY)] = UNKNOWN
    etiology: Annotated[str, Choice(ETIOLOGY_CHOICES)] = UNKNOWN
    performanceStatus: Annotated[str, Choice(PERFORMANCE_STATUS)] = UNKNOWN
    vascularInvasion: YesNo = UNKNOWN
    extrahepaticSpread: YesNo = UNKNOWN
    # Registration
    referencePhase: Phases = "PVP"
    registrationMode: Annotated[str, Choice(REGISTRATION_MODES)] = "deformable"
    registrationUseLiverMask: bool = False
    registrationMaskSegmentation: vtkMRMLSegmentationNode
    # Segmentation
    segmentationEngine: Annotated[str, Choice(ENGINES)] = ENGINE_AUTO
    modelPath: pathlib.Path
    existingSegmentation: vtkMRMLSegmentationNode
    nnunetChannelMap: str = ""
    segmentationUseRegistered: bool = True
    segmentationTTA: bool = True
    outputSegmentation: vtkMRMLSegmentationNode
    # Radiomics
    radiomicsSegmentation: vtkMRMLSegmentationNode
    radiomicsPreset: Annotated[str, Choice(PRESETS)] = "auto"
    radiomicsRegions: str = ""
    radiomicsBackend: Annotated[str, Choice(RADIOMICS_BACKENDS)] = "pyradiomics"
    radiomicsDevice: str = ""  # torch device for the torch backend (empty: the GPU when present)
    featureTable: vtkMRMLTableNode
    # Prediction & Report
    predictionBundle: pathlib.Path
    deepBundle: pathlib.Path  # deep fusion bundle (train-deep) for predict-deep / run --deep-model
    reportFolder: pathlib.Path
    pacsUrl: str = ""
    # Follow-up: the same patient's earlier run folder and the landmark risk bundle (run --prior --risk-bundle)
    priorRun: pathlib.Path
    riskBundle: pathlib.Path
    # Cohort & research
    researchFolder: pathlib.Path
    protocolQcSource: pathlib.Path
    researchBundle: pathlib.Path
    cohortTable: pathlib.Path
    cohortDask: bool = False

    def inputs(self) -> list:
        """(volume node, phase code) of every input row with a volume."""
        rows = [(getattr(self, f"input{i}Volume"), getattr(self, f"input{i}Phase")) for i in range(1, INPUT_ROWS + 1)]
        return [(node, phase) for node, phase in rows if node is not None]

    def clinical(self) -> dict:
        """Clinical fields with the panel's "not known" values left out."""
        values = {"afp": self.afp, "bilirubin": self.bilirubin, "albumin": self.albumin, "inr": self.inr,
                  "ascites": self.ascites, "encephalopathy": self.encephalopathy, "etiology": self.etiology,
                  "performance_status": self.performanceStatus, "vascular_invasion": self.vascularInvasion,
                  "extrahepatic_spread": self.extrahepaticSpread}
        return clinicalFromPanel(values)

