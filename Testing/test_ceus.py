"""CEUS: a phantom cine (multi-frame ultrasound DICOM, log-compressed, speckle-like noise) with known lognormal
curves; the fitted perfusion parameters come back within 5 %, and planted cases get their CEUS LI-RADS category."""
from __future__ import annotations

import math

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from HCCFusionLib.ceus import (ceus_category, ceus_features, circle_roi, fit_perfusion, lognormal, read_cine,
                               time_intensity_curve)
from HCCFusionLib.errors import InputError

US_MULTIFRAME = "1.2.840.10008.5.1.4.1.1.3.1"
DR_DB, FRAME_MS, FRAMES, SIZE = 60.0, 500.0, 300, 40
PIXEL_CM = 0.05  # 0.5 mm
LIVER = dict(baseline=20.0, auc=9000.0, t0=10.0, mu=math.log(40.0), sigma=0.6)
LESION = dict(baseline=20.0, auc=12000.0, t0=7.0, mu=math.log(20.0), sigma=0.45)
LESION_ROI, LIVER_ROI = ((6.0, 6.0), 3.5), ((14.0, 14.0), 4.0)  # (x, y) mm, radius mm


def _truth(p):
    """Hand-derived parameters of a lognormal bolus: arrival, peak time, MTT, AUC."""
    return {"arrival_s": p["t0"], "time_to_peak_s": p["t0"] + math.exp(p["mu"] - p["sigma"] ** 2),
            "mtt_s": math.exp(p["mu"] + p["sigma"] ** 2 / 2), "auc": p["auc"],
            "peak_enhancement": p["auc"] * math.exp(-p["sigma"] ** 2 / 2)
            / (math.exp(p["mu"] - p["sigma"] ** 2) * p["sigma"] * math.sqrt(2 * math.pi))}


