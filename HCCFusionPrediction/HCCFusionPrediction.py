"""HCCFusionPrediction: the prediction stage of HCCFusion as a module of its own (category HCCFusion).

Metadata only: the panel is the shared `HCCFusionSlicer.widget.HCCFusionPanel` on Resources/UI/HCCFusionPrediction.ui, bound
to the same parameter node as the HCCFusion workflow module, so inputs chosen there are used here.
"""
import os
import sys

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget

# Developer mode (module path = the source tree's HCCFusionPrediction/): HCCFusionLib is one folder up, the glue package in
# HCCFusion/. Installed, both sit beside this file in qt-scripted-modules, which is already on sys.path.
_sourceTree = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _folder, _package in ((_sourceTree, "HCCFusionLib"), (os.path.join(_sourceTree, "HCCFusion"), "HCCFusionSlicer")):
    if os.path.isfile(os.path.join(_folder, _package, "__init__.py")) and _folder not in sys.path:
        sys.path.append(_folder)

STAGE = "prediction"


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


class HCCFusionPredictionWidget(ScriptedLoadableModuleWidget):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        self.panel = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from HCCFusionSlicer.widget import HCCFusionPanel

        self.panel = HCCFusionPanel(self.resourcePath("UI/HCCFusionPrediction.ui"))
        self.logic = self.panel.logic
        self.layout.addWidget(self.panel.uiWidget)

    def enter(self):
        self.panel.initializeParameterNode()

    def exit(self):
        self.panel.setParameterNode(None)

    def cleanup(self):
        if self.panel:
            self.panel.cleanup()


class HCCFusionPredictionTest(ScriptedLoadableModuleTest):
    """The panel has this stage's Apply button, shares the workflow's parameter node and prepares its job."""

    def runTest(self):
        slicer.mrmlScene.Clear()
        slicer.util.selectModule("HCCFusion")
        workflow = slicer.util.getModuleWidget("HCCFusion").panel
        workflow.loadPhantom(seed=2)
        slicer.util.selectModule("HCCFusionPrediction")
        panel = slicer.util.getModuleWidget("HCCFusionPrediction").panel
        self.assertEqual(list(panel.stages), [STAGE] + (["pacs"] if STAGE == "prediction" else []))
        self.assertEqual(panel._parameterNode.parameterNode.GetID(), workflow._parameterNode.parameterNode.GetID())
        self.assertEqual(len(panel._parameterNode.inputs()), len(workflow._parameterNode.inputs()))
        panel.updateButtons()
        self.delayDisplay("HCCFusionPrediction test passed")
