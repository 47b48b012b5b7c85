"""Benchmark: `hccfusion run` on the full-size demo phantom, liver first (the pipeline's order) vs whole volumes.

The pipeline segments the reference phase's liver before registering and passes it as the registration's fixed
mask; the baseline is the earlier order (whole-volume registration, registration_options mask=None), measured
in the same run on the same saved study, each in its own process (for its peak RSS). Per order it prints stage
seconds, TRE (mean over the phantom's landmarks and moving phases, demo.target_registration_error), liver and
tumour Dice (demo.truth_dice) and LI-RADS agreement (each true lesion vs the found lesion nearest its centre);
the last line is `BENCH pipeline seconds=… naive_seconds=… speedup=… peak_rss_mb=…` (+ the accuracy pairs).

Run: .venv/bin/python Testing/Benchmarks/bench_pipeline.py [--seed 7] [--size full]
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ORDERS = {"liver_first": {"spacing_mm": 4.0}, "whole_volumes": {"spacing_mm": 4.0, "mask": None}}


def one(order: str, study_dir: Path, out: Path, seed: int, size: str) -> dict:
    """Run the pipeline in `order` and measure it against the phantom's truth (re-made from the seed)."""
    import SimpleITK as sitk

    from HCCFusionLib import pipeline
    from HCCFusionLib.demo import lesion_table, target_registration_error, truth_dice
    from HCCFusionLib.layout import RunFolder
    from HCCFusionLib.phantom import make_patient

    started = time.perf_counter()
    result = pipeline.run(study_dir, out, registration_options=ORDERS[order], overwrite=True)
    seconds = time.perf_counter() - started
    patient = make_patient(seed, size)
    transforms = {n: sitk.ReadTransform(str(RunFolder(out).transform(n))) for n in patient.transforms}
    tre = target_registration_error(patient, transforms)
    truth, found = lesion_table(patient), result.lesions
    agree = 0
    for _, lesion in truth.iterrows():
        centre = lesion[["centre_x_mm", "centre_y_mm", "centre_z_mm"]].to_numpy(float)
        if len(found):
            d = np.linalg.norm(found[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy(float) - centre,
                               axis=1)
            near = found.iloc[int(d.argmin())]
            agree += int(d.min() <= lesion["diameter_mm"] and near["category"] == lesion["lirads"])
    return {"order": order, "seconds": round(seconds, 1), "stages": result.seconds,
            "tre_mm": round(float(tre["tre_mean_mm"].mean()), 3), "tre_by_series": tre["tre_mean_mm"].to_dict(),
            "dice": truth_dice(patient.labels, RunFolder(out).labels), "lirads_agree": f"{agree}/{len(truth)}",
            "lesions_found": len(found),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--size", default="full", choices=["small", "medium", "full"])
    parser.add_argument("--one", nargs=3, metavar=("ORDER", "STUDY", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
        print("RESULT " + json.dumps(one(args.one[0], Path(args.one[1]), Path(args.one[2]), args.seed, args.size)))
        return

    from HCCFusionLib.io import save_study
    from HCCFusionLib.phantom import make_patient

    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        study = save_study(make_patient(args.seed, args.size).study, Path(tmp) / "study", overwrite=True)
        for order in ORDERS:
            run = subprocess.run([sys.executable, __file__, "--seed", str(args.seed), "--size", args.size, "--one",
                                  order, str(study), str(Path(tmp) / order)], capture_output=True, text=True)
            lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
            if run.returncode or not lines:
                sys.exit(f"{order} failed:\n{run.stderr[-3000:]}")
            results[order] = json.loads(lines[-1][len("RESULT "):])
            print("".join(f"  {line}\n" for line in run.stderr.splitlines()
                          if "before registration" in line or "for registration" in line), end="")
            print(json.dumps(results[order]), f"(load average {os.getloadavg()[0]:.2f})", flush=True)
    new, old = results["liver_first"], results["whole_volumes"]
    print(f"BENCH pipeline seconds={new['seconds']:.1f} naive_seconds={old['seconds']:.1f} "
          f"speedup={old['seconds'] / new['seconds']:.2f} peak_rss_mb={new['peak_rss_mb']} "
          f"naive_peak_rss_mb={old['peak_rss_mb']} tre_mm={new['tre_mm']} naive_tre_mm={old['tre_mm']} "
          f"dice_liver={new['dice']['liver']} naive_dice_liver={old['dice']['liver']} "
          f"dice_tumour={new['dice']['tumour']} naive_dice_tumour={old['dice']['tumour']} "
          f"lirads_agree={new['lirads_agree']} naive_lirads_agree={old['lirads_agree']}")


if __name__ == "__main__":
    main()
