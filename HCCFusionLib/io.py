"""Images in and files out: NIfTI/NRRD/DICOM loading, phase detection, study manifests, atomic writes.

`load_study(path)` accepts a study folder with a `study.json`/`study.yaml` manifest, a DICOM folder (any
depth; series grouped by SeriesInstanceUID, geometry checked, phase from the tags by `phases`, weak CT tags
settled by the image, `phase_image`) or
a plain folder of NIfTI/NRRD files (phase from the file name). `save_study` writes NIfTI files plus a
manifest atomically. (DICOM out: `dicom.write_dicom_series`, SEG and SR.)
Logs never carry patient identifiers: a study is named by its folder (or the manifest's study_id).
"""
from __future__ import annotations

import contextlib
import hashlib
import gzip
import importlib.util
import json
import logging
import os
import re
import shutil
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import GeometryError, InputError
from .phases import (UNTIMED_CONTRAST, acquisition_seconds, b_value, detect_phase, guess_from_intensity,
                     order_contrast_series, phase_from_name, refine_with_image)
from .study import Clinical, Modality, Phase, Series, Study, check_same_grid, same_grid

__all__ = ["atomic_write", "atomic_folder", "save_image", "read_image", "load_study", "save_study", "detect_phase"]

log = logging.getLogger(__name__)

MANIFEST_NAMES = ("study.json", "study.yaml", "study.yml")
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
MASK_WORDS = {"mask", "masks", "seg", "segmentation", "label", "labels", "labelmap"}
#: DICOM objects that are not image series of the study (read by dicom.py, skipped here).
NON_IMAGE_MODALITIES = {"SEG", "SR", "KO", "PR", "RTSTRUCT", "RTPLAN", "RTDOSE", "REG", "DOC", "OT", "SC"}
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"


# ---------------------------------------------------------------- atomic files
@contextlib.contextmanager
def atomic_write(path: "str | Path"):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A failure leaves neither a partial file nor the temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=f".part{suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _staging_folder(folder: Path) -> Path:
    """A temporary sibling of `folder`, with the permissions a plain mkdir would give (not mkdtemp's 0700)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".part", dir=folder.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    return tmp


@contextlib.contextmanager
def atomic_folder(folder: "str | Path"):
    """Yield a temporary sibling folder; rename it onto `folder` (which must not hold files) on success.

    A failure removes the temporary folder, so a half-written folder is never visible under `folder`.
    """
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise InputError(f"Output folder '{folder}' already exists and is not empty: choose a new folder or remove it.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = _staging_folder(folder)
    try:
        yield tmp
        if folder.exists():
            folder.rmdir()
        os.replace(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: "str | Path") -> str:
    """SHA-256 hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_image(image: sitk.Image, path: "str | Path", compress: bool = True) -> Path:
    """Write an image (NIfTI/NRRD/…, by extension) atomically."""
    path = Path(path)
    with atomic_write(path) as tmp:
        sitk.WriteImage(image, str(tmp), compress)
    return path


