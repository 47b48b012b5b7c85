"""The deep fusion fit under torchrun (DDP, gloo on CPU): 2 processes give 1 process's loss curve for the same
global batch and seed (binary and Cox losses, batch norm over the whole batch, an empty share), and a 2-process
fit stopped mid-way resumes from its checkpoint to the uninterrupted fit's weights."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ddp_deep import ROWS, SEED, fit, run  # noqa: E402
from torchrun import torchrun  # noqa: E402

from HCCFusionLib.errors import InputError  # noqa: E402
from HCCFusionLib.phantom.deep_cohort import planted_cohort  # noqa: E402

SCRIPT = Path(__file__).with_name("ddp_deep.py")


def _same_function(a: dict, b: dict):
    """The same loss curve, predictions and weights within float tolerance. AdamW turns float noise in gradients
    that are zero in exact arithmetic (the conv biases before batch norm, the attention's key bias) into lr-sized
    steps, which batch norm's running means follow: those move apart without changing the function. Other weights
    whose gradient is nearly zero take Adam steps that float noise shifts: they stay within a tenth of one step (lr
    3e-3; 3e-5 measured on an AVX-512 CPU)."""
    assert b["curve"] == pytest.approx(a["curve"], rel=1e-4, abs=1e-5)
    assert len(set(np.round(a["curve"], 4))) > 3  # a real curve, not a constant
    assert b["prediction"] == pytest.approx(a["prediction"], abs=1e-2)
    assert b["weights"].keys() == a["weights"].keys()
    for name, value in a["weights"].items():
        if not name.endswith(("bias", "running_mean")):
            assert np.allclose(b["weights"][name], value, rtol=1e-4, atol=3e-4), name


@pytest.mark.slow  # ~35 s: two torchrun launches of 2 processes (torch imports, 4 short fits) and 3 fits here
def test_two_processes_equal_one_and_resume_from_checkpoint(tmp_path):
    single = run(tmp_path / "single.json")
    first = torchrun(SCRIPT, tmp_path / "first.json", "--checkpoint", tmp_path / "ck", "--stop-after", 2)
    assert first.returncode != 0, "the checkpointed 2-process fit was not stopped"
    ddp = json.loads((tmp_path / "first.json").read_text())
    assert ddp["world"] == 2
    for name in ("binary", "survival"):
        _same_function(single[name], ddp[name])
    state = json.loads((tmp_path / "ck" / "checkpoint.json").read_text())
    assert state["epoch"] == 2 and state["curve"] == pytest.approx(single["binary"]["curve"][:len(state["curve"])],
                                                                   rel=1e-4, abs=1e-5)
    assert len(list((tmp_path / "ck").glob("*.safetensors"))) == 1
    resumed = torchrun(SCRIPT, tmp_path / "resumed.json", "--checkpoint", tmp_path / "ck", "--resume-only")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    resumed = json.loads((tmp_path / "resumed.json").read_text())["resumed"]
    assert resumed == ddp["binary"]  # bit for bit the uninterrupted 2-process fit


def test_resume_equals_an_uninterrupted_fit_and_refuses_another_fits_checkpoint(tmp_path):
    cohort = planted_cohort(ROWS, "kinetics", size=8, seed=SEED, delta=60.0, missing=0.3)
    whole = fit(cohort, cohort.y)
    with pytest.raises(KeyboardInterrupt):
        fit(cohort, cohort.y, tmp_path, "attempt 1 epoch 3/")
    assert json.loads((tmp_path / "checkpoint.json").read_text())["epoch"] == 3
    assert fit(cohort, cohort.y, tmp_path) == whole  # bit for bit
    with pytest.raises(InputError, match="another deep fusion fit"):
        fit(cohort, cohort.y, tmp_path, seed=SEED + 1)


def test_resume_in_a_restarted_attempt_keeps_the_best_finished_one(tmp_path):
    """One epoch does not learn: the fit restarts; a crash in the second attempt resumes with the first's
    weights kept as the best so far, and ends as the uninterrupted fit."""
    cohort = planted_cohort(ROWS, "kinetics", size=8, seed=SEED, delta=60.0, missing=0.3)
    params = {"epochs": 1, "restarts": 2}
    whole = fit(cohort, cohort.y, **params)
    assert whole["attempts"] == 3
    for stop in ("attempt 2 epoch 1/", "attempt 3 epoch 1/"):
        with pytest.raises(KeyboardInterrupt):
            fit(cohort, cohort.y, tmp_path, stop, **params)
    assert json.loads((tmp_path / "checkpoint.json").read_text())["best"] is not None
    assert fit(cohort, cohort.y, tmp_path, **params) == whole


@pytest.mark.slow  # ~15-25 s: one torchrun launch of the CLI (2 processes reading 8 run folders, 2 short fits)
def test_train_deep_verb_under_torchrun_writes_one_bundle_and_checkpoint(tmp_path):
    from HCCFusionLib.deepfusion.bundle import load_deep_bundle
    from HCCFusionLib.phantom.deep_cohort import save_planted_runs

    csv = save_planted_runs(planted_cohort(8, "kinetics", size=8, seed=SEED, delta=60.0), tmp_path / "cohort")
    done = torchrun("-m", "HCCFusionLib.cli", "--progress", "none", "train-deep", csv, "--endpoint", "label", "--out",
                    tmp_path / "bundle", "--epochs", "2", "--cv", "0", "--checkpoint", tmp_path / "ck")
    assert done.returncode == 0, done.stderr[-3000:]
    model, card = load_deep_bundle(tmp_path / "bundle")  # checksums verified: one writer
    assert card["cohort"]["patients"] == 8 and model.get_params()["epochs"] == 2
    state = json.loads((tmp_path / "ck" / "checkpoint.json").read_text())
    assert state["epoch"] == 2 and len(state["curve"]) == 2 * 1  # one global batch of 8 per epoch
