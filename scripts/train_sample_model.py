"""Train the shipped sample model HCCFusionLib/models/hcc_phantom_ct (two-phase CT: AP + PVP).

Phantom-trained, not for clinical use. Trains a small DynUNet (8..64 filters, 48 x 48 x 32 patches) at a
2 x 2 x 2.5 mm plan spacing on "medium" phantoms (1.85 x 1.85 x 2.5 mm) and optionally full-size ones, both
resampled to the plan; validates on held-out medium phantoms, evaluates on new full-size phantoms
(512 x 512 x 120) through the real predictor, and writes the bundle with those numbers in its model card.
Resumable: rerun with the same --checkpoint and a larger --steps to continue; every run's settings are kept in
the checkpoint's schedule.json and the model card. The shipped model was made by these stages (CPU, 2 threads):

    train=".venv/bin/python scripts/train_sample_model.py --threads 2"
    $train --steps 1500 --foreground-fraction 1.0 --tumour-weight 3 --eval-seeds
    $train --steps 2300 --foreground-fraction 0.5 --tumour-weight 3 --eval-seeds
    $train --steps 3100 --full-cases 8 --eval-seeds
    $train --steps 5100 --full-cases 16 --eval-seeds
    $train --steps 7100 --full-cases 16
    $train --steps 19100 --full-cases 32
    $train --steps 29100 --full-cases 48
    $train --evaluate-only --tta-labels tumour

(the first stage alone, only foreground-centred patches, leaves false positives far from the liver: the
second stage's random patches remove them; tumour weight 3 over-segments lesions, so later stages use 1.)
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from HCCFusionLib import __version__
from HCCFusionLib.segmentation.bundle import dataset_description, default_bundle_path, load_bundle, save_bundle
from HCCFusionLib.phantom import phantom_case
from HCCFusionLib.segmentation.planner import fingerprint, make_plans
from HCCFusionLib.segmentation.predictor import predict_case
from HCCFusionLib.segmentation.trainer import dice, train

CHANNELS = ["AP", "PVP"]
SPACING = (2.0, 2.0, 2.5)
log = logging.getLogger("train_sample_model")


def evaluate_full(bundle, seeds, tta=True) -> dict:
    """Dice of liver (liver + tumour region) and tumour on new full-size phantoms, via predict_case."""
    rows = {}
    for seed in seeds:
        case = phantom_case(seed, CHANNELS, "full")
        t0 = time.time()
        seg = predict_case(case, bundle, tta=tta)
        pred, truth = sitk.GetArrayViewFromImage(seg.labels), sitk.GetArrayViewFromImage(case.labels)
        rows[str(seed)] = {"liver": round(dice(np.isin(pred, (1, 2)), np.isin(truth, (1, 2))), 4),
                           "tumour": round(dice(pred == 2, truth == 2), 4) if (truth == 2).any() else None,
                           "seconds": round(time.time() - t0, 1), "lesions_predicted": len(seg.lesions)}
        log.info("full-size phantom %d: %s", seed, rows[str(seed)])
    tumour = [r["tumour"] for r in rows.values() if r["tumour"] is not None]
    return {"cases": rows, "dice_liver_mean": round(float(np.mean([r["liver"] for r in rows.values()])), 4),
            "dice_tumour_mean": round(float(np.mean(tumour)), 4) if tumour else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=700)
    ap.add_argument("--cases", type=int, default=40, help="training phantoms (seeds 0..N-1)")
    ap.add_argument("--full-cases", type=int, default=0,
                    help="extra full-size training phantoms (seeds after the medium ones)")
    ap.add_argument("--val", type=int, default=3, help="held-out medium phantoms for validation")
    ap.add_argument("--eval-seeds", type=int, nargs="*", default=[9003, 9004, 9005, 9101, 9102, 9103],
                    help="new full-size phantoms (all but 9102 have tumours)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--checkpoint", type=Path, default=Path("/tmp/hcc_phantom_ct_checkpoint"))
    ap.add_argument("--out", type=Path, default=default_bundle_path())
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--foreground-fraction", type=float, default=0.5, help="share of patches centred on foreground")
    ap.add_argument("--tumour-weight", type=float, default=1.0,
                    help="chance of a tumour-centred patch relative to a liver-centred one")
    ap.add_argument("--patch-mm", type=float, nargs=3, default=(96, 96, 80), help="largest training patch (mm)")
    ap.add_argument("--evaluate-only", action="store_true",
                    help="only (re-)evaluate the bundle at --out on --eval-seeds and update its model card")
    ap.add_argument("--inference-window", type=int, nargs=3, default=None,
                    help="with --evaluate-only: store this sliding-window size (x y z) in the plans")
    ap.add_argument("--tta-labels", nargs="*", default=None,
                    help="store the labels that mirroring TTA covers in the plans (default: all foreground)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    schedule_file = args.checkpoint / "schedule.json"
    schedule = json.loads(schedule_file.read_text()) if schedule_file.is_file() else []
    if args.evaluate_only:
        bundle = load_bundle(args.out)
        if args.inference_window:
            bundle.plans["inference_window"] = args.inference_window
        if args.tta_labels is not None:
            bundle.plans["tta_labels"] = args.tta_labels
        if schedule:
            bundle.card["training"]["schedule"] = schedule
        card = {**bundle.card, "evaluation_full_size": {
            "phantoms": f"full size (512x512x120), seeds {args.eval_seeds}", **evaluate_full(bundle, args.eval_seeds)}}
        save_bundle(args.out, bundle.plans, bundle.dataset, bundle.build_network(), card)
        log.info("evaluation %s", card["evaluation_full_size"])
        return
    t0 = time.time()
    cases = [phantom_case(seed, CHANNELS, "medium") for seed in range(args.cases)]
    cases += [phantom_case(seed, CHANNELS, "full") for seed in range(args.cases, args.cases + args.full_cases)]
    val = [phantom_case(5000 + seed, CHANNELS, "medium") for seed in range(args.val)]
    plans = make_plans(fingerprint(cases), spacing=SPACING, base_filters=8, max_filters=64, batch_size=2,
                       max_patch_mm=tuple(args.patch_mm), memory_mb=1000)
    if args.tta_labels is not None:
        plans["tta_labels"] = args.tta_labels
    log.info("plans %s", json.dumps({k: plans[k] for k in ("spacing", "patch_size", "strides", "filters")}))
    last = [0.0]

    def progress(fraction, message):
        if time.time() - last[0] > 30:
            last[0] = time.time()
            log.info("%.3f %s", fraction, message)

    result = train(cases, plans, steps=args.steps, seed=0, lr=args.lr, val_cases=val,
                   checkpoint_dir=args.checkpoint, foreground_fraction=args.foreground_fraction,
                   class_weights={1: 1.0, 2: args.tumour_weight}, progress=progress)
    log.info("validation %s", result.metrics["dice"])
    schedule.append({"until_step": args.steps, "full_size_cases": args.full_cases,
                     "foreground_fraction": args.foreground_fraction,
                     "tumour_weight": args.tumour_weight, "lr": args.lr, "seconds": round(result.seconds, 1)})
    schedule_file.write_text(json.dumps(schedule, indent=1))
    card = {"name": "hcc_phantom_ct", "task": "liver and tumour segmentation on registered two-phase CT (AP, PVP)",
            "training_data": f"{args.cases} synthetic phantoms (HCCFusionLib.phantom, size 'medium', seeds "
                             f"0..{args.cases - 1}) + {args.full_cases} full size (seeds {args.cases}.."
                             f"{args.cases + args.full_cases - 1}), misalignment none, resampled to "
                             f"{list(SPACING)} mm; see training.schedule for the cases used per stage",
            "validation": {"phantoms": f"medium, seeds 5000..{5000 + args.val - 1}", **result.metrics},
            "training": {"steps": args.steps, "foreground_fraction": args.foreground_fraction,
                         "class_weights": {"liver": 1.0, "tumour": args.tumour_weight},
                         "optimizer": "AdamW + poly LR", "lr": args.lr, "seed": 0,
                         "seconds": round(result.seconds, 1), "threads": args.threads,
                         "schedule": schedule, "script": "scripts/train_sample_model.py"},
            "versions": {"hccfusion": __version__, "torch": torch.__version__,
                         "monai": __import__("monai").__version__}}
    dataset = dataset_description(plans, len(result.train_ids))
    save_bundle(args.out, plans, dataset, result.network, card)
    if args.eval_seeds:
        card["evaluation_full_size"] = {"phantoms": f"full size (512x512x120), seeds {args.eval_seeds}",
                                        **evaluate_full(load_bundle(args.out), args.eval_seeds)}
        save_bundle(args.out, plans, dataset, result.network, card)
    log.info("bundle %s written in %.0f s: %s", args.out, time.time() - t0, card.get("evaluation_full_size"))


if __name__ == "__main__":
    main()
