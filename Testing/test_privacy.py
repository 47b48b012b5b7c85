"""Privacy: a DICOM study full of patient identifiers through `hccfusion run`; no output may carry them.

Every file under OUT (text and binary: CSV, HTML, JSON, NIfTI (gunzipped), DICOM SEG/SR, zip/.mrb members),
the captured stdout/stderr and every log record are searched for each identifier and its DICOM encodings
(person-name components, dates as written and as ISO dates, UTF-16). `--keep-identifiers` lets the identifiers
into the DICOM SEG and SR only (filed with the source study); nowhere else.
"""
from __future__ import annotations

import gzip
import logging
import warnings
import zipfile
from pathlib import Path

import pydicom
import pytest
import SimpleITK as sitk

from HCCFusionLib import cli
from HCCFusionLib.dicom import pseudonym, write_study_dicom
from HCCFusionLib.io import save_image
from HCCFusionLib.phantom import make_patient

#: DICOM keyword -> a distinctive value no output may carry by default
IDENTIFIERS = {
    "PatientName": "Zzyzx^Privacytest", "PatientID": "PID-8675309", "PatientBirthDate": "19310217",
    "OtherPatientIDs": "OPID-31337", "PatientAddress": "42 Qwertz Lane", "InstitutionName": "Xylophone Clinic",
    "InstitutionAddress": "7 Vexillum Road", "AccessionNumber": "ACC55512", "ReferringPhysicianName": "Quokka^Referrer",
    "PerformingPhysicianName": "Wombat^Performer", "OperatorsName": "Numbat^Operator", "StudyID": "STY90210",
    "StationName": "STN-ZEBU", "PatientTelephoneNumbers": "555-0199", "MedicalRecordLocator": "MRL-24680",
}


def needles() -> dict[str, bytes]:
    """Each identifier's searchable forms (bytes), keyed by a readable name."""
    out = {}
    for key, value in IDENTIFIERS.items():
        parts = value.split("^") if "^" in value else [value]
        if key.endswith("Date"):
            parts.append(f"{value[:4]}-{value[4:6]}-{value[6:]}")
        for part in parts:
            for encoding in ("ascii", "utf-16-le"):
                out[f"{key} '{part}' ({encoding})"] = part.encode(encoding).lower()
    return out


def contents(path: Path):
    """(name, bytes) of a file and, for gzip and zip files, of what they hold."""
    data = path.read_bytes()
    yield str(path), data
    if data[:2] == b"\x1f\x8b":
        yield f"{path} (gunzipped)", gzip.decompress(data)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                yield f"{path}!{member}", archive.read(member)


def leaks(out: Path, texts: dict[str, str]) -> list[str]:
    """'<where>: <identifier form>' for every identifier found in OUT's files or in `texts`."""
    found = []
    sources = [item for f in sorted(out.rglob("*")) if f.is_file() for item in contents(f)]
    sources += [(name, text.encode("utf-8")) for name, text in texts.items()]
    for where, data in sources:
        lowered = data.lower()
        found += [f"{where}: {name}" for name, needle in needles().items() if needle in lowered]
    return found


@pytest.fixture(scope="module")
def identified(tmp_path_factory):
    """A 4-phase phantom study written as DICOM, every file carrying IDENTIFIERS, plus its label map."""
    patient = make_patient(5, "small", n_tumours=1, misalignment="none")
    root = tmp_path_factory.mktemp("privacy")
    written = write_study_dicom(patient.study, root / "input")
    for files in written.values():
        for f in files:
            ds = pydicom.dcmread(f)
            for key, value in IDENTIFIERS.items():
                setattr(ds, key, value)
            ds.save_as(f)
    save_image(patient.labels, root / "labels.nii.gz")
    import yaml

    from HCCFusionLib.radiomics import PRESET_DIR

    preset = yaml.safe_load((PRESET_DIR / "ct_v1.yaml").read_text())  # first-order features only: fast
    preset.update(name="ct_fast", featureClass={"firstorder": []}, imageType={"Original": {}})
    preset["preprocess"]["resample_mm"] = None
    (root / "ct_fast_v1.yaml").write_text(yaml.safe_dump(preset))
    return root


def run(identified: Path, out: Path, capsys, caplog, *options) -> dict[str, str]:
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = cli.main(["-v", "--progress", "lines", "run", str(identified / "input"), "--out", str(out),
                         "--segmentation", str(identified / "labels.nii.gz"), "--mode", "rigid",
                         "--registration-spacing", "8", "--workers", "1",
                         "--preset", str(identified / "ct_fast_v1.yaml"), *options])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return {"stdout": captured.out, "stderr": captured.err, "warnings": "\n".join(str(w.message) for w in caught),
            "log records": "\n".join(f"{r.name} {r.getMessage()} {r.args}" for r in caplog.records)}


def test_input_carries_identifiers(identified):
    ds = pydicom.dcmread(next((identified / "input").rglob("*.dcm")))
    assert str(ds.PatientName) == IDENTIFIERS["PatientName"] and ds.InstitutionName == IDENTIFIERS["InstitutionName"]
    assert leaks(identified / "input", {})  # the search finds what is there


def test_default_run_writes_no_identifier(identified, tmp_path, capsys, caplog):
    out = tmp_path / "out"
    texts = run(identified, out, capsys, caplog)
    import json

    (record,) = [json.loads(line) for line in (out / "audit.jsonl").read_text().splitlines()]
    assert {k: v for k, v in record["stages"].items() if not v.startswith("skipped: no --")} == dict.fromkeys(
        ["load", "registration", "segmentation", "radiomics", "lirads", "clinical", "prediction", "report", "dicom"],
        "ok")
    seg, sr = out / "dicom" / "seg.dcm", out / "dicom" / "sr.dcm"
    assert seg.is_file() and sr.is_file()
    assert leaks(out, texts) == []
    source = pydicom.dcmread(next((identified / "input").rglob("*.dcm")), stop_before_pixels=True)
    for path in (seg, sr):  # pseudonymous patient, a new study, no link to the source series
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert ds.PatientID == pseudonym(source.StudyInstanceUID) and str(ds.PatientName).rstrip("^") == ds.PatientID
        assert ds.StudyInstanceUID != source.StudyInstanceUID
        assert source.SeriesInstanceUID.encode() not in path.read_bytes()
    again = tmp_path / "again"  # the pseudonym is stable for the same source study
    run(identified, again, capsys, caplog, "--model", "none")
    assert pydicom.dcmread(again / "dicom" / "seg.dcm").PatientID == pydicom.dcmread(seg).PatientID


def test_keep_identifiers_only_in_seg_and_sr(identified, tmp_path, capsys, caplog):
    out = tmp_path / "out"
    texts = run(identified, out, capsys, caplog, "--keep-identifiers", "--model", "none")
    found = leaks(out, texts)
    where = {f.split(":")[0] for f in found}
    assert where == {str(out / "dicom" / "seg.dcm"), str(out / "dicom" / "sr.dcm")}, found
    source = pydicom.dcmread(next((identified / "input").rglob("*.dcm")), stop_before_pixels=True)
    seg = pydicom.dcmread(out / "dicom" / "seg.dcm", stop_before_pixels=True)
    assert seg.PatientID == IDENTIFIERS["PatientID"] and seg.StudyInstanceUID == source.StudyInstanceUID
    assert not (out / "dicom" / "source").exists()  # the SEG references the input series itself


def test_help_documents_the_option(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    assert "--keep-identifiers" in capsys.readouterr().out
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "--keep-identifiers" in readme
