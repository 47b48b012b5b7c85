"""Benchmark: `hccfusion run` on the full-size demo phantom and on the real DICOM CT slab, against baselines.

Ours ("liver_first", the pipeline's order): the reference phase's liver by the engine's cheap locate pass, then
registration to that liver, then segmentation seeded with the located foreground, radiomics, LI-RADS, ...
Baselines, each in its own process on the same saved study (for its peak RSS), chosen with flags:
- "whole_volumes" (--orders): the same `run` registering whole volumes (the order before this change);
- --naive PARTS: the naive chain's stages measured on the same study in one process, each replacing our
  stage's seconds in `naive_seconds` (stages not named keep our seconds, and the line says which were naive):
  registration = itk-elastix with its default parameter maps on whole volumes (engine "elastix");
  segmentation = MONAI's sliding_window_inference at its defaults (overlap 0.25) with nnU-Net's 8-flip mirroring
  TTA, same network; radiomics = the naive pyradiomics loop (radiomics.naive_extract per series and region).
- --real: `run` on /work/shared/data/real/ct_dicom_slab (one series: no registration; liverlesion engine), liver
  Dice against TotalSegmentator's labels (liver = 5).
Per run it prints stage seconds, TRE (mean over landmarks and moving phases), liver and tumour Dice and LI-RADS
agreement (each true lesion vs the found lesion nearest its centre); the last line is
`BENCH pipeline seconds=… naive_seconds=… speedup=… peak_rss_mb=…` plus the accuracy pairs.

Run: .venv/bin/python Testing/Benchmarks/bench_pipeline.py [--seed 7] [--size full] [--orders liver_first,whole_volumes]
     [--naive registration,segmentation,radiomics] [--real]
"""
from __future__ import annotations

import argparse
import itertools
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
NAIVE = ("registration", "segmentation", "radiomics")
REAL = Path(os.environ.get("HCCFUSION_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")) / "real"


