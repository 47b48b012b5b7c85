"""Tiny deep fusion fits for test_deepfusion_ddp.py, run alone or under torchrun (the caller starts the process
group, as `train-deep` does). Rank 0 writes each fit's loss curve, weights and predictions to OUT (JSON) as it
ends: 'binary' (intermediate fusion), 'survival' (late fusion, Cox loss over the whole batch), then 'resumed'
(the binary fit again with --checkpoint; --stop-after K stops every process after epoch K, a crash;
--resume-only runs just this fit)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from HCCFusionLib import ddp  # noqa: E402
from HCCFusionLib.deepfusion.model import DeepFusion  # noqa: E402
from HCCFusionLib.phantom.deep_cohort import planted_cohort  # noqa: E402
from torchrun import script_main  # noqa: E402

# 13 lesions in batches of 6: the last global batch (1 lesion) leaves the second process an empty share
ROWS, EPOCHS, BATCH, SEED = 13, 4, 6, 3


def survival_target(cohort):
    from sksurv.util import Surv

    time = 10.0 + 20.0 * (1 - cohort.y) + np.arange(len(cohort.y)) % 5  # the planted label shortens survival
    return Surv.from_arrays(np.arange(len(time)) % 4 != 0, time)


def fit(cohort, y, checkpoint=None, stop=None, **params) -> dict:
    """Rank 0's results of one fit; `stop`: stop after the epoch whose progress message starts so (a crash)."""
    def crash(fraction, message):
        if stop and message.startswith(stop):
            raise KeyboardInterrupt

    model = DeepFusion(**{"epochs": EPOCHS, "batch_size": BATCH, "seed": SEED, "restarts": 0, **params})
    model.fit(cohort.table, y, checkpoint_dir=checkpoint, progress=crash)
    return {"curve": model.loss_curve_, "attempts": model.attempts_,
            "prediction": model.decision_function(cohort.table).tolist(),
            "weights": {k: v.double().flatten().tolist() for k, v in model.net_.state_dict().items()}}


def run(out: Path, checkpoint: Path | None = None, stop_after: int | None = None, resume_only=False) -> dict:
    cohort = planted_cohort(ROWS, "kinetics", size=8, seed=SEED, delta=60.0, missing=0.3)
    with ddp.session("cpu") as (ranks, _):
        record = {"world": ranks.world}

        def keep(name, result):
            record[name] = result
            if ranks.main:
                out.write_text(json.dumps(record))

        if not resume_only:
            keep("binary", fit(cohort, cohort.y))
            keep("survival", fit(cohort, survival_target(cohort), kind="survival", fusion="late"))
        if checkpoint:
            keep("resumed", fit(cohort, cohort.y, checkpoint, stop_after and f"attempt 1 epoch {stop_after}/"))
    return record


if __name__ == "__main__":
    script_main(run, "--resume-only")
