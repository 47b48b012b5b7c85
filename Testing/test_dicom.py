"""dicom: DICOM image series, SEG and TID 1500 SR written, validated (highdicom, dciodvfy) and read back."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk

from HCCFusionLib.dicom import (export_dicom, read_seg, read_sr, source_series_files, write_dicom_series, write_seg,
                                 write_sr, write_study_dicom)
from HCCFusionLib.errors import GeometryError, InputError
from HCCFusionLib.io import load_study, save_study
from HCCFusionLib.lesions import LesionTable
from HCCFusionLib.study import LABELS, Modality, Series

pytest.importorskip("highdicom", reason="highdicom is the [dicom] extra")
pytestmark = pytest.mark.filterwarnings("ignore:The string .* is unlikely to represent the intended person name")


def listing(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def volume(size=(12, 10, 4), spacing=(0.8, 0.9, 2.5), origin=(-5.0, 7.25, -100.5), seed=0, oblique=False):
    rng = np.random.default_rng(seed)
    image = sitk.GetImageFromArray(rng.integers(-1000, 1500, size=size[::-1]).astype(np.int16))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if oblique:
        image.SetDirection(sitk.VersorTransform((0.3, -0.2, 0.9), 0.35).GetMatrix())
    return image


@pytest.mark.parametrize("oblique", [False, True])
def test_write_dicom_series_round_trip(tmp_path, oblique):
    image = volume(oblique=oblique)
    study_uid = "1.2.826.0.1.3680043.8.498.77"
    for number, phase in enumerate(("NC", "AP", "PVP", "DP"), start=1):
        files = write_dicom_series(image, tmp_path / phase, phase=phase, study_id="RT", study_uid=study_uid,
                                   series_number=number)
        assert len(files) == 4 and all(f.is_file() for f in files)
        ds = pydicom.dcmread(files[0])
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and ds.PatientID == "ANON"
        assert ds.StudyInstanceUID == study_uid and ds.Modality == "CT"
    study = load_study(tmp_path)
    assert list(study.series) == ["NC", "AP", "PVP", "DP"]
    for series in study:
        assert series.meta["phase_confidence"] >= 0.9
        assert series.image.GetSize() == image.GetSize()
        np.testing.assert_allclose(series.image.GetSpacing(), image.GetSpacing(), atol=1e-4)
        np.testing.assert_allclose(series.image.GetOrigin(), image.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(series.image.GetDirection(), image.GetDirection(), atol=1e-4)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(series.image), sitk.GetArrayFromImage(image))
    assert len({s.meta["series_uid"] for s in study}) == 4 and {s.meta["study_uid"] for s in study} == {study_uid}


def test_write_dicom_series_left_handed_and_mr(tmp_path):
    image = volume(size=(8, 8, 5))
    image.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, -1))  # slices run feet-wards: stored reversed
    write_dicom_series(image, tmp_path / "ct", phase="PVP", study_id="LH")
    back = load_study(tmp_path / "ct")["PVP"].image
    for index in ((0, 0, 0), (7, 3, 4), (2, 6, 1)):
        physical = image.TransformIndexToPhysicalPoint(index)
        assert back[back.TransformPhysicalPointToIndex(physical)] == image[index]
    mr = sitk.GetImageFromArray(np.random.default_rng(3).random((4, 9, 7)).astype(np.float32) * 2.5e-3)
    for phase in ("T1", "T2", "DWI", "ADC", "HBP"):
        write_dicom_series(mr, tmp_path / "mr" / phase, phase=phase, study_id="MR", modality="MR")
    study = load_study(tmp_path / "mr")
    assert sorted(study.series) == ["ADC", "DWI", "HBP", "T1", "T2"]
    for series in study:
        assert series.modality is Modality.MR
        np.testing.assert_allclose(sitk.GetArrayFromImage(series.image), sitk.GetArrayFromImage(mr), atol=1e-7)


def test_write_dicom_series_refuses_bad_targets_without_writing(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "other.txt").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        write_dicom_series(volume(), tmp_path / "busy", phase="AP", study_id="X")
    big = sitk.Cast(volume(), sitk.sitkFloat32) * 100.0
    with pytest.raises(InputError, match="16-bit"):
        write_dicom_series(big, tmp_path / "big", phase="AP", study_id="X")
    assert listing(tmp_path) == ["busy", "busy/other.txt"]


def dciodvfy_errors(path) -> list[str]:
    """Error lines of dicom3tools' IOD validator (warnings, e.g. about the private coding scheme, are allowed)."""
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