def write_cine(path, *, vector=True, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(FRAMES) * FRAME_MS / 1000.0
    y, x = np.mgrid[:SIZE, :SIZE] * (PIXEL_CM * 10)
    power = np.empty((FRAMES, SIZE, SIZE))
    power[:] = lognormal(t, *LIVER.values())[:, None, None]
    lesion = (x - LESION_ROI[0][0]) ** 2 + (y - LESION_ROI[0][1]) ** 2 <= 4.5 ** 2
    power[:, lesion] = lognormal(t, *LESION.values())[:, None]
    power *= rng.lognormal(-0.02, 0.2, power.shape)  # multiplicative speckle-like noise, mean 1
    grey = np.clip(np.round(255.0 * 10 * np.log10(power) / DR_DB), 0, 255).astype(np.uint8)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = US_MULTIFRAME, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = US_MULTIFRAME, meta.MediaStorageSOPInstanceUID, "US"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.NumberOfFrames, ds.Rows, ds.Columns = FRAMES, SIZE, SIZE
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if vector:
        ds.FrameIncrementPointer = pydicom.tag.Tag("FrameTimeVector")
        ds.FrameTimeVector = [0.0] + [FRAME_MS] * (FRAMES - 1)
    else:
        ds.FrameIncrementPointer, ds.FrameTime = pydicom.tag.Tag("FrameTime"), FRAME_MS
    region = pydicom.Dataset()
    region.RegionSpatialFormat, region.RegionDataType, region.RegionFlags = 1, 1, 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = SIZE - 1, SIZE - 1
    region.PhysicalUnitsXDirection, region.PhysicalUnitsYDirection = 3, 3
    region.PhysicalDeltaX, region.PhysicalDeltaY = PIXEL_CM, PIXEL_CM
    ds.SequenceOfUltrasoundRegions = [region]
    ds.PixelData = grey.tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


@pytest.fixture(scope="module")
def cine_file(tmp_path_factory):
    return write_cine(tmp_path_factory.mktemp("ceus") / "cine.dcm")


@pytest.mark.parametrize("which, params", [("lesion", LESION), ("liver", LIVER)])
def test_fitted_perfusion_within_5_percent(cine_file, which, params):
    cine = read_cine(cine_file)
    assert cine.spacing_mm == pytest.approx((0.5, 0.5)) and cine.times_s[-1] == pytest.approx((FRAMES - 1) * 0.5)
    centre, radius = LESION_ROI if which == "lesion" else LIVER_ROI
    curve = time_intensity_curve(cine, circle_roi(cine, centre, radius), DR_DB)
    fit = fit_perfusion(cine.times_s, curve)
    for name, value in _truth(params).items():
        assert fit[name] == pytest.approx(value, rel=0.05), name
    assert fit["wash_in_slope"] > 0 > fit["wash_out_slope"]


def test_frame_time_and_missing_calibration(tmp_path):
    cine = read_cine(write_cine(tmp_path / "ft.dcm", vector=False))
    assert cine.times_s[1] == pytest.approx(0.5)
    ds = pydicom.dcmread(tmp_path / "ft.dcm")
    del ds.SequenceOfUltrasoundRegions
    ds.save_as(tmp_path / "nocal.dcm")
    with pytest.raises(InputError, match="SequenceOfUltrasoundRegions"):
        read_cine(tmp_path / "nocal.dcm")


T = np.arange(0, 180, 0.5)
LIVER_CURVE = lognormal(T, **LIVER)
HCC_BOLUS = dict(baseline=0.0, auc=8000.0, t0=7.0, mu=math.log(25.0), sigma=0.45)
PLANTED = [  # lesion = arterial bolus + share x liver (portal/parenchymal) enhancement, diameter, category
    (HCC_BOLUS, 0.65, 25.0, "LR-5"),  # APHE, washout onset ~73 s (late), late ratio ~0.66 (mild)
    (HCC_BOLUS, 0.65, 8.0, "LR-4"),  # the same below 10 mm
    (dict(HCC_BOLUS, t0=6.0, mu=math.log(9.0), sigma=0.3), 0.05, 25.0, "LR-M"),  # washout before 60 s, marked
    (dict(HCC_BOLUS, auc=0.0), 1.0, 25.0, "LR-3"),  # iso-enhancing throughout
    (dict(HCC_BOLUS, auc=0.0), 1.6, 25.0, "LR-4"),  # APHE, no washout
    (dict(HCC_BOLUS, auc=0.0), np.interp(T, [0, 65, 95, 180], [1, 1, 0.6, 0.6]), 25.0, "LR-4"),  # no APHE,
    # iso until 65 s, then late mild washout
    (dict(HCC_BOLUS, auc=0.0), 0.6, 25.0, "LR-3"),  # hypo-enhancing from the start: no APHE, no washout
]


@pytest.mark.parametrize("bolus, share, diameter, expected", PLANTED)
def test_planted_ceus_lirads_categories(bolus, share, diameter, expected):
    lesion = lognormal(T, **bolus) + share * (LIVER_CURVE - LIVER["baseline"]) + LIVER["baseline"]
    feats = ceus_features(T, lesion, LIVER_CURVE)
    assert ceus_category(feats, diameter) == expected
    for f in feats.values():
        assert f.threshold is not None and f.evidence


def test_cli_ceus_writes_perfusion_and_lirads(cine_file, tmp_path):
    import pandas as pd

    from HCCFusionLib.cli import main
    from HCCFusionLib.layout import RunFolder

    out = RunFolder(tmp_path / "run")
    (lx, ly), lr = LESION_ROI
    (vx, vy), vr = LIVER_ROI
    assert main(["--progress", "none", "ceus", str(out.root), "--cine", str(cine_file), "--lesion", str(lx), str(ly),
                 str(lr), "--liver", str(vx), str(vy), str(vr), "--diameter-mm", "25"]) == 0
    perfusion = pd.read_csv(out.ceus_perfusion).set_index(["roi", "parameter"])
    assert perfusion.loc[("lesion", "mtt_s"), "value"] == pytest.approx(_truth(LESION)["mtt_s"], rel=0.05)
    assert set(perfusion["unit"]) >= {"s", "1/s (I/I0)"}
    lirads = pd.read_csv(out.ceus_lirads).set_index("feature")
    assert lirads.loc["category", "value"] == "LR-M"  # the phantom lesion is a pure bolus: washout ~43 s, marked
    assert lirads.loc["aphe", "present"] in (True, "True")
    from HCCFusionLib.report import ReportData, render_html

    html = render_html(ReportData("s1", ceus=pd.read_csv(out.ceus_perfusion), ceus_lirads=pd.read_csv(out.ceus_lirads),
                                  dated=False), tmp_path / "report")
    assert "CEUS LI-RADS v2017" in html and "LR-M" in html and "1/s (I/I0)" in html
