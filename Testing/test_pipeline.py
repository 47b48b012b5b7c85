"""pipeline / `hccfusion run`: all stages on a small phantom, a failing stage, and the Orthanc round trip."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk

from HCCFusionLib import cli, pipeline
from HCCFusionLib.dicom import read_seg, read_sr, write_study_dicom
from HCCFusionLib.errors import GeometryError
from HCCFusionLib.io import save_image, save_study
from HCCFusionLib.pacs import Pacs
from HCCFusionLib.phantom import make_patient
from HCCFusionLib.radiomics import PRESET_DIR
from HCCFusionLib.study import LABELS

pytestmark = pytest.mark.filterwarnings("ignore:The string .* is unlikely to represent the intended person name")
FAST = {"mode": "rigid", "registration_options": {"spacing_mm": 6.0}, "workers": 1}


@pytest.fixture(scope="module")
def fast_preset(tmp_path_factory):
    """The CT preset on the native grid with first-order features only (kinetics are the same)."""
    import yaml

    preset = yaml.safe_load((PRESET_DIR / "ct_v1.yaml").read_text())
    preset.update(name="ct_fast", featureClass={"firstorder": []}, imageType={"Original": {}})
    preset["preprocess"]["resample_mm"] = None
    path = tmp_path_factory.mktemp("preset") / "ct_fast_v1.yaml"
    path.write_text(yaml.safe_dump(preset))
    return path


@pytest.fixture(scope="module")
def patient():
    return make_patient(5, "small", n_tumours=2, misalignment="rigid")


@pytest.fixture(scope="module")
def study_dir(patient, tmp_path_factory):
    folder = tmp_path_factory.mktemp("study")
    save_study(patient.study, folder / "study")
    save_image(patient.labels, folder / "labels.nii.gz")
    return folder


@pytest.fixture(scope="module")
def result(study_dir, fast_preset, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    return pipeline.run(study_dir / "study", out, segmentation=study_dir / "labels.nii.gz",
                        presets={"*": fast_preset}, **FAST)


def test_run_writes_every_stage(result, patient):
    out = result.out
    for stage in ("registration", "segmentation", "radiomics", "lirads", "clinical", "report", "dicom"):
        assert (out / stage).is_dir(), stage
    assert (out / "registration" / "study.json").is_file() and (out / "registration" / "qc.csv").is_file()
    assert {"AP", "NC", "DP"} <= set(pd.read_csv(out / "registration" / "qc.csv")["series"])
    # liver first: the user's label map on the reference was the registration's fixed mask, and that is recorded
    registration = json.loads((out / "registration" / "study.json").read_text())["meta"]["registration"]
    assert registration["mask"] == "liver"
    assert registration["liver_first"] == {"mask": "liver", "series": "PVP", "engine": "user",
                                           "seconds": registration["liver_first"]["seconds"]}
    wide = pd.read_csv(out / "radiomics" / "features_wide.csv", index_col=0)
    assert "AP__tumour__kinetic_ratio_to_liver" in wide.columns
    assert wide.loc[patient.study.study_id, "AP__tumour__kinetic_ratio_to_liver"] > 1.0  # HCC: arterial hyper
    # the lesion table is the truth's lesions, measured, with LI-RADS
    assert len(result.lesions) == len(patient.lesions) == 2
    truth = sorted(l.diameter_mm for l in patient.lesions)
    assert np.allclose(sorted(result.lesions["diameter_mm"]), truth, atol=8.0)
    assert set(result.lesions["category"]) <= {"LR-3", "LR-4", "LR-5"}
    staging = pd.read_csv(out / "clinical" / "staging.csv")
    assert list(staging["system"]) == ["child_pugh", "albi", "bclc"]
    html = result.report.read_text()
    assert patient.study.study_id in html and "LI-RADS" in html and "Registration quality" in html
    assert "radiomics ct_fast_v1" in html and "preprocessing: legacy" in html  # the feature card lists the choices
    for src in pd.Series(html.split('src="')[1:]).str.split('"').str[0]:
        if not src.startswith("data:"):
            assert (result.report.parent / src).is_file(), src
    if pipeline.default_model_path():  # shipped demo bundle: prediction with its interval and contributions
        prediction = pd.read_csv(out / "prediction" / "prediction.csv", index_col=0)
        assert 0.0 <= prediction["probability"].iloc[0] <= 1.0
        assert (out / "prediction" / "contributions.csv").is_file()
    assert "Stage" not in result.describe() and result.study_id in result.describe()
    # the stage manifest (resume.py) lists every completed stage, in order, and verifies against the outputs
    from HCCFusionLib.resume import completed_stages

    manifest = json.loads((out / "stages.json").read_text())
    done = [s for s, status in result.stages.items() if status == "ok"]
    assert sorted(manifest["stages"], key=lambda s: manifest["stages"][s]["order"]) == done
    assert completed_stages(out, manifest["fingerprint"], done) == done


def test_seg_and_sr_read_back_and_match_lesions(result):
    reference = sitk.ReadImage(str(result.out / "registration" / f"{result.reference}.nii.gz"))
    labels, segments = read_seg(result.dicom["seg"], reference=reference)
    ours = sitk.ReadImage(str(result.out / "segmentation" / "segmentation.nii.gz"))
    a, b = sitk.GetArrayFromImage(labels), sitk.GetArrayFromImage(ours)
    for name in ("liver", "tumour"):
        assert np.array_equal(a == LABELS[name], b == LABELS[name]), name
    sr = read_sr(result.dicom["sr"])
    rows = sr[sr["lesion"].astype(str).str.contains("1|2")].dropna(subset=["volume_mm3"])
    assert len(rows) == len(result.lesions)
    seg_uid = str(pydicom.dcmread(result.dicom["seg"], stop_before_pixels=True).SOPInstanceUID)
    assert set(rows["seg_uid"]) == {seg_uid}
    for (_, row), (lesion, expected) in zip(rows.iterrows(), result.lesions.iterrows()):
        assert row["volume_mm3"] == pytest.approx(expected["volume_ml"] * 1000.0, rel=1e-3)
        assert row["diameter_mm"] == pytest.approx(expected["max_diameter_mm"], abs=0.05)  # the LesionTable's
        assert row["lirads"] == expected["category"]


def test_failing_stage_names_it_and_keeps_earlier_outputs(study_dir, patient, fast_preset, tmp_path, caplog):
    other = sitk.Resample(patient.labels, [s // 2 for s in patient.labels.GetSize()], sitk.Transform(),
                          sitk.sitkNearestNeighbor, patient.labels.GetOrigin(),
                          [s * 2 for s in patient.labels.GetSpacing()], patient.labels.GetDirection())
    save_image(other, tmp_path / "coarse_labels.nii.gz")
    out = tmp_path / "out"
    with pytest.raises(GeometryError, match="Stage 'segmentation' failed.*coarse_labels"):
        pipeline.run(study_dir / "study", out, segmentation=tmp_path / "coarse_labels.nii.gz",
                     presets={"*": fast_preset}, model="none", **FAST)
    assert (out / "registration" / "study.json").is_file()  # the stage before is intact and complete
    written = json.loads((out / "registration" / "study.json").read_text())
    assert written["series"]
    # the same label map could not serve as the liver before registration: whole volumes, said and recorded
    assert written["meta"]["registration"]["mask"] is None
    assert "GeometryError" in written["meta"]["registration"]["liver_first"]["reason"]
    assert any("before registration" in r.getMessage() and "whole volumes" in r.getMessage()
               for r in caplog.records if r.levelname == "WARNING")
    assert not (out / "segmentation").exists() and not (out / "report").exists()
    assert not list(out.glob(".*part*"))  # no half-written staging folders
    with pytest.raises(Exception, match="already holds results"):  # a second run does not clobber it
        pipeline.run(study_dir / "study", out, segmentation=study_dir / "labels.nii.gz", model="none", **FAST)


def test_liver_first_mask_single_series_and_empty_liver(patient, tmp_path):
    """The liver before registration: none for a single series (nothing to register), and whole volumes with a
    warning when the label map has no liver or cannot be read."""
    from HCCFusionLib.study import Study

    single = Study("one", clinical=patient.study.clinical)
    single.add(patient.study["PVP"])
    assert pipeline._registration_mask(single, None, None, "auto", None, None) == (
        None, {"mask": None, "reason": "single series: nothing to register"}, None)
    empty = sitk.Image(patient.labels.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(patient.labels)
    save_image(empty, tmp_path / "empty.nii.gz")
    mask, note, _ = pipeline._registration_mask(patient.study, None, tmp_path / "empty.nii.gz", "auto", None, None)
    assert mask is None and note["engine"] == "user"
    assert note["reason"] == "no liver before registration (empty liver mask)"
    mask, note, _ = pipeline._registration_mask(patient.study, None, tmp_path / "absent.nii.gz", "auto", None,
                                                None)
    assert mask is None and note["engine"] == "auto" and "absent.nii.gz" in note["reason"]
    mask, note, _ = pipeline._registration_mask(patient.study, None, None, "bundle", None, None)  # no folder
    assert mask is None and note["reason"].startswith("no liver before registration (InputError: Engine 'bundle'")


def test_liver_first_is_the_engines_locate_pass(patient):
    """Without a label map the liver before registration is the phantom engine's coarse locate pass on the
    unregistered study: a liver mask on the reference grid, and the seed for the later segmentation."""
    mask, note, located = pipeline._registration_mask(patient.study, None, None, "auto", None, None)
    assert note["mask"] == "liver" and note["engine"] == "phantom" and note["pass"] == "locate"
    assert mask.GetSize() == patient.study["PVP"].image.GetSize() and located.meta["tiles"] >= 1
    truth = sitk.GetArrayViewFromImage(patient.labels) > 0
    found = sitk.GetArrayViewFromImage(mask) > 0
    assert 2 * (truth & found).sum() / (truth.sum() + found.sum()) >= 0.75  # coarse (4 mm blocks), but the liver


def test_orthanc_round_trip(patient, study_dir, fast_preset, tmp_path, capsys):
    from orthanc_server import OrthancServer

    server = OrthancServer(tmp_path / "orthanc").start()
    try:
        pacs = Pacs(server.dicomweb_url)
        written = write_study_dicom(patient.study, tmp_path / "dicom")
        pacs.push(tmp_path / "dicom")
        study_uid = str(pydicom.dcmread(written["PVP"][0], stop_before_pixels=True).StudyInstanceUID)
        pvp_series = str(pydicom.dcmread(written["PVP"][0], stop_before_pixels=True).SeriesInstanceUID)
        out = tmp_path / "out"
        code = cli.main(["--progress", "none", "run", "--pacs-url", server.dicomweb_url, "--pull", study_uid,
                         "--push", "--out", str(out), "--segmentation", str(study_dir / "labels.nii.gz"),
                         "--mode", "rigid", "--registration-spacing", "6", "--preset", str(fast_preset),
                         "--workers", "1"])
        assert code == 0, capsys.readouterr().err
        assert (out / "pacs" / study_uid).is_dir()
        lesions = pd.read_csv(out / "lirads" / "lesions.csv", index_col=0)
        series = pacs.query("series", study_uid=study_uid)
        kinds = series.set_index("SeriesInstanceUID")["Modality"]
        assert sorted(kinds) == ["CT"] * 4 + ["SEG", "SR"]
        back = tmp_path / "back"
        pacs.pull(study_uid, back, series_uid=kinds[kinds == "SEG"].index[0])
        pacs.pull(study_uid, tmp_path / "back_sr", series_uid=kinds[kinds == "SR"].index[0])
        seg_file = next(back.rglob("*.dcm"))
        sr_file = next((tmp_path / "back_sr").rglob("*.dcm"))
        seg = pydicom.dcmread(seg_file)
        assert seg.StudyInstanceUID == study_uid
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == pvp_series  # the pulled PVP series
        referenced = {i.ReferencedSOPInstanceUID for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
        pvp_uids = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in written["PVP"]}
        assert referenced == pvp_uids
        labels, _ = read_seg(seg_file)
        assert int((sitk.GetArrayFromImage(labels) == LABELS["tumour"]).sum()) > 0
        sr = read_sr(sr_file)
        assert set(sr["seg_uid"].dropna()) == {seg.SOPInstanceUID}
        liver = sr[sr["lesion"] == "Liver"]  # the liver volume, referencing the SEG's liver segment
        labels_pvp = sitk.ReadImage(str(out / "segmentation" / "segmentation.nii.gz"))
        liver_mm3 = (sitk.GetArrayFromImage(labels_pvp) == LABELS["liver"]).sum() * np.prod(labels_pvp.GetSpacing())
        assert len(liver) == 1 and liver["volume_mm3"].iloc[0] == pytest.approx(liver_mm3, rel=1e-6)
        rows = sr[sr["lesion"].str.startswith("Lesion")].dropna(subset=["volume_mm3"]).reset_index(drop=True)
        assert len(rows) == len(lesions)
        assert np.allclose(rows["volume_mm3"], lesions["volume_ml"].to_numpy() * 1000.0, rtol=1e-3)
        assert np.allclose(rows["diameter_mm"], lesions["max_diameter_mm"].to_numpy(), atol=0.05)  # LesionTable's
        assert list(rows["lirads"]) == list(lesions["category"])
        if pipeline.default_model_path():  # the prediction travels in the SR too (no clinical data in the PACS)
            prediction = pd.read_csv(out / "prediction" / "prediction.csv", index_col=0)
            assert sr["p_mvi"].dropna().iloc[0] == pytest.approx(prediction["probability"].iloc[0], abs=1e-6)
            assert "afp" in prediction["missing_inputs"].iloc[0]
    finally:
        server.stop()
