"""Regions: lesions, peritumoral rings (analytic shell volumes, anisotropic spacing), background liver, size rules."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from HCCFusionLib.errors import InputError
from HCCFusionLib.regions import (MIN_SIZE, build_regions, lesion_map, ring_name, size_reason, surface_distance)
from HCCFusionLib.study import LABELS
from labelmaps import grid_mm, labelmap


def _size(spacing, extent_mm=90.0):
    return [int(np.ceil(extent_mm / s)) for s in spacing]


def _labels(spacing, tumours, liver_radius=None, extent_mm=90.0):
    """Spherical tumours [(centre_xyz_mm, radius_mm)] inside an optional spherical liver, on a centred grid."""
    return labelmap(_size(spacing, extent_mm), spacing, tumours, liver_radius)


def _shell_ml(r_in, r_out):
    return 4 / 3 * np.pi * (r_out ** 3 - r_in ** 3) / 1000.0


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 0.8, 2.5), (0.7, 0.7, 2.0)])
@pytest.mark.parametrize("radius", [15.0, 25.0])
def test_ring_volumes_match_analytic_shells(spacing, radius):
    labels = _labels(spacing, [((0.0, 0.0, 0.0), radius)])
    regions = build_regions(labels, names=("tumour", "rings"), clip="none")
    tumour = sitk.GetArrayFromImage(regions["tumour"].mask) > 0
    for inner, outer in ((0.0, 5.0), (5.0, 10.0)):
        ring = regions[ring_name(inner, outer)]
        expected = _shell_ml(radius + inner, radius + outer)
        assert abs(ring.volume_ml / expected - 1) < 0.05, (spacing, radius, inner, ring.volume_ml, expected)
        assert not (sitk.GetArrayFromImage(ring.mask).astype(bool) & tumour).any()
    # rings partition the 0-10 mm shell: disjoint and together the union
    a = sitk.GetArrayFromImage(regions["ring0-5mm"].mask) > 0
    b = sitk.GetArrayFromImage(regions["ring5-10mm"].mask) > 0
    assert not (a & b).any()


def test_surface_distance_is_physical_on_anisotropic_grid():
    labels = _labels((0.8, 0.8, 2.5), [((0.0, 0.0, 0.0), 10.0)])
    dist = surface_distance(labels == LABELS["tumour"], 20.0)
    x, y, z = grid_mm(_size((0.8, 0.8, 2.5)), (0.8, 0.8, 2.5))
    true = np.sqrt(x ** 2 + y ** 2 + z ** 2) - 10.0
    near = (true > 1.0) & (true < 15.0)
    # within a voxel diagonal of the analytic distance, along every axis (in-plane 0.8 mm, slices 2.5 mm)
    assert np.abs(dist[near] - true[near]).max() < 1.3
    assert np.isinf(dist[np.abs(x) > 36.0]).all()  # outside the crop around the tumour + reach: not computed


def test_rings_clip_to_liver_and_never_overlap_any_tumour():
    # two tumours, one near the liver edge: its rings are cut by the liver boundary
    labels = _labels((1.0, 1.0, 1.0), [((0.0, 0.0, 0.0), 8.0), ((22.0, 0.0, 0.0), 6.0)], liver_radius=32.0)
    regions = build_regions(labels, names=("tumour", "lesions", "index", "rings", "background_liver", "liver"))
    lab = sitk.GetArrayFromImage(labels)
    liver_organ = np.isin(lab, [LABELS["liver"], LABELS["tumour"]])
    tumour = lab == LABELS["tumour"]
    for name in ("ring0-5mm", "ring5-10mm"):
        ring = sitk.GetArrayFromImage(regions[name].mask) > 0
        assert ring.any() and not (ring & tumour).any() and not (ring & ~liver_organ).any()
        assert regions[name].note == "clipped to the liver"
    unclipped = build_regions(labels, names=("rings",), clip="none")["ring5-10mm"]
    assert unclipped.voxels > regions["ring5-10mm"].voxels  # the liver boundary cut something
    # lesions: components sorted by size, index = largest, union = tumour
    assert regions["lesion1"].voxels > regions["lesion2"].voxels > 0
    assert regions["index"].voxels == regions["lesion1"].voxels
    assert regions["lesion1"].voxels + regions["lesion2"].voxels == regions["tumour"].voxels
    # background liver: liver label minus tumours dilated by 10 mm
    bg = sitk.GetArrayFromImage(regions["background_liver"].mask) > 0
    dist = surface_distance(labels == LABELS["tumour"], 10.0)
    assert bg.any() and (dist[bg] > 10.0).all() and not (bg & ~(lab == LABELS["liver"])).any()
    assert regions["liver"].voxels == int(liver_organ.sum())


def test_rings_fall_back_to_body_without_liver_label():
    labels = _labels((1.0, 1.0, 1.0), [((0.0, 0.0, 0.0), 8.0)])
    body = sitk.Cast(labels * 0, sitk.sitkUInt8)
    arr = sitk.GetArrayFromImage(body)
    arr[:, :, : arr.shape[2] // 2] = 1  # half the field of view is "body"
    body_img = sitk.GetImageFromArray(arr)
    body_img.CopyInformation(labels)
    ring = build_regions(labels, names=("rings",), body=body_img)["ring0-5mm"]
    assert "body" in ring.note
    assert not (sitk.GetArrayFromImage(ring.mask)[:, :, arr.shape[2] // 2:] > 0).any()
    free = build_regions(labels, names=("rings",))["ring0-5mm"]
    assert free.voxels > ring.voxels and "not clipped" in free.note


def test_lesion_map_and_custom_label_values():
    labels = _labels((2.0, 2.0, 2.0), [((-20.0, 0.0, 0.0), 6.0), ((20.0, 0.0, 0.0), 10.0)])
    instances = sitk.GetArrayFromImage(lesion_map(labels))
    assert set(np.unique(instances)) == {0, 1, 2} and (instances == 1).sum() > (instances == 2).sum()
    binary = sitk.Cast(labels > 0, sitk.sitkUInt8)  # masks with tumour = 1 (e.g. the STS data)
    regions = build_regions(binary, names=("tumour",), label_values={"tumour": 1, "liver": 99})
    assert regions["tumour"].voxels == int((instances > 0).sum())


def test_size_rules_give_reasons():
    assert size_reason(0, 0, "glcm", "lesion3").startswith("empty region")
    assert size_reason(1, 0, "firstorder", "x").startswith("one-voxel region")
    assert "too small for glcm" in size_reason(10, 3, "glcm", "x")
    assert size_reason(10, 3, "firstorder", "x") is None
    assert size_reason(40, 1, "shape", "x").startswith("flat region")
    assert size_reason(27, 2, "ngtdm", "x") is None
    assert set(MIN_SIZE) >= {"shape", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm"}
    labels = _labels((1.0, 1.0, 1.0), [])
    empty = build_regions(labels, names=("tumour", "index", "rings"))
    assert empty["tumour"].voxels == 0 and "empty region" in empty["tumour"].too_small_for("shape")


def test_bad_region_requests():
    labels = _labels((2.0, 2.0, 2.0), [((0.0, 0.0, 0.0), 6.0)])
    with pytest.raises(InputError, match="Unknown region group"):
        build_regions(labels, names=("tumor",))
    with pytest.raises(InputError, match="inner < outer"):
        build_regions(labels, names=("rings",), rings_mm=((5.0, 5.0),))
    with pytest.raises(InputError, match="clip"):
        build_regions(labels, clip="organ")
