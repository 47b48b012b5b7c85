"""nnU-Net v2 interop, end to end through the real `nnunetv2` predictor (the `nnunet` extra).

The interval model (nnunet_models.py) gives a label map known voxel by voxel, which checks channel mapping,
CT normalisation, spacing order, mirroring, resampling back to the study grid and label mapping.
"""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import SimpleITK as sitk

torch = pytest.importorskip("torch")

from HCCFusionLib import phantom  # noqa: E402
from HCCFusionLib.cli import main as cli_main  # noqa: E402
from HCCFusionLib.errors import DependencyError, InputError, IntegrityError, ModelError  # noqa: E402
from HCCFusionLib.segmentation import nnunet, predictor  # noqa: E402
from HCCFusionLib.study import LABELS  # noqa: E402
from nnunet_models import interval_labels, interval_model, model_folder  # noqa: E402


@pytest.fixture(scope="module")
def patient():
    return phantom.make_patient(3, "small", phases=("NC", "AP", "PVP"), misalignment="none")


def test_nnunet_runs_the_model_on_the_mapped_channels(patient, tmp_path):
    """Channel 1 ("arterial") is read; labels are numbered the other way round from HCCFusion's."""
    study = patient.study
    folder = interval_model(tmp_path, {"0": "portal venous", "1": "arterial"}, read_channel=1,
                            spacing=[5.0, 3.7, 3.7], labels={"background": 0, "HCC": 1, "liver": 2})
    seg = nnunet.segment_study_nnunet(study, folder, tta=True, postprocess=False)
    ref = study["PVP"].image
    assert seg.labels.GetSize() == ref.GetSize() and seg.labels.GetOrigin() == ref.GetOrigin()
    assert seg.labels.GetSpacing() == ref.GetSpacing() and seg.labels.GetDirection() == ref.GetDirection()
    assert seg.meta["channels"] == ["PVP", "AP"]
    got = sitk.GetArrayFromImage(seg.labels)
    expected = sitk.GetArrayFromImage(interval_labels(study["AP"].image))
    assert set(np.unique(got)) == {0, LABELS["liver"], LABELS["tumour"]}
    assert np.array_equal(got, expected)
    other = sitk.GetArrayFromImage(interval_labels(study["PVP"].image))
    assert (got != other).sum() > 1000  # reading another channel would show
    assert seg.lesions["voxels"].sum() == (got == LABELS["tumour"]).sum()
    # a channel map overrides the names (NC read as channel 1); by default labels are post-processed
    swapped = nnunet.segment_study_nnunet(study, folder, tta=False, channel_map={"arterial": "NC"})
    cleaned, _, table = predictor.postprocess_in_box(interval_labels(study["NC"].image))
    assert np.array_equal(sitk.GetArrayFromImage(swapped.labels), sitk.GetArrayFromImage(cleaned))
    assert swapped.meta["postprocess"] and len(swapped.lesions) == len(table)


def test_cli_segment_nnunet_resamples_to_the_plan_and_back(patient, tmp_path, capsys):
    from HCCFusionLib.io import save_study

    save_study(patient.study, tmp_path / "study")
    folder = interval_model(tmp_path / "model", {"0": "CT"}, read_channel=0,
                            spacing=[2.5, 1.85, 1.85])  # twice as fine: nnU-Net resamples
    out = tmp_path / "out"
    assert cli_main(["--progress", "lines", "segment", str(tmp_path / "study"), "--nnunet", str(folder),
                     "--no-tta", "--no-postprocess", "--out", str(out)]) == 0
    assert "PROGRESS 1.000" in capsys.readouterr().out
    seg = sitk.ReadImage(str(out / "segmentation" / "segmentation.nii.gz"))
    ref = patient.study["PVP"].image
    assert seg.GetSize() == ref.GetSize() and np.allclose(seg.GetOrigin(), ref.GetOrigin())
    assert np.allclose(seg.GetSpacing(), ref.GetSpacing()) and np.allclose(seg.GetDirection(), ref.GetDirection())
    got = sitk.GetArrayFromImage(seg)
    expected = sitk.GetArrayFromImage(interval_labels(ref))  # the single generic "CT" channel reads PVP
    for label in (LABELS["liver"], LABELS["tumour"]):  # resampling there and back moves edges only
        a, b = got == label, expected == label
        assert 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.85  # measured: liver 0.91, tumour 0.97
    info = json.loads((out / "segmentation" / "segmentation.json").read_text())
    assert info["engine"] == "nnunet"


def test_nnunet_channel_and_label_mapping(patient, tmp_path):
    study = patient.study
    folder = model_folder(tmp_path, {"0": "arterial", "1": "CT_portal_venous"})
    model = nnunet.open_model(folder)
    assert model.folds == ["0"] and model.checkpoint == "checkpoint_final.pth"
    assert nnunet.map_channels(model, study) == ["AP", "PVP"]
    assert nnunet.map_channels(model, study, {"1": "NC"}) == ["AP", "NC"]
    assert nnunet.map_labels(model) == {1: LABELS["liver"], 2: LABELS["tumour"]}
    nnunet.check_checkpoint(folder / "fold_0" / "checkpoint_final.pth")
    generic = nnunet.open_model(model_folder(tmp_path / "g", {"0": "CT"}))
    assert nnunet.map_channels(generic, study) == ["PVP"]
    hbp = nnunet.open_model(model_folder(tmp_path / "h", {"0": "HBP", "1": "PVP"}))
    with pytest.raises(ModelError, match=r"channel 0 \('HBP'\).*--channel 0 SERIES"):
        nnunet.map_channels(hbp, study)
    with pytest.raises(ModelError, match="no liver label"):
        nnunet.map_labels(nnunet.open_model(model_folder(tmp_path / "k", {"0": "CT"},
                                                           {"background": 0, "kidney": 1})))
    with pytest.raises(ModelError, match="region-based"):
        nnunet.map_labels(nnunet.open_model(model_folder(tmp_path / "r", {"0": "CT"},
                                                           {"background": 0, "liver": [1, 2], "tumor": 2})))
    with pytest.raises(InputError, match="fold"):
        nnunet.open_model(folder, folds=[3])
    with pytest.raises(InputError, match="dataset.json"):
        nnunet.open_model(tmp_path)


def test_nnunet_refuses_pickled_objects_and_needs_the_extra(patient, tmp_path, monkeypatch):
    import argparse

    evil = model_folder(tmp_path / "e", {"0": "CT"}, payload={"network_weights": argparse.Namespace(x=1)})
    with pytest.raises(IntegrityError, match="other than weights"):
        nnunet.check_checkpoint(evil / "fold_0" / "checkpoint_final.pth")
    with pytest.raises(IntegrityError, match="other than weights"):
        nnunet.segment_study_nnunet(patient.study, evil)
    ok = model_folder(tmp_path / "o", {"0": "AP", "1": "PVP"})  # its plans.json has no configurations
    with pytest.raises(ModelError, match=r"configuration '3d_fullres'; plans have \[\]"):
        nnunet.segment_study_nnunet(patient.study, ok)
    monkeypatch.setitem(sys.modules, "nnunetv2.inference.predict_from_raw_data", None)  # as if not installed
    with pytest.raises(DependencyError, match=r"hccfusion\[nnunet\]"):
        nnunet.segment_study_nnunet(patient.study, ok)
