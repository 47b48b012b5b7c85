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