def _rss() -> int:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def _agreement(truth, found) -> str:
    agree = 0
    for _, lesion in truth.iterrows():
        centre = lesion[["centre_x_mm", "centre_y_mm", "centre_z_mm"]].to_numpy(float)
        if len(found):
            d = np.linalg.norm(found[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy(float) - centre,
                               axis=1)
            near = found.iloc[int(d.argmin())]
            agree += int(d.min() <= lesion["diameter_mm"] and near["category"] == lesion["lirads"])
    return f"{agree}/{len(truth)}"


def one(order: str, study_dir: Path, out: Path, seed: int, size: str) -> dict:
    """`run` in `order` on the phantom, measured against its truth (re-made from the seed)."""
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
    return {"order": order, "seconds": round(seconds, 1), "stages": result.seconds,
            "tre_mm": round(float(tre["tre_mean_mm"].mean()), 3), "dice": truth_dice(patient.labels,
                                                                                     RunFolder(out).labels),
            "lirads_agree": _agreement(lesion_table(patient), result.lesions), "lesions_found": len(result.lesions),
            "peak_rss_mb": _rss()}


def real(out: Path) -> dict:
    """`run` on the real DICOM CT slab; liver Dice against TotalSegmentator."""
    import SimpleITK as sitk

    from HCCFusionLib import pipeline
    from HCCFusionLib.io import read_image
    from HCCFusionLib.layout import RunFolder
    from HCCFusionLib.study import LABELS

    started = time.perf_counter()
    result = pipeline.run(REAL / "ct_dicom_slab", out, overwrite=True)
    seconds = time.perf_counter() - started
    labels = read_image(RunFolder(out).labels)
    reference = sitk.Resample(read_image(REAL / "ct_dicom_slab_labels.nii.gz"), labels, sitk.Transform(),
                              sitk.sitkNearestNeighbor, 0)  # the reference's own orientation onto the run's grid
    truth = sitk.GetArrayFromImage(reference) == 5
    found = np.isin(sitk.GetArrayFromImage(labels), (LABELS["liver"], LABELS["tumour"]))
    dice = 2 * (truth & found).sum() / max(truth.sum() + found.sum(), 1)
    return {"order": "real", "seconds": round(seconds, 1), "stages": result.seconds,
            "dice_liver": round(float(dice), 4), "peak_rss_mb": _rss()}


def naive(parts: list, study_dir: Path, seed: int, size: str) -> dict:
    """The naive chain's stages on the saved study (see the module docstring)."""
    import SimpleITK as sitk
    import torch

    from HCCFusionLib.demo import target_registration_error
    from HCCFusionLib.io import load_study
    from HCCFusionLib.phantom import make_patient
    from HCCFusionLib.registration import register_study

    patient, study, out = make_patient(seed, size), load_study(study_dir), {"parts": parts, "stages": {}}
    started = time.perf_counter()
    registration = register_study(study, mode="deformable", engine="elastix", mask=None, seed=0)
    if "registration" in parts:
        out["stages"]["registration"] = round(time.perf_counter() - started, 1)
        tre = target_registration_error(patient, registration.transforms)
        out["tre_mm"] = round(float(tre["tre_mean_mm"].mean()), 3)
    registered, labels = registration.study, patient.labels
    if "segmentation" in parts:
        from monai.inferers import sliding_window_inference

        from HCCFusionLib.segmentation.bundle import default_bundle_path, load_bundle
        from HCCFusionLib.segmentation.data import case_from_study, preprocess
        from HCCFusionLib.segmentation.predictor import postprocess_in_box, resample_to_reference
        from HCCFusionLib.study import LABELS

        started = time.perf_counter()
        bundle = load_bundle(default_bundle_path())
        net, case = bundle.build_network(), case_from_study(registered, bundle.channels, registration.reference)
        image, _, grid = preprocess(case, bundle.plans, with_labels=False)
        flips = [a for r in range(4) for a in itertools.combinations((2, 3, 4), r)]
        with torch.inference_mode():
            x = torch.from_numpy(image)[None]
            probs = sum(torch.softmax(sliding_window_inference(torch.flip(x, f), bundle.plans["patch_size"], 1,
                                                               net), 1).flip(f) for f in flips)[0] / len(flips)
        model = resample_to_reference(probs.numpy(), grid, case.reference)
        arr = np.zeros(model.shape, np.uint8)
        for name, idx in bundle.plans["labels"].items():
            arr[model == idx] = LABELS[name]
        labels = sitk.GetImageFromArray(arr)
        labels.CopyInformation(case.reference)
        labels = postprocess_in_box(labels)[0]
        out["stages"]["segmentation"] = round(time.perf_counter() - started, 1)
        truth, pred = sitk.GetArrayViewFromImage(patient.labels), sitk.GetArrayViewFromImage(labels)
        out["dice"] = {name: round(float(2 * (t & p).sum() / max(t.sum() + p.sum(), 1)), 4) for name, t, p in
                       (("liver", truth > 0, pred > 0), ("tumour", truth == 2, pred == 2))}
    if "radiomics" in parts:
        from HCCFusionLib import radiomics as R
        from HCCFusionLib.pipeline import RUN_REGIONS
        from HCCFusionLib.regions import build_regions

        started = time.perf_counter()
        regions = build_regions(labels, names=RUN_REGIONS)
        preset = R.load_preset("ct_v1").with_image_types(["Original"])  # the loop reproduces legacy presets only
        for series in registered:
            for name, region in regions.items():
                R.naive_extract(series.image, {name: region.mask}, preset)
        out["stages"]["radiomics"] = round(time.perf_counter() - started, 1)
    out["peak_rss_mb"] = _rss()
    return out


def _child(args, *extra) -> dict:
    run = subprocess.run([sys.executable, __file__, "--seed", str(args.seed), "--size", args.size, *extra],
                         capture_output=True, text=True)
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    if run.returncode or not lines:
        sys.exit(f"{extra[:2]} failed:\n{run.stderr[-3000:]}")
    print("".join(f"  {line}\n" for line in run.stderr.splitlines()
                  if "before registration" in line or "for registration" in line), end="")
    result = json.loads(lines[-1][len("RESULT "):])
    print(json.dumps(result), f"(load average {os.getloadavg()[0]:.2f})", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--size", default="full", choices=["small", "medium", "full"])
    parser.add_argument("--orders", default="liver_first,whole_volumes", help="runs of the pipeline on the phantom")
    parser.add_argument("--naive", default="", help=f"naive chain stages to measure: some of {','.join(NAIVE)}")
    parser.add_argument("--real", action="store_true", help="also `run` on the real DICOM CT slab")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
        kind, *rest = args.child
        result = (real(Path(rest[0])) if kind == "real" else
                  naive(rest[1].split(","), Path(rest[0]), args.seed, args.size) if kind == "naive" else
                  one(kind, Path(rest[0]), Path(rest[1]), args.seed, args.size))
        print("RESULT " + json.dumps(result))
        return

    from HCCFusionLib.io import save_study
    from HCCFusionLib.phantom import make_patient

    orders = [o for o in args.orders.split(",") if o]
    parts = [p for p in args.naive.split(",") if p]
    if not orders or orders[0] != "liver_first" or set(orders) - set(ORDERS) or set(parts) - set(NAIVE):
        sys.exit(f"--orders starts with liver_first (of {', '.join(ORDERS)}); --naive of {', '.join(NAIVE)}")
    print(f"load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        study = save_study(make_patient(args.seed, args.size).study, Path(tmp) / "study", overwrite=True)
        for order in orders:
            results[order] = _child(args, "--child", order, str(study), str(Path(tmp) / order))
        if parts:
            results["naive"] = _child(args, "--child", "naive", str(study), ",".join(parts))
        if args.real:
            results["real"] = _child(args, "--child", "real", str(Path(tmp) / "real"))
    new = results["liver_first"]
    line = f"BENCH pipeline seconds={new['seconds']:.1f}"
    if parts:
        chain = {**new["stages"], **results["naive"]["stages"]}
        naive_seconds = new["seconds"] - sum(new["stages"].values()) + sum(chain.values())
        line += f" naive_seconds={naive_seconds:.1f} speedup={naive_seconds / new['seconds']:.2f} naive={'+'.join(parts)}"
    elif "whole_volumes" in results:
        naive_seconds = results["whole_volumes"]["seconds"]
        line += f" naive_seconds={naive_seconds:.1f} speedup={naive_seconds / new['seconds']:.2f} naive=whole_volumes"
    line += f" peak_rss_mb={new['peak_rss_mb']} tre_mm={new['tre_mm']} dice_liver={new['dice']['liver']} " \
            f"dice_tumour={new['dice']['tumour']} lirads_agree={new['lirads_agree']}"
    if "whole_volumes" in results:
        old = results["whole_volumes"]
        line += f" whole_seconds={old['seconds']:.1f} whole_tre_mm={old['tre_mm']} " \
                f"whole_dice_liver={old['dice']['liver']} whole_dice_tumour={old['dice']['tumour']} " \
                f"whole_lirads_agree={old['lirads_agree']}"
    if parts:
        chain = results["naive"]
        line += "".join(f" naive_{k}={chain[k]}" for k in ("tre_mm",) if k in chain)
        line += "".join(f" naive_dice_{k}={v}" for k, v in chain.get("dice", {}).items())
    if args.real:
        line += f" real_seconds={results['real']['seconds']:.1f} real_dice_liver={results['real']['dice_liver']} " \
                f"real_peak_rss_mb={results['real']['peak_rss_mb']}"
    print(line)


if __name__ == "__main__":
    main()
