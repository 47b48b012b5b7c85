"""Benchmark: deep multi-phase fusion (early / intermediate / late) against the project's radiomics feature-level
fusion, in one nested cross-validation per planted cohort (HCCFusionLib.deepfusion.compare).

Cohorts (HCCFusionLib.phantom.deep_cohort, N lesions each, three CT phases, 16^3 lesion patches at 1 mm plus a
2x liver context): 'texture' (label = stripe orientation inside the lesion, kinetics uninformative) and
'kinetics' (control: label = arterial hyper-enhancement + washout, stripe orientation random).
Radiomics baseline: pyradiomics through HCCFusionLib.radiomics (preset ct_v1: 1.5 mm B-spline resampling,
bin width 25 HU; Original image only, no LoG/wavelet: all shape, first-order and texture classes of the tumour
mask in every phase), + the clinical column, into FeatureFusion (logistic, LASSO selection of 10, C tuned in an
inner 3-fold grid {0.1, 1}). Deep models: DeepFusion defaults (30 epochs, batch 8, AdamW 3e-3, modality
dropout 0.25, flips, up to 2 restarts of a fit stuck near chance), fixed hyper-parameters (no inner search), 1 torch thread, deterministic.
Noise: bootstrap 95% CI of each out-of-fold AUC, SD of the per-fold AUCs, DeLong SE / p of each gain.
A gain is "beyond noise" when gain > 1.96 * gain_se.

Run (under the shared lock; ~4 min a cohort on a quiet 2-core machine):
  flock /tmp/hcc_heavy.lock .venv/bin/python Testing/Benchmarks/bench_deepfusion.py [--n 120] [--outer 5]
  (or one cohort per locked command: --trait texture --save /tmp/t.json, --trait kinetics --save /tmp/k.json,
   then --trait none --load /tmp/t.json /tmp/k.json for the BENCH line)
Last line: BENCH deepfusion n=... auc_radiomics=... then per fusion point auc_deep_<f>= gain_<f>= control_gain_<f>=.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "Testing")]


def run(trait: str, n: int, outer: int, seed: int) -> dict:
    from HCCFusionLib.deepfusion.compare import compare
    from HCCFusionLib.deepfusion.model import stack_patches
    from HCCFusionLib.deepfusion.patches import patch_radiomics
    from HCCFusionLib.phantom.deep_cohort import planted_cohort

    cohort = planted_cohort(n, trait, seed=seed)
    start = time.perf_counter()
    radiomics = patch_radiomics(stack_patches(cohort.table), cohort.masks, cohort.phases)
    extraction = time.perf_counter() - start
    print(f"[{trait}] radiomics: {radiomics.shape[1]} features of {n} lesions in {extraction:.1f} s", flush=True)
    table = compare(cohort.table, radiomics, cohort.y, outer=outer, seed=seed, deep={"threads": 1})
    print(f"[{trait}] nested CV ({outer} outer folds):\n{table.round(3).to_string()}", flush=True)
    return {"table": table.reset_index().to_dict(orient="records"), "extraction_s": extraction}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=120)
    parser.add_argument("--outer", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trait", choices=("both", "texture", "kinetics", "none"), default="both")
    parser.add_argument("--save", type=Path, help="write this run's results as JSON")
    parser.add_argument("--load", type=Path, nargs="*", default=[],
                        help="JSON of other runs (--save), combined into the BENCH line")
    args = parser.parse_args()
    results = {}
    for path in args.load:
        results.update(json.loads(path.read_text()))
    for trait in {"both": ("texture", "kinetics"), "none": ()}.get(args.trait, (args.trait,)):
        results[trait] = run(trait, args.n, args.outer, args.seed)
    if args.save:
        args.save.write_text(json.dumps(results))
    load = os.getloadavg()[0]
    if not {"texture", "kinetics"} <= set(results):
        print(f"only {sorted(results)} run; give --load with the other cohort's --save for the BENCH line")
        return
    rows = {trait: {r["model"]: r for r in results[trait]["table"]} for trait in ("texture", "kinetics")}
    parts = [f"n={args.n}", f"outer={args.outer}", f"load1={load:.1f}",
             f"auc_radiomics={rows['texture']['radiomics']['auc']:.3f}",
             f"control_auc_radiomics={rows['kinetics']['radiomics']['auc']:.3f}"]
    for fusion in ("early", "intermediate", "late"):
        t, k = rows["texture"][fusion], rows["kinetics"][fusion]
        parts += [f"auc_deep_{fusion}={t['auc']:.3f}", f"gain_{fusion}={t['gain']:+.3f}",
                  f"gain_se_{fusion}={t['gain_se']:.3f}", f"control_auc_deep_{fusion}={k['auc']:.3f}",
                  f"control_gain_{fusion}={k['gain']:+.3f}", f"control_gain_se_{fusion}={k['gain_se']:.3f}",
                  f"train_s_{fusion}={t['seconds'] / args.outer:.0f}"]
    print("BENCH deepfusion " + " ".join(parts))


if __name__ == "__main__":
    main()
