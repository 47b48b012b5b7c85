"""Benchmark: IBSI-1 CT phantom, configurations A–E, HCCFusion's 'ibsi' presets (pyradiomics formulas) vs mirp.

For each configuration: the HCCFusion preset's features (Testing/data/ibsi1_pyradiomics_map.csv, 102 features;
2D texture tags, per slice averaged, for A and B), how many are within the IBSI tolerance (A and B: the reference values in
../shared/data/ibsi1_ct_phantom), the largest relative difference to mirp's value of the same IBSI feature (pyradiomics'
kurtosis converted to excess kurtosis first), and both run times. mirp (PyPI `mirp`, IBSI-validated by its
authors) is optional: without it only the HCCFusion side runs. mirp is scored on every IBSI feature it computes too.

Run: .venv/bin/python Testing/Benchmarks/bench_ibsi.py [--configs a,b,c,d,e] [--data ../shared/data]
"""
from __future__ import annotations

import argparse
import math
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MIRP_2D = dict(by_slice=True, glcm_spatial_method=["2d_average"], glrlm_spatial_method=["2d_average"],
               glszm_spatial_method=["2d"], gldzm_spatial_method=["2d"], ngtdm_spatial_method=["2d"],
               ngldm_spatial_method=["2d"])
MIRP_3D = dict(by_slice=False, glcm_spatial_method=["3d_average"], glrlm_spatial_method=["3d_average"],
               glszm_spatial_method=["3d"], gldzm_spatial_method=["3d"], ngtdm_spatial_method=["3d"],
               ngldm_spatial_method=["3d"], new_spacing=2.0)
RANGE_A, RANGE_C = [-500.0, 400.0], [-1000.0, 400.0]
FBS, FBN = dict(base_discretisation_method="fixed_bin_size", base_discretisation_bin_width=25.0), \
    dict(base_discretisation_method="fixed_bin_number", base_discretisation_n_bins=32)
MIRP_CONFIGS = {  # the same choices as presets/ibsi1_ct_*_v1.yaml, in mirp's terms
    "a": dict(MIRP_2D, resegmentation_intensity_range=RANGE_A, **FBS),
    "b": dict(MIRP_2D, new_spacing=[[2.0, 2.0]], spline_order=1, resegmentation_intensity_range=RANGE_A, **FBN),
    "c": dict(MIRP_3D, spline_order=1, resegmentation_intensity_range=RANGE_C, **FBS),
    "d": dict(MIRP_3D, spline_order=1, resegmentation_intensity_range=RANGE_C, resegmentation_sigma=3.0, **FBN),
    "e": dict(MIRP_3D, spline_order=3, resegmentation_intensity_range=RANGE_C, resegmentation_sigma=3.0, **FBN),
}


def mirp_tag(name: str) -> str:
    """mirp's feature name -> IBSI tag (aggregation suffixes as in the IBSI reference tables)."""
    name = re.sub(r"_(fbs|fbn)_[wn][0-9.]+$", "", name)
    name = re.sub(r"_d1(_a0\.0)?", "", name)
    for old, new in (("_2d_avg", "_2D_avg"), ("_3d_avg", "_3D_avg")):
        name = name.replace(old, new)
    return re.sub(r"_(2d|3d)$", lambda m: "_" + m.group(1).upper(), name)


def run_mirp(folder: Path, cfg: str) -> tuple[dict, float]:
    from mirp import extract_features

    start = time.perf_counter()
    frame = extract_features(image=str(folder / "image.nii.gz"), mask=str(folder / "mask.nii.gz"),
                             image_modality="CT", ibsi_compliant=True, base_feature_families="all",
                             anti_aliasing=False, roi_spline_order=1, roi_interpolation_mask_inclusion_threshold=0.5,
                             glcm_distance=1.0, ngldm_distance=1.0, ngldm_difference_level=0.0,
                             ivh_discretisation_method="none", **MIRP_CONFIGS[cfg])[0]
    seconds = time.perf_counter() - start
    values = {}
    for key, value in frame.iloc[0].items():
        try:
            values.setdefault(mirp_tag(str(key)), float(value))
        except (TypeError, ValueError):
            pass
    return values, seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="a,b,c,d,e")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args(argv)
    import pandas as pd
    import SimpleITK as sitk

    from HCCFusionLib import radiomics as R

    folder = args.data / "ibsi1_ct_phantom"
    image, mask = sitk.ReadImage(str(folder / "image.nii.gz")), sitk.ReadImage(str(folder / "mask.nii.gz"))
    mapping = pd.read_csv(ROOT / "Testing" / "data" / "ibsi1_pyradiomics_map.csv")
    try:
        import mirp  # noqa: F401
        have_mirp = True
    except ImportError:
        have_mirp = False
        print("mirp is not installed: HCCFusion side only")
    bench = []
    for cfg in args.configs.split(","):
        preset = R.load_preset(f"ibsi1_ct_{cfg}")
        start = time.perf_counter()
        pre, roi = R.preprocess_image(image, preset), R.preprocess_mask(mask, image, preset)
        values = R.series_features(pre, {"roi": roi}, preset).values["roi"]
        ours_s = time.perf_counter() - start
        n_voxels = int(sitk.GetArrayViewFromImage(roi).sum())
        ref_file = folder / f"config_{cfg}.csv"
        ref = pd.read_csv(ref_file, sep=";").dropna(subset=["reference value"]).set_index("tag") \
            if ref_file.is_file() else None
        mirp_values, mirp_s = run_mirp(folder, cfg) if have_mirp else ({}, math.nan)
        within, worst, deviating = 0, (0.0, ""), []
        for row in mapping.itertuples():
            tag = row.ibsi_tag
            if preset.preprocess["aggregation"] == "2D":
                tag = re.sub(r"_3D(_avg)?$", lambda m: "_2D" + (m.group(1) or ""), tag)
            value = values[f"original_{row.feature_class}_{row.feature}"]
            if ref is not None:
                if abs(value - ref.loc[tag, "reference value"]) <= ref.loc[tag, "tolerance"] * 1.0001:
                    within += 1
                else:
                    deviating.append(tag)
            dev = R.ibsi.PYRADIOMICS_DEVIATIONS.get((row.feature_class, row.feature))
            ibsi_value = dev[1](value, n_voxels) if dev else value
            if tag in mirp_values:
                rel = abs(ibsi_value - mirp_values[tag]) / max(abs(mirp_values[tag]), 1e-12)
                worst = max(worst, (rel, tag))
        line = f"config {cfg.upper()}: HCCFusion {ours_s:.1f} s"
        if ref is not None:
            line += f", {within}/{len(mapping)} within IBSI tolerance (outside: {', '.join(deviating) or 'none'})"
        if have_mirp:
            line += f"; mirp {mirp_s:.1f} s, max relative difference to mirp {worst[0]:.2e} ({worst[1]})"
            if ref is not None:
                scored = [t for t in ref.index if t in mirp_values and math.isfinite(mirp_values[t])]
                ok = [t for t in scored if abs(float(f"{mirp_values[t]:.3g}") - ref.loc[t, "reference value"])
                      <= ref.loc[t, "tolerance"]]
                line += f"; mirp {len(ok)}/{len(scored)} of its IBSI features within tolerance"
        print(line, flush=True)
        bench.append(f"{cfg}_s={ours_s:.2f} {cfg}_within={within if ref is not None else 'na'} "
                     f"{cfg}_mirp_s={mirp_s:.2f} {cfg}_mirp_maxrel={worst[0]:.2e}")
    print("BENCH ibsi " + " ".join(bench))
    return 0


if __name__ == "__main__":
    sys.exit(main())
