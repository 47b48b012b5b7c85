"""Segment terminology (DICOM category/type codes, colours) for the study labels, from one `.term.json` file.

`hccfusion.term.json` follows the segment-context layout of Slicer's terminology files and DCMQI's segment
metadata (SegmentationCodes → Category → Type, `recommendedDisplayRGBValue`), with two HCCFusion keys per type:
`HCCFusionLabel` (the `study.LABELS` name) and `HCCFusionAnatomicRegion` (optional). The MRML segments
(`scene.SEGMENTS`) and the DICOM SEG/SR codes (`dicom.codes.segment_structures`) are both built from `load()`.
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError
from .study import LABELS

TERM_FILE = Path(__file__).resolve().parent / "hccfusion.term.json"


@dataclass(frozen=True)
class Code:
    scheme: str
    value: str
    meaning: str

    def slicer(self) -> str:
        """Slicer's `scheme^value^meaning` form."""
        return f"{self.scheme}^{self.value}^{self.meaning}"


@dataclass(frozen=True)
class SegmentTerm:
    label: str  # study.LABELS name
    name: str  # segment label shown to users / written in the SEG
    category: Code
    type: Code
    rgb: tuple[int, int, int]  # 0..255
    region: Code | None = None


def _code(entry: dict) -> Code:
    return Code(entry["CodingSchemeDesignator"], entry["CodeValue"], entry["CodeMeaning"])


@functools.lru_cache(maxsize=4)
def load(path: "str | Path" = TERM_FILE) -> dict[str, SegmentTerm]:
    """study.LABELS name → SegmentTerm, for every label but background."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        terms = {}
        for category in data["SegmentationCodes"]["Category"]:
            for kind in category["Type"]:
                region = kind.get("HCCFusionAnatomicRegion")
                terms[kind["HCCFusionLabel"]] = SegmentTerm(
                    kind["HCCFusionLabel"], kind["3dSlicerLabel"], _code(category), _code(kind),
                    tuple(int(v) for v in kind["recommendedDisplayRGBValue"]), _code(region) if region else None)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"Terminology file '{path}' is unreadable or incomplete ({exc}): restore it from the "
                         "HCCFusion package.") from None
    missing = sorted(set(LABELS) - {"background"} - set(terms))
    if missing:
        raise InputError(f"Terminology file '{path}' has no entry for label(s) {', '.join(missing)}: add them.")
    return terms


def context_name(path: "str | Path" = TERM_FILE) -> str:
    """The file's SegmentationCategoryTypeContextName (Slicer's terminology context)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))["SegmentationCategoryTypeContextName"]
