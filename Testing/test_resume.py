"""The stage manifest behind `run --resume` (HCCFusionLib.resume): fingerprint, verification, stale temporaries."""
import pytest

from HCCFusionLib.errors import InputError
from HCCFusionLib.files import atomic_folder, staging_folder
from HCCFusionLib.layout import RunFolder
from HCCFusionLib.resume import completed_stages, fingerprint, record_stage, remove_stale_parts

PLAN = ["registration", "segmentation", "radiomics"]


@pytest.fixture()
def run_folder(tmp_path):
    study = tmp_path / "study"
    study.mkdir()
    (study / "ct.nii.gz").write_bytes(b"image")
    out = tmp_path / "out"
    paths = RunFolder(out)
    fp = fingerprint({"study": study}, {"mode": "rigid"})
    for name in PLAN[:2]:
        with atomic_folder(paths.stage(name), replace=True) as tmp:
            (tmp / "a.csv").write_text(name)
        record_stage(out, name, [paths.stage(name)], fp)
    return out, study, fp


def test_completed_stages_in_order(run_folder):
    out, _, fp = run_folder
    assert completed_stages(out, fp, PLAN) == ["registration", "segmentation"]
    assert completed_stages(out, fp, ["segmentation", "registration"]) == ["segmentation", "registration"]
    assert completed_stages(out.parent / "new", fp, PLAN) == []


def test_changed_input_or_setting_refused(run_folder):
    out, study, fp = run_folder
    assert fingerprint({"study": study}, {"mode": "rigid"}) == fp
    with pytest.raises(InputError, match="other inputs or settings.*--overwrite"):
        completed_stages(out, fingerprint({"study": study}, {"mode": "affine"}), PLAN)
    (study / "ct.nii.gz").write_bytes(b"other image")
    with pytest.raises(InputError, match="new --out folder"):
        completed_stages(out, fingerprint({"study": study}, {"mode": "rigid"}), PLAN)


def test_tampered_or_missing_output_reruns_from_that_stage(run_folder):
    out, _, fp = run_folder
    (RunFolder(out).segmentation / "a.csv").write_text("tampered")
    assert completed_stages(out, fp, PLAN) == ["registration"]
    (RunFolder(out).registration / "a.csv").unlink()
    assert completed_stages(out, fp, PLAN) == []


def test_stale_part_temporaries_removed(run_folder):
    out, _, fp = run_folder
    part_dir = staging_folder(RunFolder(out).radiomics)
    (part_dir / "x.csv").write_text("half")
    part_file = out / "segmentation" / ".labels.abc.part.nii.gz"
    part_file.write_bytes(b"half")
    assert set(remove_stale_parts(out)) == {part_dir, part_file}
    assert not part_dir.exists() and not part_file.exists()
    assert completed_stages(out, fp, PLAN) == ["registration", "segmentation"]


def test_stage_readers_give_back_what_was_written(tmp_path):
    """read_segmentation and Extraction.read (what `run --resume` uses) return exactly what the writers were given:
    voxels and pixel types, floats bit for bit (NaN too), text as written (a numeric-looking study id, empty
    reasons); an incomplete radiomics folder is an InputError."""
    import numpy as np
    import pandas as pd
    import SimpleITK as sitk

    from HCCFusionLib.phantom import make_patient
    from HCCFusionLib.radiomics import LONG_COLUMNS, Extraction
    from HCCFusionLib.segmentation.predictor import Segmentation, lesion_table, read_segmentation, save_segmentation

    patient = make_patient(3, "small", n_tumours=2, misalignment="none")
    lesion_map, table = lesion_table(patient.labels)
    seg = Segmentation(patient.labels, table, lesion_map, {"source": "phantom"})
    save_segmentation(seg, tmp_path / "segmentation", {"engine": "user", "qc_warnings": ["a warning"]})
    back, info = read_segmentation(tmp_path / "segmentation")
    for a, b in ((seg.labels, back.labels), (seg.lesion_map, back.lesion_map)):
        assert a.GetPixelID() == b.GetPixelID()
        assert np.array_equal(sitk.GetArrayViewFromImage(a), sitk.GetArrayViewFromImage(b))
    pd.testing.assert_frame_equal(back.lesions, seg.lesions, check_exact=True)
    assert len(back.lesions) == 2 and info["engine"] == "user" and info["qc_warnings"] == ["a warning"]
    assert back.meta["source"] == "phantom"

    study = patient.study
    study.study_id = "007"
    values = [0.1 + 0.2, float("nan"), 1 / 3, -2.5e-300]
    long = pd.DataFrame([{"study": "007", "series": s.name, "phase": s.phase.value, "modality": s.modality.value,
                          "region": "tumour", "image_type": "Original", "feature_class": "firstorder",
                          "feature": f"f{k}", "value": v, "reason": "" if v == v else "undefined, single grey level",
                          "wide_phase": s.phase.value} for s in study for k, v in enumerate(values)],
                        columns=LONG_COLUMNS + ["wide_phase"])
    kinetics = pd.DataFrame({"study": "007", "phase": ["AP"], "region": ["tumour"], "feature": ["enh"],
                             "value": [np.pi], "reason": [""]})
    extraction = Extraction("007", long, kinetics, {"seconds": 1.25, "presets": {"ct": {"card": {"bins": 25}}}})
    extraction.save(tmp_path)
    back = Extraction.read(tmp_path, study)
    pd.testing.assert_frame_equal(back.long, extraction.long, check_exact=True)
    pd.testing.assert_frame_equal(back.kinetics, extraction.kinetics, check_exact=True)
    pd.testing.assert_frame_equal(back.wide, extraction.wide, check_exact=True)
    assert back.diagnostics == extraction.diagnostics and back.study_id == "007"
    (tmp_path / "radiomics" / "kinetics.csv").unlink()
    with pytest.raises(InputError, match="no complete radiomics extraction.*rerun"):
        Extraction.read(tmp_path, study)


