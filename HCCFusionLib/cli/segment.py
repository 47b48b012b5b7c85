"""Segmentation verbs: plan, train-seg, segment."""
from __future__ import annotations

import os
from pathlib import Path

from .. import __version__
from .common import add_phase_override, phase_overrides, verb
from ..layout import RunFolder


# ---------------------------------------------------------------- segmentation: plan, train-seg, segment
def _seg_cases(args, progress):
    from ..segmentation.data import cases_from_folder

    if args.phantoms:
        from ..demo import phantom_cases

        return phantom_cases(args.phantoms, args.seed, args.channels, args.phantom_size, progress)
    if args.dataset is None:
        from ..errors import InputError

        raise InputError("Give a DATASET folder (one study folder per case, with a 'labels' mask) or --phantoms N.")
    return cases_from_folder(args.dataset, args.channels, args.reference)


def _seg_plans(args, cases):
    from ..segmentation.planner import fingerprint, load_plans, make_plans

    if getattr(args, "plans", None):
        return load_plans(args.plans)
    return make_plans(fingerprint(cases, seed=args.seed), memory_mb=args.memory_mb, spacing=args.spacing,
                      base_filters=args.base_filters, max_filters=args.max_filters, batch_size=args.batch_size)


@verb("plan", "nnU-Net-style plans (spacing, patch size under a memory budget, normalisation, topology) for a dataset")
def cmd_plan(args, progress):
    from ..segmentation.planner import save_plans

    plans = _seg_plans(args, _seg_cases(args, progress))
    save_plans(plans, args.out)
    print(f"plans: spacing {plans['spacing']} mm, patch {plans['patch_size']}, filters {plans['filters']}, "
          f"~{plans['memory_mb_estimate']} MB -> {args.out}")
    progress(1.0, "plans written")
    return 0


def _dataset_args(p):
    p.add_argument("dataset", type=Path, nargs="?", help="folder of study folders, each with a 'labels' mask")
    p.add_argument("--phantoms", type=int, default=0, help="use N phantom patients instead of DATASET")
    p.add_argument("--phantom-size", choices=["small", "full"], default="small")
    p.add_argument("--channels", nargs="+", default=["AP", "PVP"], help="phases used as channels, in order")
    p.add_argument("--reference", default=None, help="series whose grid the labels live on (default PVP)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--memory-mb", type=float, default=2000.0, help="training memory budget for the patch size")
    p.add_argument("--spacing", type=float, nargs=3, default=None, help="override the plan spacing (x y z, mm)")
    p.add_argument("--base-filters", type=int, default=32)
    p.add_argument("--max-filters", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=2)


def _plan_args(p):
    _dataset_args(p)
    p.add_argument("--out", type=Path, required=True, help="plans.json to write")


cmd_plan.configure = _plan_args


@verb("train-seg", "train a segmentation model bundle (DynUNet) on a dataset or on phantoms (several processes: "
                   "torchrun --nproc_per_node N -m HCCFusionLib.cli train-seg …)")
def cmd_train_seg(args, progress):
    import torch

    from ..progress import scaled
    from ..segmentation.bundle import dataset_description, save_bundle
    from ..segmentation.trainer import train

    if args.threads:
        torch.set_num_threads(args.threads)
    cases = _seg_cases(args, scaled(progress, 0.0, 1.0))
    plans = _seg_plans(args, cases)
    result = train(cases, plans, steps=args.steps, seed=args.seed, fold=args.fold, n_folds=args.folds, lr=args.lr,
                   device=args.device, checkpoint_dir=args.checkpoint, elastic=args.elastic,
                   progress=scaled(progress, 0.1, 1.0))
    card = {"name": args.out.name, "training_data": f"{len(result.train_ids)} cases "
            + (f"(phantoms, seeds {args.seed}..{args.seed + args.phantoms - 1}, size {args.phantom_size})"
               if args.phantoms else f"from {args.dataset}"),
            "validation": result.val_ids, "metrics": result.metrics, "steps": args.steps,
            "train_seconds": round(result.seconds, 1), "versions": _versions()}
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 writes the bundle
        save_bundle(args.out, plans, dataset_description(plans, len(result.train_ids), args.reference or "PVP"),
                    result.network, card)
        print(f"bundle -> {args.out}; validation Dice {result.metrics.get('dice', 'n/a')}")
    return 0


