"""PET SUV from phantom PET DICOM files (pydicom, real files), checked against SUVs computed here by hand."""
from __future__ import annotations

import math

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from HCCFusionLib.io import load_study
from HCCFusionLib.lesions import label_lesions
from HCCFusionLib.pet import PetTagError, lesion_suv_table, require_sul, suv_factors
from HCCFusionLib.study import LABELS, Phase

PET_STORAGE = "1.2.840.10008.5.1.4.1.1.128"
WEIGHT, HEIGHT, DOSE, HALF_LIFE = 72.0, 1.78, 370e6, 6586.2
SLOPE = 0.37  # Bq/mL per stored value
SHAPE = (8, 24, 24)  # z, y, x
SPACING = (4.0, 4.0, 4.0)


def _activity() -> np.ndarray:
    """Stored values: liver-like background 2000, a hot 'lesion' cube of 9000 in the middle."""
    z, y, x = np.indices(SHAPE)
    stored = np.full(SHAPE, 2000, np.int16)
    stored[2:6, 8:14, 8:14] = 9000
    return stored + (x + y + z).astype(np.int16)  # a gradient, so a wrong slice order or slope shows


def write_pet(folder, *, units="BQML", correction="START", drop=(), series_time="110000", acq_time="110000",
              start="20260105100000", extra=None):
    """A PET series (one file per slice) with the given header choices; `drop` removes tags."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid, frame_uid = generate_uid(), generate_uid()
    stored = _activity()
    for k in range(SHAPE[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = PET_STORAGE, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(folder / f"{k}.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = PET_STORAGE, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.SeriesDescription, ds.SeriesNumber = "PT", "PET WB", 3
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), series_uid, frame_uid
        ds.PatientWeight, ds.PatientSize, ds.PatientSex = WEIGHT, HEIGHT, "M"
        ds.SeriesDate, ds.SeriesTime, ds.AcquisitionDate, ds.AcquisitionTime = "20260105", series_time, "20260105", acq_time
        ds.Units, ds.DecayCorrection, ds.CorrectedImage = units, correction, ["DECY", "ATTN"]
        drug = pydicom.Dataset()
        drug.RadionuclideTotalDose, drug.RadionuclideHalfLife = DOSE, HALF_LIFE
        drug.RadiopharmaceuticalStartDateTime = start
        ds.RadiopharmaceuticalInformationSequence = [drug]
        ds.ImagePositionPatient = [0.0, 0.0, k * SPACING[0]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [SPACING[1], SPACING[2]], SPACING[0]
        ds.Rows, ds.Columns = SHAPE[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept, ds.InstanceNumber = SLOPE, 0, k + 1
        ds.PixelData = stored[k].tobytes()
        for key, value in (extra or {}).items():
            ds.add_new(key, *value) if isinstance(key, tuple) else setattr(ds, key, value)
        for tag in drop:
            if tag in ds:
                del ds[tag]
            elif tag in drug:
                del drug[tag]
        ds.save_as(str(folder / f"{k}.dcm"), enforce_file_format=True)
    return folder


def _hand_suv(elapsed_s: float | None) -> float:
    """SUVbw factor by hand: weight (g) / (dose x exp(-ln2 t / T1/2))."""
    decayed = DOSE if elapsed_s is None else DOSE * math.exp(-math.log(2) * elapsed_s / HALF_LIFE)
    return WEIGHT * 1000.0 / decayed


def _hand_lbm() -> float:
    bmi = WEIGHT / (HEIGHT * HEIGHT)
    return 9270.0 * WEIGHT / (6680.0 + 216.0 * bmi)


def _headers(folder):
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.glob("*.dcm"))]


@pytest.mark.parametrize("correction, acq_time, elapsed", [
    ("START", "110000", 3600.0),  # series time 11:00, injected 10:00
    ("START", "104500", 2700.0),  # QIBA: an acquisition earlier than the series time is the scan start
    ("ADMIN", "110000", None),  # already decay-corrected to the injection
    ("NONE", "110000", 3600.0),
])
def test_suv_and_sul_from_dicom_match_hand_values(tmp_path, correction, acq_time, elapsed):
    folder = write_pet(tmp_path / "pet", correction=correction, acq_time=acq_time)
    study = load_study(folder)
    series = study.get(Phase.PET)
    suv = sitk.GetArrayFromImage(series.image)
    expected = _activity() * SLOPE * _hand_suv(elapsed)
    assert series.meta["units"].startswith("SUVbw")
    np.testing.assert_allclose(suv, expected, rtol=5e-3)
    factors = suv_factors(_headers(folder))
    np.testing.assert_allclose(require_sul(factors) / factors.bw, _hand_lbm() / WEIGHT, rtol=5e-3)
    sul = suv * series.meta["suv"]["lbm"] / series.meta["suv"]["bw"]
    np.testing.assert_allclose(sul, _activity() * SLOPE * _hand_suv(elapsed) * _hand_lbm() / WEIGHT, rtol=5e-3)
    assert abs(float(suv[4, 10, 10]) - 9000 * SLOPE * _hand_suv(elapsed)) < 5e-3 * suv[4, 10, 10]


def test_philips_cnts_and_gml(tmp_path):
    folder = write_pet(tmp_path / "cnts", units="CNTS", extra={(0x7053, 0x0010): ("LO", "Philips PET Private Group"),
                                                                  (0x7053, 0x1000): ("DS", "0.00042")})
    suv = sitk.GetArrayFromImage(load_study(folder).get(Phase.PET).image)
    np.testing.assert_allclose(suv, _activity() * SLOPE * 0.00042, rtol=5e-3)
    gml = write_pet(tmp_path / "gml", units="GML")
    np.testing.assert_allclose(sitk.GetArrayFromImage(load_study(gml).get(Phase.PET).image), _activity() * SLOPE,
                               rtol=5e-3)


@pytest.mark.parametrize("drop, units, tag", [
    (("PatientWeight",), "BQML", "PatientWeight"),
    (("RadionuclideTotalDose",), "BQML", "RadionuclideTotalDose"),
    (("RadionuclideHalfLife",), "BQML", "RadionuclideHalfLife"),
    (("RadiopharmaceuticalStartDateTime",), "BQML", "RadiopharmaceuticalStartTime"),
    (("RadiopharmaceuticalInformationSequence",), "BQML", "RadiopharmaceuticalInformationSequence"),
    (("DecayCorrection",), "BQML", "DecayCorrection"),
    (("SeriesTime", "AcquisitionTime"), "BQML", "SeriesDate/SeriesTime"),
    (("Units",), "BQML", "Units"),
    ((), "CNTS", "(7053,1000)"),
])
def test_missing_tag_names_the_tag(tmp_path, drop, units, tag):
    folder = write_pet(tmp_path / "pet", units=units, drop=drop)
    with pytest.raises(PetTagError, match=tag.replace("(", r"\(").replace(")", r"\)")):
        load_study(folder)


def test_start_time_only_and_sul_needs_height(tmp_path):
    folder = write_pet(tmp_path / "pet", drop=("RadiopharmaceuticalStartDateTime", "PatientSize"))
    headers = _headers(folder)
    headers[0].RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartTime = "100000"
    factors = suv_factors(headers)
    assert abs(factors.bw / _hand_suv(3600.0) - 1) < 5e-3
    with pytest.raises(PetTagError, match="PatientSize"):
        require_sul(factors)


def test_lesion_table_suvmax_peak_mean_mtv_tlg_tlr():
    suv = np.full((20, 30, 30), 2.0, np.float32)
    suv[5:15, 5:15, 5:15] = 8.0  # 2 mm voxels: a 20 mm cube, 8 mL
    suv[10, 10, 10] = 12.0
    image = sitk.GetImageFromArray(suv)
    image.SetSpacing((2.0, 2.0, 2.0))
    labels = np.full(suv.shape, LABELS["liver"], np.uint8)
    labels[5:15, 5:15, 5:15] = LABELS["tumour"]
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(image)
    lesion_map = label_lesions(label_image)
    liver = sitk.Cast(label_image == LABELS["liver"], sitk.sitkUInt8)
    table = lesion_suv_table(image, lesion_map, liver, sul_factor_over_bw=0.8)
    row = table.iloc[0]
    assert row.lesion == 1 and row.suv_max == pytest.approx(12.0)
    assert row.mtv_ml == pytest.approx(8.0)
    assert row.suv_mean == pytest.approx((999 * 8.0 + 12.0) / 1000)
    assert row.tlg_g == pytest.approx(row.suv_mean * 8.0)
    assert row.tlr == pytest.approx(12.0 / 2.0)
    # 1 mL sphere (radius 6.2 mm) on 2 mm voxels: 123 voxels fit inside the cube, one of them the 12
    kernel = sum(g ** 2 for g in np.meshgrid(*[np.arange(-3, 4) * 2.0] * 3, indexing="ij")) <= (3000 / (4 * np.pi)) ** (2 / 3)
    assert row.suv_peak == pytest.approx((8.0 * (kernel.sum() - 1) + 12.0) / kernel.sum())
    assert row.sul_max == pytest.approx(12.0 * 0.8)


def test_cli_pet_suv_writes_suv_sul_and_lesion_table(tmp_path, capsys):
    from HCCFusionLib.cli import main
    from HCCFusionLib.io import read_image, save_image
    from HCCFusionLib.layout import RunFolder

    folder = write_pet(tmp_path / "pet")
    reference = load_study(folder).get(Phase.PET).image
    labels = np.full(SHAPE, LABELS["liver"], np.uint8)
    labels[2:6, 8:14, 8:14] = LABELS["tumour"]
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(reference)
    save_image(label_image, tmp_path / "labels.nii.gz")
    out = RunFolder(tmp_path / "run")
    assert main(["--progress", "none", "pet-suv", str(out.root), "--pet", str(folder),
                 "--labels", str(tmp_path / "labels.nii.gz")]) == 0
    suv = sitk.GetArrayFromImage(read_image(out.pet_suv))
    sul = sitk.GetArrayFromImage(read_image(out.pet_sul))
    np.testing.assert_allclose(sul / suv, _hand_lbm() / WEIGHT, rtol=5e-3)
    table = __import__("pandas").read_csv(out.pet_lesions)
    assert table.loc[0, "suv_max"] == pytest.approx(float(suv[labels == LABELS["tumour"]].max()), rel=1e-4)
    assert table.loc[0, "mtv_ml"] == pytest.approx(4 * 6 * 6 * 64 / 1000)
    assert "SUVbw factor" in capsys.readouterr().out
    from HCCFusionLib.report import ReportData, render_html

    html = render_html(ReportData("s1", pet=table, dated=False), tmp_path / "report")
    assert "PET per lesion" in html and "suv_peak [g/mL (SUVbw, mean in a 1 mL sphere)]" in html


def test_start_time_only_across_midnight(tmp_path):
    folder = write_pet(tmp_path / "pet", drop=("RadiopharmaceuticalStartDateTime",), series_time="003000",
                       acq_time="003000")
    headers = _headers(folder)
    headers[0].RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartTime = "233000"  # the day before
    assert abs(suv_factors(headers).bw / _hand_suv(3600.0) - 1) < 5e-3