needs_dciodvfy = pytest.mark.skipif(shutil.which("dciodvfy") is None,
                                    reason="dciodvfy absent: install Debian package dicom3tools (Testing/system_deps.sh)")


@pytest.fixture(scope="module")
def real_ct(shared_data):
    folder = shared_data / "real/liver_ct_dicom_seg"
    (series,) = load_study(folder / "ct-3slice")
    liver = sitk.ReadImage(str(folder / "liver_seg.nrrd"))
    return series, liver, folder


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_reads_a_real_dcmqi_seg_like_its_nrrd(real_ct):
    series, liver, folder = real_ct
    labels, segments = read_seg(folder / "liver.dcm", reference=series.image)
    assert segments.loc[0, "structure"] == "liver" and segments.loc[0, "property_code"] == "SRT:T-62000"  # legacy code
    assert dice(sitk.GetArrayFromImage(labels) == LABELS["liver"], sitk.GetArrayFromImage(liver) > 0) > 0.999
    native, _ = read_seg(folder / "liver.dcm")  # without reference: the SEG's own frames, still on the CT's grid
    index = series.image.TransformPhysicalPointToContinuousIndex(native.GetOrigin())
    np.testing.assert_allclose(index, np.round(index), atol=1e-3)


def real_labels(series: Series, liver: sitk.Image) -> np.ndarray:
    array = (sitk.GetArrayFromImage(liver) > 0).astype(np.uint8)
    array[1, 250:270, 180:200] = LABELS["tumour"]
    array[0:2, 100:110, 400:420] = LABELS["spleen"]
    return array


def test_seg_round_trip_on_real_ct(real_ct, tmp_path):
    series, liver, _ = real_ct
    array = real_labels(series, liver)
    labels = sitk.GetImageFromArray(array)
    labels.CopyInformation(series.image)
    path = write_seg(labels, series.meta["files"], tmp_path / "seg.dcm")
    seg = pydicom.dcmread(path)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4" and seg.SegmentationType == "BINARY"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series.meta["series_uid"]
    assert seg.StudyInstanceUID == series.meta["study_uid"]
    assert seg.FrameOfReferenceUID == series.meta["frame_of_reference_uid"]
    referenced = {item.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in series.meta["files"]}
    codes = {(s.SegmentLabel, s.SegmentedPropertyTypeCodeSequence[0].CodeValue) for s in seg.SegmentSequence}
    assert codes == {("Liver", "10200004"), ("Tumour", "108369006"), ("Spleen", "78961009")}  # SNOMED CT
    back, segments = read_seg(path, reference=series.image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), array)
    assert list(segments["structure"]) == ["liver", "tumour", "spleen"]
    assert dice(sitk.GetArrayFromImage(back) > 0, sitk.GetArrayFromImage(liver) > 0) > 0.99


@needs_dciodvfy
def test_seg_and_sr_pass_dciodvfy(real_ct, tmp_path):
    series, liver, _ = real_ct
    labels = sitk.GetImageFromArray(real_labels(series, liver))
    labels.CopyInformation(series.image)
    seg = write_seg(labels, series.meta["files"], tmp_path / "seg.dcm")
    sr = write_sr(lesion_table(volume_ml=[0.4], max_diameter_mm=[18.0]), seg, series.meta["files"],
                  tmp_path / "sr.dcm", lirads=lirads_table(category=["LR-4"], aphe=[True]), predictions={"mvi": 0.4})
    assert dciodvfy_errors(seg) == []
    assert dciodvfy_errors(sr) == []
    series, labels, lesions = synthetic_series()  # our own CT and MR series, and a SEG of them
    ct = write_dicom_series(series.image, tmp_path / "ct", phase="PVP", study_id="V")
    mr = write_dicom_series(sitk.Cast(series.image, sitk.sitkFloat32) * 1e-3, tmp_path / "mr", phase="ADC",
                            study_id="V", modality="MR")
    own_seg = write_seg(as_image(labels, series.image), ct, tmp_path / "own_seg.dcm",
                        lesion_labels=as_image(lesions, series.image))
    for path in (ct[0], mr[0], own_seg):
        assert dciodvfy_errors(path) == [], path


