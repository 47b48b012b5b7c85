"""Benchmark: deformable registration of a full-size phantom's NC, AP and DP phases to its PVP.

HCCFusion's SimpleITK engine (liver-masked, cropped, downsampled Mattes-MI rigid → affine → B-spline) next
to itk-elastix with its default rigid + B-spline parameter maps, given the same pairs and the same dilated
liver mask, in one run. Reports per-pair time and median TRE over the phantom's landmarks, then medians;
the last line is `BENCH registration tre_mm=… elastix_tre_mm=… seconds=… elastix_seconds=… speedup=…`.

Run: .venv/bin/python Testing/Benchmarks/bench_registration.py [--seed 3] [--size full]
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--size", default="full", choices=["small", "medium", "full"])
    args = parser.parse_args()

    from HCCFusionLib import phantom
    from HCCFusionLib.registration import liver_mask, register

    started = time.perf_counter()
    patient = phantom.make_patient(args.seed, args.size, misalignment="deformable")
    reference = patient.study[patient.reference]
    mask = liver_mask(reference)
    print(f"phantom seed {args.seed} {args.size}: {reference.image.GetSize()} voxels at "
          f"{np.round(reference.image.GetSpacing(), 2).tolist()} mm ({time.perf_counter() - started:.1f} s); "
          f"{os.cpu_count()} CPUs (shared with other jobs: compare the two engines within this run only)")
    results = {"sitk": {"tre": [], "seconds": []}, "elastix": {"tre": [], "seconds": []}}
    for name in ("NC", "AP", "DP"):
        before = np.linalg.norm(patient.landmarks[patient.reference] - patient.landmarks[name], axis=1)
        for engine in ("sitk", "elastix"):
            tic = time.perf_counter()
            pair = register(reference, patient.study[name], mode="deformable", fixed_mask=mask, engine=engine)
            seconds = time.perf_counter() - tic
            estimated = np.array([pair.transform.TransformPoint(tuple(p))
                                  for p in patient.landmarks[patient.reference]])
            tre = float(np.median(np.linalg.norm(estimated - patient.landmarks[name], axis=1)))
            results[engine]["tre"].append(tre)
            results[engine]["seconds"].append(seconds)
            print(f"{name} -> {patient.reference} {engine:8s} median TRE {np.median(before):5.2f} -> {tre:5.2f} mm "
                  f"in {seconds:6.1f} s; warnings: {'; '.join(pair.warnings) or '-'}", flush=True)
    ours, theirs = results["sitk"], results["elastix"]
    seconds, elastix_seconds = float(np.median(ours["seconds"])), float(np.median(theirs["seconds"]))
    print(f"BENCH registration tre_mm={np.median(ours['tre']):.2f} elastix_tre_mm={np.median(theirs['tre']):.2f} "
          f"seconds={seconds:.1f} elastix_seconds={elastix_seconds:.1f} speedup={elastix_seconds / seconds:.2f}")


if __name__ == "__main__":
    main()
