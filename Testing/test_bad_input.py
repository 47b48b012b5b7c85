"""Bad-input suite (issue 20): every case ends with a non-zero exit and ONE error line naming the file and the fix,
no traceback, nothing half-written in the output folder, earlier outputs intact. The table of cases is in
Testing/README.md; `test_table_matches_cases` keeps the two in step."""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from HCCFusionLib import cli
from HCCFusionLib.dicom import write_dicom_series

HERE = Path(__file__).parent
N = 16


def _ct(values=None, size=(N, N, N), spacing=(2.0, 2.0, 3.0)) -> sitk.Image:
    rng = np.random.default_rng(0)
    arr = values if values is not None else rng.normal(60, 30, size[::-1]).astype(np.float32)
    arr[..., :2] = -1000
    image = sitk.GetImageFromArray(arr.astype(np.float32))
    image.SetSpacing(spacing)
    return image


def _save(image, path):
    sitk.WriteImage(image, str(path))
    return path


def _manifest(folder: Path, series: list[dict], **extra) -> Path:
    (folder / "study.json").write_text(json.dumps({"study_id": "S1", "series": series, **extra}))
    return folder


def _study(tmp: Path, arr=None, masks: dict | None = None, file="PVP.nii.gz", **entry) -> Path:
    folder = tmp / "study"
    folder.mkdir()
    _save(_ct(arr), folder / file)
    for key, image in (masks or {}).items():
        _save(image, folder / f"{key}.nii.gz")
    return _manifest(folder, [{"name": "PVP", "phase": "PVP", "file": file, "modality": "CT",
                               "masks": {k: f"{k}.nii.gz" for k in masks or {}}, **entry}])


def _labels(fill) -> sitk.Image:
    arr = np.zeros((N, N, N), np.uint8)
    fill(arr)
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((2.0, 2.0, 3.0))
    return image


def _liver(arr):
    arr[4:12, 4:12, 4:12] = 1


def _dicom(tmp: Path, name="dcm", **kw) -> Path:
    folder = tmp / name
    write_dicom_series(_ct(), folder, phase="PVP", study_id="S1", **kw)
    return folder


def _edit_dicom(path: Path, **tags):
    import pydicom

    ds = pydicom.dcmread(path)
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.save_as(path)


def _info(path):
    return ["info", str(path)]


# ---------------------------------------------------------------- case builders: tmp -> (argv, file named in message)
def nifti_truncated(tmp):
    f = _save(_ct(), tmp / "PVP.nii")
    f.write_bytes(f.read_bytes()[:2000])
    return _info(f), f.name


def nifti_gz_truncated(tmp):
    f = _save(_ct(), tmp / "PVP.nii.gz")
    f.write_bytes(f.read_bytes()[:300])
    return _info(f), f.name


def nifti_garbage(tmp):
    f = tmp / "PVP.nii.gz"
    f.write_bytes(np.random.default_rng(1).bytes(5000))
    return _info(f), f.name


def nifti_empty_file(tmp):
    f = tmp / "PVP.nii"
    f.write_bytes(b"")
    return _info(f), f.name


def nrrd_garbage_header(tmp):
    f = tmp / "PVP.nrrd"
    f.write_text("NRRD0004\ntype: float\ndimension: 3\nsizes: 16 16\nencoding: raw\n\n")
    return _info(f), f.name


def dicom_truncated(tmp):
    folder = _dicom(tmp)
    f = sorted(folder.iterdir())[5]
    f.write_bytes(f.read_bytes()[:600])
    return _info(folder), ".dcm"


def dicom_pixels_truncated(tmp):
    folder = _dicom(tmp)
    f = sorted(folder.iterdir())[5]
    f.write_bytes(f.read_bytes()[:-200])
    return _info(folder), "dcm"


