"""The segmentation trainer under torchrun (DDP, gloo on CPU): 2 processes give 1 process's loss curve and
weights for the same global batch and seed, and a 2-process run stopped mid-way resumes from its checkpoint."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from ddp_train import run  # noqa: E402

SCRIPT = Path(__file__).with_name("ddp_train.py")


def _torchrun(*args, nproc=2):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(SCRIPT.parents[1]))
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(nproc), str(SCRIPT), *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow  # ~30-80 s: two torchrun launches of 2 processes (torch + MONAI imports) and one reference run
def test_two_processes_equal_one_and_resume_from_checkpoint(tmp_path):
    single = run(tmp_path / "single.json", None, None)
    stopped = _torchrun(tmp_path / "first.json", "--checkpoint", tmp_path / "ck", "--stop-after", 2)
    assert stopped.returncode != 0, "the 2-process run was not stopped"
    state = json.loads((tmp_path / "ck" / "checkpoint.json").read_text())
    assert state["step"] == 2 and state["history"] == pytest.approx(single["history"][:2], rel=1e-4, abs=1e-5)
    resumed = _torchrun(tmp_path / "ddp.json", "--checkpoint", tmp_path / "ck")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ddp = json.loads((tmp_path / "ddp.json").read_text())
    assert ddp["world"] == 2
    assert ddp["history"] == pytest.approx(single["history"], rel=1e-4, abs=1e-5)
    assert len(set(single["history"])) > 1  # a real curve, not a constant
    assert ddp["weights"].keys() == single["weights"].keys()
    # AdamW turns float noise in near-zero gradients into lr-sized steps of single weights, so compare the whole
    assert sum(ddp["weights"].values()) == pytest.approx(sum(single["weights"].values()), rel=1e-4)
