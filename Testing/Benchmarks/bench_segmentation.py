"""Benchmark: segmentation of a 512 x 512 x 150 phantom on 2 CPU threads with the shipped sample model.

Compares HCCFusion's predictor (Gaussian tiles run 4 per forward pass, constant tiles skipped, a first pass
at overlap 0.25 on the image averaged over 2x2x2 plan voxels that finds the foreground box, that box at the
model's overlap (grown while the foreground touches its faces), mirroring TTA only around the candidates of
the model's "tta_labels", resampling back and post-processing only around the foreground) with and without
mirroring TTA against MONAI's `sliding_window_inference` at its default settings (overlap 0.25, constant
blending, sw_batch_size 1) on the same network, same plan spacing and the same pre/post-processing, in the
same run (interleaved per seed). Times and peak RSS are medians over the phantom seeds; Dice (liver = liver +
tumour, tumour) are means over the seeds: with TTA, without (`_plain`, the run `speedup` is measured on) and
MONAI's (`_baseline`). Not collected by pytest.

    .venv/bin/python Testing/Benchmarks/bench_segmentation.py [--seeds 9003 9004 9005 9101 9102 9103]
"""
from __future__ import annotations

import argparse
import statistics
import threading
import time

import numpy as np
import psutil
import SimpleITK as sitk
import torch

from HCCFusionLib.segmentation.bundle import load_bundle
from HCCFusionLib.phantom import phantom_case
from HCCFusionLib.segmentation.data import preprocess
from HCCFusionLib.segmentation.predictor import postprocess_in_box, predict_case, resample_to_reference
from HCCFusionLib.segmentation.trainer import dice
from HCCFusionLib.study import LABELS

CHANNELS = ["AP", "PVP"]


def case_150(seed: int):
    """A full-size phantom (512x512x120, 2.5 mm) resampled to 512x512x150 (2.0 mm slices), same field of view."""
    case = phantom_case(seed, CHANNELS, "full")
    ref = case.reference
    grid = sitk.Image([512, 512, 150], sitk.sitkUInt8)
    grid.SetSpacing((ref.GetSpacing()[0], ref.GetSpacing()[1], ref.GetSpacing()[2] * 120 / 150))
    grid.SetOrigin(ref.GetOrigin())
    grid.SetDirection(ref.GetDirection())
    case.images = {k: sitk.Resample(v, grid, sitk.Transform(), sitk.sitkLinear, -1000.0, sitk.sitkFloat32)
                   for k, v in case.images.items()}
    case.labels = sitk.Resample(case.labels, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return case


def measured(fn):
    """(result, seconds, peak RSS in MB sampled every 20 ms while fn runs)."""
    proc, peak, done = psutil.Process(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    done.set()
    thread.join()
    return result, seconds, max(peak[0], proc.memory_info().rss) / 2 ** 20


def monai_default(case, bundle, net):
    """Same pipeline with MONAI's sliding_window_inference at default settings in place of our tiling."""
    from monai.inferers import sliding_window_inference

    image, _, grid = preprocess(case, bundle.plans, with_labels=False)
    with torch.inference_mode():
        logits = sliding_window_inference(torch.from_numpy(image)[None], bundle.plans["patch_size"], 1, net)
    probs = torch.softmax(logits, 1)[0].numpy()
    model = resample_to_reference(probs, grid, case.reference)
    out = np.zeros(model.shape, np.uint8)
    for name, idx in bundle.plans["labels"].items():
        out[model == idx] = LABELS[name]
    labels = sitk.GetImageFromArray(out)
    labels.CopyInformation(case.reference)
    return postprocess_in_box(labels)[0]


def _dice(labels: sitk.Image, truth: np.ndarray):
    """(liver + tumour, tumour or None where the case has no tumour) Dice."""
    pred = sitk.GetArrayViewFromImage(labels)
    return (dice(np.isin(pred, (1, 2)), np.isin(truth, (1, 2))),
            dice(pred == 2, truth == 2) if (truth == 2).any() else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[9003, 9004, 9005, 9101, 9102, 9103])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    bundle = load_bundle()
    net = bundle.build_network()
    rows = []
    for seed in args.seeds:
        case = case_150(seed)
        truth = sitk.GetArrayFromImage(case.labels)
        tta, s_tta, m_tta = measured(lambda: predict_case(case, bundle, tta=True, net=net))
        plain, s_plain, m_plain = measured(lambda: predict_case(case, bundle, tta=False, net=net))
        base, s_base, m_base = measured(lambda: monai_default(case, bundle, net))
        scores = {f"dice_{organ}{suffix}": value for suffix, labels in (("", tta.labels), ("_plain", plain.labels),
                                                                        ("_baseline", base))
                  for organ, value in zip(("liver", "tumour"), _dice(labels, truth))}
        row = {"seed": seed, "seconds_tta": s_tta, "seconds": s_plain, "baseline_seconds": s_base,
               "rss_tta": m_tta, "rss": m_plain, "rss_baseline": m_base,
               **scores, "tiles": tta.meta["tiles"], "box_tiles": tta.meta["box_tiles"], "skipped": tta.meta["skipped"],
               "lesions_found": len(tta.lesions)}
        rows.append(row)
        print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)

    def med(key):
        return statistics.median(r[key] for r in rows)

    def mean(key):
        values = [r[key] for r in rows if r[key] is not None]
        return float(np.mean(values)) if values else float("nan")

    print(f"BENCH segmentation seconds_tta={med('seconds_tta'):.1f} seconds={med('seconds'):.1f} "
          f"baseline_seconds={med('baseline_seconds'):.1f} speedup={med('baseline_seconds') / med('seconds'):.2f} "
          + " ".join(f"{k}={mean(k):.3f}" for k in rows[0] if k.startswith("dice_")) + " "
          f"peak_rss_mb={max(med('rss_tta'), med('rss'), med('rss_baseline')):.0f}")


if __name__ == "__main__":
    main()
