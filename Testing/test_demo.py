"""`hccfusion demo`: phantom → study folder → reload → .mrb that reloads in slicer-core with all nodes."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import SimpleITK as sitk

scene_mod = pytest.importorskip("HCCFusionLib.scene", reason="slicer-core (MRML) is not installed")
from HCCFusionLib.cli import main  # noqa: E402
from HCCFusionLib.io import load_study  # noqa: E402


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The demo on a small phantom with fast settings (rigid registration, first-order radiomics on the native grid)."""
    import yaml

    from HCCFusionLib.radiomics import PRESET_DIR

    out = tmp_path_factory.mktemp("demo")
    preset = yaml.safe_load((PRESET_DIR / "ct_v1.yaml").read_text())
    preset.update(name="ct_fast", featureClass={"firstorder": []}, imageType={"Original": {}})
    preset["preprocess"]["resample_mm"] = None
    (out.parent / "ct_fast_v1.yaml").write_text(yaml.safe_dump(preset))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["--progress", "none", "demo", "--out", str(out), "--size", "small", "--seed", "3",
                     "--mode", "rigid",
                     "--registration-spacing", "6", "--preset", str(out.parent / "ct_fast_v1.yaml")])
    return out, code, printed.getvalue()


def test_demo_cli_prints_summary_and_writes_outputs(demo_run):
    out, code, printed = demo_run
    assert code == 0
    assert (out / "study" / "study.json").is_file()
    assert (out / "scene" / "HCCFusion_demo.mrb").is_file()
    assert not [p for p in (out / "scene").iterdir() if p.name.startswith(".")]  # no temporary leftovers
    for stage in ("registration", "segmentation", "radiomics", "lirads", "clinical", "report", "dicom"):
        assert (out / stage).is_dir(), stage
    assert printed.rstrip().endswith(f"HTML report: {out / 'report' / 'report.html'}")
    assert "TRE NC:" in printed and "lesion 1:" in printed and "LR-" in printed and "phases" in printed
    # the demo shows the pipeline, not the truth: a model segments, and its Dice is printed beside the TRE
    assert "segmentation: model (hcc_phantom_ct, chosen by engine auto)" in printed
    dice = dict(part.split() for part in printed.split("Dice vs the phantom's truth: ")[1].splitlines()[0].split(", "))
    assert float(dice["liver"]) > 0.9, dice


def test_demo_runs_again_into_the_same_folder(demo_run):
    out, _, _ = demo_run
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["--progress", "none", "demo", "--out", str(out), "--size", "small", "--seed", "3", "--mode",
                     "rigid", "--registration-spacing", "8", "--preset", str(out.parent / "ct_fast_v1.yaml"),
                     "--segmentation", "truth"]) == 0
    assert "segmentation: phantom ground truth (asked for)" in printed.getvalue()
    assert "Dice vs the phantom's truth" not in printed.getvalue()


def test_demo_scene_reloads_with_all_nodes(demo_run, tmp_path):
    out, _, _ = demo_run
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
        if series.name != reference:  # lined up with the reference by its registration transform
            assert node.GetParentTransformNode().GetName() == f"{series.name} to {reference} (registered)"
            assert scene.GetFirstNodeByName(f"{series.name} to {reference} (true)") is not None
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
    pipeline_seg = scene.GetFirstNodeByName("Segmentation (pipeline)")
    assert pipeline_seg is not None and pipeline_seg.IsA("vtkMRMLSegmentationNode")
    lirads = scene_mod.table_to_dataframe(scene.GetFirstNodeByName("Lesions (LI-RADS)"))
    assert len(lirads) == len(patient.lesions) and lirads["category"].str.startswith("LR-").all()
    qc = scene_mod.table_to_dataframe(scene.GetFirstNodeByName("Registration QC"))
    assert {"tre_mean_mm", "tre_before_mm"} <= set(qc.columns) and len(qc) == 3
    assert (qc["tre_mean_mm"] < qc["tre_before_mm"]).all()  # registration brought the landmarks closer
