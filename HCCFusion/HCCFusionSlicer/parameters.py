"""Typed state of the HCCFusion panel, stored in the scene so a saved scene restores the panel.

Widgets in Resources/UI/HCCFusion.ui bind to these fields by their `SlicerParameterName` property.
Clinical numbers use -1 for "not known" (shown by the spin boxes' special value text).
"""
import pathlib
from typing import Annotated

from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper

from HCCFusionLib.study import Phase

from .logic import UNKNOWN, clinicalFromPanel

PHASES = [phase.value for phase in Phase]
REGISTRATION_MODES = ["rigid", "affine", "deformable"]
ENGINE_AUTO = "Automatic (by the study's phases)"
ENGINE_LIVERLESION = "Real-data liver and lesion engine"
ENGINE_PHANTOM = "Phantom sample model"
ENGINE_FOLDER = "Model bundle folder"
ENGINE_NNUNET = "nnU-Net v2 folder"
ENGINE_EXISTING = "Existing segmentation"
ENGINES = [ENGINE_AUTO, ENGINE_LIVERLESION, ENGINE_PHANTOM, ENGINE_FOLDER, ENGINE_NNUNET, ENGINE_EXISTING]
#: panel choice -> `hccfusion segment --engine` name (HCCFusionLib.segmentation.engines)
ENGINE_NAMES = {ENGINE_AUTO: "auto", ENGINE_LIVERLESION: "liverlesion", ENGINE_PHANTOM: "phantom",
                ENGINE_FOLDER: "bundle", ENGINE_NNUNET: "nnunet"}
PRESETS = ["auto", "ct", "mr", "pet"]  # `hccfusion extract --preset` names; auto: per modality
Lab = Annotated[float, WithinRange(-1.0, 1.0e6)]
Phases = Annotated[str, Choice(PHASES)]
YesNo = Annotated[str, Choice([UNKNOWN, "no", "yes"])]

#: Number of (volume, phase) rows in the Inputs section.
INPUT_ROWS = 6


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
    ascites: Annotated[str, Choice([UNKNOWN, "none", "mild", "moderate-severe"])] = UNKNOWN
    encephalopathy: Annotated[str, Choice([UNKNOWN, "none", "grade1-2", "grade3-4"])] = UNKNOWN
    etiology: Annotated[str, Choice([UNKNOWN, "HBV", "HCV", "NASH", "alcohol", "other"])] = UNKNOWN
    performanceStatus: Annotated[str, Choice([UNKNOWN, "0", "1", "2", "3", "4"])] = UNKNOWN
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
    featureTable: vtkMRMLTableNode
    # Prediction & Report
    predictionBundle: pathlib.Path
    reportFolder: pathlib.Path
    pacsUrl: str = ""

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

