"""Protocol QC from DICOM headers on real series (shared data) and modified copies with known deviations."""
from __future__ import annotations

import pandas as pd
import pytest

from HCCFusionLib import cli
from HCCFusionLib.dicom.protocol import _tm_seconds, protocol_table
from HCCFusionLib.errors import InputError
from HCCFusionLib.layout import RunFolder

pydicom = pytest.importorskip("pydicom")


def _copy_series(source, folder, index, **changes):
    """Two slices of a real series as a new series (new UIDs), with header changes."""
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True)
    uid = generate_uid()
    for k, path in enumerate(sorted(source.iterdir())[:2]):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.SOPInstanceUID = uid, generate_uid(), generate_uid()
        ds.SeriesNumber = index
        for key, value in changes.items():
            setattr(ds, key, value)
        ds.save_as(folder / f"{k}.dcm")
    return folder


@pytest.fixture(scope="module")
def cohort(shared_data, tmp_path_factory):
    real = shared_data / "real"
    slab = real / "ct_dicom_slab"
    tmp = tmp_path_factory.mktemp("protocol")
    site_a = [slab] + [_copy_series(slab, tmp / f"same{i}", i) for i in range(4)] + [
        _copy_series(slab, tmp / "kvp80", 10, KVP=80),
        _copy_series(slab, tmp / "thick", 11, SliceThickness=7),
        _copy_series(slab, tmp / "kernel", 12, ConvolutionKernel="B70f"),
        _copy_series(slab, tmp / "late", 13, AcquisitionTime="140552.457000"),  # 215.8 s after the bolus start
    ]
    site_b = [real / "liver_ct_contrast" / "CRLM-CT-1004", real / "liver_ct_dicom_seg" / "ct-3slice",
              real / "liver_mr_t2_adc" / "SCAN_001"]
    rows = [{"path": str(p), "site": "A"} for p in site_a] + [{"path": str(p), "site": "B"} for p in site_b]
    pd.DataFrame(rows).to_csv(tmp / "cohort.csv", index=False)
    return tmp / "cohort.csv", {"A": site_a, "B": site_b}


def test_dicom_times():
    assert _tm_seconds("140352.457000") - _tm_seconds("140216.694022") == pytest.approx(95.762978)
    assert _tm_seconds("1050") == 10 * 3600 + 50 * 60 and pd.isna(_tm_seconds("")) and pd.isna(_tm_seconds(None))


def test_protocol_of_real_series(cohort):
    _, sites = cohort
    table = protocol_table({"B": sites["B"], "A": sites["A"][:1]})
    slab = table[table.site == "A"].iloc[0]
    assert (slab.manufacturer, slab.model, slab.kvp, slab.slice_thickness_mm, slab.kernel) == (
        "SIEMENS", "Biograph40_mCT 4R", 120.0, 3.0, "Br38f\\3")
    assert slab.contrast_delay_s == pytest.approx(95.763, abs=1e-3) and slab.slices == 20
    b = table[table.site == "B"].set_index("description")
    assert sorted(table[table.site == "B"].modality) == ["CT", "CT", "MR", "MR"]
    crlm = b.loc["CT CH/AB/PEL"]
    assert (crlm.manufacturer, crlm.slice_thickness_mm, crlm.kernel, crlm.slices) == ("GE MEDICAL SYSTEMS", 5.0,
                                                                                       "STANDARD", 41)
    assert "no bolus start time" in crlm["flags"] and crlm.outlier  # contrast given, timing unknown
    adc = b.loc["ADC"]
    assert (adc.manufacturer, adc.field_strength_t, adc.slice_thickness_mm) == ("TOSHIBA", 1.5, 6.0)
    assert "slice thickness 6 mm > 5 mm" in adc["flags"]  # LI-RADS technique rule


def test_outliers_flagged_per_site_via_the_cli(cohort, tmp_path):
    csv, _ = cohort
    assert cli.main(["--progress", "none", "protocol-qc", str(csv), "--out", str(tmp_path)]) == 0
    table = pd.read_csv(RunFolder(tmp_path).protocol_qc).fillna({"flags": ""})
    a = table[table.site == "A"].set_index("series_uid")
    assert len(a) == 9
    by_kvp = a[a.kvp == 80].iloc[0]
    assert by_kvp.outlier and "kvp 80 vs site median 120" in by_kvp["flags"]
    thick = a[a.slice_thickness_mm == 7].iloc[0]
    assert "slice_thickness_mm 7 vs site median 3" in thick["flags"] and "7 mm > 5 mm" in thick["flags"]
    kernel = a[a.kernel == "B70f"].iloc[0]
    assert "kernel 'B70f' is rare" in kernel["flags"]
    late = a[a.contrast_delay_s.round(3) == 215.763].iloc[0]
    assert "contrast_delay_s 215.763 vs site median 95.763" in late["flags"]
    assert a.outlier.sum() == 4  # the original and the 4 unchanged copies pass
    with pytest.raises(InputError, match="path and site"):
        from HCCFusionLib.dicom.protocol import protocol_qc

        pd.DataFrame({"path": ["x"]}).to_csv(tmp_path / "bad.csv", index=False)
        protocol_qc(tmp_path / "bad.csv", tmp_path)
