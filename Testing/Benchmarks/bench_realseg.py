"""Benchmark: the "liverlesion" engine (ported pyliverlesionseg cascade) on real CT, on N CPU threads.

Cases (from the shared reference data): the 20-slice contrast CT slab (liver Dice against its reference
labels, liver = 5) and CRLM-CT-1004 (41 slices, timing, liver volume, lesions). Each case runs twice in the
same process with the same loaded networks:
- "ours": `segment_image_liverlesion` (z-mirroring when the scan ends inside the liver; the lesion stage
  zooms, dilates and zooms back only inside the liver box);
- "original": the cascade in the original's order and settings: no mirroring (zero padding), the
  lesion stage zooms the whole image and mask to 1x1x3 mm, dilates over the whole grid and zooms the whole
  grid back, network tiles one at a time (batch 1). Both skip the DeepVoxNet tiles whose output later tiles
  overwrite entirely (predict_volume always does; same result): "lesion_tiles" says run/original count.
Printed per case: seconds, CPU seconds (user + system of this process: on a busy shared machine
cpu_seconds / threads estimates the wall time on idle cores; the load average is printed), peak RSS, liver
Dice/volume, lesions, agreement of the two lesion masks. The last line is machine-readable. Not collected by pytest.

    HCCFUSION_SHARED_DATA=/work/shared/data .venv/bin/python Testing/Benchmarks/bench_realseg.py [--repeats 1]
"""
from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import SimpleITK as sitk
import torch
from scipy import ndimage

from HCCFusionLib.io import load_study, read_image
from HCCFusionLib.segmentation import liverlesion as ll
from HCCFusionLib.segmentation import liverlesion_prep as prep
from HCCFusionLib.segmentation.liverlesion_models import load_liverlesion, needed_tiles, predict_volume, tile_layout
from HCCFusionLib.segmentation.trainer import dice

