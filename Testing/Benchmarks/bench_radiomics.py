"""Benchmark: naive per-(series, region) pyradiomics loop vs HCCFusion's optimised extraction.

Full-size phantom (512×512×~120, 4 CT phases on one grid), regions tumour + 0-5 mm ring + background liver,
CT preset (1.5 mm resampling, bin width 25 HU) with Original + LoG (1, 3, 5 mm) + Wavelet. The naive loop
resamples the series and calls `RadiomicsFeatureExtractor.execute` once per (series, region), so every filter is
recomputed per region; the optimised `radiomics.extract_study` filters once per series, crops, discretises once
per (image type, region), shares shape features across phases and runs the series in parallel processes (cache
off). Values must agree to a relative difference <= 1e-6. Prints per-series timings, medians, CPU seconds (wall
times depend on what else runs on the machine: the load average is printed too) and, last, the BENCH line.

Run: .venv/bin/python Testing/Benchmarks/bench_radiomics.py [--size full|medium|small] [--repeats N]
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="full", choices=["small", "medium", "full"])
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--repeats", type=int, default=1, help="optimised runs (median reported)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--image-types", default="Original,LoG,Wavelet")
    parser.add_argument("--crop-log", action="store_true",
                        help="LoG on the regions' box + 10-sigma margin, B-spline resampling on the box + filter margin")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from HCCFusionLib import radiomics as R
    from HCCFusionLib.phantom import make_patient
    from HCCFusionLib.regions import build_regions

    patient = make_patient(args.seed, args.size, misalignment="none")
    study = patient.study
    # the naive per-region loop exists for the legacy preprocessing only (IBSI mode interpolates the mask per region)
    preset = R.load_preset("ct_v1").with_image_types(args.image_types.split(","))
    names, rings = ("tumour", "rings", "background_liver"), ((0.0, 5.0),)
    regions = build_regions(study["PVP"].masks["labels"], names=names, rings_mm=rings)
    masks = {n: r.mask for n, r in regions.items()}
    print(f"phantom seed {args.seed} size {args.size}: {study['PVP'].image.GetSize()} voxels, "
          f"regions {', '.join(f'{n} {r.voxels} vox' for n, r in regions.items())}; preset {preset.key} "
          f"{list(preset.image_types)}", flush=True)

    optimised, runs, cpu = None, [], []
    for _ in range(args.repeats):
        start, before = time.perf_counter(), _cpu()
        optimised = R.extract_study(study, regions=names, rings_mm=rings, presets={"*": preset}, workers=args.workers,
                                   crop_log=args.crop_log)
        runs.append(time.perf_counter() - start)
        cpu.append(_cpu() - before)
        print(f"optimised run: {runs[-1]:.1f} s, {cpu[-1]:.1f} CPU s (all processes); load average "
              f"{os.getloadavg()[0]:.1f}", flush=True)
    seconds = statistics.median(runs)

    long = optimised.long
    naive_seconds, worst, count, calls, exact = 0.0, 0.0, 0, [], 0.0
    naive_cpu = _cpu()
    for series in study:
        per_region = {}
        for name, mask in masks.items():
            start = time.perf_counter()
            found = R.naive_extract(series.image, {name: mask}, preset)
            per_region[name] = found
            calls.append(time.perf_counter() - start)
        naive = R.SeriesFeatures(values={n: f.values[n] for n, f in per_region.items()})
        mine = R.SeriesFeatures(values={
            region: {f"{r.image_type}_{r.feature_class}_{r.feature}": r.value
                     for r in long[(long["series"] == series.name) & (long["region"] == region)].itertuples()}
            for region in masks})
        diff, n = R.max_relative_difference(naive, mine)
        worst, count = max(worst, diff), count + n
        exact = max(exact, R.max_relative_difference(*(_original(f) for f in (naive, mine)))[0])
        series_naive = sum(calls[-len(masks):])
        naive_seconds += series_naive
        print(f"{series.name}: naive {series_naive:.1f} s ({', '.join(f'{c:.1f}' for c in calls[-len(masks):])}"
              f" per region), optimised worker {optimised.diagnostics['series'][series.name].get('seconds')} s, "
              f"{n} values, max rel diff {diff:.3g}", flush=True)
    naive_cpu = _cpu() - naive_cpu
    print(f"median naive call (series × region): {statistics.median(calls):.1f} s; "
          f"median optimised run: {seconds:.1f} s over {len(runs)} run(s); load average {os.getloadavg()[0]:.1f}")
    print(f"CPU seconds: naive {naive_cpu:.1f}, optimised {statistics.median(cpu):.1f} "
          f"(ratio {naive_cpu / statistics.median(cpu):.2f}; the wall-time speed-up adds the {args.workers} processes)")
    print(f"BENCH radiomics speedup={naive_seconds / seconds:.2f} max_rel_diff={worst:.3g} seconds={seconds:.1f} "
          f"naive_seconds={naive_seconds:.1f} features={count}")
    if args.crop_log:
        flips = {f"{s.name}/{n}/{k}": v for s in study for n, m in masks.items()
                 for k, v in R.log_bin_flips(R.preprocess_image(s.image, preset),
                                             R.preprocess_mask(m, s.image, preset), preset).items()}
        print(f"bin flips (series/region/LoG image): {flips}")
        cropped = sum(bool(optimised.diagnostics["series"][s.name].get("cropped")) for s in study)
        print(f"BENCH radiomics crop_log speedup={naive_seconds / seconds:.2f} max_rel_diff_filtered={worst:.3g} "
              f"bin_flips={sum(flips.values())} max_rel_diff_original_shape={exact:.3g} "
              f"cropped_resampling={cropped}/{len(study)} seconds={seconds:.1f} naive_seconds={naive_seconds:.1f} "
              f"load_average={os.getloadavg()[0]:.1f}")
    return 0 if worst <= (1e-4 if args.crop_log else 1e-6) and exact == 0 else 1


def _original(features):
    """Only the Original image type's features (first order, texture and shape): these stay bit-identical."""
    from HCCFusionLib import radiomics as R

    return R.SeriesFeatures(values={r: {k: v for k, v in values.items() if k.startswith("original_")}
                                    for r, values in features.values.items()})


def _cpu() -> float:
    """CPU seconds of this process and its finished children (the worker processes)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


if __name__ == "__main__":
    sys.exit(main())
