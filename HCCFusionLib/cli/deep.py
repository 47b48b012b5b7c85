"""Deep fusion verbs: `train-deep` (cohort of run folders -> nested CV + bundle) and `predict-deep`."""
from __future__ import annotations

import logging
from pathlib import Path

from .common import verb

log = logging.getLogger(__name__)


@verb("train-deep", "train the deep multi-phase fusion network on a cohort of run folders -> bundle folder "
                    "(several processes: torchrun --nproc_per_node N -m HCCFusionLib.cli train-deep …)")
def cmd_train_deep(args, progress):
    from ..deepfusion.workflow import train_deep

    path = train_deep(args.cohort, args.out, endpoint=args.endpoint, kind=args.kind, fusion=args.fusion,
                      phases=args.phases, clinical=args.clinical, epochs=args.epochs, cv=args.cv, seed=args.seed,
                      time_col=args.time_col, event_col=args.event_col, checkpoint_dir=args.checkpoint,
                      device=args.device, progress=progress)
    log.info("deep fusion bundle: %s", path)
    return 0


def _train_deep_args(p):
    p.add_argument("cohort", type=Path, help="CSV: a 'run' column (run folders), the endpoint, clinical columns")
    p.add_argument("--out", type=Path, required=True, help="bundle folder to write (weights.safetensors, "
                                                           "model_card.json, checksums.sha256)")
    p.add_argument("--endpoint", help="label column (binary or multiclass)")
    p.add_argument("--kind", choices=["binary", "multiclass", "survival"], default="binary")
    p.add_argument("--time-col", help="survival: time column")
    p.add_argument("--event-col", help="survival: event column (1 = event)")
    p.add_argument("--fusion", choices=["early", "intermediate", "late"], default="intermediate")
    p.add_argument("--phases", nargs="+", default=["AP", "PVP", "DP"], help="phases, in the model's order")
    p.add_argument("--clinical", nargs="*", default=[], help="clinical columns (FiLM covariates)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--cv", type=int, default=5, help="outer folds of the nested CV in the card (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="checkpoint folder of the final fit (resumes when it holds one)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (several processes: torchrun --nproc_per_node N "
                                                  "-m HCCFusionLib.cli train-deep …, one GPU each with cuda)")


cmd_train_deep.configure = _train_deep_args


@verb("predict-deep", "apply a deep fusion bundle to a run folder -> OUT/prediction/deep/ (attention, Grad-CAM)")
def cmd_predict_deep(args, progress):
    from ..deepfusion.workflow import predict_deep

    table = predict_deep(args.run, args.model, args.out)
    log.info("deep fusion prediction of %d lesion(s)", len(table))
    return 0


def _predict_deep_args(p):
    p.add_argument("run", type=Path, help="a completed `hccfusion run` folder")
    p.add_argument("--model", type=Path, required=True, help="bundle folder written by `hccfusion train-deep`")
    p.add_argument("--out", type=Path, help="output folder (default: the run folder)")


cmd_predict_deep.configure = _predict_deep_args