def dicom_garbage(tmp):
    folder = tmp / "dcm"
    folder.mkdir()
    (folder / "IM0001.dcm").write_bytes(np.random.default_rng(2).bytes(3000))
    return _info(folder), "dcm"


def dicom_missing_slice(tmp):
    folder = _dicom(tmp)
    sorted(folder.iterdir())[7].unlink()
    return _info(folder), "IM00"


def dicom_duplicate_slice(tmp):
    import pydicom
    from pydicom.uid import generate_uid

    folder = _dicom(tmp)
    ds = pydicom.dcmread(sorted(folder.iterdir())[3])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(folder / "copy.dcm")
    return _info(folder), ".dcm"


def dicom_uneven_spacing(tmp):
    folder = _dicom(tmp)
    files = sorted(folder.iterdir())
    for f in files[8:]:
        import pydicom

        pos = [float(v) for v in pydicom.dcmread(f).ImagePositionPatient]
        _edit_dicom(f, ImagePositionPatient=[pos[0], pos[1], pos[2] + 1.5])
    return _info(folder), "IM00"


def dicom_mixed_series(tmp):
    """Two acquisitions written under one SeriesInstanceUID (different pixel spacing)."""
    a = _dicom(tmp, "a", series_uid="1.2.3.4.5", series_number=1)
    image = _ct(spacing=(1.0, 1.0, 3.0))
    write_dicom_series(image, tmp / "b", phase="PVP", study_id="S1", series_uid="1.2.3.4.5")
    for i, f in enumerate(sorted((tmp / "b").iterdir())):
        shutil.move(f, a / f"B{i:04d}.dcm")
    return _info(a), ".dcm"


def dicom_gantry_tilt(tmp):
    import pydicom

    folder = _dicom(tmp)
    for k, f in enumerate(sorted(folder.iterdir())):
        pos = [float(v) for v in pydicom.dcmread(f).ImagePositionPatient]
        _edit_dicom(f, ImagePositionPatient=[pos[0], pos[1] + 1.0 * k, pos[2]])
    return _info(folder), "dcm"


def dicom_oblique_skewed(tmp):
    """Row and column directions that are not perpendicular: no valid image plane."""
    folder = _dicom(tmp)
    for f in sorted(folder.iterdir()):
        _edit_dicom(f, ImageOrientationPatient=[1, 0, 0, 0.5, 0.8660254, 0.2])
    return _info(folder), "dcm"


def dicom_single_slice(tmp):
    folder = _dicom(tmp)
    for f in sorted(folder.iterdir())[1:]:
        f.unlink()
    return _info(folder), "IM0001.dcm"


def nifti_2d(tmp):
    f = tmp / "PVP.nii.gz"
    sitk.WriteImage(sitk.Image(16, 16, sitk.sitkFloat32), str(f))
    return _info(f), f.name


def nifti_4d(tmp):
    f = tmp / "PVP.nii.gz"
    sitk.WriteImage(sitk.Image([8, 8, 8, 3], sitk.sitkFloat32), str(f))
    return _info(f), f.name


def nifti_single_slice(tmp):
    f = tmp / "PVP.nii.gz"
    sitk.WriteImage(sitk.Image([16, 16, 1], sitk.sitkFloat32), str(f))
    return _info(f), f.name


def nifti_vector_pixels(tmp):
    f = tmp / "PVP.nii.gz"
    sitk.WriteImage(sitk.Image([8, 8, 8], sitk.sitkVectorFloat32, 3), str(f))
    return _info(f), f.name


def nifti_too_large(tmp):
    """A valid header promising 30000^3 float voxels (108 TB): refused before any allocation."""
    f = _save(_ct(), tmp / "PVP.nii")
    raw = bytearray(f.read_bytes())
    raw[42:48] = np.array([30000, 30000, 30000], "<i2").tobytes()
    f.write_bytes(bytes(raw))
    return _info(f), f.name