def synthetic_series() -> tuple[Series, np.ndarray, np.ndarray]:
    """A CT series loaded from NIfTI (no DICOM yet), an oblique grid, a label map and two lesions."""
    rng = np.random.default_rng(5)
    image = sitk.GetImageFromArray(rng.integers(-100, 200, size=(8, 24, 20)).astype(np.int16))
    image.SetSpacing((1.5, 1.5, 3.0))
    image.SetOrigin((-20.0, 10.0, 50.0))
    image.SetDirection(sitk.VersorTransform((0.0, 0.0, 1.0), 0.2).GetMatrix())
    labels = np.zeros((8, 24, 20), np.uint8)
    labels[1:7, 3:20, 2:17] = LABELS["liver"]
    lesions = np.zeros_like(labels)
    lesions[2:4, 5:9, 4:8] = 1
    lesions[4:6, 12:17, 10:15] = 2
    labels[lesions > 0] = LABELS["tumour"]
    labels[3:5, 21:23, 17:19] = LABELS["portal_vein"]
    return Series("PVP", "PVP", image), labels, lesions


def lesion_table(**columns) -> LesionTable:
    """A LesionTable of len(volume_ml) lesions numbered 1..n (columns not given: placeholder measurements)."""
    n = len(columns["volume_ml"])
    frame = pd.DataFrame({"lesion": range(1, n + 1), "voxels": [10] * n, "max_diameter_mm": [10.0] * n,
                          **{f"centroid_{a}_mm": [0.0] * n for a in "xyz"}, **columns})
    return LesionTable(frame)


def lirads_table(**columns) -> pd.DataFrame:
    """A LI-RADS table (LiradsAssessment.table() layout: indexed by lesion 1..n) with the given columns."""
    n = len(next(iter(columns.values())))
    return pd.DataFrame(columns, index=pd.Index(range(1, n + 1), name="lesion"))


def as_image(array: np.ndarray, like: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(like)
    return image


def test_seg_of_a_nifti_series_writes_the_source_series_first(tmp_path):
    series, labels, lesions = synthetic_series()
    files = source_series_files(series, tmp_path / "ct", study_id="SYN")
    assert len(files) == 8 and series.meta["files"] == [str(f) for f in files]
    assert source_series_files(series, tmp_path / "unused", study_id="SYN") == files  # reused, not rewritten
    assert not (tmp_path / "unused").exists()
    path = write_seg(as_image(labels, series.image), files, tmp_path / "seg.dcm",
                     lesion_labels=as_image(lesions, series.image))
    back, segments = read_seg(path, reference=series.image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), labels)
    assert list(segments["label"]) == ["Liver", "Lesion 1", "Lesion 2", "Portal vein"]
    assert list(segments["tracking_id"]) == ["Liver", "Lesion 1", "Lesion 2", "Portal vein"]
    seg = pydicom.dcmread(path)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series.meta["series_uid"]


def test_sr_round_trip_references_the_seg(tmp_path):
    series, labels, lesions = synthetic_series()
    files = source_series_files(series, tmp_path / "ct", study_id="SYN")
    seg_path = write_seg(as_image(labels, series.image), files, tmp_path / "seg.dcm",
                         lesion_labels=as_image(lesions, series.image))
    table = lesion_table(volume_ml=[0.648, 1.35], max_diameter_mm=[9.4, 21.2])
    lirads = lirads_table(diameter_mm=[8.0, 20.0], category=["LR-3", "LR-TIV"], aphe=[False, True], washout=[True, True],
                          capsule=[False, True], threshold_growth=[None, False], tumour_in_vein=[False, True])
    path = write_sr(table, seg_path, files, tmp_path / "sr.dcm", lirads=lirads,
                    predictions={"mvi": 0.81, "early_recurrence": 0.35})
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    seg = pydicom.dcmread(seg_path)
    back = read_sr(path)
    assert list(back["lesion"]) == ["Lesion 1", "Lesion 2", "Prediction"]
    lesion_rows = back.iloc[:2]
    assert set(lesion_rows["seg_uid"]) == {seg.SOPInstanceUID}
    assert list(lesion_rows["segment_number"]) == [2, 3]  # "Lesion 1" and "Lesion 2" segments of the SEG
    np.testing.assert_allclose(lesion_rows["volume_mm3"], [648.0, 1350.0])
    np.testing.assert_allclose(lesion_rows["diameter_mm"], [9.4, 21.2])  # the LesionTable's 3D maximum diameter
    assert lesion_rows["p_mvi"].isna().all()  # probabilities are study-level only
    assert list(lesion_rows["lirads"]) == ["LR-3", "LR-TIV"]
    assert list(lesion_rows["tumour_in_vein"]) == [False, True]  # measured tumour in vein
    assert list(lesion_rows["aphe"]) == [False, True] and list(lesion_rows["capsule"]) == [False, True]
    assert not lesion_rows["threshold_growth"].iloc[1]
    assert pd.isna(lesion_rows["threshold_growth"].iloc[0])  # unknown stays unknown
    prediction = back.iloc[2]
    assert prediction["p_mvi"] == pytest.approx(0.81) and prediction["p_early_recurrence"] == pytest.approx(0.35)
    referenced = {sop.ReferencedSOPInstanceUID for study in ds.CurrentRequestedProcedureEvidenceSequence
                  for s in study.ReferencedSeriesSequence for sop in s.ReferencedSOPSequence}
    assert seg.SOPInstanceUID in referenced


