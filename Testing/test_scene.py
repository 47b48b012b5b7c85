"""MRML bridge against the real slicer-core MRML libraries (no Slicer application needed)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

scene_mod = pytest.importorskip("HCCFusionLib.scene", reason="slicer-core (MRML) is not installed")
from HCCFusionLib.errors import GeometryError, InputError  # noqa: E402
from HCCFusionLib.study import LABELS  # noqa: E402


@pytest.fixture
def scene(tmp_path):
    return scene_mod.new_scene(cache_dir=tmp_path / "cache")


def oblique_image(size=(23, 17, 11), spacing=(0.7, 1.3, 3.1), pixel=sitk.sitkInt16, seed=0, components=1):
    """Image with an oblique, left-handed-free rotation, anisotropic spacing and a non-zero origin."""
    rotation = sitk.VersorTransform((0.3, -0.5, 0.8), 0.6)  # axis, angle (rad)
    rng = np.random.default_rng(seed)
    shape = size[::-1] + ((components,) if components > 1 else ())
    array = rng.integers(-1000, 1000, shape).astype(sitk.GetArrayFromImage(sitk.Image(1, 1, 1, pixel)).dtype)
    image = sitk.GetImageFromArray(array, isVector=components > 1)
    image.SetSpacing(spacing)
    image.SetOrigin((-120.25, 33.5, 410.75))
    image.SetDirection(rotation.GetMatrix())
    return image


def assert_same_geometry(a: sitk.Image, b: sitk.Image, tol=1e-6):
    assert a.GetSize() == b.GetSize()
    np.testing.assert_allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
    np.testing.assert_allclose(a.GetOrigin(), b.GetOrigin(), atol=tol)
    np.testing.assert_allclose(a.GetDirection(), b.GetDirection(), atol=tol)


def ras(point_lps):
    return [-point_lps[0], -point_lps[1], point_lps[2]]


# ---------------------------------------------------------------- scene factory
def test_new_scene_sets_up_logics(scene):
    import slicer

    assert slicer.mrmlScene is scene
    for name in ("Colors", "Volumes", "Segmentations", "Transforms", "SubjectHierarchy", "Tables", "Plots", "Data"):
        assert scene_mod.module_logic(scene, name) is not None
    assert scene.GetNodesByClass("vtkMRMLColorTableNode").GetNumberOfItems() > 10  # default colour nodes
    assert scene.GetDataIOManager() is not None and scene.GetCacheManager() is not None


# ---------------------------------------------------------------- volumes
@pytest.mark.parametrize("pixel", [sitk.sitkInt16, sitk.sitkFloat32, sitk.sitkUInt8])
def test_volume_round_trip_exact_geometry(scene, pixel):
    image = oblique_image(pixel=pixel)
    node = scene_mod.image_to_volume(scene, image, "CT", window_level=(400, 40))
    assert node.IsA("vtkMRMLScalarVolumeNode")
    back = scene_mod.volume_to_image(node)
    assert_same_geometry(image, back)
    assert back.GetPixelID() == image.GetPixelID()
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(image))
    # the node's IJK→RAS maps voxel (i, j, k) to the RAS of SimpleITK's physical point
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    index = (5, 3, 7)
    got = matrix.MultiplyPoint((*index, 1.0))[:3]
    np.testing.assert_allclose(got, ras(image.TransformIndexToPhysicalPoint(index)), atol=1e-6)


def test_vector_volume_round_trip(scene):
    image = oblique_image(pixel=sitk.sitkFloat32, components=3)
    node = scene_mod.image_to_volume(scene, image, "fused", channels=["AP", "PVP", "DP"])
    assert node.IsA("vtkMRMLVectorVolumeNode")
    assert scene_mod.channel_names(node) == ["AP", "PVP", "DP"]
    back = scene_mod.volume_to_image(node)
    assert back.GetNumberOfComponentsPerPixel() == 3
    assert_same_geometry(image, back)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(image))
    with pytest.raises(InputError, match="channel names"):
        scene_mod.image_to_volume(scene, image, "bad", channels=["AP"])


# ---------------------------------------------------------------- segmentations
def phantom_labels(reference: sitk.Image) -> sitk.Image:
    """Label map 1..4 (liver, tumour, spleen, portal vein) as blobs on `reference`'s grid."""
    z, y, x = np.indices(reference.GetSize()[::-1])
    array = np.zeros(reference.GetSize()[::-1], np.uint8)
    array[(x - 9) ** 2 / 49 + (y - 8) ** 2 / 36 + (z - 5) ** 2 / 16 < 1] = LABELS["liver"]
    array[(x - 10) ** 2 + (y - 8) ** 2 + (z - 5) ** 2 < 5] = LABELS["tumour"]
    array[(x - 19) ** 2 / 4 + (y - 12) ** 2 / 9 + (z - 4) ** 2 / 4 < 1] = LABELS["spleen"]
    array[(np.abs(x - 6) <= 1) & (np.abs(y - 4) <= 1) & (z >= 3) & (z <= 7)] = LABELS["portal_vein"]
    labels = sitk.GetImageFromArray(array)
    labels.CopyInformation(reference)
    return labels