# ---------------------------------------------------------------- run --resume with real subprocesses
def _hashes(out):
    """SHA-256 of every output, leaving out the documented run-dependent fields: wall `seconds` (registration
    qc.csv and its report table, radiomics diagnostics.json), HDF5 object timestamps (transforms), the fresh UIDs
    and dates of the de-identified DICOM, and the audit/manifest (times, stage order)."""
    import hashlib
    import json
    import re

    import pandas as pd
    import pydicom

    from HCCFusionLib.files import sha256_file

    def drop_seconds(doc):
        if isinstance(doc, dict):
            return {k: drop_seconds(v) for k, v in doc.items() if k != "seconds"}
        return [drop_seconds(v) for v in doc] if isinstance(doc, list) else doc

    seconds = pd.read_csv(RunFolder(out).registration_qc)["seconds"]
    hashes = {}
    for p in sorted(q for q in out.rglob("*") if q.is_file() and q.name not in ("audit.jsonl", "stages.json")):
        if p.suffix == ".h5":
            text = "present"
        elif p == RunFolder(out).registration_qc:
            text = pd.read_csv(p).drop(columns="seconds").to_csv()
        elif p.suffix == ".json":
            text = json.dumps(drop_seconds(json.loads(p.read_text())), sort_keys=True)
        elif p.suffix == ".html":
            text = p.read_text()
            for value in seconds:
                text = re.sub(f'<td class="num">{value:.4g}</td>', "<td>seconds</td>", text)
        elif p.suffix == ".dcm":
            text = "\n".join(str(e) for e in pydicom.dcmread(p).iterall() if e.VR not in ("UI", "DA", "TM", "DT"))
        else:
            hashes[p.relative_to(out).as_posix()] = sha256_file(p)
            continue
        hashes[p.relative_to(out).as_posix()] = hashlib.sha256(text.encode()).hexdigest()
    return hashes


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    import yaml

    from HCCFusionLib.io import save_image, save_study
    from HCCFusionLib.phantom import make_patient
    from HCCFusionLib.radiomics import PRESET_DIR

    root = tmp_path_factory.mktemp("resume")
    patient = make_patient(5, "small", n_tumours=1, misalignment="rigid")
    save_study(patient.study, root / "study")
    save_image(patient.labels, root / "labels.nii.gz")
    # a cheap preset (native grid; shape, first-order and GLCM only): radiomics takes ~1 s instead of ~50 s, and its
    # tables still carry shape, intensity and texture values to read back bit for bit
    preset = yaml.safe_load((PRESET_DIR / "ct_v1.yaml").read_text())
    preset.update(name="ct_resume", imageType={"Original": {}},
                  featureClass={"shape": [], "firstorder": [], "glcm": []})
    preset["preprocess"]["resample_mm"] = None
    (root / "ct_resume_v1.yaml").write_text(yaml.safe_dump(preset))
    return root