def image_nan(tmp):
    arr = sitk.GetArrayFromImage(_ct())
    arr[5, 5, 5] = np.nan
    return _info(_study(tmp, arr, file="PVP.mha")), "PVP.mha"  # ITK's NIfTI reader turns NaN into 0


def image_inf(tmp):
    arr = sitk.GetArrayFromImage(_ct())
    arr[5, 5, 5] = np.inf
    return _info(_study(tmp, arr, file="PVP.mha")), "PVP.mha"  # ITK's NIfTI reader turns NaN into 0


def image_constant(tmp):
    f = tmp / "PVP.nii.gz"
    _save(sitk.GetImageFromArray(np.full((N, N, N), 40.0, np.float32)), f)
    return _info(f), f.name


def ct_not_hounsfield(tmp):
    """Declared CT, but intensities normalised to 0..1 (not HU)."""
    arr = np.random.default_rng(3).random((N, N, N)).astype(np.float32)
    folder = tmp / "study"
    folder.mkdir()
    _save(sitk.GetImageFromArray(arr), folder / "PVP.nii.gz")
    _manifest(folder, [{"name": "PVP", "phase": "PVP", "file": "PVP.nii.gz", "modality": "CT"}])
    return _info(folder), "PVP.nii.gz"


def ct_values_out_of_range(tmp):
    arr = sitk.GetArrayFromImage(_ct())
    arr[3, 3, 3] = 60000
    return _info(_study(tmp, arr)), "PVP.nii.gz"


def mask_off_grid(tmp):
    mask = sitk.Image([N, N, N - 2], sitk.sitkUInt8) + 1
    mask.SetSpacing((2.0, 2.0, 3.0))
    return _info(_study(tmp, masks={"labels": mask})), "labels.nii.gz"


def mask_shifted_origin(tmp):
    mask = _labels(_liver)
    mask.SetOrigin((10.0, 0.0, 0.0))
    return _info(_study(tmp, masks={"labels": mask})), "labels.nii.gz"


def mask_empty(tmp):
    return _info(_study(tmp, masks={"labels": _labels(lambda a: None)})), "labels.nii.gz"


def mask_one_voxel(tmp):
    return _info(_study(tmp, masks={"labels": _labels(lambda a: a.__setitem__((8, 8, 8), 1))})), "labels.nii.gz"


def mask_non_binary(tmp):
    def fill(a):
        a[4:12, 4:12, 4:12] = 1
        a[6:8, 6:8, 6:8] = 9
    return _info(_study(tmp, masks={"labels": _labels(fill)})), "labels.nii.gz"


def mask_float_values(tmp):
    arr = np.zeros((N, N, N), np.float32)
    arr[4:12, 4:12, 4:12] = 0.5
    mask = sitk.GetImageFromArray(arr)
    mask.SetSpacing((2.0, 2.0, 3.0))
    return _info(_study(tmp, masks={"labels": mask})), "labels.nii.gz"


def lesion_outside_liver(tmp):
    def fill(a):
        a[4:10, 4:10, 4:10] = 1
        a[13:15, 13:15, 13:15] = 2
    return _info(_study(tmp, masks={"labels": _labels(fill)})), "labels.nii.gz"


def duplicate_phases(tmp):
    folder = tmp / "study"
    folder.mkdir()
    _save(_ct(), folder / "a.nii.gz")
    _save(_ct(), folder / "b.nii.gz")
    _manifest(folder, [{"name": "A", "phase": "NC", "file": "a.nii.gz"}, {"name": "B", "phase": "NC", "file": "b.nii.gz"}])
    return _info(folder), "study.json"


def unknown_phase(tmp):
    folder = tmp / "study"
    folder.mkdir()
    _save(_ct(), folder / "a.nii.gz")
    _manifest(folder, [{"name": "A", "phase": "XYZ", "file": "a.nii.gz"}])
    return _info(folder), "study.json"


