"""Radiomics in the tolerance mode (`crop_filters`): the LoG per sigma on each region group's box plus a 10-sigma
margin, filtered features within `CROP_TOLERANCE` relative of the whole-image LoG, Original, shape and wavelet
bit-identical, bin flips counted per image type; the B-spline resampling cropped to the rows and slices of the box
plus the filters' margin (`radiomics.cropped`, SimpleITK): bit-identical to the whole-series resampling."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from HCCFusionLib import radiomics as R
from HCCFusionLib.radiomics.cropped import preprocess_cropped
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


def _case(tmp_path, preset_text=PRESET):
    (tmp_path / "p.yaml").write_text(preset_text)
    preset = R.load_preset(tmp_path / "p.yaml")
    labels = labelmap((160, 160, 32), (1.5, 1.5, 3.0), (((6.0, 4.0, 0.0), 10.0),), liver_axes=(70, 60, 40))
    lab = sitk.GetArrayFromImage(labels)
    arr = np.full(lab.shape, 40.0, np.float32)
    arr[lab == LABELS["liver"]], arr[lab == LABELS["tumour"]] = 110.0, 60.0
    arr += np.random.default_rng(0).normal(0, 15, arr.shape).astype(np.float32)
    image = sitk.GetImageFromArray(arr)
    image.CopyInformation(labels)
    return preset, labels, image


def test_cropped_log_within_tolerance_and_original_shape_identical(tmp_path):
    preset, labels, image = _case(tmp_path)
    pre = R.preprocess_image(image, preset)
    mask = R.preprocess_mask(labels == LABELS["tumour"], image, preset)
    whole = R.series_features(pre, {"t": mask}, preset)
    cropped = R.series_features(pre, {"t": mask}, preset, crop_filters=True)
    keys = whole.values["t"].keys()
    assert keys == cropped.values["t"].keys() and any(k.startswith("log-sigma-3") for k in keys)
    exact = {k for k in keys if k.startswith("original_")}
    assert any("_shape_" in k for k in exact)
    assert all(whole.values["t"][k] == cropped.values["t"][k] for k in exact)  # bit-identical
    filtered = R.SeriesFeatures(values={"t": {k: v for k, v in whole.values["t"].items() if k not in exact}})
    mine = R.SeriesFeatures(values={"t": {k: v for k, v in cropped.values["t"].items() if k not in exact}})
    worst, count = R.max_relative_difference(filtered, mine)
    assert count > 100 and worst <= R.CROP_TOLERANCE
    assert worst > 0  # the crop really happened (the recursive LoG is not local: low-order bits change)
    flips = R.bin_flips(pre, {"t": mask}, preset)["t"]
    assert set(flips) == {"log-sigma-1-0-mm-3D", "log-sigma-3-0-mm-3D"}
    assert all(0 <= n <= int(sitk.GetArrayViewFromImage(mask).sum()) // 100 for n in flips.values())


def test_cropped_resampling_is_bit_identical_and_features_within_tolerance(tmp_path):
    preset, labels, image = _case(tmp_path, PRESET.replace("{Original: {}, LoG: {sigma: [1.0, 3.0]}}",
                                                           "{Original: {}, LoG: {sigma: [1.0, 3.0]}, Wavelet: {}}"))
    pre = R.preprocess_image(image, preset)
    masks = {"t": R.preprocess_mask(labels == LABELS["tumour"], image, preset)}
    cropped, small = preprocess_cropped(image, masks, preset)
    assert np.prod(cropped.GetSize()) < np.prod(pre.GetSize()) / 2  # really cropped (whole rows, few slices)
    lo = [int(round(v)) for v in pre.TransformPhysicalPointToContinuousIndex(cropped.GetOrigin())]
    hi = [a + n for a, n in zip(lo, cropped.GetSize())]
    whole = sitk.GetArrayViewFromImage(pre)[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]]
    assert np.array_equal(whole, sitk.GetArrayViewFromImage(cropped))  # every voxel of the crop, bit for bit
    assert np.array_equal(sitk.GetArrayViewFromImage(masks["t"])[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]],
                          sitk.GetArrayViewFromImage(small["t"]))
    assert sitk.GetArrayViewFromImage(small["t"]).sum() == sitk.GetArrayViewFromImage(masks["t"]).sum()
    naive = R.naive_series_features(pre, masks, preset).values["t"]
    mine = R.series_features(cropped, small, preset, crop_filters=True).values["t"]
    assert naive.keys() == mine.keys() and any(k.startswith("wavelet-") for k in naive)
    exact = [k for k in naive if k.startswith("original_") or k.startswith("wavelet-")]
    assert any("_shape_" in k for k in exact)
    assert all(naive[k] == mine[k] for k in exact)  # Original, shape and wavelet: bit-identical
    worst, count = R.max_relative_difference(R.SeriesFeatures(values={"t": naive}),
                                             R.SeriesFeatures(values={"t": mine}))
    assert count == len(naive) and worst <= R.CROP_TOLERANCE
    flips = R.bin_flips(pre, masks, preset)["t"]
    assert len(flips) == 2 + 8 and all(flips[k] == 0 for k in flips if k.startswith("wavelet-"))  # local: exact
    assert sum(flips.values()) <= int(sitk.GetArrayViewFromImage(masks["t"]).sum()) // 100
    print(f"cropped grid {cropped.GetSize()} of {pre.GetSize()}; max rel diff {worst:.3g}; bin flips {flips}")


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (0, -1, 0, 1, 0, 0, 0, 0, -1)])
def test_cropped_resampling_matches_the_whole_grid_voxel_for_voxel(tmp_path, direction):
    """Zero background around a bright body (where B-spline sums cancel and low-order bits show), awkward origin
    and spacing, a signed-permutation direction: the crop equals the whole resampling bit for bit, its start is
    exactly representable, and an oblique grid is not cropped."""
    from fractions import Fraction

    from HCCFusionLib.radiomics.cropped import exact_start

    (tmp_path / "p.yaml").write_text(PRESET.replace("[2.0, 2.0, 2.0]", "[1.5, 1.25, 1.75]").replace("1.0, 3.0", "1.0"))
    preset = R.load_preset(tmp_path / "p.yaml")
    z, y, x = np.mgrid[:48, :90, :96].astype(np.float32)
    arr = 300.0 * np.exp(-((x - 50) ** 2 + (y - 40) ** 2) / 600.0 - (z - 24) ** 2 / 150.0)
    arr[arr < 30] = 0.0
    arr += np.random.default_rng(1).normal(0, 20, arr.shape).astype(np.float32) * (arr > 0)
    image = sitk.GetImageFromArray(arr.astype(np.float32))
    image.SetSpacing((0.71, 0.69, 2.3))
    image.SetOrigin((-173.37, 91.123, -301.7))
    image.SetDirection(direction)
    mask = np.zeros(arr.shape, np.uint8)
    mask[22:27, 38:46, 46:55] = 1
    mask = sitk.GetImageFromArray(mask)
    mask.CopyInformation(image)
    masks = {"t": R.preprocess_mask(mask, image, preset)}
    pre = R.preprocess_image(image, preset)
    cropped, _ = preprocess_cropped(image, masks, preset)
    start = np.array([int(round(v)) for v in pre.TransformPhysicalPointToContinuousIndex(cropped.GetOrigin())])
    assert start[0] == 0 and cropped.GetSize()[0] == pre.GetSize()[0] and cropped.GetSize()[2] < pre.GetSize()[2]
    exact = [Fraction(o) + sum(Fraction(d) * Fraction(s) * int(i) for d, s, i in zip(row, pre.GetSpacing(), start))
             for o, row in zip(pre.GetOrigin(), np.reshape(direction, (3, 3)))]
    assert [Fraction(v) for v in cropped.GetOrigin()] == exact  # no rounding in the crop's origin
    hi = start + np.array(cropped.GetSize())
    whole = sitk.GetArrayViewFromImage(pre)[start[2]:hi[2], start[1]:hi[1], start[0]:hi[0]]
    assert np.array_equal(whole, sitk.GetArrayViewFromImage(cropped))
    assert (np.abs(whole) < 1e-6).any() and (np.abs(whole) > 100).any()  # cancelling sums and body
    grid = sitk.Image(pre.GetSize(), sitk.sitkUInt8)
    grid.SetSpacing((1.5, 1.3, 1.75))
    grid.SetOrigin(pre.GetOrigin())
    assert exact_start(grid, [0, 9, 9])[1] == 0  # 1.3 mm × index rounds: that axis is not cropped
    grid.SetOrigin((0.1, 0.1, -0.1))  # 0.1 + 1.75 × 9 needs bits that 0.1's binade has, the larger one does not
    z = exact_start(grid, [0, 9, 9])[2]
    point = Fraction(grid.TransformIndexToPhysicalPoint((0, 0, int(z)))[2])
    assert z < 9 and Fraction(-0.1) + Fraction(1.75) * int(z) == point
    grid.SetDirection((0.8, -0.6, 0, 0.6, 0.8, 0, 0, 0, 1))
    assert exact_start(grid, [3, 4, 5]) is None


def test_crop_groups_merge_nested_regions_and_split_distant_ones():
    from HCCFusionLib.radiomics.features import crop_groups

    margin, size = np.array([5, 5, 5]), (200, 200, 60)
    nested = {"liver": [20, 150, 20, 150, 5, 50], "tumour": [60, 70, 60, 70, 20, 30]}
    assert [g[0] for g in crop_groups(nested, margin, size)] == [["liver", "tumour"]]
    distant = {"a": [10, 20, 10, 20, 10, 20], "b": [170, 180, 170, 180, 30, 40], "c": [14, 22, 12, 20, 12, 22]}
    groups = crop_groups(distant, margin, size)
    assert sorted(sorted(g[0]) for g in groups) == [["a", "c"], ["b"]]
    lo, hi = next((g[1], g[2]) for g in groups if g[0] == ["b"])
    assert lo.tolist() == [165, 165, 25] and hi.tolist() == [186, 186, 46]
    edge = crop_groups({"e": [0, 199, 0, 199, 0, 59]}, margin, size)
    assert edge[0][1].tolist() == [0, 0, 0] and edge[0][2].tolist() == [200, 200, 60]


def test_tolerance_mode_per_region_crops_and_stated_tolerance(tmp_path):
    """Two distant regions, each with its own LoG crop: Original, shape and wavelet bit-identical to the exact
    path, LoG within the tolerance; extract_study states the mode and tolerance in its diagnostics."""
    preset, labels, image = _case(tmp_path, PRESET.replace("{Original: {}, LoG: {sigma: [1.0, 3.0]}}",
                                                           "{Original: {}, LoG: {sigma: [1.0]}, Wavelet: {}}"))
    pre = R.preprocess_image(image, preset)
    arr = np.zeros(sitk.GetArrayViewFromImage(pre).shape, np.uint8)
    a, b = arr.copy(), arr.copy()
    a[3:9, 10:22, 10:22], b[6:12, 60:72, 58:70] = 1, 1
    masks = {}
    for name, m in (("a", a), ("b", b)):
        masks[name] = sitk.GetImageFromArray(m)
        masks[name].CopyInformation(pre)
    exact = R.series_features(pre, masks, preset)
    fast = R.series_features(pre, masks, preset, crop_filters=True)
    for name in masks:
        keep = [k for k in exact.values[name] if not k.startswith("log-")]
        assert any("_shape_" in k for k in keep) and any(k.startswith("wavelet-") for k in keep)
        assert all(exact.values[name][k] == fast.values[name][k] for k in keep)
    worst, count = R.max_relative_difference(exact, fast)
    assert count == sum(len(v) for v in exact.values.values()) and 0 < worst <= R.CROP_TOLERANCE
    from HCCFusionLib.study import Modality, Phase, Series, Study

    study = Study("s")
    study.add(Series("PVP", Phase.PVP, image, Modality.CT, masks={"labels": labels}))
    found = R.extract_study(study, regions=("tumour",), presets={"*": preset}, workers=1, crop_filters=True)
    assert found.diagnostics["extraction"]["max_rel_diff_vs_pyradiomics"] == R.CROP_TOLERANCE
    assert R.extract_study(study, regions=("tumour",), presets={"*": preset}, workers=1
                           ).diagnostics["extraction"]["mode"] == "exact"
