"""dicom: DICOM SEG and TID 1500 SR written with highdicom, validated, and read back by the project's readers."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk

from HCCFusionLib.dicom import read_seg, read_sr, source_series_files, write_seg, write_sr
from HCCFusionLib.errors import GeometryError, InputError
from HCCFusionLib.io import load_study
from HCCFusionLib.study import LABELS, Series

pytest.importorskip("highdicom", reason="highdicom is the [dicom] extra")
pytestmark = pytest.mark.filterwarnings("ignore:The string .* is unlikely to represent the intended person name")


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
    sr = write_sr(pd.DataFrame({"volume_mm3": [400.0], "diameter_mm": [18.0], "lirads": ["LR-4"], "aphe": [True]}),
                  seg, series.meta["files"], tmp_path / "sr.dcm", predictions={"mvi": 0.4})
    assert dciodvfy_errors(seg) == []
    assert dciodvfy_errors(sr) == []


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
    table = pd.DataFrame({
        "lesion": [1, 2], "volume_ml": [0.648, 1.35], "diameter_mm": [9.4, 21.2], "lirads": ["LR-3", "LR-5"],
        "aphe": [False, True], "washout": [True, True], "capsule": [False, True], "threshold_growth": [None, False],
        "p_mvi": [0.12, 0.81],
    })
    path = write_sr(table, seg_path, files, tmp_path / "sr.dcm", predictions={"mvi": 0.81, "early_recurrence": 0.35})
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
    np.testing.assert_allclose(lesion_rows["diameter_mm"], [9.4, 21.2])
    np.testing.assert_allclose(lesion_rows["p_mvi"], [0.12, 0.81])
    assert list(lesion_rows["lirads"]) == ["LR-3", "LR-5"]
    assert list(lesion_rows["aphe"]) == [False, True] and list(lesion_rows["capsule"]) == [False, True]
    assert not lesion_rows["threshold_growth"].iloc[1]
    assert pd.isna(lesion_rows["threshold_growth"].iloc[0])  # unknown stays unknown
    prediction = back.iloc[2]
    assert prediction["p_mvi"] == pytest.approx(0.81) and prediction["p_early_recurrence"] == pytest.approx(0.35)
    referenced = {sop.ReferencedSOPInstanceUID for study in ds.CurrentRequestedProcedureEvidenceSequence
                  for s in study.ReferencedSeriesSequence for sop in s.ReferencedSOPSequence}
    assert seg.SOPInstanceUID in referenced


def test_sr_with_a_single_tumour_segment(tmp_path):
    series, labels, _ = synthetic_series()
    files = source_series_files(series, tmp_path / "ct", study_id="SYN")
    seg_path = write_seg(as_image(labels, series.image), files, tmp_path / "seg.dcm")
    path = write_sr(pd.DataFrame({"volume_mm3": [10.0, 20.0]}), seg_path, files, tmp_path / "sr.dcm")
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
    with pytest.raises(InputError, match="LR-6"):
        write_sr(pd.DataFrame({"lirads": ["LR-6"]}), seg_path, files, tmp_path / "out" / "sr.dcm")
    with pytest.raises(InputError, match="\\[0, 1\\]"):
        write_sr(pd.DataFrame({"p_mvi": [1.3]}), seg_path, files, tmp_path / "out" / "sr.dcm")
    with pytest.raises(InputError, match="not a DICOM SEG"):
        write_sr(pd.DataFrame({"volume_mm3": [1.0]}), files[0], files, tmp_path / "out" / "sr.dcm")
    with pytest.raises(InputError, match="not a valid Segmentation"):
        read_seg(files[0])
    with pytest.raises(InputError, match="TID 1500"):
        read_sr(seg_path)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