def phase_override_unknown_series(tmp):
    folder = _study(tmp)
    return ["info", str(folder), "--phase", "NOPE", "AP"], "NOPE"


def phase_override_duplicate(tmp):
    folder = tmp / "study"
    folder.mkdir()
    _save(_ct(), folder / "first.nii.gz")
    _save(_ct(), folder / "second.nii.gz")
    return ["info", str(folder), "--phase", "first", "NC", "--phase", "second", "NC"], "second"


def _clinical(tmp, **values):
    """A one-series study whose manifest carries the clinical `values`; the message must name the manifest."""
    folder = _study(tmp)
    manifest = json.loads((folder / "study.json").read_text())
    _manifest(folder, manifest["series"], clinical=values)
    return _info(folder), "study.json"


def clinical_albumin_in_g_per_l(tmp):
    return _clinical(tmp, albumin=35)


def clinical_bilirubin_negative(tmp):
    return _clinical(tmp, bilirubin=-0.4)


def clinical_afp_not_a_number(tmp):
    return _clinical(tmp, afp="high")


def clinical_inr_out_of_range(tmp):
    return _clinical(tmp, inr=40)


def clinical_ecog_out_of_range(tmp):
    return _clinical(tmp, performance_status=5)


def clinical_tumour_number_fractional(tmp):
    return _clinical(tmp, tumour_number=2.5)


def clinical_age_out_of_range(tmp):
    return _clinical(tmp, age=230)


def clinical_ascites_unknown_level(tmp):
    return _clinical(tmp, ascites="severe")


def clinical_vascular_invasion_not_boolean(tmp):
    return _clinical(tmp, vascular_invasion="yes")


def _manifest_text(tmp, name: str, text: str):
    """A study folder holding only the manifest `name` with `text`; `info` on it must name that file."""
    folder = tmp / "study"
    folder.mkdir()
    (folder / name).write_text(text)
    return _info(folder), name


def manifest_bad_json(tmp):
    return _manifest_text(tmp, "study.json", '{"series": [')


def manifest_bad_yaml(tmp):
    return _manifest_text(tmp, "study.yaml", "series: [a, : b\n  - c")


def manifest_no_series(tmp):
    return _manifest_text(tmp, "study.json", '{"study_id": "S1"}')


def manifest_not_object(tmp):
    return _manifest_text(tmp, "study.json", "[1, 2, 3]")


def manifest_entry_without_file(tmp):
    folder = tmp / "study"
    folder.mkdir()
    _manifest(folder, [{"name": "A", "phase": "PVP"}])
    return _info(folder), "study.json"


def manifest_missing_file(tmp):
    folder = tmp / "study"
    folder.mkdir()
    _manifest(folder, [{"name": "A", "phase": "PVP", "file": "absent.nii.gz"}])
    return _info(folder), "absent.nii.gz"


def manifest_file_is_folder(tmp):
    folder = tmp / "study"
    (folder / "sub").mkdir(parents=True)
    _manifest(folder, [{"name": "A", "phase": "PVP", "file": "sub"}])
    return _info(folder), "sub"


def manifest_duplicate_names(tmp):
    folder = tmp / "study"
    folder.mkdir()
    _save(_ct(), folder / "a.nii.gz")
    _manifest(folder, [{"name": "A", "phase": "PVP", "file": "a.nii.gz"}, {"name": "A", "phase": "AP", "file": "a.nii.gz"}])
    return _info(folder), "study.json"


def study_path_missing(tmp):
    return _info(tmp / "nowhere"), "nowhere"


def study_folder_empty(tmp):
    (tmp / "empty").mkdir()
    return _info(tmp / "empty"), "empty"


def folder_without_images(tmp):
    (tmp / "docs").mkdir()
    (tmp / "docs" / "notes.txt").write_text("hello")
    return _info(tmp / "docs"), "notes.txt"


