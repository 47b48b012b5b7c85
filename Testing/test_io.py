"""io: loading real DICOM/NIfTI studies, phase detection, manifests, DICOM writing, bad inputs, `info` verb."""
from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from HCCFusionLib import cli
from HCCFusionLib.errors import GeometryError, HCCFusionError, InputError
from HCCFusionLib.dicom import write_dicom_series
from HCCFusionLib.io import load_study, save_image, save_study
from HCCFusionLib.study import Clinical, Modality, Phase, Series, Study


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def volume(size=(12, 10, 4), spacing=(0.8, 0.9, 2.5), origin=(-5.0, 7.25, -100.5), seed=0):
    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray(rng.integers(-1000, 1500, size=size[::-1]).astype(np.int16))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


# ---------------------------------------------------------------- real data
def test_ct_dicom_slab_is_contrast_ct_with_its_geometry(shared_data):
    study = load_study(shared_data / "real/ct_dicom_slab")
    assert len(study) == 1
    (series,) = study
    assert series.modality is Modality.CT
    assert series.phase in (Phase.AP, Phase.PVP, Phase.DP)  # contrast given: not NC
    assert "ContrastBolusAgent 'APPLIED'" in series.meta["phase_reason"]
    assert series.phase is Phase.PVP and series.meta["phase_confidence"] >= 0.5  # 96 s after bolus start
    assert series.image.GetSize() == (512, 512, 20)
    np.testing.assert_allclose(series.image.GetSpacing(), (0.9765625, 0.9765625, 2.0), atol=1e-4)
    assert len(series.meta["files"]) == 20 and series.meta["source"].endswith("ct_dicom_slab")
    assert {"series_uid", "study_uid", "phase_confidence", "phase_reason"} <= set(series.meta)
    assert study.study_id == "ct_dicom_slab"  # folder name, never patient identifiers
    hu = sitk.GetArrayViewFromImage(series.image)
    assert hu.min() <= -900 and hu.max() >= 500  # rescaled to HU (air and bone/contrast present)


def test_real_contrast_liver_ct(shared_data):
    study = load_study(shared_data / "real/liver_ct_contrast")  # holds a LICENSE file too: ignored
    (series,) = study
    assert series.modality is Modality.CT and series.phase is Phase.PVP
    assert "ContrastBolusAgent" in series.meta["phase_reason"]
    assert series.image.GetSize() == (512, 512, 41)
    np.testing.assert_allclose(series.image.GetSpacing(), (0.796875, 0.796875, 5.0), atol=1e-4)


def test_real_mr_t2_and_adc_detected_and_anisotropic(shared_data):
    study = load_study(shared_data / "real/liver_mr_t2_adc/SCAN_001")
    assert sorted(s.phase.value for s in study) == ["ADC", "T2"]
    t2, adc = study["T2"], study["ADC"]
    assert t2.modality is Modality.MR and adc.modality is Modality.MR
    assert "T2" in t2.meta["phase_reason"] and "ADC" in adc.meta["phase_reason"]
    assert t2.meta["study_uid"] == adc.meta["study_uid"] and t2.meta["series_uid"] != adc.meta["series_uid"]
    for series, in_plane, slices in ((t2, 0.6836, 8.0), (adc, 1.5625, 7.0)):
        sx, sy, sz = series.image.GetSpacing()
        assert sx == pytest.approx(in_plane, abs=1e-3) and sz == pytest.approx(slices, abs=1e-3)
        assert sz / sx > 4  # strongly anisotropic
    assert t2.image.GetSize()[2] == 33 and adc.image.GetSize()[2] == 36


def test_real_mr_nifti(shared_data):
    study = load_study(shared_data / "real/mr_abdomen", phase_overrides={"mr_abdomen": "T2"})
    (series,) = study
    assert series.image.GetSize() == (117, 91, 20) and series.modality is Modality.MR
    assert series.phase is Phase.T2 and series.meta["phase_reason"] == "override"
    default = load_study(shared_data / "real/mr_abdomen/mr_abdomen.nii.gz")["mr_abdomen"]
    assert default.modality is Modality.MR and default.meta["phase_confidence"] < 0.5  # a guess, said so