def test_export_dicom_all_or_nothing_and_reloadable(tmp_path):
    series, labels, lesions = synthetic_series()
    table = lesion_table(volume_ml=[0.2, 0.6], max_diameter_mm=[8.0, 12.5])
    lirads = lirads_table(aphe=[True, True], washout=[False, True], capsule=[False, None], category=["LR-4", "LR-5"])
    with pytest.raises(InputError, match="LR-9"):
        export_dicom(series, as_image(labels, series.image), table, tmp_path / "failed", study_id="SYN",
                     lirads=lirads.assign(category=["LR-4", "LR-9"]))
    assert listing(tmp_path) == [] and "files" not in series.meta  # nothing half-written, series untouched
    out = export_dicom(series, as_image(labels, series.image), table, tmp_path / "dicom", study_id="SYN",
                       lirads=lirads, lesion_labels=as_image(lesions, series.image), predictions={"mvi": 0.55})
    assert out["seg"].is_file() and out["sr"].is_file() and len(out["source"]) == 8
    assert series.meta["files"] == [str(f) for f in out["source"]] and all(f.is_file() for f in out["source"])
    back = read_sr(out["sr"])
    assert list(back["lirads"].iloc[:2]) == ["LR-4", "LR-5"] and list(back["diameter_mm"].iloc[:2]) == [8.0, 12.5]
    study = load_study(tmp_path / "dicom")  # the exported series and its SEG load as one study
    (reloaded,) = study
    np.testing.assert_array_equal(sitk.GetArrayFromImage(reloaded.masks["labels"]), labels)
    np.testing.assert_allclose(reloaded.image.GetDirection(), series.image.GetDirection(), atol=1e-6)


def test_sr_with_a_single_tumour_segment(tmp_path):
    series, labels, _ = synthetic_series()
    files = source_series_files(series, tmp_path / "ct", study_id="SYN")
    seg_path = write_seg(as_image(labels, series.image), files, tmp_path / "seg.dcm")
    path = write_sr(lesion_table(volume_ml=[0.01, 0.02]), seg_path, files, tmp_path / "sr.dcm")
    back = read_sr(path)
    assert list(back["segment_number"]) == [2, 2] and list(back["lesion"]) == ["Lesion 1", "Lesion 2"]


def test_bad_inputs_write_nothing(tmp_path):
    series, labels, _ = synthetic_series()
    files = source_series_files(series, tmp_path / "ct", study_id="SYN")
    bad = labels.copy()
    bad[0, 0, 0] = 9
    with pytest.raises(InputError, match="values \\[9\\]"):
        write_seg(as_image(bad, series.image), files, tmp_path / "out" / "seg.dcm")
    shifted = as_image(labels, series.image)
    shifted.SetOrigin((0.0, 0.0, 0.0))
    with pytest.raises(GeometryError, match="different grid"):
        write_seg(shifted, files, tmp_path / "out" / "seg.dcm")
    with pytest.raises(InputError, match="empty"):
        write_seg(as_image(np.zeros_like(labels), series.image), files, tmp_path / "out" / "seg.dcm")
    seg_path = write_seg(as_image(labels, series.image), files, tmp_path / "seg.dcm")
    one = lesion_table(volume_ml=[0.001])
    with pytest.raises(InputError, match="LR-6"):
        write_sr(one, seg_path, files, tmp_path / "out" / "sr.dcm", lirads=lirads_table(category=["LR-6"]))
    with pytest.raises(InputError, match="\\[0, 1\\]"):
        write_sr(one, seg_path, files, tmp_path / "out" / "sr.dcm", predictions={"mvi": 1.3})
    with pytest.raises(InputError, match="lesions.LesionTable"):  # one dialect: a bare table is refused
        write_sr(pd.DataFrame({"volume_mm3": [1.0]}), seg_path, files, tmp_path / "out" / "sr.dcm")
    with pytest.raises(InputError, match="not a DICOM SEG"):
        write_sr(one, files[0], files, tmp_path / "out" / "sr.dcm")
    with pytest.raises(InputError, match="not a valid Segmentation"):
        read_seg(files[0])
    with pytest.raises(InputError, match="TID 1500"):
        read_sr(seg_path)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.fixture(scope="module")
