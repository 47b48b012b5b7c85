"""Benchmark: the torch radiomics backend beside pyradiomics and beside PyPI's fastrad (a peer), same run.

Phantom patient (`phantom.make_patient`, size small|medium|full), one CT series (PVP), regions tumour + 0-5 mm ring
+ background liver (`--regions`), preset ct_v1 (1.5 mm B-spline resampling, bin width 25 HU), preprocessed once;
then, on that preprocessed series:

- pyradiomics: `features.series_features` (the project's pyradiomics path, one process: filters once, crops);
- torch: `torch_backend.series_features_torch` on `--device` (default: the GPU when present, else the CPU);
- both with Original only and with Original + LoG (1, 3, 5 mm) + Wavelet;
- fastrad 1.0.0 (PyPI; skipped when not installed): Original only (it has no filters), first order and texture on
  each region's box (re-segmented as pyradiomics), shape left out (its shape takes N² memory in the mesh vertices).

max_rel_diff: torch vs pyradiomics over the Original and LoG features, max_rel_diff_wavelet over the wavelet ones
(`torch_backend.compare_features`; wavelet means/medians near 0 are checked absolutely, counted as near_zero=);
wavelet_bin_flips: region voxels whose grey-level bin differs between pyradiomics' float32 sub-bands (PyWavelets)
and ours: each flip moves that band's texture features beyond float rounding. fastrad's largest relative
deviation from pyradiomics over the Original features both name is printed too. The load average is printed: wall
times depend on what else runs. Last line: BENCH radiomics_torch seconds_torch=… seconds_pyradiomics=…
seconds_fastrad=… speedup=… max_rel_diff=… max_rel_diff_wavelet=… wavelet_bin_flips=… …

Run: .venv/bin/python Testing/Benchmarks/bench_radiomics_torch.py [--size small|medium|full] [--device cpu|cuda]
     [--regions tumour,rings,background_liver] [--crop-mm MM] [--repeats N]
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import re
import sys
import time

import numpy as np


SCALE_KEYS = ("original_firstorder_Minimum", "original_firstorder_Maximum")  # `compare_features`' intensity scale


def _timed(func, repeats: int = 1):
    best, out = math.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        out = func()
        best = min(best, time.perf_counter() - start)
    return out, best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="small", choices=["small", "medium", "full"])
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--device", default=None, help="torch device (default: cuda when present, else cpu)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each (best reported)")
    parser.add_argument("--regions", default="tumour,rings,background_liver", help="region groups (comma list)")
    parser.add_argument("--crop-mm", type=float, default=None,
                        help="crop the preprocessed series to the regions' box + this margin (a lighter run; both "
                             "backends get the same cropped series)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import torch

    from HCCFusionLib import radiomics as R
    from HCCFusionLib.phantom import make_patient
    from HCCFusionLib.radiomics import torch_backend as T
    from HCCFusionLib.regions import build_regions

    device = T.torch_device(args.device)
    patient = make_patient(args.seed, args.size, misalignment="none")
    series = patient.study["PVP"]
    names, rings = tuple(args.regions.split(",")), ((0.0, 5.0),)
    regions = build_regions(series.masks["labels"], names=names, rings_mm=rings)
    full = R.load_preset("ct_v1")
    pre = R.preprocess_image(series.image, full)
    masks = {n: R.preprocess_mask(r.mask, series.image, full) for n, r in regions.items()}
    if args.crop_mm is not None:
        import SimpleITK as sitk

        union = np.any([sitk.GetArrayViewFromImage(m) > 0 for m in masks.values()], axis=0)
        idx = [np.nonzero(union.any(axis=a))[0] for a in ((1, 2), (0, 2), (0, 1))]  # z, y, x
        margin = np.ceil(args.crop_mm / np.array(pre.GetSpacing()[::-1])).astype(int)
        lo = [max(int(i.min()) - m, 0) for i, m in zip(idx, margin)]
        hi = [min(int(i.max()) + m + 1, n) for i, m, n in zip(idx, margin, union.shape)]
        size, start = [int(h - l) for l, h in zip(lo, hi)][::-1], [int(v) for v in lo[::-1]]
        pre = sitk.RegionOfInterest(pre, size, start)
        masks = {n: sitk.RegionOfInterest(m, size, start) for n, m in masks.items()}
    print(f"phantom seed {args.seed} size {args.size}: {series.image.GetSize()} -> {pre.GetSize()} voxels; regions "
          f"{', '.join(f'{n} {r.voxels} vox' for n, r in regions.items())}; device {device} "
          f"({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}); torch {torch.__version__}",
          flush=True)
    if device.type == "cuda":  # CUDA context and kernels loaded outside the timing
        T.series_features_torch(pre, {"tumour": masks["tumour"]}, full.with_image_types(["Original"]), device=device)

    results = {}
    for label, preset in (("original", full.with_image_types(["Original"])), ("all", full)):
        ref, t_ref = _timed(lambda: R.series_features(pre, masks, preset), args.repeats)
        got, t_got = _timed(lambda: T.series_features_torch(pre, masks, preset, device=device), args.repeats)
        split = [T.compare_features(*(R.SeriesFeatures(values={r: {k: v for k, v in vals.items()
                                                                   if k.startswith("wavelet") == wavelet
                                                                   or k in SCALE_KEYS}
                                                               for r, vals in f.values.items()}) for f in (ref, got)))
                 for wavelet in (False, True)]
        (worst, count, near_zero), (worst_w, count_w, near_zero_w) = split
        results[label] = (t_ref, t_got, worst, count + count_w, len(near_zero) + len(near_zero_w), ref, worst_w)
        print(f"{label}: pyradiomics {t_ref:.2f} s, torch {t_got:.2f} s ({t_ref / t_got:.2f}x), {count + count_w} "
              f"features, max_rel_diff {worst:.3g} (Original, LoG), wavelet {worst_w:.3g}, near_zero "
              f"{len(near_zero) + len(near_zero_w)}; load average {os.getloadavg()[0]:.1f}", flush=True)
    seconds_fastrad, fastrad_dev = _fastrad(pre, masks, full, results["original"][5], device)
    flips = _wavelet_bin_flips(pre, masks, full)
    t_ref, t_got, worst, count, near_zero, _, worst_w = results["all"]
    print(f"BENCH radiomics_torch seconds_torch={t_got:.2f} seconds_pyradiomics={t_ref:.2f} "
          f"seconds_fastrad={'skipped' if seconds_fastrad is None else f'{seconds_fastrad:.2f}'} "
          f"speedup={t_ref / t_got:.2f} max_rel_diff={worst:.3g} max_rel_diff_wavelet={worst_w:.3g} "
          f"wavelet_bin_flips={flips} features={count} near_zero={near_zero} "
          f"seconds_torch_original={results['original'][1]:.2f} "
          f"seconds_pyradiomics_original={results['original'][0]:.2f} fastrad_max_rel_dev={fastrad_dev:.3g} "
          f"device={device.type} size={args.size} load={os.getloadavg()[0]:.1f}")
    return 0 if worst <= T.TOLERANCE and (flips or worst_w <= T.TOLERANCE) else 1


def _wavelet_bin_flips(pre, masks, preset) -> int:
    """Voxels of the regions whose grey-level bin differs between pyradiomics' wavelet sub-bands (PyWavelets, float32)
    and ours (float64 rounded to float32), pyradiomics' binning; per band printed."""
    import SimpleITK as sitk
    import torch

    from HCCFusionLib import radiomics as R
    from HCCFusionLib.radiomics import torch_backend as T

    imageoperations = R.presets.pyradiomics()[2]
    settings = {**preset.extractor().settings, "label": 1}
    first = next(iter(masks.values()))
    ref = {n: sitk.GetArrayFromImage(im) for im, n, _ in imageoperations.getWaveletImage(pre, first, **settings)}
    arr = torch.from_numpy(sitk.GetArrayFromImage(pre).astype(np.float32))
    ours = {n: t.numpy() for n, t, _, _ in T.filtered_images(arr, pre.GetSpacing(), {"Wavelet": {}})}
    total, per_band = 0, {}
    for region, mask in masks.items():
        roi = sitk.GetArrayFromImage(mask) > 0
        for band, values in ref.items():
            a = imageoperations.binImage(values, roi, **settings)[0][roi]
            b = imageoperations.binImage(ours[band], roi, **settings)[0][roi]
            flips = int((a != b).sum())
            total += flips
            if flips:
                per_band[f"{region}/{band}"] = flips
    print(f"wavelet bin flips (pyradiomics float32 sub-bands vs ours): {total} {per_band}", flush=True)
    return total