def test_real_three_slice_ct_with_nrrd_masks_and_seg(shared_data):
    ct = load_study(shared_data / "real/liver_ct_dicom_seg/ct-3slice")
    (series,) = ct
    assert series.image.GetSize() == (512, 512, 3) and series.phase is Phase.NC  # no contrast tags
    folder = load_study(shared_data / "real/liver_ct_dicom_seg")
    (series,) = folder
    assert {"liver_seg", "spine_seg", "heart_seg"} <= set(series.masks)  # NRRD label maps attached by grid
    liver = sitk.GetArrayFromImage(series.masks["liver_seg"]) > 0
    assert liver.sum() > 1000
    seg = sitk.GetArrayFromImage(series.masks["labels"])  # the DICOM SEG, attached to the series it references
    assert series.meta["mask_files"]["labels"].endswith("liver.dcm") and set(np.unique(seg)) == {0, 1}
    assert (seg == 1).sum() == liver.sum() and ((seg == 1) == liver).all()


# ---------------------------------------------------------------- phase by acquisition order
def test_untimed_contrast_series_are_ordered_by_acquisition_time(tmp_path):
    for i, when in enumerate(("120200", "120035", "120500")):  # written out of order on purpose
        files = write_dicom_series(volume(seed=i), tmp_path / f"s{i}", phase="PVP", study_id="ORDER",
                                   study_uid="1.2.826.0.1.3680043.8.498.1", series_number=i + 1)
        for f in files:
            ds = pydicom.dcmread(f)
            ds.SeriesDescription, ds.ContrastBolusAgent, ds.AcquisitionTime = "Abdomen 5.0", "IOMERON", when
            del ds.ContrastBolusStartTime
            ds.save_as(f)
    study = load_study(tmp_path)
    order = {s.meta["series_number"]: s.phase for s in study}
    assert order == {2: Phase.AP, 1: Phase.PVP, 3: Phase.DP}
    assert all("acquisition time" in s.meta["phase_reason"] and s.meta["phase_confidence"] == 0.5 for s in study)


def _copy_series(source: Path, folder: Path, seconds_later: float, number: int) -> str:
    """Copy a real DICOM series as a new series (new UIDs, SeriesNumber `number`), acquired `seconds_later`."""
    import datetime

    from pydicom.uid import generate_uid

    uid = generate_uid()
    folder.mkdir(parents=True)
    for f in sorted(source.iterdir()):
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = uid, generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesNumber = number
        time = datetime.datetime.strptime(str(ds.AcquisitionTime).split(".")[0], "%H%M%S")
        ds.AcquisitionTime = ds.ContentTime = (time + datetime.timedelta(seconds=seconds_later)).strftime("%H%M%S")
        ds.save_as(folder / f.name)
    return uid


def test_duplicate_detected_phase_on_real_dicom_keeps_one_and_says_which(shared_data, tmp_path, caplog):
    """Two real contrast CT series both detected as PVP: the later one is used (the rule for post-contrast phases),
    the warning names both and the rule; --phase picks the other."""
    source = shared_data / "real/ct_dicom_slab"
    first = _copy_series(source, tmp_path / "study" / "first", 0, 1)
    later = _copy_series(source, tmp_path / "study" / "later", 20, 2)
    study = load_study(tmp_path / "study")
    (series,) = study
    assert series.phase is Phase.PVP and series.name == "PVP" and series.meta["series_uid"] == later
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "both PVP" in r.getMessage()]
    assert "acquired later" in warning and "left out" in warning and "--phase" in warning
    assert study.meta["skipped"] == [warning]
    (chosen,) = load_study(tmp_path / "study", phase_overrides={first: "PVP"})  # declared beats detected
    assert chosen.meta["series_uid"] == first and chosen.meta["phase_reason"] == "override"