def phantom():
    make_patient = pytest.importorskip("HCCFusionLib.phantom").make_patient
    return make_patient(11, "small", mri=True)


def test_phantom_study_as_dicom_round_trip(phantom, tmp_path):
    written = write_study_dicom(phantom.study, tmp_path / "dicom", segmentations=True)
    assert sorted(written) == sorted([*phantom.study.series, *(f"{n}_seg" for n in phantom.study.series)])
    study = load_study(tmp_path / "dicom")
    assert {s.name: s.phase for s in study} == {s.name: s.phase for s in phantom.study}  # phases detected back
    assert len({s.meta["study_uid"] for s in study}) == 1 and len({s.meta["series_uid"] for s in study}) == 8
    for original in phantom.study:
        back = study[original.name]
        assert back.modality is original.modality and back.meta["phase_confidence"] >= 0.9
        for get in (sitk.Image.GetSize, sitk.Image.GetSpacing, sitk.Image.GetOrigin, sitk.Image.GetDirection):
            np.testing.assert_allclose(get(back.image), get(original.image), atol=1e-4)
        values, truth = sitk.GetArrayFromImage(back.image), sitk.GetArrayFromImage(original.image)
        tolerance = 0 if original.modality is Modality.CT else float(np.ptp(truth)) / 65000
        np.testing.assert_allclose(values, truth, atol=tolerance + 1e-6)
        np.testing.assert_array_equal(sitk.GetArrayFromImage(back.masks["labels"]),
                                      sitk.GetArrayFromImage(original.masks["labels"]))
    with pytest.raises(InputError, match="not empty"):
        write_study_dicom(phantom.study, tmp_path / "dicom")


def test_saved_study_keeps_its_dicom_source_while_the_grid_matches(tmp_path):
    series, _, _ = synthetic_series()
    files = write_dicom_series(series.image, tmp_path / "ct", phase="PVP", study_id="S")
    save_study(load_study(tmp_path / "ct"), tmp_path / "nifti")
    reloaded = load_study(tmp_path / "nifti")["PVP"]
    assert source_series_files(reloaded, tmp_path / "unused", study_id="S") == files  # SEG will reference these
    assert not (tmp_path / "unused").exists()
    reloaded.image.SetOrigin((0.0, 0.0, 0.0))  # e.g. a resampled series that inherited the metadata
    new = source_series_files(reloaded, tmp_path / "new", study_id="S")
    assert new[0].parent == tmp_path / "new" and reloaded.meta["files"] == [str(f) for f in new]


def test_export_dicom_without_lesions_reports_the_liver_volume(tmp_path):
    """A study with a liver and no lesion (e.g. a single real CT) still gets its SEG and an SR with the liver volume."""
    series, labels, _ = synthetic_series()
    labels[labels == LABELS["tumour"]] = LABELS["liver"]
    empty = lesion_table(volume_ml=[])
    out = export_dicom(series, as_image(labels, series.image), empty, tmp_path / "dicom", study_id="SYN")
    back = read_sr(out["sr"])
    expected = (labels == LABELS["liver"]).sum() * 1.5 * 1.5 * 3.0
    assert back["lesion"].tolist() == ["Liver"] and back["volume_mm3"].iloc[0] == pytest.approx(expected)
    assert back["segment_number"].iloc[0] == 1  # the SEG's liver segment
    with pytest.raises(InputError, match="Nothing to report: no liver"):
        export_dicom(series, as_image((labels == LABELS["portal_vein"]).astype(np.uint8) * LABELS["portal_vein"],
                                      series.image), empty, tmp_path / "dicom2", study_id="SYN")
    assert not (tmp_path / "dicom2").exists()