def segment_summary(node):
    seg = node.GetSegmentation()
    out = {}
    for i in range(seg.GetNumberOfSegments()):
        segment = seg.GetNthSegment(i)
        out[segment.GetName()] = (tuple(round(c, 4) for c in segment.GetColor()), segment.GetTerminology())
    return out


def test_segmentation_round_trip_identical_voxels(scene):
    reference = oblique_image(size=(24, 18, 10))
    labels = phantom_labels(reference)
    node = scene_mod.labels_to_segmentation(scene, labels, "GroundTruth")
    summary = segment_summary(node)
    assert set(summary) == {"liver", "tumour", "spleen", "portal_vein"}
    for value, info in scene_mod.SEGMENTS.items():
        color, terminology = summary[info.name]
        np.testing.assert_allclose(color, info.color, atol=1e-3)
        assert terminology == info.terminology
    assert "SCT^10200004^Liver" in summary["liver"][1]
    assert "SCT^108369006^Neoplasm" in summary["tumour"][1]
    assert "SCT^78961009^Spleen" in summary["spleen"][1]
    assert "SCT^32764006^Portal vein" in summary["portal_vein"][1]
    # no helper nodes are left behind
    assert scene.GetNodesByClass("vtkMRMLLabelMapVolumeNode").GetNumberOfItems() == 0
    back = scene_mod.segmentation_to_labels(node, reference)
    assert_same_geometry(reference, back)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(labels))
    from_node = scene_mod.segmentation_to_labels(node, scene_mod.image_to_volume(scene, reference, "reference"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(from_node), sitk.GetArrayViewFromImage(labels))
    # other label values on request
    remapped = scene_mod.segmentation_to_labels(node, reference, labels={"tumour": 7})
    assert (sitk.GetArrayViewFromImage(remapped) == 7).sum() == (sitk.GetArrayViewFromImage(labels) == 2).sum()


def test_terminology_strings_parse_in_slicer():
    """Each SNOMED-CT entry is a valid Slicer terminology string that re-serializes identically."""
    import slicer

    logic = slicer.vtkSlicerTerminologiesModuleLogic
    expected = {"liver": "10200004", "tumour": "108369006", "spleen": "78961009", "portal_vein": "32764006"}
    for info in scene_mod.SEGMENTS.values():
        entry = slicer.vtkSlicerTerminologyEntry()
        assert logic.DeserializeTerminologyEntry(info.terminology, entry)
        assert entry.GetTypeObject().GetCodingSchemeDesignator() == "SCT"
        assert entry.GetTypeObject().GetCodeValue() == expected[info.name]
        assert logic.SerializeTerminologyEntry(entry) == info.terminology


def test_segmentation_rejects_float_labels(scene):
    with pytest.raises(InputError, match="integer"):
        scene_mod.labels_to_segmentation(scene, sitk.Image(4, 4, 4, sitk.sitkFloat32), "bad")


def test_volume_under_transform_needs_harden(scene):
    node = scene_mod.image_to_volume(scene, oblique_image(), "moving")
    scene_mod.transform_to_node(scene, sitk.TranslationTransform(3, (1, 2, 3)), "shift", moving=node)
    with pytest.raises(GeometryError, match="harden"):
        scene_mod.volume_to_image(node)


# ---------------------------------------------------------------- tables
def test_table_round_trip_keeps_types(scene):
    frame = pd.DataFrame({
        "lesion": pd.Series([1, 2, 3], dtype="int64"),
        "volume_ml": [1.5, np.nan, 3.25],
        "small": pd.Series([1, 2, 3], dtype="int16"),
        "aphe": [True, False, True],
        "category": ["LR-5", "LR-4", "LR-3"],
        "count": pd.Series([1, None, 3], dtype="Int64"),
    }, index=pd.Index(["a", "b", "c"], name="observation"))
    node = scene_mod.dataframe_to_table(scene, frame, "lesions")
    assert node.GetNumberOfColumns() == 7
    back = scene_mod.table_to_dataframe(node)
    pd.testing.assert_frame_equal(back, frame)


# ---------------------------------------------------------------- transforms
def random_points(n=50, seed=1):
    return np.random.default_rng(seed).uniform([-100, -100, -50], [100, 100, 150], (n, 3))


def check_point_mapping(node, transform, tol):
    """MRML transform-from-parent on RAS points == SimpleITK on LPS points."""
    import vtk

    from_parent = node.GetTransformFromParent()
    to_world = vtk.vtkGeneralTransform()
    node.GetTransformToWorld(to_world)
    for p in random_points():
        expected = ras(transform.TransformPoint(p.tolist()))
        np.testing.assert_allclose(from_parent.TransformPoint(ras(p)), expected, atol=tol)
        # the node is top-level: to-world is the inverse of from-parent
        np.testing.assert_allclose(to_world.TransformPoint(expected), ras(p), atol=max(tol, 1e-3))


def affine_transform():
    euler = sitk.Euler3DTransform((10.0, -5.0, 20.0), 0.1, -0.2, 0.3, (4.0, -7.0, 2.5))
    affine = sitk.AffineTransform(3)
    affine.SetMatrix((1.05, 0.02, 0.0, -0.03, 0.97, 0.01, 0.0, 0.04, 1.1))
    affine.SetTranslation((1.0, 2.0, -3.0))
    return sitk.CompositeTransform([affine, euler])


def bspline_transform():
    domain = sitk.Image(20, 20, 20, sitk.sitkUInt8)
    domain.SetSpacing((12.0, 12.0, 12.0))
    domain.SetOrigin((-120.0, -120.0, -70.0))
    tx = sitk.BSplineTransformInitializer(domain, (4, 4, 4), 3)
    params = np.random.default_rng(3).normal(0, 4.0, len(tx.GetParameters()))
    tx.SetParameters(params.tolist())
    return tx


def displacement_transform():
    grid = sitk.Image(30, 30, 30, sitk.sitkVectorFloat64)
    grid.SetSpacing((8.0, 8.0, 8.0))
    grid.SetOrigin((-120.0, -120.0, -70.0))
    z, y, x = np.indices((30, 30, 30)) / 29.0
    field = np.stack([3 * np.sin(2 * x + y), -2 * np.cos(3 * z), 2.5 * np.sin(y * z * 3)], axis=-1)
    image = sitk.GetImageFromArray(field, isVector=True)
    image.CopyInformation(grid)
    return sitk.DisplacementFieldTransform(image)


def rigid_then_bspline():
    """Like the phantom's breathing motion: a B-spline applied first, then a rigid transform."""
    rigid = sitk.Euler3DTransform((0, 0, 0), 0.02, -0.03, 0.05, (2.0, -4.0, 6.0))
    return sitk.CompositeTransform([rigid, bspline_transform()])


@pytest.mark.parametrize("make, cls, tol", [
    (affine_transform, "vtkMRMLLinearTransformNode", 1e-6),
    (rigid_then_bspline, "vtkMRMLTransformNode", 1e-4),
    (bspline_transform, "vtkMRMLBSplineTransformNode", 1e-4),
    (displacement_transform, "vtkMRMLGridTransformNode", 1e-3),
])
def test_transform_round_trip(scene, make, cls, tol):
    transform = make()
    node = scene_mod.transform_to_node(scene, transform, "t")
    assert node.GetClassName() == cls
    check_point_mapping(node, transform, tol)
    back = scene_mod.node_to_transform(node)
    for p in random_points(seed=2):
        np.testing.assert_allclose(back.TransformPoint(p.tolist()), transform.TransformPoint(p.tolist()), atol=tol)


def ramp_image():
    """Oblique image whose value is a linear function of the physical point (LPS), so interpolation is exact."""
    image = sitk.Image((40, 36, 20), sitk.sitkFloat64)
    image.SetSpacing((2.0, 2.2, 4.0))
    image.SetOrigin((-40.0, -39.6, -40.0))
    image.SetDirection(sitk.VersorTransform((0.2, 0.1, 1.0), 0.3).GetMatrix())
    k, j, i = np.indices(image.GetSize()[::-1]).reshape(3, -1)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    physical = direction @ (np.stack([i, j, k]) * np.array(image.GetSpacing())[:, None]) + np.array(image.GetOrigin())[:, None]
    ramp = sitk.GetImageFromArray((RAMP @ physical).reshape(image.GetSize()[::-1]))
    ramp.CopyInformation(image)
    return ramp


RAMP = np.array([1.0, 2.0, 3.0])


@pytest.mark.parametrize("make", [affine_transform, bspline_transform, displacement_transform])
def test_harden_matches_simpleitk(scene, make):
    """A moving volume under fixed→moving transform T, hardened, holds moving(T(x)) at each voxel x."""
    moving, transform = ramp_image(), make()
    node = scene_mod.image_to_volume(scene, moving, "moving")
    scene_mod.transform_to_node(scene, transform, "T", moving=node)
    hardened = scene_mod.volume_to_image(scene_mod.harden(node))
    assert node.GetParentTransformNode() is None
    values = sitk.GetArrayViewFromImage(hardened)
    rng = np.random.default_rng(0)
    checked = 0
    for _ in range(300):
        index = [int(rng.integers(0, s)) for s in hardened.GetSize()]
        target = transform.TransformPoint(hardened.TransformIndexToPhysicalPoint(index))
        inside = moving.TransformPhysicalPointToContinuousIndex(target)
        if all(0 < c < s - 1 for c, s in zip(inside, moving.GetSize())):
            assert values[index[2], index[1], index[0]] == pytest.approx(RAMP @ target, abs=1e-3)
            checked += 1
    assert checked > 100


# ---------------------------------------------------------------- subject hierarchy + bundles
def test_mrb_save_and_reload_all_nodes(scene, tmp_path):
    import slicer

    image = oblique_image(pixel=sitk.sitkInt16)
    volume = scene_mod.image_to_volume(scene, image, "PVP")
    vector = scene_mod.image_to_volume(scene, oblique_image(pixel=sitk.sitkFloat32, components=2), "fused",
                                       channels=["AP", "PVP"])
    labels = phantom_labels(image)
    segmentation = scene_mod.labels_to_segmentation(scene, labels, "GroundTruth", reference_volume=volume)
    frame = pd.DataFrame({"lesion": [1, 2], "diameter_mm": [12.5, 21.0], "lirads": ["LR-4", "LR-5"]})
    table = scene_mod.dataframe_to_table(scene, frame, "Lesions")
    chart = scene_mod.table_plot(scene, table, ["diameter_mm"], "Lesion size", label_column="lirads")
    with pytest.raises(InputError, match="no column"):
        scene_mod.table_plot(scene, table, ["missing"], "bad")
    linear = scene_mod.transform_to_node(scene, affine_transform(), "AP_to_PVP")
    bspline = scene_mod.transform_to_node(scene, bspline_transform(), "DP_to_PVP")
    study_item = scene_mod.place_in_study(scene, [volume, vector, segmentation, table, chart, linear, bspline],
                                          "STUDY-1")
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    assert sh.GetItemParent(sh.GetItemByDataNode(volume)) == study_item
    path = scene_mod.save_scene_mrb(scene, tmp_path / "out" / "scene.mrb")
    assert path.is_file() and not [p for p in path.parent.iterdir() if p.name.startswith(".")]

    loaded = scene_mod.load_scene_mrb(path, scene_mod.new_scene(cache_dir=tmp_path / "cache2"))

    def node(name):
        found = loaded.GetFirstNodeByName(name)
        assert found is not None, f"{name} missing after reload"
        return found

    back = scene_mod.volume_to_image(node("PVP"))
    assert_same_geometry(image, back)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(image))
    assert scene_mod.channel_names(node("fused")) == ["AP", "PVP"]
    assert node("fused").IsA("vtkMRMLVectorVolumeNode")
    seg = node("GroundTruth")
    np.testing.assert_array_equal(sitk.GetArrayFromImage(scene_mod.segmentation_to_labels(seg, image)),
                                  sitk.GetArrayViewFromImage(labels))
    assert segment_summary(seg) == segment_summary(segmentation)
    pd.testing.assert_frame_equal(scene_mod.table_to_dataframe(node("Lesions")), frame)
    series = node("Lesion size").GetNthPlotSeriesNode(0)
    assert series.GetTableNode().GetName() == "Lesions" and series.GetYColumnName() == "diameter_mm"
    check_point_mapping(node("AP_to_PVP"), affine_transform(), 1e-5)
    assert node("DP_to_PVP").IsA("vtkMRMLBSplineTransformNode")
    check_point_mapping(node("DP_to_PVP"), bspline_transform(), 1e-4)
    sh2 = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(loaded)
    assert sh2.GetItemName(sh2.GetItemParent(sh2.GetItemByDataNode(node("PVP")))) == "STUDY-1"


def test_load_scene_mrb_bad_file(tmp_path, scene):
    bad = tmp_path / "broken.mrb"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="broken.mrb"):
        scene_mod.load_scene_mrb(bad, scene)
    with pytest.raises(InputError, match="does not exist"):
        scene_mod.load_scene_mrb(tmp_path / "missing.mrb", scene)
    import os
    import zipfile

    no_scene = tmp_path / "no_scene.mrb"
    with zipfile.ZipFile(no_scene, "w") as archive:
        archive.writestr("readme.txt", "no MRML scene in here")
    cwd = os.getcwd()
    with pytest.raises(InputError, match="no_scene.mrb"):
        scene_mod.load_scene_mrb(no_scene, scene)
    assert os.getcwd() == cwd  # Slicer's failed unzip does not strand the process in a deleted folder


def test_save_scene_mrb_failure_leaves_nothing(tmp_path, scene):
    scene_mod.image_to_volume(scene, oblique_image(), "v")
    with pytest.raises(InputError, match=r"\.mrb"):
        scene_mod.save_scene_mrb(scene, tmp_path / "scene.zip")
    assert list(tmp_path.iterdir()) == [tmp_path / "cache"]