def read_image(path: "str | Path") -> sitk.Image:
    """Read one image file, turning reader failures into an InputError that names the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Image file '{path}' does not exist: check the path.")
    try:
        image = sitk.ReadImage(str(path))
        if path.name.lower().endswith((".nii", ".nii.gz")):
            _check_nifti_complete(path)
        return image
    except (RuntimeError, OSError, EOFError, ValueError, zlib.error) as exc:
        raise InputError(
            f"Cannot read image '{path}' ({str(exc).strip().splitlines()[-1][:200]}): "
            "the file is truncated or not a NIfTI/NRRD/MHA image; re-export it."
        ) from None


def _check_nifti_complete(path: Path) -> None:
    """Raise ValueError when a NIfTI file holds fewer voxel bytes than its header promises.

    ITK's NIfTI reader silently fills a truncated file (plain or gzip) with garbage, so the size is checked here.
    """
    with (gzip.open if path.name.lower().endswith(".gz") else open)(path, "rb") as f:
        head = f.read(540)
        size = len(head)
        while chunk := f.read(1 << 22):
            size += len(chunk)
    for endian in "<>":
        if struct.unpack(endian + "i", head[:4])[0] == 348:  # NIfTI-1
            dims = struct.unpack(endian + "8h", head[40:56])
            bitpix, offset = struct.unpack(endian + "h", head[72:74])[0], struct.unpack(endian + "f", head[108:112])[0]
            break
        if struct.unpack(endian + "i", head[:4])[0] == 540:  # NIfTI-2
            dims = struct.unpack(endian + "8q", head[16:80])
            bitpix, offset = struct.unpack(endian + "h", head[14:16])[0], struct.unpack(endian + "q", head[168:176])[0]
            break
    else:
        raise ValueError("no NIfTI header")
    expected = int(offset) + int(np.prod([max(int(d), 1) for d in dims[1:dims[0] + 1]])) * bitpix // 8
    if size < expected:
        raise ValueError(f"{size} of {expected} bytes present")


# ---------------------------------------------------------------- loading
def load_study(path: "str | Path", phase_overrides: dict | None = None, study_id: str | None = None) -> Study:
    """Load a study from a manifest folder, a DICOM folder, a folder of NIfTI/NRRD files or one image file.

    `phase_overrides` maps a series name, SeriesInstanceUID or file name to a phase (code or name);
    overridden series get confidence 1.0. Raises InputError/GeometryError naming the file and the fix.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"Study path '{path}' does not exist: check the path.")
    if path.is_file() and path.name in MANIFEST_NAMES:
        path = path.parent
    if path.is_file():
        study = _load_files([path], path, study_id or _stem(path))
    elif manifest := next((path / n for n in MANIFEST_NAMES if (path / n).is_file()), None):
        study = _load_manifest(manifest, study_id)
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise InputError(
                f"Folder '{path}' is empty: point to a folder holding DICOM files, NIfTI/NRRD images or a study.json."
            )
        study = _load_files(files, path, study_id or path.resolve().name)
    apply_phase_overrides(study, phase_overrides or {})
    log.info("Loaded study %s: %s", study.study_id, ", ".join(f"{s.name}={s.phase.value}" for s in study))
    return study


def _stem(path: Path) -> str:
    name = path.name
    for suffix in IMAGE_SUFFIXES + (".dcm",):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _override_keys(series: Series) -> set[str]:
    """Names a phase override may use for a series: its name, UIDs, description, file name."""
    keys = {series.name, series.meta.get("series_uid"), series.meta.get("series_label"),
            series.meta.get("series_description")}
    if file := series.meta.get("file"):
        keys |= {file, Path(file).name, _stem(Path(file))}
    return {str(k) for k in keys if k}


def apply_phase_overrides(study: Study, overrides: dict) -> None:
    """Set the phase of the series each key names (name, SeriesInstanceUID, file); confidence 1.0."""
    for key, value in overrides.items():
        phase = Phase.parse(value)
        matches = [s for s in study if str(key) in _override_keys(s)]
        if not matches:
            raise InputError(
                f"Phase override for '{key}' matches no series of study '{study.study_id}': "
                f"use one of the series names {sorted(study.series)} (or a SeriesInstanceUID / file name)."
            )
        for s in matches:
            s.phase, s.modality = phase, phase.modality
            s.meta.update(phase_confidence=1.0, phase_reason="override")
    if overrides:
        _name_by_phase(study)


def _read_manifest(manifest: Path) -> dict:
    try:
        text = manifest.read_text(encoding="utf-8")
        if manifest.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"Cannot parse study manifest '{manifest}' ({exc}): fix the JSON/YAML syntax.") from None
    except Exception as exc:  # yaml.YAMLError is not a ValueError
        raise InputError(f"Cannot parse study manifest '{manifest}' ({exc}): fix the YAML syntax.") from None
    if not isinstance(data, dict) or not isinstance(data.get("series"), list) or not data["series"]:
        raise InputError(
            f"Study manifest '{manifest}' needs a non-empty \"series\" list, e.g. "
            '{"study_id": "S1", "series": [{"name": "PVP", "phase": "PVP", "file": "PVP.nii.gz"}]}.'
        )
    return data