def test_duplicate_detected_nc_keeps_the_earlier_acquisition(tmp_path, caplog):
    for number in (1, 2):  # the writer times NC 360 s (series 1) and 420 s (series 2) before the bolus
        write_dicom_series(volume(seed=number), tmp_path / f"s{number}", phase="NC", study_id="DUP",
                           study_uid="1.2.826.0.1.3680043.8.498.7", series_number=number)
    (series,) = load_study(tmp_path)
    assert series.phase is Phase.NC and series.meta["series_number"] == 2
    assert any("acquired earlier" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- manifest
def small_study() -> Study:
    pvp = volume(seed=1)
    labels = sitk.Cast(pvp > 200, sitk.sitkUInt8)
    labels.CopyInformation(pvp)
    study = Study("S-001", clinical=Clinical(afp=12.5, etiology="HBV", tumour_number=2))
    study.add(Series("PVP", "PVP", pvp, masks={"labels": labels}, meta={"phase_reason": "phantom", "series_uid": "1.2"}))
    study.add(Series("T2", "T2", volume(spacing=(1.5, 1.5, 6.0), seed=2)))
    return study


def test_manifest_round_trip(tmp_path):
    study = small_study()
    out = save_study(study, tmp_path / "study")
    manifest = json.loads((out / "study.json").read_text())
    assert manifest["study_id"] == "S-001" and manifest["clinical"]["etiology"] == "HBV"
    assert manifest["series"][0]["masks"] == {"labels": "PVP_labels.nii.gz"}
    loaded = load_study(out)
    assert loaded.study_id == "S-001" and loaded.clinical == study.clinical
    assert list(loaded.series) == ["PVP", "T2"] and loaded["T2"].modality is Modality.MR
    for name, series in study.series.items():
        back = loaded[name]
        assert back.phase is series.phase and back.meta["phase_reason"] == series.meta.get("phase_reason", "manifest")
        np.testing.assert_array_equal(sitk.GetArrayFromImage(back.image), sitk.GetArrayFromImage(series.image))
        np.testing.assert_allclose(back.image.GetDirection(), series.image.GetDirection(), atol=1e-6)
        np.testing.assert_allclose(back.image.GetOrigin(), series.image.GetOrigin(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(loaded["PVP"].masks["labels"]),
                                  sitk.GetArrayFromImage(study["PVP"].masks["labels"]))
    assert [p.name for p in tmp_path.iterdir()] == ["study"]  # no temporary folders left
    with pytest.raises(InputError, match="already holds a study"):
        save_study(study, out)
    save_study(loaded, out, overwrite=True)
    assert load_study(out / "study.json").study_id == "S-001"


def test_yaml_manifest_and_overrides(tmp_path):
    save_image(volume(), tmp_path / "a.nii.gz")
    save_image(volume(seed=4), tmp_path / "b.nrrd")
    (tmp_path / "study.yaml").write_text(
        "study_id: Y1\nseries:\n  - {name: art, phase: arterial, file: a.nii.gz}\n  - {file: b.nrrd}\n"
        "clinical: {bilirubin: 1.1, ascites: none}\n")
    study = load_study(tmp_path, phase_overrides={"b": "DP"})
    assert study["art"].phase is Phase.AP and study["b"].phase is Phase.DP and study.clinical.bilirubin == 1.1
    with pytest.raises(InputError, match="matches no series.*art"):
        load_study(tmp_path, phase_overrides={"nonexistent": "AP"})


def test_nifti_folder_without_manifest(tmp_path):
    image = volume()
    save_image(image, tmp_path / "case7_arterial.nii.gz")
    save_image(volume(seed=9), tmp_path / "case7_PVP.nii.gz")
    save_image(sitk.Cast(image > 0, sitk.sitkUInt8), tmp_path / "case7_arterial_labels.nii.gz")
    shifted = volume(size=(5, 5, 5))
    save_image(shifted, tmp_path / "case7_T2w.nrrd")
    study = load_study(tmp_path, study_id="C7")
    assert {s.name: s.phase for s in study} == {"case7_arterial": Phase.AP, "case7_PVP": Phase.PVP,
                                                "case7_T2w": Phase.T2}
    assert set(study["case7_arterial"].masks) == {"labels"}


def test_save_study_failure_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    real_write = sitk.WriteImage

    def failing_write(image, path, *args):  # the disk fills up on the third file
        calls.append(path)
        if len(calls) == 3:
            raise RuntimeError("No space left on device")
        return real_write(image, path, *args)

    monkeypatch.setattr(sitk, "WriteImage", failing_write)
    with pytest.raises(RuntimeError):
        save_study(small_study(), tmp_path / "out")
    assert listing(tmp_path) == []


# ---------------------------------------------------------------- bad inputs
def copy_slab(shared_data, target: Path) -> list[Path]:
    shutil.copytree(shared_data / "real/ct_dicom_slab", target)
    return sorted(target.iterdir(), key=lambda p: float(pydicom.dcmread(p, stop_before_pixels=True).SliceLocation))


def assert_fails(folder: Path, error, *needles, **kwargs):
    before = listing(folder.parent)
    with pytest.raises(error) as info:
        load_study(folder, **kwargs)
    for needle in needles:
        assert needle in str(info.value)
    assert listing(folder.parent) == before  # nothing written
    return str(info.value)


def test_empty_folder_and_non_image_files(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_fails(tmp_path / "empty", InputError, "is empty")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "report.txt").write_text("liver looks fine\n")
    assert_fails(tmp_path / "notes", InputError, "report.txt", "not an image")
    assert_fails(tmp_path / "notes" / "report.txt", InputError, "report.txt")
    assert_fails(tmp_path / "missing", InputError, "does not exist")


def test_truncated_nifti(shared_data, tmp_path):
    data = (shared_data / "real/mr_abdomen/mr_abdomen.nii.gz").read_bytes()
    (tmp_path / "gz").mkdir()
    (tmp_path / "gz" / "T2.nii.gz").write_bytes(data[: len(data) // 2])
    message = assert_fails(tmp_path / "gz", InputError, "T2.nii.gz", "truncated")
    assert "re-export" in message
    raw = gzip.decompress(data)
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "T2.nii").write_bytes(raw[: len(raw) // 3])
    assert_fails(tmp_path / "raw", InputError, "T2.nii")


def test_truncated_dicom_pixels(shared_data, tmp_path):
    files = copy_slab(shared_data, tmp_path / "dicom")
    data = files[5].read_bytes()
    files[5].write_bytes(data[: len(data) - 20000])
    assert_fails(tmp_path / "dicom", HCCFusionError, files[5].parent.name)


def test_dicom_series_with_conflicting_geometry(shared_data, tmp_path):
    files = copy_slab(shared_data, tmp_path / "spacing")
    ds = pydicom.dcmread(files[7])
    ds.PixelSpacing = [0.8, 0.8]
    ds.save_as(files[7])
    assert_fails(tmp_path / "spacing", GeometryError, "pixel spacing", files[7].name, "separate them")

    files = copy_slab(shared_data, tmp_path / "orientation")
    ds = pydicom.dcmread(files[3])
    ds.ImageOrientationPatient = [1, 0, 0, 0, 0.9848078, -0.1736482]
    ds.save_as(files[3])
    assert_fails(tmp_path / "orientation", GeometryError, "orientation", files[3].name)

    files = copy_slab(shared_data, tmp_path / "gap")
    files[10].unlink()
    assert_fails(tmp_path / "gap", GeometryError, "non-uniform slice spacing", files[9].name, "missing")


def test_mask_on_a_different_grid(tmp_path):
    image = volume()
    save_image(image, tmp_path / "PVP.nii.gz")
    bad = volume(spacing=(1.0, 1.0, 2.5))
    save_image(sitk.Cast(bad > 0, sitk.sitkUInt8), tmp_path / "PVP_labels.nii.gz")
    (tmp_path / "study.json").write_text(json.dumps(
        {"study_id": "M", "series": [{"name": "PVP", "phase": "PVP", "file": "PVP.nii.gz",
                                      "masks": {"labels": "PVP_labels.nii.gz"}}]}))
    message = assert_fails(tmp_path, GeometryError, "PVP_labels.nii.gz", "resample the mask")
    assert "spacing" in message
    (tmp_path / "study.json").unlink()
    assert_fails(tmp_path, GeometryError, "PVP_labels.nii.gz")  # manifest-free folder: same check


def test_two_dimensional_inputs(shared_data, tmp_path):
    save_image(sitk.Image(32, 32, sitk.sitkInt16), tmp_path / "flat" / "PVP.nii.gz")
    assert_fails(tmp_path / "flat", GeometryError, "PVP.nii.gz", "3D")
    (tmp_path / "one").mkdir()
    shutil.copy(next((shared_data / "real/ct_dicom_slab").iterdir()), tmp_path / "one")
    assert_fails(tmp_path / "one", GeometryError, "single 2D slice", "export all slices")


def test_bad_manifests(tmp_path):
    (tmp_path / "study.json").write_text("{not json")
    assert_fails(tmp_path, InputError, "study.json", "JSON")
    (tmp_path / "study.json").write_text(json.dumps({"study_id": "x", "series": []}))
    assert_fails(tmp_path, InputError, "non-empty \"series\"")
    save_image(volume(), tmp_path / "a.nii.gz")
    (tmp_path / "study.json").write_text(json.dumps({"series": [{"file": "a.nii.gz"}], "clinical": {"afpp": 3}}))
    assert_fails(tmp_path, InputError, "afpp")
    (tmp_path / "study.json").write_text(json.dumps({"series": [{"file": "gone.nii.gz", "phase": "AP"}]}))
    assert_fails(tmp_path, InputError, "gone.nii.gz", "does not exist")


# ---------------------------------------------------------------- CLI
def test_info_verb(shared_data, tmp_path, capsys):
    assert cli.main(["--progress", "none", "info", str(shared_data / "real/ct_dicom_slab")]) == 0
    out = capsys.readouterr().out
    assert "Study ct_dicom_slab" in out and "PVP" in out and "512x512x20" in out and "ContrastBolusAgent" in out
    assert cli.main(["--progress", "none", "info", str(shared_data / "real/liver_mr_t2_adc"),
                     "--phase", "T2", "HBP"]) == 0
    out = capsys.readouterr().out
    assert "HBP" in out and "override" in out
    (tmp_path / "empty").mkdir()
    assert cli.main(["--progress", "none", "info", str(tmp_path / "empty")]) == 2
    assert "is empty" in capsys.readouterr().err


def test_real_multimodal_nifti_folder_pairs_masks_with_images(shared_data):
    study = load_study(shared_data / "real/sts/STS_001")
    assert {s.name: s.phase for s in study} == {"CT_image": Phase.PVP, "MR_T1_image": Phase.T1,
                                                "PET_image": Phase.PET}
    assert study["CT_image"].meta["phase_confidence"] < 0.5  # guessed from HU values, and said so
    for series in study:
        assert set(series.masks) == {"mask"} and sitk.GetArrayViewFromImage(series.masks["mask"]).sum() > 0


def test_dicomdir_media_folder(shared_data, tmp_path):
    from pydicom.fileset import FileSet

    media = FileSet()
    for f in sorted((shared_data / "real/liver_ct_dicom_seg/ct-3slice").iterdir()):
        media.add(f)
    media.write(tmp_path / "cd")  # DICOMDIR index + files without extension in a nested folder
    (series,) = load_study(tmp_path / "cd")
    assert series.image.GetSize() == (512, 512, 3) and len(series.meta["files"]) == 3