def output_read_only(tmp):
    out = tmp / "out"
    return ["phantom", "--out", str(out / "p"), "--size", "small", "--misalignment", "none", "--tumours", "0"], "out"


def output_disk_full(tmp):
    return ["phantom", "--out", str(tmp / "out" / "p"), "--size", "small", "--misalignment", "none",
            "--tumours", "0"], "p"


def output_is_a_file(tmp):
    (tmp / "out" / "p").write_text("x")
    return ["phantom", "--out", str(tmp / "out" / "p"), "--size", "small"], "p"


def bundle_tampered(tmp):
    bundle = shutil.copytree(HERE.parent / "HCCFusionLib" / "models" / "hcc_demo_mvi", tmp / "bundle")
    with open(bundle / "definitions.csv", "a") as f:
        f.write("x,y\n")
    (tmp / "f.csv").write_text("study_id,a\nS1,1\n")
    return ["predict", str(tmp / "f.csv"), "--model", str(bundle), "--out", str(tmp / "out")], "definitions.csv"


def bundle_wrong_version(tmp):
    bundle = shutil.copytree(HERE.parent / "HCCFusionLib" / "models" / "hcc_demo_mvi", tmp / "bundle")
    card = json.loads((bundle / "model_card.json").read_text())
    card["format"] = "hccfusion-fusion-bundle/99"
    (bundle / "model_card.json").write_text(json.dumps(card))
    (tmp / "f.csv").write_text("study_id,a\nS1,1\n")
    return ["predict", str(tmp / "f.csv"), "--model", str(bundle), "--out", str(tmp / "out")], "model_card.json"


def bundle_missing(tmp):
    (tmp / "f.csv").write_text("study_id,a\nS1,1\n")
    return ["predict", str(tmp / "f.csv"), "--model", str(tmp / "nobundle"), "--out", str(tmp / "out")], "nobundle"


CASES = [f for name, f in list(globals().items()) if callable(f) and getattr(f, "__module__", "") == __name__
         and not name.startswith(("_", "test")) and name not in ("CASES",)]
IDS = [f.__name__ for f in CASES]


def _os_refuses(monkeypatch, code: int):
    """The OS refuses image writes (ENOSPC: disk full after part of the file; EACCES: read-only folder; running as
    root ignores chmod, so the refusal is simulated at the write call)."""
    def write(image, path, *a, **k):
        if code == errno.ENOSPC:
            Path(path).write_bytes(b"\0" * 100)
        raise OSError(code, os.strerror(code), str(path))
    monkeypatch.setattr(sitk, "WriteImage", write)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_bad_input(case, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "earlier.txt").write_text("earlier output")
    argv, named = case(tmp_path)
    if case in (output_disk_full, output_read_only):
        _os_refuses(monkeypatch, errno.ENOSPC if case is output_disk_full else errno.EACCES)
    before = {p.name for p in out.iterdir()}
    try:
        rc = cli.main(["--progress", "none", *argv])
    finally:
        out.chmod(0o755)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if ": error: " in line]
    assert rc != 0, err
    assert "Traceback" not in err, err
    assert len(errors) == 1, err
    assert named in errors[0], errors[0]
    assert re.search(r"\b(re-?export|check|use|give|remove|choose|fix|add|name|free|resample|rename|export|"
                     r"point|separate|convert|install|write|retrain|set|segment|omit|relabel|save|keep|declare|"
                     r"crop|load)\b", errors[0].lower()), errors[0]
    after = {p.name for p in out.iterdir()}
    assert after - {"audit.jsonl"} == before, after
    assert (out / "earlier.txt").read_text() == "earlier output"
    assert not [p for p in tmp_path.rglob("*.part*")], "half-written files left"


def test_table_matches_cases():
    table = (HERE / "README.md").read_text()
    listed = re.findall(r"^\| `([a-z0-9_]+)` \|", table, flags=re.M)
    assert sorted(listed) == sorted(IDS)
    assert len(IDS) >= 40