def _load_manifest(manifest: Path, study_id: str | None) -> Study:
    data = _read_manifest(manifest)
    folder = manifest.parent
    try:
        clinical = Clinical.from_dict(data.get("clinical"))
    except (InputError, TypeError) as exc:
        raise InputError(f"Study manifest '{manifest}', \"clinical\": {exc}") from None
    study = Study(str(study_id or data.get("study_id") or folder.resolve().name), clinical=clinical,
                  meta={k: v for k, v in (data.get("meta") or {}).items()})
    for i, entry in enumerate(data["series"]):
        if not isinstance(entry, dict) or not entry.get("file"):
            raise InputError(f"Study manifest '{manifest}': series #{i + 1} needs a \"file\" entry.")
        file = folder / entry["file"]
        name = str(entry.get("name") or _stem(file))
        image = _read_volume(file)
        meta = dict(entry.get("meta") or {})
        meta.update(file=str(entry["file"]), source=str(file))
        if entry.get("phase"):
            phase = Phase.parse(entry["phase"])
            meta.setdefault("phase_confidence", 1.0)
            meta.setdefault("phase_reason", "manifest")
        else:
            phase, conf, reason = phase_from_name(name) or guess_from_intensity(image, name)
            meta.update(phase_confidence=conf, phase_reason=reason)
        try:
            series = study.add(Series(name, phase, image, modality=entry.get("modality"), meta=meta))
        except ValueError as exc:
            raise InputError(f"Study manifest '{manifest}', series '{name}': {exc}") from None
        for key, mask_file in (entry.get("masks") or {}).items():
            _attach_mask(series, str(key), folder / mask_file)
    return study


def _read_volume(file: Path) -> sitk.Image:
    if file.is_dir():
        raise InputError(f"'{file}' is a folder: a manifest entry names one NIfTI/NRRD file (load a DICOM folder "
                         "directly with load_study, or save it as NIfTI with save_study first).")
    image = read_image(file)
    if image.GetDimension() != 3 or image.GetSize()[2] < 2:
        raise GeometryError(
            f"Image '{file}' is {'a single slice' if image.GetDimension() == 3 else f'{image.GetDimension()}D'} "
            f"(size {image.GetSize()}): HCCFusion needs a 3D volume; export the whole series as one 3D file."
        )
    return image


def _attach_mask(series: Series, key: str, file: Path) -> None:
    mask = read_image(file)
    try:
        check_same_grid(series.image, mask, f"mask '{key}' ({file}) of series '{series.name}'")
    except GeometryError as exc:
        raise GeometryError(f"Mask file '{file}': {exc}") from None
    series.masks[key] = mask
    series.meta.setdefault("mask_files", {})[key] = str(file)


def _is_image_file(path: Path) -> bool:
    return path.name.lower().endswith(IMAGE_SUFFIXES)


def _is_mask_name(stem: str) -> bool:
    return bool(MASK_WORDS & set(re.split(r"[_\-. ]+", stem.lower())))


def _load_files(files: list[Path], where: Path, study_id: str) -> Study:
    """A study from image files: DICOM (grouped into series) and NIfTI/NRRD volumes and masks."""
    image_files = [p for p in files if _is_image_file(p)]
    headers, rejected = _scan_dicom([p for p in files if not _is_image_file(p)])
    if not image_files and not headers:
        others = f" and {len(rejected) - 1} other file(s) are" if len(rejected) > 1 else " is"
        raise InputError(
            f"'{where}' holds no DICOM, NIfTI or NRRD image ('{rejected[0].name}'{others} not an image): "
            "point to the study's image folder or file."
        )
    if rejected:
        log.warning("Ignored %d file(s) in the study folder that are not images", len(rejected))
    study = Study(study_id)
    if headers:
        _add_dicom_series(study, headers)
    _add_image_files(study, image_files)
    if not len(study):
        raise InputError(f"'{where}' holds no 3D image series (skipped: {'; '.join(study.meta.get('skipped', []))}).")
    return study


def _add_image_files(study: Study, files: list[Path]) -> None:
    """NIfTI/NRRD files: volumes become series (phase from the name), *_mask/*_seg/*labels* files masks."""
    volumes = [p for p in files if not _is_mask_name(_stem(p))]
    masks = [p for p in files if _is_mask_name(_stem(p))]
    if masks and not volumes and not len(study):
        raise InputError(f"'{masks[0]}' is a mask/label file and the folder holds no image for it: add the image.")
    for file in volumes:
        image = _read_volume(file)
        name = _unique(study, _stem(file))
        phase, conf, reason = phase_from_name(name) or guess_from_intensity(image, name)
        study.add(Series(name, phase, image, meta={"phase_confidence": conf, "phase_reason": reason,
                                                   "file": file.name, "source": str(file)}))
    for file in masks:
        stem = _stem(file)
        owner = max((s for s in study if stem.lower().startswith(s.name.lower() + "_")), key=lambda s: len(s.name),
                    default=None)
        key = stem[len(owner.name) + 1:] if owner else stem
        base = re.split(r"[_\-. ]+(?=[^_\-. ]+$)", stem)[0].lower()  # "CT_mask" -> "CT" pairs with "CT_image"
        paired = [s for s in study if s.name.lower().startswith(base + "_")]
        if owner is None and base != stem.lower() and len(paired) == 1:
            owner, key = paired[0], stem[len(base) + 1:]
        if owner is None:
            mask = read_image(file)
            fitting = [s for s in study if same_grid(s.image, mask)]
            if len(fitting) != 1:
                raise GeometryError(
                    f"Mask file '{file}' fits {'no' if not fitting else 'more than one'} series grid of the folder "
                    f"({', '.join(s.name for s in fitting or study)}): name it '<series>_{stem}' after its image "
                    "or resample it onto its image."
                )
            owner = fitting[0]
        _attach_mask(owner, key, file)


