"""Panel vocabulary shared by the parameter node, the logic and the readiness rules (no Slicer, no Qt).

`parameters.py` builds its typed fields from these lists; the logic and `readiness.py` compare against them.
"""
from __future__ import annotations

from HCCFusionLib.study import Phase

UNKNOWN = "not known"  # the panel's value for a clinical variable that is not known
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
ASCITES = [UNKNOWN, "none", "mild", "moderate-severe"]
ENCEPHALOPATHY = [UNKNOWN, "none", "grade1-2", "grade3-4"]
ETIOLOGIES = [UNKNOWN, "HBV", "HCV", "NASH", "alcohol", "other"]
PERFORMANCE_STATUS = [UNKNOWN, "0", "1", "2", "3", "4"]
YES_NO = [UNKNOWN, "no", "yes"]
#: Number of (volume, phase) rows in the Inputs section.
INPUT_ROWS = 6


def clinicalFromPanel(values: dict) -> dict:
    """Panel values → Clinical fields: negative numbers and "not known" left out, yes/no and ECOG PS converted."""
    result = {}
    for key, value in values.items():
        if value is None or value == UNKNOWN or (isinstance(value, float) and value < 0):
            continue
        if key == "performance_status":
            value = int(value)
        elif value in ("yes", "no"):
            value = value == "yes"
        result[key] = value
    return result
