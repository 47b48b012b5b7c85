"""Radiomics with the LoG cropped to the region's box plus a 6-sigma margin: filtered features within 1e-4
relative of the whole-image LoG, Original and shape bit-identical, bin flips counted."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from HCCFusionLib import radiomics as R
from HCCFusionLib.study import LABELS
from labelmaps import labelmap

PRESET = """name: croplog
version: 1
modality: CT
preprocess: {resample_mm: [2.0, 2.0, 2.0], interpolator: sitkBSpline}
setting: {binWidth: 25, resegmentRange: [-150, 450]}
imageType: {Original: {}, LoG: {sigma: [1.0, 3.0]}}
featureClass: {}
"""


def test_cropped_log_within_tolerance_and_original_shape_identical(tmp_path):
    (tmp_path / "p.yaml").write_text(PRESET)
    preset = R.load_preset(tmp_path / "p.yaml")
    labels = labelmap((160, 160, 32), (1.5, 1.5, 3.0), (((6.0, 4.0, 0.0), 10.0),), liver_axes=(70, 60, 40))
    lab = sitk.GetArrayFromImage(labels)
    arr = np.full(lab.shape, 40.0, np.float32)
    arr[lab == LABELS["liver"]], arr[lab == LABELS["tumour"]] = 110.0, 60.0
    arr += np.random.default_rng(0).normal(0, 15, arr.shape).astype(np.float32)
    image = sitk.GetImageFromArray(arr)
    image.CopyInformation(labels)
    pre = R.preprocess_image(image, preset)
    mask = R.preprocess_mask(labels == LABELS["tumour"], image, preset)
    whole = R.series_features(pre, {"t": mask}, preset)
    cropped = R.series_features(pre, {"t": mask}, preset, crop_log=True)
    keys = whole.values["t"].keys()
    assert keys == cropped.values["t"].keys() and any(k.startswith("log-sigma-3") for k in keys)
    exact = {k for k in keys if k.startswith("original_")}
    assert any("_shape_" in k for k in exact)
    assert all(whole.values["t"][k] == cropped.values["t"][k] for k in exact)  # bit-identical
    filtered = R.SeriesFeatures(values={"t": {k: v for k, v in whole.values["t"].items() if k not in exact}})
    mine = R.SeriesFeatures(values={"t": {k: v for k, v in cropped.values["t"].items() if k not in exact}})
    worst, count = R.max_relative_difference(filtered, mine)
    assert count > 100 and worst <= 1e-4
    assert worst > 0  # the crop really happened (the recursive LoG is not local: low-order bits change)
    flips = R.log_bin_flips(pre, mask, preset)
    assert set(flips) == {"log-sigma-1-0-mm-3D", "log-sigma-3-0-mm-3D"}
    assert all(0 <= n <= int(sitk.GetArrayViewFromImage(mask).sum()) // 100 for n in flips.values())