def _unique(study: Study, name: str) -> str:
    return _unique_key(study.series, name)


# ---------------------------------------------------------------- DICOM folders
def _scan_dicom(files: list[Path]):
    """Read the headers (no pixels) of the DICOM files among `files`; return (headers, non-DICOM files)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    headers, rejected = [], []
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
                if "SOPClassUID" not in ds or "Modality" not in ds:
                    raise InvalidDicomError("no SOP class")
            except Exception:  # anything pydicom cannot parse as a forced dataset is not DICOM
                rejected.append(path)
                continue
        except Exception as exc:
            raise InputError(f"DICOM file '{path}' cannot be read ({exc}): it is truncated or damaged; re-export it.") from None
        if ds.get("file_meta", {}).get("MediaStorageSOPClassUID") == MEDIA_DIRECTORY:  # DICOMDIR: an index, no image
            rejected.append(path)
            continue
        headers.append((path, ds))
    return headers, rejected


def _series_key(path: Path, ds) -> str:
    uid = str(ds.get("SeriesInstanceUID") or "").strip()
    if uid:
        return uid
    # anonymised files without UID: one series per folder, modality and series number
    return f"{path.parent}|{ds.get('Modality', '')}|{ds.get('SeriesNumber', '')}|{ds.get('StudyInstanceUID', '')}"


def _add_dicom_series(study: Study, headers) -> None:
    groups: dict[str, list] = {}
    for path, ds in headers:
        groups.setdefault(_series_key(path, ds), []).append((path, ds))
    skipped, untimed, segs = [], [], []

    def order(members):
        number = members[0][1].get("SeriesNumber")
        return (int(number) if number not in (None, "") else 1 << 30, acquisition_seconds([m[1] for m in members]) or 0)

    for members in sorted(groups.values(), key=order):
        ds = members[0][1]
        modality = str(ds.get("Modality") or "").upper()
        image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
        label = _series_label(ds)
        if modality == "SEG":
            segs += members
            continue
        if modality in NON_IMAGE_MODALITIES or ds.get("SOPClassUID") == SECONDARY_CAPTURE or "LOCALIZER" in image_type:
            skipped.append(f"{label} ({modality or 'no modality'}{', localizer' if 'LOCALIZER' in image_type else ''})")
            continue
        for sub_members, suffix in _split_by_b_value(members):
            try:
                image, files = _read_dicom_series(sub_members, label)
            except GeometryError as exc:
                if len(sub_members) == 1 and (len(groups) > 1 or len(headers) > 1):
                    skipped.append(f"{label} (single slice)")
                    continue
                raise exc from None
            datasets = [m[1] for m in sub_members]
            phase, conf, reason = detect_phase(datasets)
            name = _unique(study, _safe_name(label) + suffix)
            meta = {
                "named_by_phase": True, "series_label": name,
                "phase_confidence": conf, "phase_reason": reason, "series_uid": str(ds.get("SeriesInstanceUID") or ""),
                "study_uid": str(ds.get("StudyInstanceUID") or ""),
                "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID") or ""),
                "series_description": str(ds.get("SeriesDescription") or ""),
                "series_number": int(ds.get("SeriesNumber")) if ds.get("SeriesNumber") not in (None, "") else None,
                "source": str(Path(os.path.commonpath([str(f) for f in files]))), "files": [str(f) for f in files],
                "acquisition_seconds": acquisition_seconds(datasets),
            }
            series = study.add(Series(name, phase, image, modality=_modality(modality), meta=meta))
            if reason.endswith(UNTIMED_CONTRAST):
                untimed.append(series)
    order_contrast_series(untimed)
    refine_with_image([s for s in study if s.modality is Modality.CT])
    _name_by_phase(study)
    for path, ds in segs:
        _attach_dicom_seg(study, path, ds, skipped)
    if skipped:
        study.meta["skipped"] = skipped
        log.info("Skipped %d DICOM series/objects that are not 3D image volumes", len(skipped))


def _attach_dicom_seg(study: Study, path: Path, ds, skipped: list[str]) -> None:
    """Attach a DICOM SEG to the loaded series it references, as its "labels" mask (LABELS values)."""
    referenced = {str(item.SeriesInstanceUID) for item in ds.get("ReferencedSeriesSequence") or []}
    target = next((s for s in study if s.meta.get("series_uid") in referenced), None)
    label = f"{_series_label(ds)} (SEG)"
    if target is None:
        skipped.append(f"{label}: the series it segments is not in the folder")
        return
    if importlib.util.find_spec("highdicom") is None:
        skipped.append(f"{label}: install hccfusion[dicom] to read DICOM SEG")
        return
    from .dicom import read_seg

    labels, _ = read_seg(path, reference=target.image)
    key = _unique_key(target.masks, "labels")
    target.masks[key] = labels
    target.meta.setdefault("mask_files", {})[key] = str(path)


def _unique_key(taken, name: str) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}_{n}", n + 1
    return candidate


def _name_by_phase(study: Study) -> None:
    """Name DICOM series by their phase code ("PVP"), numbered ("PVP_2") when a phase occurs twice."""
    auto = [s for s in study if s.meta.get("named_by_phase")]
    taken = {s.name for s in study if not s.meta.get("named_by_phase")}
    total = {p: sum(s.phase is p for s in auto) for p in {s.phase for s in auto}}
    seen: dict[Phase, int] = {}
    for s in auto:
        seen[s.phase] = seen.get(s.phase, 0) + 1
        name = s.phase.value if total[s.phase] == 1 else f"{s.phase.value}_{seen[s.phase]}"
        while name in taken:
            name += "_dicom"
        taken.add(name)
        s.name = name
    study.series = {s.name: s for s in study.series.values()}


def _modality(code: str) -> str | None:
    return code if code in {m.value for m in Modality} else None


def _series_label(ds) -> str:
    text = str(ds.get("SeriesDescription") or "").strip()
    if text:
        return text
    number = ds.get("SeriesNumber")
    return f"{ds.get('Modality', 'series')}_{number}" if number not in (None, "") else str(ds.get("Modality") or "series")


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "series"


def _split_by_b_value(members):
    """A DWI series holds one volume per b-value: split it; any other series stays whole."""
    values = {b_value(ds) for _, ds in members}
    if len(values) <= 1:
        return [(members, "")]
    return [([m for m in members if b_value(m[1]) == b], f"_b{int(b or 0)}") for b in sorted(values, key=lambda v: v or 0)]


def _read_dicom_series(members, label: str) -> tuple[sitk.Image, list[Path]]:
    """Check one series' geometry (orientation, pixel grid, slice spacing), then read it with SimpleITK."""
    first_path, first = members[0]
    if len(members) == 1 and int(first.get("NumberOfFrames") or 1) > 1:
        image = _sitk_read(lambda: sitk.ReadImage(str(first_path)), label, first_path)
        return image, [first_path]
    if len(members) < 2:
        raise GeometryError(
            f"DICOM series '{label}' ('{first_path}') has a single 2D slice: HCCFusion needs a 3D series; "
            "export all slices of the series into the folder."
        )
    ref = _grid_of(first_path, first, label)
    for path, ds in members[1:]:
        grid = _grid_of(path, ds, label)
        for what, a, b in (("orientation", ref[0], grid[0]), ("pixel spacing", ref[1], grid[1]),
                           ("image size", ref[2], grid[2])):
            if not np.allclose(a, b, atol=1e-4):
                raise GeometryError(
                    f"DICOM series '{label}' mixes slices of different {what}: '{first_path.name}' has "
                    f"{np.round(a, 4).tolist()}, '{path}' has {np.round(b, 4).tolist()}. The folder holds two "
                    "series under one SeriesInstanceUID: separate them (or remove the odd files)."
                )
    normal = np.cross(ref[0][:3], ref[0][3:])
    ordered = sorted(members, key=lambda m: float(np.dot(normal, [float(v) for v in m[1].ImagePositionPatient])))
    positions = np.array([np.dot(normal, [float(v) for v in ds.ImagePositionPatient]) for _, ds in ordered])
    steps = np.diff(positions)
    step = float(np.median(steps))
    if step < 1e-3:
        dup = [ordered[i][0].name for i in np.flatnonzero(steps < 1e-3)[:2]]
        raise GeometryError(
            f"DICOM series '{label}' has several images at the same slice position (e.g. '{dup[0]}'): it holds "
            "repeated acquisitions (echoes/time points); export one volume per series."
        )
    bad = np.flatnonzero(np.abs(steps - step) > max(0.01 * step, 1e-3))
    if bad.size:
        i = int(bad[0])
        raise GeometryError(
            f"DICOM series '{label}' has non-uniform slice spacing: {steps[i]:.3g} mm between "
            f"'{ordered[i][0].name}' and '{ordered[i + 1][0].name}' instead of {step:.3g} mm (slices missing?). "
            "Re-export the complete series."
        )
    files = [m[0] for m in ordered]

    def read():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames([str(f) for f in files])
        return reader.Execute()

    image = _sitk_read(read, label, first_path)
    return image, files


