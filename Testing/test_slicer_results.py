"""The Slicer logic loads PET, CEUS, follow-up and MR subtraction results of a run folder (real slicer-core MRML).

The run folder is written by the library functions the verbs use (pet.lesion_suv_table, ceus.assess,
followup.match_lesions/measure_changes/response, lirads_mri.subtraction_images) on small images: seconds.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

mrml = pytest.importorskip("HCCFusionLib.scene", reason="slicer-core (MRML) is not installed")
import slicer  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "HCCFusion"))
from HCCFusionSlicer import process  # noqa: E402
from HCCFusionSlicer.logic import HCCFusionLogic  # noqa: E402
from HCCFusionSlicer.results import PET_COLOR_NODE, availableResults  # noqa: E402

from HCCFusionLib import ceus, followup, lirads_mri, pet  # noqa: E402
from HCCFusionLib.io import save_image  # noqa: E402
from HCCFusionLib.layout import RunFolder  # noqa: E402
from HCCFusionLib.lesions import label_lesions  # noqa: E402
from HCCFusionLib.study import LABELS  # noqa: E402

SHAPE = (8, 20, 20)


def _image(array, spacing=(2.0, 2.0, 2.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((-20.0, -20.0, 5.0))
    return image


def _labels(box) -> sitk.Image:
    labels = np.full(SHAPE, LABELS["liver"], np.uint8)
    labels[box] = LABELS["tumour"]
    return _image(labels)


def _write_pet(out: RunFolder, labels: sitk.Image) -> pd.DataFrame:
    z, y, x = np.indices(SHAPE)
    suv = np.where(sitk.GetArrayFromImage(labels) == LABELS["tumour"], 8.0, 2.0) + 0.01 * (x + y + z)
    image = _image(suv.astype(np.float32))
    table = pet.lesion_suv_table(image, label_lesions(labels), sitk.Cast(labels == LABELS["liver"], sitk.sitkUInt8),
                                 0.8)
    out.pet.mkdir(parents=True)
    save_image(image, out.pet_suv)
    save_image(pet.scale(image, 0.8), out.pet_sul)
    table.to_csv(out.pet_lesions, index=False)
    return table


def _write_ceus(out: RunFolder) -> pd.DataFrame:
    times = np.arange(0.0, 90.0, 1.0)
    lesion = 3.0 * ceus.lognormal(times, 0.0, 60.0, 8.0, np.log(12.0), 0.5)
    liver = ceus.lognormal(times, 0.0, 60.0, 12.0, np.log(30.0), 0.6)
    linear = np.ones((len(times), 24, 24)) + liver[:, None, None]
    linear[:, 4:12, 4:12] = 1.0 + lesion[:, None, None]
    stored = 255.0 + 255.0 / 60.0 * 10 * np.log10(linear / linear.max())  # log compression, 60 dB
    cine = ceus.Cine(np.clip(stored, 0, 255), times, (0.5, 0.5), 255.0)
    roi = np.zeros((24, 24), bool)
    liverRoi = roi.copy()
    roi[5:11, 5:11], liverRoi[15:22, 15:22] = True, True
    perfusion, evidence, _category = ceus.assess(cine, roi, liverRoi, 60.0, 25.0)
    out.ceus.mkdir(parents=True)
    perfusion.to_csv(out.ceus_perfusion, index=False)
    evidence.to_csv(out.ceus_lirads, index=False)
    return perfusion


def _write_followup(out: RunFolder) -> pd.DataFrame:
    before, after = label_lesions(_labels(np.s_[2:6, 6:12, 6:12])), label_lesions(_labels(np.s_[2:6, 6:14, 6:14]))
    pairs = followup.match_lesions(after, before, after)
    sizes = {1: pd.DataFrame({"diameter_mm": [12.0], "volume_ml": [1.15], "viable_mm": [12.0]}, index=[1]),
             2: pd.DataFrame({"diameter_mm": [16.0], "volume_ml": [2.05], "viable_mm": [16.0]}, index=[1])}
    matches = followup.measure_changes(pairs, sizes[1], sizes[2], 3.0)
    out.followup.mkdir(parents=True)
    matches.to_csv(out.followup_matches, index=False)
    followup.response(matches).to_csv(out.followup_response, index=False)
    return matches


def _write_subtraction(out: RunFolder) -> dict:
    pre = _image(np.full(SHAPE, 100.0, np.float32))
    post = _image(np.full(SHAPE, 180.0, np.float32))
    images = lirads_mri.subtraction_images({"MR_PRE": pre, "MR_AP": post})
    out.lirads.mkdir(parents=True)
    for name, image in images.items():
        save_image(image, out.subtraction(name))
    return images


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    out = RunFolder(tmp_path_factory.mktemp("results") / "S1")
    written = {"pet": _write_pet(out, _labels(np.s_[2:6, 6:12, 6:12])), "ceus": _write_ceus(out),
               "followup": _write_followup(out), "subtraction": _write_subtraction(out)}
    return out, written


@pytest.fixture
def logic(tmp_path):
    return HCCFusionLogic(process.InProcessRunner(), mrml.new_scene(cache_dir=tmp_path / "cache"))


def _study_of(scene, node) -> str:
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    return sh.GetItemName(sh.GetItemParent(sh.GetItemByDataNode(node)))


def test_results_of_a_run_folder_become_nodes_under_the_study(logic, run_folder):
    out, written = run_folder
    assert availableResults(out.root) == ["PET_SUV", "PET_SUL", "PET_lesions", "CEUS_perfusion", "CEUS_LI-RADS",
                                          "followup_matches", "followup_response", "subtraction_MR_AP-MR_PRE"]
    result = logic.loadModalityResults(out.root, "S1")
    volumes, tables = result.nodes["volumes"], result.nodes["tables"]
    assert {n.GetName() for n in result.all()} == {f"S1_{k}" for k in availableResults(out.root)}
    assert all(_study_of(logic.scene, node) == "S1" for node in result.all())

    suv = volumes["PET_SUV"]
    assert suv.GetDisplayNode().GetColorNodeID() == PET_COLOR_NODE
    assert suv.GetDisplayNode().GetWindow() == 10.0 and suv.GetVoxelValueUnits().GetCodeValue() == "g/ml"
    np.testing.assert_allclose(slicer.util.arrayFromVolume(suv),
                               sitk.GetArrayFromImage(sitk.ReadImage(str(out.pet_suv))))
    np.testing.assert_allclose(slicer.util.arrayFromVolume(volumes["PET_SUL"]),
                               0.8 * slicer.util.arrayFromVolume(suv), rtol=1e-6)

    lesions = tables["PET_lesions"]
    pd.testing.assert_frame_equal(mrml.table_to_dataframe(lesions), written["pet"], check_dtype=False)
    assert lesions.GetColumnTitle("suv_max") == "suv_max [g/mL (SUVbw)]"
    assert lesions.GetColumnUnitLabel("mtv_ml") == "mL" and lesions.GetUseColumnTitleAsColumnHeader()
    assert lesions.GetColumnTitle("lesion") == "lesion"

    perfusion = mrml.table_to_dataframe(tables["CEUS_perfusion"])
    assert len(perfusion) == len(written["ceus"]) and set(perfusion["unit"]) >= {"s", "1/s (I/I0)"}
    assert mrml.table_to_dataframe(tables["CEUS_LI-RADS"])["feature"].iloc[-1] == "category"

    matches = tables["followup_matches"]
    assert matches.GetNumberOfRows() == len(written["followup"])
    assert matches.GetColumnUnitLabel("distance_mm") == "mm"
    response = mrml.table_to_dataframe(tables["followup_response"])
    assert list(response["criteria"]) == list(followup.CRITERIA)

    subtraction = volumes["subtraction_MR_AP-MR_PRE"]
    assert float(slicer.util.arrayFromVolume(subtraction).mean()) == pytest.approx(80.0)
    assert "S1_PET_lesions: 1 row(s)" in result.summary


def test_loading_again_replaces_the_nodes_and_an_empty_folder_loads_nothing(logic, run_folder, tmp_path):
    out, _ = run_folder
    logic.loadModalityResults(out.root, "S1")
    count = logic.scene.GetNumberOfNodesByClass("vtkMRMLTableNode")
    again = logic.loadModalityResults(out.root, "S1")
    assert logic.scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == count
    assert logic.scene.GetNodesByName("S1_PET_SUV").GetNumberOfItems() == 1
    assert again.nodes["volumes"]["PET_SUV"].GetScene() is logic.scene
    elsewhere = RunFolder(tmp_path / "S1")
    _write_ceus(elsewhere)  # a run folder with fewer results: the PET nodes of the earlier load go
    logic.loadModalityResults(elsewhere.root, "S1")
    assert logic.scene.GetNodesByName("S1_PET_SUV").GetNumberOfItems() == 0
    assert logic.scene.GetNodesByName("S1_subtraction_MR_AP-MR_PRE").GetNumberOfItems() == 0
    assert logic.scene.GetNodesByName("S1_CEUS_perfusion").GetNumberOfItems() == 1
    empty = logic.loadModalityResults(tmp_path, "S2")
    assert empty.all() == [] and "No PET" in empty.summary and availableResults(tmp_path / "missing") == []
