"""Images in and files out: NIfTI/NRRD/DICOM loading, phase detection, study manifests, atomic writes.

`load_study(path)` accepts a study folder with a `study.json`/`study.yaml` manifest, a DICOM folder (any
depth; series grouped by SeriesInstanceUID, geometry checked, phase from the tags by `phases`, weak CT tags
settled by the image, `phase_image`) or
a plain folder of NIfTI/NRRD files (phase from the file name). `save_study` writes NIfTI files plus a
manifest atomically. (DICOM out: `dicom.write_dicom_series`, SEG and SR.)
DICOM folders are read by `dicom.read` (import direction: io → dicom → files; dicom never imports io);
atomic writes live in `files` and are re-exported here.
Logs never carry patient identifiers: a study is named by its folder (or the manifest's study_id).
"""
from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import re
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .checks import (check_image_values, check_label_map, check_no_duplicate_phases, check_size,
                     resolve_duplicate_phases)
from .dicom.read import add_dicom_series, name_by_phase, scan_dicom, unique_key
from .errors import GeometryError, InputError
from .files import atomic_write, staging_folder
from .phases import detect_phase, guess_from_intensity, phase_from_name
from .study import Clinical, Phase, Series, Study, check_same_grid, same_grid

__all__ = ["save_image", "read_image", "load_study", "save_study",
           "detect_phase"]

log = logging.getLogger(__name__)

MANIFEST_NAMES = ("study.json", "study.yaml", "study.yml")
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
MASK_WORDS = {"mask", "masks", "seg", "segmentation", "label", "labels", "labelmap"}



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
        header = sitk.ImageFileReader()
        header.SetFileName(str(path))
        header.ReadImageInformation()
        check_size(path, header.GetSize(), 4 * header.GetNumberOfComponents())
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
    dropped = resolve_duplicate_phases(study)
    if dropped:
        for warning in dropped:
            log.warning("%s", warning)
        study.meta.setdefault("skipped", []).extend(dropped)
        name_by_phase(study)
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
        name_by_phase(study)


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
    except (InputError, TypeError, ValueError, AttributeError) as exc:
        raise InputError(f"Study manifest '{manifest}', \"clinical\": {exc}") from None
    _check_manifest_types(manifest, data)
    study = Study(str(study_id or data.get("study_id") or folder.resolve().name), clinical=clinical,
                  meta={k: v for k, v in (data.get("meta") or {}).items()})
    for i, entry in enumerate(data["series"]):
        if not isinstance(entry, dict) or not entry.get("file"):
            raise InputError(f"Study manifest '{manifest}': series #{i + 1} needs a \"file\" entry: add the image "
                             "file name.")
        file = folder / entry["file"]
        name = str(entry.get("name") or _stem(file))
        image = _read_volume(file, entry.get("modality"))
        meta = dict(entry.get("meta") or {})
        meta.update(file=str(entry["file"]), source=str(file))
        if entry.get("phase"):
            try:
                phase = Phase.parse(entry["phase"])
            except InputError as exc:
                raise InputError(f"Study manifest '{manifest}', series '{name}': {exc}") from None
            meta.setdefault("phase_confidence", 1.0)
            meta.setdefault("phase_reason", "manifest")
        else:
            phase, conf, reason = phase_from_name(name) or guess_from_intensity(image, name)
            meta.update(phase_confidence=conf, phase_reason=reason)
        try:
            series = study.add(Series(name, phase, image, modality=entry.get("modality"), meta=meta))
        except (ValueError, InputError) as exc:
            raise InputError(f"Study manifest '{manifest}', series '{name}': {exc} Give each series its own "
                             "name.") from None
        for key, mask_file in (entry.get("masks") or {}).items():
            _attach_mask(series, str(key), folder / mask_file)
    check_no_duplicate_phases([(s.name, s.phase.value) for s in study if s.meta.get("phase_reason") == "manifest"],
                              manifest)
    return study


def _check_manifest_types(manifest: Path, data: dict) -> None:
    """Refuse entries of the wrong JSON type before they are used (e.g. "meta": 3, "file": [..])."""
    wrong = [f'"meta" must be an object' for _ in [0] if not isinstance(data.get("meta") or {}, dict)]
    for i, entry in enumerate(data["series"]):
        if not isinstance(entry, dict):
            continue
        wrong += [f'series #{i + 1} "{k}" must be {t}' for k, t, ok in (
            ("file", "a file name", isinstance(entry.get("file"), (str, type(None)))),
            ("name", "text", isinstance(entry.get("name"), (str, type(None), int))),
            ("phase", "a phase name", isinstance(entry.get("phase"), (str, type(None)))),
            ("modality", "CT, MR or PT", isinstance(entry.get("modality"), (str, type(None)))),
            ("meta", "an object", isinstance(entry.get("meta") or {}, dict)),
            ("masks", "an object of key: file name", isinstance(entry.get("masks") or {}, dict) and all(
                isinstance(v, str) for v in (entry.get("masks") or {}).values()))) if not ok]
    if wrong:
        raise InputError(f"Study manifest '{manifest}': {'; '.join(wrong)}: fix these entries.")


def _read_volume(file: Path, modality: str | None = None) -> sitk.Image:
    if file.is_dir():
        raise InputError(f"'{file}' is a folder: point the manifest entry to one NIfTI/NRRD file (load a DICOM folder "
                         "directly with load_study, or save it as NIfTI with save_study first).")
    image = read_image(file)
    if image.GetDimension() != 3 or image.GetSize()[2] < 2:
        raise GeometryError(
            f"Image '{file}' is {'a single slice' if image.GetDimension() == 3 else f'{image.GetDimension()}D'} "
            f"(size {image.GetSize()}): HCCFusion needs a 3D volume; export the whole series as one 3D file."
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"Image '{file}' has {image.GetNumberOfComponentsPerPixel()} values per voxel (colour or "
                         "vector): HCCFusion needs a scalar (grey-value) volume; export the original series.")
    check_image_values(image, file, modality)
    return image


def _attach_mask(series: Series, key: str, file: Path) -> None:
    mask = read_image(file)
    check_label_map(mask, file, key)
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
    headers, rejected = scan_dicom([p for p in files if not _is_image_file(p)])
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
        add_dicom_series(study, headers)
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
    return unique_key(study.series, name)


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
    staging = staging_folder(folder)
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