def _train_seg_args(p):
    _dataset_args(p)
    p.add_argument("--out", type=Path, required=True, help="model bundle folder to write")
    p.add_argument("--plans", type=Path, default=None, help="plans.json from `hccfusion plan` (default: plan now)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--fold", type=int, default=None, help="k-fold fold to hold out for validation (default: none)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--elastic", action="store_true", help="add elastic deformation to the augmentation")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--checkpoint", type=Path, default=None, help="checkpoint folder (resumes when it holds one)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")


cmd_train_seg.configure = _train_seg_args


@verb("segment", "segment liver and tumours of a (registered) study -> OUT/segmentation/")
def cmd_segment(args, progress):
    from ..errors import QualityError
    from ..io import load_study
    from ..segmentation.engines import segment
    from ..segmentation.predictor import save_segmentation

    study = load_study(args.study, phase_overrides=phase_overrides(args))
    seg, info = segment(study, args.engine, model=args.model, nnunet=args.nnunet, reference=args.reference,
                        tta=not args.no_tta, postprocess=not args.no_postprocess, progress=progress,
                        folds=args.folds, channel_map=dict(args.channel or []), overlap=args.overlap,
                        max_memory_mb=args.max_memory_mb)
    out = save_segmentation(seg, RunFolder(args.out).segmentation, info)
    print(f"engine {info['engine']} ({info['engine_reason']})")
    for warning in info["qc_warnings"]:
        print(f"QC warning: {warning}")
    print(f"{len(seg.lesions)} lesion(s); segmentation -> {out / 'segmentation.nii.gz'}")
    if info["qc_failure"]:
        raise QualityError(f"Segmentation QC failed: {info['qc_failure']} (engine {info['engine']}). The label map "
                           f"is kept in {out} for review; try another engine (--engine) or give your own "
                           "segmentation.")
    return 0


def engine_arg(p):
    from ..segmentation.engines import ENGINES

    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="segmentation engine (default auto: the real-data engine 'liverlesion' for real studies, "
                        "the phantom sample model for synthetic AP+PVP studies; see `hccfusion models`)")


def _segment_args(p):
    p.add_argument("study", type=Path, help="study folder (e.g. OUT/registration from `hccfusion register`)")
    add_phase_override(p)
    engine_arg(p)
    p.add_argument("--model", type=Path, default=None, help="your own model bundle folder (engine bundle)")
    p.add_argument("--nnunet", type=Path, default=None, help="nnU-Net v2 trained model folder (engine nnunet)")
    p.add_argument("--folds", nargs="+", default=None, help="nnU-Net folds to ensemble (default: all present)")
    p.add_argument("--channel", nargs=2, action="append", metavar=("CHANNEL", "SERIES"),
                   help="nnU-Net: map a model channel (index or name) to a study series (repeatable)")
    p.add_argument("--reference", default=None, help="series whose grid the output uses (default: model's, PVP)")
    p.add_argument("--no-tta", action="store_true", help="no mirroring test-time augmentation (faster)")
    p.add_argument("--no-postprocess", action="store_true",
                   help="keep the network's labels as they are (default: largest liver, tumours in the liver, "
                        "no lesion under 0.05 ml)")
    p.add_argument("--overlap", type=float, default=None, help="sliding-window overlap (0-0.9; default: the model's)")
    p.add_argument("--max-memory-mb", type=float, default=None, help="refuse inputs estimated above this")
    p.add_argument("--out", type=Path, required=True)


cmd_segment.configure = _segment_args


def _versions() -> dict:
    import monai
    import torch

    return {"hccfusion": __version__, "torch": torch.__version__, "monai": monai.__version__}
