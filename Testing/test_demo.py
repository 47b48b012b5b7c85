"""`hccfusion demo`: phantom → study folder → reload → .mrb that reloads in slicer-core with all nodes."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

scene_mod = pytest.importorskip("HCCFusionLib.scene", reason="slicer-core (MRML) is not installed")
from HCCFusionLib.cli import main  # noqa: E402
from HCCFusionLib.io import load_study  # noqa: E402


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, main(["--progress", "none", "demo", "--out", str(out), "--size", "small", "--seed", "3"])


def test_demo_cli_prints_summary_and_writes_outputs(demo_run, capsys):
    out, code = demo_run
    assert code == 0
    assert (out / "study" / "study.json").is_file()
    assert (out / "scene" / "HCCFusion_demo.mrb").is_file()
    assert not [p for p in (out / "scene").iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_demo_scene_reloads_with_all_nodes(demo_run, tmp_path):
    out, _ = demo_run
    study = load_study(out / "study")
    scene = scene_mod.load_scene_mrb(out / "scene" / "HCCFusion_demo.mrb", scene_mod.new_scene(tmp_path / "cache"))
    reference = "PVP"
    for series in study:
        node = scene.GetFirstNodeByName(series.name)
        assert node is not None and node.IsA("vtkMRMLScalarVolumeNode"), f"volume {series.name} missing"
        image = scene_mod.volume_to_image(node, ignore_transform=True)
        assert image.GetSize() == series.image.GetSize()
        np.testing.assert_allclose(image.GetOrigin(), series.image.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(image.GetSpacing(), series.image.GetSpacing(), atol=1e-6)
        np.testing.assert_allclose(image.GetDirection(), series.image.GetDirection(), atol=1e-6)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(series.image))
        if series.name != reference:  # lined up with the reference by its true transform
            assert node.GetParentTransformNode() is not None
    truth = study[reference].masks["labels"]
    segmentation = scene.GetFirstNodeByName("Ground truth")
    assert segmentation is not None and segmentation.IsA("vtkMRMLSegmentationNode")
    labels = scene_mod.segmentation_to_labels(segmentation, truth)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), sitk.GetArrayFromImage(truth))
    lesions = scene_mod.table_to_dataframe(scene.GetFirstNodeByName("Lesions (ground truth)"))
    assert lesions.index.name == "lesion"
    from HCCFusionLib.phantom import make_patient

    patient = make_patient(3, "small")  # deterministic: the same patient the demo wrote
    assert len(lesions) == len(patient.lesions)
    np.testing.assert_allclose(lesions["diameter_mm"], [lesion.diameter_mm for lesion in patient.lesions], atol=0.005)
    assert {"diameter_mm", "aphe", "washout", "capsule", "lirads", "volume_ml"} <= set(lesions.columns)
    assert (lesions["volume_ml"] > 0).all()
