"""DICOM codes: SNOMED CT for anatomy, the private scheme "99HCCF" for LI-RADS terms and predictions."""
from __future__ import annotations

from .. import terminology

SCHEME = "99HCCF"
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
#: LI-RADS features written as qualitative evaluations (column name -> meaning).
FEATURES = {
    "aphe": "Nonrim arterial phase hyperenhancement",
    "washout": "Nonperipheral washout",
    "capsule": "Enhancing capsule",
    "threshold_growth": "Threshold growth",
    "tumour_in_vein": "Tumor in vein",  # measured by lirads_tiv (LR-TIV)
}
LIRADS_MEANING = "LI-RADS v2018 category"
LIRADS_CATEGORIES = ("LR-1", "LR-2", "LR-3", "LR-4", "LR-5", "LR-M", "LR-TIV", "LR-NC")


def pydicom_codes():
    from pydicom.sr.codedict import codes

    return codes


def segment_structures():
    """LABELS name -> (segment label, category code, type code), from the terminology file."""
    from pydicom.sr.coding import Code

    def code(c):
        return Code(c.value, c.scheme, c.meaning)

    return {name: (term.name, code(term.category), code(term.type)) for name, term in terminology.load().items()}


def local_code(value: str, meaning: str):
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value[:16], scheme_designator=SCHEME, meaning=meaning[:64])

