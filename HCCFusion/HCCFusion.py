import importlib
import os
import sys

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget

# Developer mode (module path = the source tree's HCCFusion/): HCCFusionLib sits one folder up. Installed, it sits
# beside this file in qt-scripted-modules, which is already on sys.path.
_sourceTree = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.isfile(os.path.join(_sourceTree, "HCCFusionLib", "__init__.py")) and _sourceTree not in sys.path:
    sys.path.append(_sourceTree)

from HCCFusionSlicer.modulebase import PanelModuleWidget  # noqa: E402 (after the path set-up)

SAMPLE_NAME = "HCCFusionPhantom"


class HCCFusion(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("HCCFusion")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "HCCFusion")]
        self.parent.dependencies = []
        self.parent.contributors = ["HCCFusion developers"]
        self.parent.helpText = _(
            "Multimodal imaging of hepatocellular carcinoma: register CT phases, MRI sequences and PET into one "
            "frame, segment liver and tumour, measure radiomic and kinetic features per phase and region, and fuse "
            "them with clinical data into predictions with their evidence, LI-RADS and BCLC. Long steps run in a "
            "background process with progress and Cancel. Research software, not for clinical use. "
            'See the <a href="https://github.com/hccfusion/SlicerHCCFusion#readme">README</a>.')
        self.parent.acknowledgementText = _(
            "Built on 3D Slicer, SimpleITK, MONAI, pyradiomics, scikit-learn, scikit-survival and highdicom. "
            "The sample patient is a synthetic phantom generated on the fly (HCCFusionLib.phantom).")
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Offer the synthetic phantom patient in Sample Data; it is generated locally (no download, no checksum)."""
    import SampleData

    iconsPath = os.path.join(os.path.dirname(__file__), "Resources", "Icons")
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="HCCFusion", sampleName=SAMPLE_NAME, uris=[], fileNames=[], nodeNames=[],
        thumbnailFileName=os.path.join(iconsPath, "HCCFusion.png"),
        customDownloader=lambda source: loadPhantomSample())


def loadPhantomSample(seed=1):
    """Generate the phantom patient into the scene and assign its phases in the HCCFusion panel."""
    slicer.util.selectModule("HCCFusion")
    return slicer.util.getModuleWidget("HCCFusion").panel.loadPhantom(seed=seed)


class HCCFusionWidget(PanelModuleWidget):
    UI = "UI/HCCFusion.ui"

    def onReload(self):
        """Reload the library and the glue package too (modules others import first), then the module."""
        first = ["HCCFusionLib.errors", "HCCFusionLib.study", "HCCFusionLib.progress", "HCCFusionLib.io",
                 "HCCFusionLib.scene", "HCCFusionSlicer.i18n", "HCCFusionSlicer.choices", "HCCFusionSlicer.interfaces",
                 "HCCFusionSlicer.process", "HCCFusionSlicer.parameters", "HCCFusionSlicer.steps",
                 "HCCFusionSlicer.readiness", "HCCFusionSlicer.results", "HCCFusionSlicer.research",
                 "HCCFusionSlicer.logic"]
        loaded = [n for n in sys.modules if n.startswith(("HCCFusionLib.", "HCCFusionSlicer.")) and sys.modules[n]]
        for name in sorted(loaded, key=lambda n: (n.startswith("HCCFusionSlicer."), n not in first,
                                                   first.index(n) if n in first else 0, n)):
            importlib.reload(sys.modules[name])
        ScriptedLoadableModuleWidget.onReload(self)


class HCCFusionTest(ScriptedLoadableModuleTest):
    """Runs Testing/Python/HCCFusionPipelineTest.py (the whole panel on the phantom) inside Slicer."""

    def runTest(self):
        import importlib.util

        path = os.path.join(os.path.dirname(__file__), "Testing", "Python", "HCCFusionPipelineTest.py")
        spec = importlib.util.spec_from_file_location("HCCFusionPipelineTest", path)
        tests = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(tests)
        tests.run(self)