def _grid_of(path: Path, ds, label: str):
    try:
        return (np.array([float(v) for v in ds.ImageOrientationPatient]), np.array([float(v) for v in ds.PixelSpacing]),
                np.array([int(ds.Rows), int(ds.Columns)]), np.array([float(v) for v in ds.ImagePositionPatient]))
    except (AttributeError, TypeError, ValueError):
        raise InputError(
            f"DICOM file '{path}' of series '{label}' lacks image geometry (ImagePositionPatient/"
            "ImageOrientationPatient/PixelSpacing): it is not a cross-sectional image; remove it from the folder."
        ) from None


def _sitk_read(read, label: str, path: Path) -> sitk.Image:
    try:
        return read()
    except RuntimeError as exc:
        raise InputError(
            f"Cannot read the pixels of DICOM series '{label}' (first file '{path}'): "
            f"{str(exc).strip().splitlines()[-1][:200]}. A file is truncated or damaged; re-export the series."
        ) from None


# ---------------------------------------------------------------- saving
def _file_safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "series"


def save_study(study: Study, folder: "str | Path", overwrite: bool = False) -> Path:
    """Write every series (and mask) as NIfTI plus a `study.json` manifest, atomically.

    A new folder is built as a temporary sibling and renamed into place. Into an existing folder
    (e.g. one that also holds transforms) the files are staged first and the manifest is moved in
    last, so a half-written study is never readable; an existing study there needs `overwrite=True`.
    """
    folder = Path(folder)
    if (folder / "study.json").exists() and not overwrite:
        raise InputError(f"'{folder}' already holds a study: choose another folder or pass overwrite=True.")
    if folder.exists() and not folder.is_dir():
        raise InputError(f"'{folder}' is a file: give a folder to save the study into.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_folder(folder)
    try:
        _write_study_files(study, staging)
        if not folder.exists():
            os.replace(staging, folder)
            return folder
        with contextlib.suppress(FileNotFoundError):
            (folder / "study.json").unlink()
        for item in sorted(staging.iterdir(), key=lambda p: p.name == "study.json"):
            os.replace(item, folder / item.name)
        staging.rmdir()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def _write_study_files(study: Study, folder: Path) -> None:
    used: set[str] = set()

    def file_name(stem: str) -> str:
        name, n = f"{_file_safe(stem)}.nii.gz", 2
        while name.lower() in used:
            name, n = f"{_file_safe(stem)}_{n}.nii.gz", n + 1
        used.add(name.lower())
        return name

    entries = []
    for s in study:
        entry = {"name": s.name, "phase": s.phase.value, "modality": s.modality.value, "file": file_name(s.name)}
        sitk.WriteImage(s.image, str(folder / entry["file"]), True)
        if s.masks:
            entry["masks"] = {}
            for key, mask in s.masks.items():
                entry["masks"][key] = file_name(f"{s.name}_{key}")
                sitk.WriteImage(mask, str(folder / entry["masks"][key]), True)
        entry["meta"] = _json_meta(s.meta)
        entries.append(entry)
    manifest = {"study_id": study.study_id, "series": entries,
                "clinical": {k: v for k, v in study.clinical.to_dict().items() if v is not None}}
    if study.meta:
        manifest["meta"] = _json_meta(study.meta)
    (folder / "study.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _json_meta(meta: dict) -> dict:
    """The JSON-safe provenance of a series (its own file names and non-serialisable values dropped).

    The source DICOM "files" are kept: `dicom.source_series_files` reuses them when they still match.
    """
    out = {}
    for key, value in meta.items():
        if key in ("file", "mask_files", "named_by_phase"):
            continue
        try:
            json.dumps(value)
        except TypeError:
            continue
        out[key] = value
    return out
