"""Panel vocabulary shared by the parameter node, the logic and the readiness rules (no Slicer, no Qt).

`parameters.py` builds its typed fields from these lists; the logic and `readiness.py` compare against them.
"""
from __future__ import annotations

from HCCFusionLib.clinical import ECOG_PS
from HCCFusionLib.radiomics.presets import DEFAULT_PRESETS
from HCCFusionLib.radiomics.torch_backend import BACKENDS
from HCCFusionLib.study import ASCITES_LEVELS, ENCEPHALOPATHY_LEVELS, ETIOLOGIES, Phase

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
#: `hccfusion extract --preset` names (the library's per-modality map); auto: per modality
PRESETS = ["auto", *dict.fromkeys(DEFAULT_PRESETS.values())]
#: `--radiomics-backend` names (the library's): pyradiomics (default) or torch (on --radiomics-device)
RADIOMICS_BACKENDS = list(BACKENDS)
# clinical choice lists: the library's (HCCFusionLib.clinical / study), with "not known" first
ASCITES = [UNKNOWN, *ASCITES_LEVELS]
ENCEPHALOPATHY = [UNKNOWN, *ENCEPHALOPATHY_LEVELS]
ETIOLOGY_CHOICES = [UNKNOWN, *ETIOLOGIES]
PERFORMANCE_STATUS = [UNKNOWN, *(str(ps) for ps in ECOG_PS)]
YES_NO = [UNKNOWN, "no", "yes"]
#: Panel step → install stages (pyproject extras' names, as in Resources/requirements.txt); others: "dicom".
STEP_INSTALL_STAGES = {"inputs": ("core",), "registration": ("core",), "segmentation": ("seg",),
                       "radiomics": ("radiomics",), "prediction": ("fusion",), "protocolQc": ("core",),
                       "nomogram": ("fusion",), "cohortRun": ("seg", "radiomics", "fusion", "dicom"),
                       "deepPrediction": ("seg",), "followup": ("seg", "radiomics", "fusion", "dicom")}
#: Engines a cohort run can use (`cohort-run --engine`): the shipped ones, no model folder per study.
COHORT_ENGINES = [ENGINE_AUTO, ENGINE_LIVERLESION, ENGINE_PHANTOM]
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
