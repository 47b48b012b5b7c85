"""Benchmark: naive per-(series, region) pyradiomics loop vs HCCFusion's optimised extraction.

Full-size phantom (512×512×~120, 4 CT phases on one grid), regions tumour + 0-5 mm ring + background liver,
CT preset (1.5 mm resampling, bin width 25 HU) with Original + LoG (1, 3, 5 mm) + Wavelet. The naive loop
resamples the series and calls `RadiomicsFeatureExtractor.execute` once per (series, region), so every filter is
recomputed per region; the optimised `radiomics.extract_study` filters once per series, crops, discretises once
per (image type, region), shares shape features across phases and runs the series in parallel processes (cache
off). Values must agree to a relative difference <= 1e-6. Prints per-series timings, medians, CPU seconds (wall
times depend on what else runs on the machine: the load average is printed too) and, last, the BENCH line.

`--crop-filters`: the tolerance mode (`extract_study(crop_filters=True)`): filtered features within
`radiomics.CROP_TOLERANCE` (1e-4 relative), Original and shape bit-identical; the line gains
`max_rel_diff_filtered=`, `bin_flips=` (voxels whose grey-level bin changes, summed; per image type printed above)
`cpu_ratio=` (naive over optimised CPU seconds, all processes: less sensitive to the machine's load than
wall time) and `texture=` (the texture backend: pyradiomics' C matrices; `bench_radiomics_texture.py` times them
against torch_texture on the same filtered images).
`--fastrad`: PyPI's fastrad (torch; Original image type only, no resampling or filters) on the same preprocessed
regions, as a peer: its seconds and largest relative deviation from pyradiomics on the features both name.

Run: .venv/bin/python Testing/Benchmarks/bench_radiomics.py [--size full|medium|small] [--repeats N]
     [--crop-filters] [--fastrad]
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time

import numpy as np


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="full", choices=["small", "medium", "full"])
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--repeats", type=int, default=1, help="optimised runs (median reported)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--image-types", default="Original,LoG,Wavelet")
    parser.add_argument("--crop-filters", action="store_true",
                        help="tolerance mode: LoG per sigma on each region group's box + 10 sigma, B-spline resampling "
                             "on the box + filter margin")
    parser.add_argument("--fastrad", action="store_true", help="measure PyPI fastrad beside (skipped when absent)")
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
                                   crop_filters=args.crop_filters)
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
    if args.crop_filters:
        per_type, voxels = {}, 0
        for s in study:
            pre = R.preprocess_image(s.image, preset)
            small = {n: R.preprocess_mask(m, s.image, preset) for n, m in masks.items()}
            voxels += sum(int((sitk_array(m) > 0).sum()) for m in small.values())
            for region, flips in R.bin_flips(pre, small, preset).items():
                for name, n in flips.items():
                    per_type[name] = per_type.get(name, 0) + n
        print(f"bin flips per image type (all series × regions, of {voxels} region voxels per image type): {per_type}")
        cropped = sum(bool(optimised.diagnostics["series"][s.name].get("cropped")) for s in study)
        print(f"BENCH radiomics crop_filters speedup={naive_seconds / seconds:.2f} max_rel_diff_filtered={worst:.3g} "
              f"bin_flips={sum(per_type.values())} max_rel_diff_original_shape={exact:.3g} "
              f"cropped_resampling={cropped}/{len(study)} seconds={seconds:.1f} naive_seconds={naive_seconds:.1f} "
              f"cpu_ratio={naive_cpu / statistics.median(cpu):.2f} texture=pyradiomics "
              f"load_average={os.getloadavg()[0]:.1f}")
    if args.fastrad:
        try:
            _fastrad_peer(study, masks, preset, long)
        except Exception as exc:  # a peer's failure must not hide our numbers
            print(f"fastrad peer failed: {type(exc).__name__}: {exc}")
    return 0 if worst <= (R.CROP_TOLERANCE if args.crop_filters else 1e-6) and exact == 0 else 1


def sitk_array(image):
    import SimpleITK as sitk

    return sitk.GetArrayViewFromImage(image)


def _fastrad_peer(study, masks, preset, long) -> None:
    """PyPI fastrad on each series × region's preprocessed box (texture and first order on the re-segmented mask,
    shape on the mask, as pyradiomics does): prints its seconds and the largest relative deviation from our
    (= pyradiomics') Original features over the features both name."""
    import math
    import re

    try:
        import fastrad
        import torch
    except ImportError:
        print("fastrad: not installed (pip install fastrad): peer skipped")
        return
    from HCCFusionLib import radiomics as R
    from radiomics import imageoperations

    def norm(name):
        return re.sub(r"(\d+)th", r"\1", re.sub(r"[^a-z0-9]", "", name.lower()))

    settings = preset.extractor().settings
    from scipy import ndimage

    seconds, worst, matched, where, skipped = 0.0, 0.0, 0, "", []
    for series in study:
        pre = R.preprocess_image(series.image, preset)
        for region, mask in masks.items():
            small = R.preprocess_mask(mask, series.image, preset)
            feature = imageoperations.resegmentMask(pre, small, resegmentRange=settings.get("resegmentRange"),
                                                    label=1) if settings.get("resegmentRange") else small
            m = sitk_array(small) > 0
            idx = [np.nonzero(m.any(axis=a))[0] for a in ((1, 2), (0, 2), (0, 1))]
            box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in idx)
            spacing = tuple(pre.GetSpacing()[::-1])
            img = fastrad.MedicalImage(torch.from_numpy(np.ascontiguousarray(sitk_array(pre)[box])), spacing)
            texture = fastrad.FeatureSettings(feature_classes=["firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm"],
                                              bin_width=float(settings.get("binWidth", 25)), device="cpu")
            shape = fastrad.FeatureSettings(feature_classes=["shape"], device="cpu")
            start = time.perf_counter()
            out = fastrad.FeatureExtractor(texture).extract(img, fastrad.Mask(torch.from_numpy(
                sitk_array(feature)[box].astype(np.float32)), spacing))
            surface = int((m & ~ndimage.binary_erosion(m)).sum())
            if surface <= 10000:  # fastrad's shape takes the distances of all mesh vertices: N² memory
                out.update(fastrad.FeatureExtractor(shape).extract(img, fastrad.Mask(torch.from_numpy(
                    m[box].astype(np.float32)), spacing)))
            else:
                skipped.append(f"{series.name}/{region}")
            seconds += time.perf_counter() - start
            ours = {f"{r.feature_class}:{norm(r.feature)}": r.value for r in long[
                (long["series"] == series.name) & (long["region"] == region) & (long["image_type"] == "original")
            ].itertuples()}
            for key, value in out.items():
                cls, name = key.split(":", 1)
                mine = ours.get(f"{cls}:{norm(name)}")
                if mine is None or math.isnan(mine) or not math.isfinite(float(value)):
                    continue
                matched += 1
                rel = abs(float(value) - mine) / max(abs(float(value)), abs(mine), 1e-12)
                if rel > worst:
                    worst, where = rel, f"{series.name}/{region}/{key}"
    print(f"BENCH radiomics peer=fastrad-{getattr(fastrad, '__version__', '1.0.0')} seconds={seconds:.1f} "
          f"(Original only, no resampling or filters) max_rel_dev={worst:.3g} at {where} matched_features={matched} "
          f"shape_skipped={','.join(skipped) or 'none'} (surface over 10000 voxels: N² memory)")


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
