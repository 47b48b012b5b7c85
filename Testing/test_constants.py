"""One source per constant: terminology, CT window, clinical choices, pins; no copies left elsewhere."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from HCCFusionLib import terminology
from HCCFusionLib.study import CT_WINDOW, LABELS, ct_window_range

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for folder in ("HCCFusionLib", "HCCFusion", "HCCFusionRegistration", "HCCFusionSegmentation",
                            "HCCFusionRadiomics", "HCCFusionPrediction") for p in (ROOT / folder).rglob("*.py")]


def test_segment_nodes_and_dicom_codes_agree_for_every_label():
    pytest.importorskip("pydicom")
    mrml = pytest.importorskip("HCCFusionLib.scene", reason="slicer-core (MRML) is not installed")
    from HCCFusionLib.dicom.codes import segment_structures

    terms, structures = terminology.load(), segment_structures()
    assert set(terms) == set(structures) == set(LABELS) - {"background"}
    for name, term in terms.items():
        info = mrml.SEGMENTS[LABELS[name]]
        label, category, kind = structures[name]
        parts = info.terminology.split("~")
        assert parts[1] == f"{category.scheme_designator}^{category.value}^{category.meaning}", name
        assert parts[2] == f"{kind.scheme_designator}^{kind.value}^{kind.meaning}", name
        assert tuple(round(c * 255) for c in info.color) == term.rgb and label == term.name, name
    # pydicom's own dictionary agrees with the file's codes (values; meanings may be reworded)
    from pydicom.sr.codedict import codes

    assert structures["liver"][2] == codes.SCT.Liver and structures["tumour"][2] == codes.SCT.Neoplasm


def test_terminology_file_errors_say_what_to_do(tmp_path):
    from HCCFusionLib.errors import InputError

    bad = tmp_path / "bad.term.json"
    bad.write_text(terminology.TERM_FILE.read_text().replace('"HCCFusionLabel": "spleen"', '"HCCFusionLabel": "x"'))
    with pytest.raises(InputError, match="no entry for label.*spleen"):
        terminology.load(bad)
    bad.write_text("{")
    with pytest.raises(InputError, match="unreadable"):
        terminology.load(bad)


def test_ct_window_single_convention():
    assert ct_window_range() == (CT_WINDOW[1] - CT_WINDOW[0] / 2, CT_WINDOW[1] + CT_WINDOW[0] / 2) == (-160.0, 240.0)


#: pattern → the one file allowed to hold it
DUPLICATES = {
    r"\(\s*(400|350)(\.0)?\s*,\s*(40|50)(\.0)?\s*\)": "HCCFusionLib/study.py",  # CT window (width, level)
    r"\(\s*-160(\.0)?\s*,\s*240(\.0)?\s*\)": "HCCFusionLib/study.py",  # the same window as (low, high)
    r"\b(10200004|78961009|32764006|108369006|49755003|123037004|91723000)\b": "HCCFusionLib/hccfusion.term.json",
    r"\"moderate-severe\"\s*[,\]]": "HCCFusionLib/study.py",  # ascites choices
    r"\"grade1-2\"\s*[,\]]": "HCCFusionLib/study.py",  # encephalopathy choices
    r"\"HBV\"\s*,\s*\"HCV\"": "HCCFusionLib/study.py",  # etiologies
    r"\[\s*\"auto\"\s*,\s*\"ct\"\s*,\s*\"mr\"": "HCCFusionLib/radiomics/presets.py",  # preset names
}
#: Generators of synthetic data may draw from the same vocabulary (they pass values, not lists of choices).
ALLOWED = {"HCCFusionLib/phantom/patient.py", "HCCFusionLib/phantom/cohort.py"}


@pytest.mark.parametrize("pattern", sorted(DUPLICATES))
def test_no_copies_outside_the_one_source(pattern):
    hits = []
    for path in SOURCES:
        rel = path.relative_to(ROOT).as_posix()
        if rel in ALLOWED or rel == DUPLICATES[pattern]:
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(pattern, line) and not line.lstrip().startswith("#"):
                hits.append(f"{rel}:{number}: {line.strip()}")
    assert not hits, f"copies of a constant whose source is {DUPLICATES[pattern]}:\n" + "\n".join(hits)