def _fastrad(pre, masks, preset, reference, device):
    """(seconds, largest relative deviation from pyradiomics) of fastrad on the Original image type, or
    (None, nan) when fastrad is not installed."""
    try:
        import fastrad
        import torch
    except ImportError:
        print("fastrad: not installed (pip install fastrad==1.0.0): peer skipped")
        return None, math.nan
    import SimpleITK as sitk

    from HCCFusionLib import radiomics as R

    def norm(name):
        return re.sub(r"(\d+)th", r"\1", re.sub(r"[^a-z0-9]", "", name.lower()))

    arr = sitk.GetArrayViewFromImage(pre)
    spacing = tuple(pre.GetSpacing()[::-1])
    settings = fastrad.FeatureSettings(feature_classes=["firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm"],
                                       bin_width=float(preset.setting.get("binWidth", 25)), device=device.type)
    seconds, worst = 0.0, 0.0
    reseg = preset.setting.get("resegmentRange")
    imageoperations = R.presets.pyradiomics()[2]
    for region, mask in masks.items():
        if reseg:  # first order and texture on the re-segmented ROI, as pyradiomics
            mask = imageoperations.resegmentMask(pre, mask, resegmentRange=reseg, label=1)
        m = sitk.GetArrayViewFromImage(mask) > 0
        idx = [np.nonzero(m.any(axis=a))[0] for a in ((1, 2), (0, 2), (0, 1))]
        box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in idx)
        img = fastrad.MedicalImage(torch.from_numpy(np.ascontiguousarray(arr[box])), spacing)
        roi = fastrad.Mask(torch.from_numpy(m[box].astype(np.float32)), spacing)
        start = time.perf_counter()
        out = fastrad.FeatureExtractor(settings).extract(img, roi)
        seconds += time.perf_counter() - start
        ours = {f"{k.split('_')[1]}:{norm(k.split('_', 2)[2])}": v for k, v in reference.values[region].items()}
        for key, value in out.items():
            cls, name = key.split(":", 1)
            mine = ours.get(f"{cls}:{norm(name)}")
            if mine is None or math.isnan(mine) or not math.isfinite(float(value)):
                continue
            worst = max(worst, abs(float(value) - mine) / max(abs(float(value)), abs(mine), 1e-12))
    print(f"fastrad {getattr(fastrad, '__version__', '1.0.0')}: {seconds:.2f} s (Original, no shape), max relative "
          f"deviation from pyradiomics {worst:.3g}", flush=True)
    return seconds, worst


if __name__ == "__main__":
    sys.exit(main())
