"""Tiny segmentation training for test_segmentation_ddp.py, run alone or under torchrun: writes the loss history and
the final weights' checksums of rank 0 to OUT (JSON); --stop-after K stops every rank after step K (a crash)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from HCCFusionLib.phantom import phantom_case  # noqa: E402
from HCCFusionLib.segmentation import planner  # noqa: E402
from HCCFusionLib.segmentation.trainer import train  # noqa: E402
from torchrun import script_main  # noqa: E402

STEPS, SEED = 4, 5


def tiny_setup():
    cases = [phantom_case(seed, ["AP", "PVP"], "small") for seed in (1, 2)]
    plans = planner.make_plans(planner.fingerprint(cases), base_filters=8, max_filters=32, memory_mb=300,
                               max_patch_mm=(180, 180, 120))
    plans.update(patch_size=[32, 32, 16], batch_size=2)
    return cases, plans


def run(out: Path, checkpoint: Path | None, stop_after: int | None) -> dict:
    torch.set_num_threads(1)
    cases, plans = tiny_setup()

    def crash(fraction, message):
        if stop_after and message.startswith(f"step {stop_after}/"):
            raise KeyboardInterrupt

    result = train(cases, plans, steps=STEPS, seed=SEED, checkpoint_dir=checkpoint, checkpoint_every=1,
                   device="cpu", progress=crash)
    record = {"history": result.history, "world": int(os.environ.get("WORLD_SIZE", "1")),
              "weights": {k: float(v.double().abs().sum()) for k, v in result.network.state_dict().items()}}
    if int(os.environ.get("RANK", "0")) == 0:
        out.write_text(json.dumps(record))
    return record


if __name__ == "__main__":
    script_main(run)
