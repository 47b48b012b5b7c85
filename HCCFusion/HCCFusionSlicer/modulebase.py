"""The widget and self-test shared by the HCCFusion scripted modules (the workflow and the four stage modules).

Each module file keeps its Slicer metadata and names its .ui; the shared `HCCFusionPanel` on that .ui, bound to
the one "HCCFusion" parameter node, and its lifecycle live here. Imported by the module files only (needs the
Slicer application's ScriptedLoadableModule).
"""
import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget


class PanelModuleWidget(ScriptedLoadableModuleWidget):
    """Shows `HCCFusionPanel` on the module's `UI` resource (e.g. "UI/HCCFusionRegistration.ui")."""

    UI = ""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        self.panel = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        from .widget import HCCFusionPanel

        self.panel = HCCFusionPanel(self.resourcePath(self.UI))
        self.logic = self.panel.logic
        self.layout.addWidget(self.panel.uiWidget)

    def enter(self):
        self.panel.initializeParameterNode()

    def exit(self):
        self.panel.setParameterNode(None)

    def cleanup(self):
        if self.panel:
            self.panel.cleanup()


class StageModuleTest(ScriptedLoadableModuleTest):
    """The stage module `MODULE` has its stage's Apply button, shares the workflow's parameter node and prepares
    its job."""

    MODULE = ""
    STAGE = ""

    def runTest(self):
        slicer.mrmlScene.Clear()
        slicer.util.selectModule("HCCFusion")
        workflow = slicer.util.getModuleWidget("HCCFusion").panel
        workflow.loadPhantom(seed=2)
        slicer.util.selectModule(self.MODULE)
        panel = slicer.util.getModuleWidget(self.MODULE).panel
        self.assertEqual(list(panel.stages), [self.STAGE] + (["pacs"] if self.STAGE == "prediction" else []))
        self.assertEqual(panel._parameterNode.parameterNode.GetID(), workflow._parameterNode.parameterNode.GetID())
        self.assertEqual(len(panel._parameterNode.inputs()), len(workflow._parameterNode.inputs()))
        panel.updateButtons()
        self.delayDisplay(f"{self.MODULE} test passed")
