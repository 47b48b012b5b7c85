"""HCCFusion: multimodal imaging of hepatocellular carcinoma.

The library behind the HCCFusion Slicer module and the `hccfusion` command. Stages, in data-flow order:
`io` (load a Study) → `registration` → `segmentation` → `regions` → `radiomics` → `fusion` → `report`.
Heavy stages import their optional dependencies lazily, so `import HCCFusionLib` stays light.
"""
import logging

from .errors import HCCFusionError
from .study import LABELS, Clinical, Modality, Phase, Series, Study

__version__ = "0.1.0"
__all__ = ["HCCFusionError", "LABELS", "Clinical", "Modality", "Phase", "Series", "Study", "__version__"]

logging.getLogger(__name__).addHandler(logging.NullHandler())
