"""HCCFusionSegmentation: the segmentation stage of HCCFusion as a module of its own (category HCCFusion).

Metadata only: the panel is the shared `HCCFusionSlicer.widget.HCCFusionPanel` on Resources/UI/HCCFusionSegmentation.ui, bound
to the same parameter node as the HCCFusion workflow module, so inputs chosen there are used here.
"""
import os
import sys

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget

# Developer mode (module path = the source tree's HCCFusionSegmentation/): HCCFusionLib is one folder up, the glue package in
# HCCFusion/. Installed, both sit beside this file in qt-scripted-modules, which is already on sys.path.
_sourceTree = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _folder, _package in ((_sourceTree, "HCCFusionLib"), (os.path.join(_sourceTree, "HCCFusion"), "HCCFusionSlicer")):
    if os.path.isfile(os.path.join(_folder, _package, "__init__.py")) and _folder not in sys.path:
        sys.path.append(_folder)

STAGE = "segmentation"


class HCCFusionSegmentation(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("HCCFusion Segmentation")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "HCCFusion")]
        self.parent.dependencies = ["HCCFusion"]
        self.parent.contributors = ["HCCFusion developers"]
        self.parent.helpText = _(
            "Segment the liver and its tumours with the engine the study's phases call for, a model bundle, an nnU-Net v2 folder, or take an existing segmentation; the lesions are listed in a table. The verb `hccfusion segment` runs in a background process with progress and Cancel. Inputs come from the HCCFusion workflow module. Research software, not for clinical use. "
            'See the <a href="https://github.com/hccfusion/SlicerHCCFusion#readme">README</a>.')
        self.parent.acknowledgementText = _(
            "Built on 3D Slicer, SimpleITK, MONAI, pyradiomics, scikit-learn, scikit-survival and highdicom.")


class HCCFusionSegmentationWidget(ScriptedLoadableModuleWidget):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        self.panel = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from HCCFusionSlicer.widget import HCCFusionPanel

        self.panel = HCCFusionPanel(self.resourcePath("UI/HCCFusionSegmentation.ui"))
        self.logic = self.panel.logic
        self.layout.addWidget(self.panel.uiWidget)

    def enter(self):
        self.panel.initializeParameterNode()

    def exit(self):
        self.panel.setParameterNode(None)

    def cleanup(self):
        if self.panel:
            self.panel.cleanup()


class HCCFusionSegmentationTest(ScriptedLoadableModuleTest):
    """The panel has this stage's Apply button, shares the workflow's parameter node and prepares its job."""

    def runTest(self):
        slicer.mrmlScene.Clear()
        slicer.util.selectModule("HCCFusion")
        workflow = slicer.util.getModuleWidget("HCCFusion").panel
        workflow.loadPhantom(seed=2)
        slicer.util.selectModule("HCCFusionSegmentation")
        panel = slicer.util.getModuleWidget("HCCFusionSegmentation").panel
        self.assertEqual(list(panel.stages), [STAGE] + (["pacs"] if STAGE == "prediction" else []))
        self.assertEqual(panel._parameterNode.parameterNode.GetID(), workflow._parameterNode.parameterNode.GetID())
        self.assertEqual(len(panel._parameterNode.inputs()), len(workflow._parameterNode.inputs()))
        panel.updateButtons()
        self.delayDisplay("HCCFusionSegmentation test passed")
