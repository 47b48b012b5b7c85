"""HCCFusionRegistration: the registration stage of HCCFusion as a module of its own (category HCCFusion).

Metadata only: widget and self-test come from `HCCFusionSlicer.modulebase` (the shared panel on
Resources/UI/HCCFusionRegistration.ui), bound to the same parameter
node as the HCCFusion workflow module, so inputs chosen there are used here.
"""
import os
import sys

from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule

# Developer mode (module path = the source tree's HCCFusionRegistration/): HCCFusionLib is one folder up, the glue package in
# HCCFusion/. Installed, both sit beside this file in qt-scripted-modules, which is already on sys.path.
_sourceTree = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _folder, _package in ((_sourceTree, "HCCFusionLib"), (os.path.join(_sourceTree, "HCCFusion"), "HCCFusionSlicer")):
    if os.path.isfile(os.path.join(_folder, _package, "__init__.py")) and _folder not in sys.path:
        sys.path.append(_folder)

from HCCFusionSlicer.modulebase import PanelModuleWidget, StageModuleTest  # noqa: E402 (after the path set-up)


class HCCFusionRegistration(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("HCCFusion Registration")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "HCCFusion")]
        self.parent.dependencies = ["HCCFusion"]
        self.parent.contributors = ["HCCFusion developers"]
        self.parent.helpText = _(
            "Register the moving phases or sequences of a study to its reference phase (rigid, affine or deformable, optionally masked by the liver), with QC checkerboards and a fused multi-channel volume. The verb `hccfusion register` runs in a background process with progress and Cancel. Inputs come from the HCCFusion workflow module. Research software, not for clinical use. "
            'See the <a href="https://github.com/hccfusion/SlicerHCCFusion#readme">README</a>.')
        self.parent.acknowledgementText = _(
            "Built on 3D Slicer, SimpleITK, MONAI, pyradiomics, scikit-learn, scikit-survival and highdicom.")


class HCCFusionRegistrationWidget(PanelModuleWidget):
    UI = "UI/HCCFusionRegistration.ui"


class HCCFusionRegistrationTest(StageModuleTest):
    MODULE = "HCCFusionRegistration"
    STAGE = "registration"
