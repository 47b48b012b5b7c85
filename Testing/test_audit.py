"""Audit log (issue 20 item 8): each CLI run with --out appends one JSON line to OUT/audit.jsonl; LI-RADS overrides
too."""
from __future__ import annotations

import json

from HCCFusionLib import audit, cli

FIELDS = {"event", "user", "time_utc", "argv", "versions", "inputs", "models", "outputs", "stages", "exit_status"}


def _features(tmp_path):
    table = tmp_path / "f.csv"
    table.write_text("study_id,a\nS1,1\n")
    return table


def test_two_runs_two_lines(tmp_path):
    out = tmp_path / "out"
    assert cli.main(["--progress", "none", "phantom", "--out", str(out), "--size", "small",
                     "--misalignment", "none", "--tumours", "0"]) == 0
    rc = cli.main(["--progress", "none", "predict", str(_features(tmp_path)), "--model", str(tmp_path / "absent"),
                   "--out", str(out)])
    assert rc != 0
    lines = (out / audit.AUDIT_NAME).read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 2
    for r in records:
        assert FIELDS <= set(r)
        assert set(r["versions"]) == {"python", "hccfusion", "torch", "SimpleITK"}
    ok, failed = records
    assert ok["exit_status"] == 0 and ok["stages"] == {"phantom": "ok"}
    assert ok["outputs"] and all(o.startswith(str(out)) for o in ok["outputs"])
    assert failed["exit_status"] == 2 and failed["stages"]["predict"].startswith("failed: ")
    assert str(tmp_path / "f.csv") in failed["inputs"] and len(failed["inputs"][str(tmp_path / "f.csv")]) == 64


def test_append_is_one_line_per_record(tmp_path):
    for i in range(3):
        audit.append(tmp_path, audit.record(["x", str(i)], exit_status=i))
    records = [json.loads(line) for line in (tmp_path / audit.AUDIT_NAME).read_text().splitlines()]
    assert [r["argv"] for r in records] == [["x", "0"], ["x", "1"], ["x", "2"]]
