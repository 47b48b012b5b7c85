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


def test_run_records_the_status_of_each_stage(tmp_path):
    """`run` audits every stage: ok, failed: <reason>, or skipped: <reason> (after a failure, or not asked for)."""
    import SimpleITK as sitk

    from HCCFusionLib.io import save_image, save_study
    from HCCFusionLib.phantom import make_patient

    patient = make_patient(3, "small", n_tumours=1, misalignment="none")
    save_study(patient.study, tmp_path / "study")
    labels = patient.labels
    coarse = sitk.Resample(labels, [s // 2 for s in labels.GetSize()], sitk.Transform(), sitk.sitkNearestNeighbor,
                           labels.GetOrigin(), [s * 2 for s in labels.GetSpacing()], labels.GetDirection())
    save_image(coarse, tmp_path / "coarse.nii.gz")
    out = tmp_path / "out"
    rc = cli.main(["--progress", "none", "run", str(tmp_path / "study"), "--out", str(out), "--mode", "rigid",
                   "--registration-spacing", "8", "--segmentation", str(tmp_path / "coarse.nii.gz"), "--model", "none"])
    assert rc == 2
    (record,) = [json.loads(line) for line in (out / audit.AUDIT_NAME).read_text().splitlines()]
    stages = record["stages"]
    assert stages["load"] == stages["registration"] == "ok"
    assert stages["segmentation"].startswith("failed: ") and "coarse.nii.gz" in stages["segmentation"]
    for later in ("radiomics", "lirads", "clinical", "report", "dicom"):
        assert stages[later] == "skipped: stage 'segmentation' failed", later
    assert stages["pacs"] == "skipped: no --pull" and stages["prediction"] == "skipped: no model"
