"""docs/ARCHITECTURE.md cannot rot: every library module, CLI verb and test file of its naming table exists."""
from __future__ import annotations

import re
from pathlib import Path

from HCCFusionLib.cli import VERBS

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "ARCHITECTURE.md"


def naming_table() -> list[tuple[str, str, str, str]]:
    """Rows (library module, CLI verb, Slicer module/section, test file) of the doc's naming table."""
    text = DOC.read_text(encoding="utf-8").split("## Naming table", 1)[1]
    rows = []
    for line in text.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and line.startswith("|") and not set(cells[0]) <= set("- ") and cells[0] != "Library module":
            rows.append(tuple(cells))
    return rows


def _missing() -> dict[str, set[str]]:
    missing = {"module": set(), "verb": set(), "test": set()}
    for module, verb, _panel, test in naming_table():
        if not ((ROOT / "HCCFusionLib" / f"{module}.py").is_file() or (ROOT / "HCCFusionLib" / module).is_dir()):
            missing["module"].add(module)
        if verb != "—" and verb not in VERBS:
            missing["verb"].add(verb)
        if not (ROOT / "Testing" / test).is_file():
            missing["test"].add(test)
    return missing


def test_naming_table_names_exist():
    rows = naming_table()
    assert len(rows) >= 15, "naming table not found in docs/ARCHITECTURE.md"
    assert len({r[0] for r in rows}) == len(rows), "one row per library module"
    missing = _missing()
    assert not any(missing.values()), f"docs/ARCHITECTURE.md names what does not exist: {missing}"


def test_every_verb_is_in_the_naming_table_or_the_flow():
    text = DOC.read_text(encoding="utf-8")
    named = {verb for _module, verb, _panel, _test in naming_table()}
    for verb in ("report", "export-dicom", "stage"):
        assert verb in named and f"`{verb}`" in text.split("## Naming table")[0], verb


def test_flow_and_layers_documented():
    text = DOC.read_text(encoding="utf-8")
    for name in ("register_study", "extract_study", "assess_study", "write_report", "export_dicom", "test_architecture.py"):
        assert name in text
    flow = [text.index(step) for step in ("| Load", "| Register", "| Segment", "| Features", "| Predict", "| Report")]
    assert flow == sorted(flow), "the flow table goes one way"
