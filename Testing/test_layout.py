"""The run folder's typed paths and the one atomic folder writer (files.atomic_folder's replace policy)."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from HCCFusionLib.errors import InputError
from HCCFusionLib.files import atomic_folder, replace_folder
from HCCFusionLib.layout import STAGES, RunFolder


def test_run_folder_paths(tmp_path):
    run = RunFolder(tmp_path)
    assert run.labels == tmp_path / "segmentation" / "segmentation.nii.gz"
    assert run.lesions.parent == run.segmentation == run.stage("segmentation")
    assert run.transform("AP").name == "AP_transform.h5" and run.transform("AP").parent == run.registration
    assert run.report_html == tmp_path / "report" / "report.html"
    assert run.pacs("1.2.3") == tmp_path / "pacs" / "1.2.3"
    assert [run.stage(s).name for s in STAGES] == list(STAGES)
    with pytest.raises(ValueError, match="unknown stage"):
        run.stage("nonsense")
    assert not any(tmp_path.iterdir())  # paths only: nothing created


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_text() for p in folder.rglob("*") if p.is_file()}


def test_atomic_folder_replaces_only_when_complete(tmp_path):
    folder = tmp_path / "stage"
    with atomic_folder(folder, replace=True) as tmp:
        (tmp / "a.txt").write_text("first")
        assert not folder.exists()  # nothing visible before completion
    assert _files(folder) == {"a.txt": "first"}
    with pytest.raises(RuntimeError):
        with atomic_folder(folder, replace=True) as tmp:
            (tmp / "b.txt").write_text("half")
            raise RuntimeError("stage failed")
    assert _files(folder) == {"a.txt": "first"}  # previous outputs intact
    with atomic_folder(folder, replace=True) as tmp:
        (tmp / "b.txt").write_text("second")
    assert _files(folder) == {"b.txt": "second"}  # replaced wholesale, no stale file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage"]  # no staging or old folder left
    with pytest.raises(InputError, match="not empty"):  # replace=False refuses instead
        with atomic_folder(folder):
            pass
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        with atomic_folder(tmp_path / "file", replace=True):
            pass


def test_replace_folder_into_new_place(tmp_path):
    new = tmp_path / "new"
    new.mkdir()
    (new / "x").write_text("1")
    assert replace_folder(new, tmp_path / "dest") == tmp_path / "dest"
    assert _files(tmp_path / "dest") == {"x": "1"} and not new.exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_stage_leaves_previous_outputs(tmp_path, sig):
    """A process killed while writing a stage leaves the previous folder as it was."""
    folder = tmp_path / "stage"
    with atomic_folder(folder, replace=True) as tmp:
        (tmp / "a.txt").write_text("previous")
    script = textwrap.dedent(f"""
        import sys, time
        from HCCFusionLib.files import atomic_folder
        with atomic_folder({str(folder)!r}, replace=True) as tmp:
            (tmp / "half.txt").write_text("half")
            print("writing", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            cwd=os.getcwd(), env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(sig)
    proc.wait(timeout=30)
    assert _files(folder) == {"a.txt": "previous"}
