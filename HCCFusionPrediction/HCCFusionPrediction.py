"""HCCFusionPrediction: the prediction stage of HCCFusion as a module of its own (category HCCFusion).

Metadata only: widget and self-test come from `HCCFusionSlicer.modulebase` (the shared panel on
Resources/UI/HCCFusionPrediction.ui), bound to the same parameter
node as the HCCFusion workflow module, so inputs chosen there are used here.
"""
import os
import sys

from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule

# Developer mode (module path = the source tree's HCCFusionPrediction/): HCCFusionLib is one folder up, the glue package in
# HCCFusion/. Installed, both sit beside this file in qt-scripted-modules, which is already on sys.path.
_sourceTree = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _folder, _package in ((_sourceTree, "HCCFusionLib"), (os.path.join(_sourceTree, "HCCFusion"), "HCCFusionSlicer")):
    if os.path.isfile(os.path.join(_folder, _package, "__init__.py")) and _folder not in sys.path:
        sys.path.append(_folder)

from HCCFusionSlicer.modulebase import PanelModuleWidget, StageModuleTest  # noqa: E402 (after the path set-up)


class HCCFusionPrediction(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("HCCFusion Prediction")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "HCCFusion")]
        self.parent.dependencies = ["HCCFusion"]
        self.parent.contributors = ["HCCFusion developers"]
        self.parent.helpText = _(
            "Predict with a fused model bundle from the features and clinical values, with per-feature contributions and evidence; assess LI-RADS with reader overrides, stage BCLC, write the HTML report, DICOM SEG/SR and push to a PACS. The verb `hccfusion predict` runs in a background process with progress and Cancel. Inputs come from the HCCFusion workflow module. Research software, not for clinical use. "
            'See the <a href="https://github.com/hccfusion/SlicerHCCFusion#readme">README</a>.')
        self.parent.acknowledgementText = _(
            "Built on 3D Slicer, SimpleITK, MONAI, pyradiomics, scikit-learn, scikit-survival and highdicom.")


class HCCFusionPredictionWidget(PanelModuleWidget):
    UI = "UI/HCCFusionPrediction.ui"


class HCCFusionPredictionTest(StageModuleTest):
    MODULE = "HCCFusionPrediction"
    STAGE = "prediction"
