"""The segmentation trainer under torchrun (DDP, gloo on CPU): 2 processes give 1 process's loss curve and
weights for the same global batch and seed, and a 2-process run stopped mid-way resumes from its checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from ddp_train import run  # noqa: E402
from torchrun import torchrun  # noqa: E402

SCRIPT = Path(__file__).with_name("ddp_train.py")


@pytest.mark.slow  # ~30-80 s: two torchrun launches of 2 processes (torch + MONAI imports) and one reference run
def test_two_processes_equal_one_and_resume_from_checkpoint(tmp_path):
    single = run(tmp_path / "single.json", None, None)
    stopped = torchrun(SCRIPT, tmp_path / "first.json", "--checkpoint", tmp_path / "ck", "--stop-after", 2)
    assert stopped.returncode != 0, "the 2-process run was not stopped"
    state = json.loads((tmp_path / "ck" / "checkpoint.json").read_text())
    assert state["step"] == 2 and state["history"] == pytest.approx(single["history"][:2], rel=1e-4, abs=1e-5)
    resumed = torchrun(SCRIPT, tmp_path / "ddp.json", "--checkpoint", tmp_path / "ck")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    assert ddp["world"] == 2
    assert ddp["history"] == pytest.approx(single["history"], rel=1e-4, abs=1e-5)
    assert len(set(single["history"])) > 1  # a real curve, not a constant
    assert ddp["weights"].keys() == single["weights"].keys()
    # AdamW turns float noise in near-zero gradients into lr-sized steps of single weights, so compare the whole
    assert sum(ddp["weights"].values()) == pytest.approx(sum(single["weights"].values()), rel=1e-4)