DATA = Path(os.environ.get("HCCFUSION_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


def measured(fn):
    """(result, seconds, peak RSS in MB sampled every 20 ms while fn runs, CPU seconds of the process)."""
    proc, peak, done = psutil.Process(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.02)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    cpu0 = sum(proc.cpu_times()[:2])
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    done.set()
    thread.join()
    return result, seconds, max(peak[0], proc.memory_info().rss) / 2 ** 20, sum(proc.cpu_times()[:2]) - cpu0


def original_order(image, modality, models):
    """(liver, lesion) boolean LPS arrays by the original's order and settings (see the module docstring)."""
    def net(kind, vol):
        bundle, model = models[kind]
        probs = predict_volume(model, np.ascontiguousarray(np.flip(vol, (0, 1))), bundle.plans, batch_size=1)
        return np.flip(probs, (0, 1))

    vol, spacing, _, _ = ll.to_lps(image)
    box, _ = prep.crop_ct_box(vol, spacing) if modality == "CT" else prep.crop_mr_box(vol, spacing)
    target = np.asarray(models["liver"][0].plans["target_spacing"], float)
    probs = net("liver", prep.liver_input(vol[box], spacing, target, modality))
    liver = prep.liver_to_full(prep.liver_net_mask(probs), box, vol.shape)
    zoom = np.asarray(spacing) / np.asarray(models["lesion"][0].plans["target_spacing"], float)
    image_r = prep.zoom3d(prep.lesion_normalise(vol, liver, modality), zoom)
    liver_r = prep.zoom3d(liver.astype(np.float32), zoom) > 0.5
    ss = ndimage.iterate_structure(ndimage.generate_binary_structure(3, 2), 2)
    dilated = ndimage.binary_dilation(liver_r, structure=ss)
    masked = np.clip(np.where(dilated, image_r, -0.5), -0.5, 0.5)
    lbox = ndimage.find_objects(dilated.astype(np.uint8))[0]
    padded = np.zeros(image_r.shape)
    padded[lbox] = net("lesion", masked[lbox]) > 0.5
    lesion = ndimage.zoom(padded, np.divide(vol.shape, padded.shape), order=1, prefilter=False) > 0
    return liver, lesion


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=1, help="runs of 'ours' per case (median reported)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    models = {kind: load_liverlesion(kind) for kind in ("liver", "lesion")}
    slab = load_study(DATA / "real/ct_dicom_slab")["PVP"].image
    reference = sitk.Resample(read_image(DATA / "real/ct_dicom_slab_labels.nii.gz"), slab, sitk.Transform(),
                              sitk.sitkNearestNeighbor, 0)
    cases = {"slab": slab, "CRLM-CT-1004": load_study(DATA / "real/liver_ct_contrast/CRLM-CT-1004")["PVP"].image}
    rows = {}
    for name, image in cases.items():
        runs = [measured(lambda: ll.segment_image_liverlesion(image, "CT", models=models))
                for _ in range(args.repeats)]
        seg = runs[0][0]
        (liver_o, lesion_o), s_orig, m_orig, c_orig = measured(lambda: original_order(image, "CT", models))
        labels = sitk.GetArrayFromImage(seg.labels)
        _, spacing, perm, flips = ll.to_lps(image)
        liver_o, lesion_o = (ll.from_lps(a, perm, flips) for a in (liver_o, lesion_o))
        voxel_ml = float(np.prod(spacing)) / 1000.0
        row = {"case": name, "seconds": statistics.median(r[1] for r in runs), "peak_rss_mb": max(r[2] for r in runs),
               "cpu_seconds": statistics.median(r[3] for r in runs), "original_seconds": s_orig,
               "original_cpu_seconds": c_orig, "original_rss_mb": m_orig,
               "liver_ml": float(np.isin(labels, (1, 2)).sum() * voxel_ml), "lesions": len(seg.lesions),
               "lesion_ml": float(seg.lesions.volume_ml.sum()) if len(seg.lesions) else 0.0,
               "mirrored": "mirrored_z_slices" in seg.meta["crop"],
               "liver_net_passes": seg.meta["crop"].get("liver_net_passes"),
               "lesion_dice_vs_original_in_liver": dice((labels == 2), lesion_o & np.isin(labels, (1, 2))),
               "timings": seg.meta["timings"]}
        if "lesion_input_shape" in seg.meta:
            plans = models["lesion"][0].plans
            tiles = tile_layout(seg.meta["lesion_input_shape"], plans["input_segment_size"],
                                plans["output_segment_size"], False)
            row["lesion_tiles"] = f"{len(needed_tiles(tiles, seg.meta['lesion_input_shape']))}/{len(tiles)}"
        if name == "slab":
            truth = sitk.GetArrayFromImage(reference) == 5
            row["dice_liver"] = dice(np.isin(labels, (1, 2)), truth)
            row["dice_liver_original"] = dice(liver_o, truth)
        rows[name] = row
        print(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    seconds = statistics.median(r["seconds"] for r in rows.values())
    original = statistics.median(r["original_seconds"] for r in rows.values())
    cpu = statistics.median(r["cpu_seconds"] for r in rows.values())
    cpu_original = statistics.median(r["original_cpu_seconds"] for r in rows.values())
    print(f"BENCH realseg seconds={seconds:.1f} dice_liver={rows['slab']['dice_liver']:.3f} "
          f"peak_rss_mb={max(r['peak_rss_mb'] for r in rows.values()):.0f} "
          f"crlm_seconds={rows['CRLM-CT-1004']['seconds']:.1f} original_seconds={original:.1f} "
          f"speedup={original / seconds:.2f} cpu_seconds={cpu:.1f} cpu_speedup={cpu_original / cpu:.2f} "
          f"load_avg={os.getloadavg()[0]:.1f} dice_liver_original={rows['slab']['dice_liver_original']:.3f} "
          f"crlm_liver_ml={rows['CRLM-CT-1004']['liver_ml']:.0f} crlm_lesions={rows['CRLM-CT-1004']['lesions']} "
          f"threads={args.threads}")


if __name__ == "__main__":
    main()
