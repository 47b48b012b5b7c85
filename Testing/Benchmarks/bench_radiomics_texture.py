"""Benchmark: CPU seconds of the texture and first-order classes alone, pyradiomics (C matrices, as the crop_filters
mode runs them) against `torch_texture` (torch, CPU, 1 thread), on the SAME filtered images and regions.

Full-size phantom by default (the regions of `bench_radiomics.py`: tumour, 0-5 mm ring, background liver; CT preset
with Original + LoG (1, 3, 5 mm) + Wavelet), one series (`--series`). Filters and region crops are pyradiomics' (so
both sides see identical voxels); each (image type, region, class) is timed with `time.process_time` for both
backends, binning included on both sides. Prints CPU seconds per image type family and per class, the torch values'
largest relative difference from pyradiomics (`torch_backend.compare_features`; wavelet location features near 0
are compared absolutely), and last:
`BENCH radiomics_texture pyradiomics_cpu=… torch_cpu=… torch_speed=… (pyradiomics over torch CPU) max_rel_diff=…`.

Run: .venv/bin/python Testing/Benchmarks/bench_radiomics_texture.py [--size full|medium|small] [--series PVP]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="full", choices=["small", "medium", "full"])
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--series", default="PVP")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import SimpleITK as sitk
    import torch

    from HCCFusionLib import radiomics as R
    from HCCFusionLib.phantom import make_patient
    from HCCFusionLib.radiomics import features as F
    from HCCFusionLib.radiomics import torch_backend as TB
    from HCCFusionLib.radiomics.presets import pyradiomics
    from HCCFusionLib.regions import build_regions

    torch.set_num_threads(1)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    study = make_patient(args.seed, args.size, misalignment="none").study
    series = study[args.series]
    preset = R.load_preset("ct_v1").with_image_types(["Original", "LoG", "Wavelet"])
    regions = build_regions(series.masks["labels"], names=("tumour", "rings", "background_liver"),
                            rings_mm=((0.0, 5.0),))
    pre = R.preprocess_image(series.image, preset)
    masks = {n: R.preprocess_mask(r.mask, series.image, preset) for n, r in regions.items()}
    _, _, imageoperations, impl = pyradiomics()
    extractor = preset.extractor()
    settings = {**extractor.settings, "label": 1}
    classes = [c for c in extractor.enabledFeatures if c not in ("shape", "shape2D")]
    enabled = TB._enabled(extractor, classes)
    prepared, _ = F.prepare_regions(pre, masks, extractor, settings, classes, None, R.SeriesFeatures(), None, False)
    print(f"phantom seed {args.seed} size {args.size}, series {args.series}: grid {pre.GetSize()}, regions "
          + ", ".join(f"{n} {int((sitk.GetArrayViewFromImage(m) > 0).sum())} vox" for n, m in masks.items()), flush=True)

    cpu, ours, theirs = {}, R.SeriesFeatures(), R.SeriesFeatures()
    for image_type, custom in extractor.enabledImagetypes.items():
        source = next(iter(prepared.values()))[1]
        for filtered, type_name, kwargs in getattr(imageoperations, f"get{image_type}Image")(
                pre, source, **{**settings, **custom}):
            for name, (bb, feature_mask, todo) in prepared.items():
                image, mask = imageoperations.cropToTumorMask(filtered, feature_mask, bb, padDistance=0)
                values = torch.from_numpy(sitk.GetArrayFromImage(image))
                roi = torch.from_numpy(sitk.GetArrayFromImage(mask) > 0)
                for cls in todo:
                    start = time.process_time()
                    found = F._class_features(impl, image, mask, type_name, [cls], extractor.enabledFeatures, kwargs)
                    middle = time.process_time()
                    mine = TB.region_features(values, roi, [cls], enabled, {**settings, **kwargs}, pre.GetSpacing())
                    end = time.process_time()
                    key = (image_type, name, cls)
                    got = cpu.setdefault(key, [0.0, 0.0])
                    got[0], got[1] = got[0] + middle - start, got[1] + end - middle
                    theirs.values.setdefault(name, {}).update(found)
                    ours.values.setdefault(name, {}).update(
                        {f"{type_name}_{cls}_{k}": v for k, v in mine[cls].items()})
            print(f"{type_name}: done", flush=True)

    def total(match):
        picked = [v for k, v in cpu.items() if match(k)]
        return sum(p[0] for p in picked), sum(p[1] for p in picked)

    print(f"{'':28s} {'pyradiomics':>12s} {'torch':>8s}  (CPU s)")
    for label, match in ([(f"image type {t}", lambda k, t=t: k[0] == t) for t in extractor.enabledImagetypes]
                         + [(f"region {n}", lambda k, n=n: k[1] == n) for n in prepared]
                         + [(f"class {c}", lambda k, c=c: k[2] == c) for c in classes]):
        a, b = total(match)
        print(f"{label:28s} {a:12.2f} {b:8.2f}  torch {a / max(b, 1e-9):.2f}x")
    a, b = total(lambda k: True)
    worst, count, near_zero = TB.compare_features(theirs, ours)
    print(f"torch vs pyradiomics: {count} values, max rel diff {worst:.3g} ({len(near_zero)} wavelet location "
          f"features near 0 compared absolutely); load average {os.getloadavg()[0]:.1f}")
    print(f"BENCH radiomics_texture pyradiomics_cpu={a:.1f} torch_cpu={b:.1f} torch_speed={a / max(b, 1e-9):.2f} "
          f"max_rel_diff={worst:.3g} features={count} series={args.series} size={args.size} "
          f"load_average={os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