def _cmd(root, out, *extra):
    import sys

    return [sys.executable, "-m", "HCCFusionLib.cli", "--progress", "none", "run", str(root / "study"),
            "--out", str(out), "--segmentation", str(root / "labels.nii.gz"), "--mode", "rigid",
            "--registration-spacing", "6", "--workers", "1", "--image-types", "Original",
            "--preset", str(root / "ct_resume_v1.yaml"), *extra]


def _env():
    import os

    return {**os.environ, "PYTHONPATH": os.getcwd()}


def _run(cmd):
    import subprocess

    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env())


def _manifest_stages(out) -> list[str]:
    import json

    data = json.loads((out / "stages.json").read_text())
    return sorted(data["stages"], key=lambda s: data["stages"][s]["order"])


def _mtimes(out, stages) -> dict:
    return {p: p.stat().st_mtime_ns for s in stages for p in sorted((out / s).rglob("*")) if p.is_file()}


def _last_audit(out) -> dict:
    import json

    return json.loads((out / "audit.jsonl").read_text().splitlines()[-1])


@pytest.fixture(scope="module")
def uninterrupted(small_study):
    out = small_study / "full"
    done = _run(_cmd(small_study, out))
    assert done.returncode == 0, done.stderr
    assert set(_manifest_stages(out)) >= {"registration", "segmentation", "radiomics", "lirads", "prediction"}
    return out, _hashes(out)


@pytest.mark.parametrize("stage,sig", [("registration", "SIGKILL"), ("segmentation", "SIGTERM"),
                                       ("radiomics", "SIGKILL")])
def test_killed_run_resumes_to_identical_outputs(small_study, uninterrupted, stage, sig):
    """A real `run` killed once `stage` is recorded (SIGKILL: no clean-up; SIGTERM: cancelled cleanly), then
    `run --resume`: stale temporaries removed, every completed resumable stage read back (files untouched, audit
    "skipped: resumed from stages.json"), the rest redone, outputs identical to an uninterrupted run."""
    import os
    import signal
    import subprocess
    import time

    out = small_study / f"out_{stage}_{sig}"
    proc = subprocess.Popen(_cmd(small_study, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env())
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / "stages.json").is_file() and stage in _manifest_stages(out):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    done = _manifest_stages(out)
    if sig == "SIGTERM":  # cancelled cleanly: one line, exit 130, no temporaries, completed stages verify
        assert proc.returncode == 130, err
        assert err.strip().splitlines()[-1] == "hccfusion run: cancelled" and "Traceback" not in err
        assert not [p for p in out.rglob(".*") if ".part" in p.name]
        import json

        assert completed_stages(out, json.loads((out / "stages.json").read_text())["fingerprint"], done) == done
    else:
        assert proc.returncode == -signal.SIGKILL
    assert stage in done and not RunFolder(out).report_html.exists()
    resumed = [s for s in ("registration", "segmentation", "radiomics") if s in done]  # read back by --resume
    before = _mtimes(out, resumed)
    stale = out / ".radiomics.killed.part"
    stale.mkdir()
    finished = _run(_cmd(small_study, out, "--resume"))
    assert finished.returncode == 0, finished.stderr
    assert not stale.exists()
    assert before and _mtimes(out, resumed) == before  # read back, not redone
    assert _hashes(out) == uninterrupted[1]
    status = _last_audit(out)["stages"]
    assert {s: status[s] for s in resumed} == {s: "skipped: resumed from stages.json" for s in resumed}
    redone = [s for s in ("registration", "segmentation", "radiomics", "lirads", "prediction", "report")
              if s not in resumed]
    assert {s: status[s] for s in redone} == {s: "ok" for s in redone}


def test_resume_with_other_settings_refused_and_tampered_output_redone(small_study, uninterrupted, tmp_path):
    """Other settings: refused (exit 2, one line). A changed segmentation output: registration is read back,
    segmentation and every later stage redone; outputs identical to the uninterrupted run."""
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(uninterrupted[0], out)
    done = _run(_cmd(small_study, out, "--resume", "--mode", "affine"))
    assert done.returncode == 2
    assert "other inputs or settings" in done.stderr.strip().splitlines()[-1]
    lesions = RunFolder(out).lesions
    lesions.write_text(lesions.read_text() + "\n")
    done = _run(_cmd(small_study, out, "--resume"))
    assert done.returncode == 0, done.stderr
    assert _hashes(out) == uninterrupted[1]
    status = _last_audit(out)["stages"]
    assert status["registration"] == "skipped: resumed from stages.json"
    assert status["segmentation"] == status["radiomics"] == "ok"
