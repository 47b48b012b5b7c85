"""DICOM folders in: scan headers, group files into series, check geometry, read pixels, attach DICOM SEG."""
from __future__ import annotations

import importlib.util
import logging
import os
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import GeometryError, InputError
from ..phases import (UNTIMED_CONTRAST, acquisition_seconds, b_value, detect_phase, order_contrast_series,
                      refine_with_image)
from ..pet import scale, suv_factors
from ..study import Modality, Phase, Series, Study
from .seg import read_seg

log = logging.getLogger(__name__)

NON_IMAGE_MODALITIES = {"SEG", "SR", "KO", "PR", "RTSTRUCT", "RTPLAN", "RTDOSE", "REG", "DOC", "OT", "SC"}
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
MEDIA_DIRECTORY = "1.2.840.10008.1.3.10"

def scan_dicom(files: list[Path]):
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


def add_dicom_series(study: Study, headers) -> None:
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
        label = series_label(ds)
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
            pet = {}
            if modality == "PT":  # stored activity -> SUVbw, so a PET series is SUV everywhere downstream
                factors = suv_factors(datasets)
                image = scale(image, factors.bw)
                pet = {"units": "SUVbw (g/mL)", "suv": asdict(factors)}
            phase, conf, reason = detect_phase(datasets)
            name = unique_key(study.series, safe_name(label) + suffix)
            meta = {
                "named_by_phase": True, "series_label": name,
                "phase_confidence": conf, "phase_reason": reason, "series_uid": str(ds.get("SeriesInstanceUID") or ""),
                "study_uid": str(ds.get("StudyInstanceUID") or ""),
                "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID") or ""),
                "series_description": str(ds.get("SeriesDescription") or ""),
                "contrast_agent": str(ds.get("ContrastBolusAgent") or ""),
                "series_number": int(ds.get("SeriesNumber")) if ds.get("SeriesNumber") not in (None, "") else None,
                "source": str(Path(os.path.commonpath([str(f) for f in files]))), "files": [str(f) for f in files],
                "acquisition_seconds": acquisition_seconds(datasets), **pet,
            }
            series = study.add(Series(name, phase, image, modality=_modality(modality), meta=meta))
            if reason.endswith(UNTIMED_CONTRAST):
                untimed.append(series)
    order_contrast_series(untimed)
    refine_with_image([s for s in study if s.modality is Modality.CT])
    name_by_phase(study)
    for path, ds in segs:
        _attach_dicom_seg(study, path, ds, skipped)
    if skipped:
        study.meta["skipped"] = skipped
        log.info("Skipped %d DICOM series/objects that are not 3D image volumes", len(skipped))


def _attach_dicom_seg(study: Study, path: Path, ds, skipped: list[str]) -> None:
    """Attach a DICOM SEG to the loaded series it references, as its "labels" mask (LABELS values)."""
    referenced = {str(item.SeriesInstanceUID) for item in ds.get("ReferencedSeriesSequence") or []}
    target = next((s for s in study if s.meta.get("series_uid") in referenced), None)
    label = f"{series_label(ds)} (SEG)"
    if target is None:
        skipped.append(f"{label}: the series it segments is not in the folder")
        return
    if importlib.util.find_spec("highdicom") is None:
        skipped.append(f"{label}: install hccfusion[dicom] to read DICOM SEG")
        return

    labels, _ = read_seg(path, reference=target.image)
    key = unique_key(target.masks, "labels")
    target.masks[key] = labels
    target.meta.setdefault("mask_files", {})[key] = str(path)


def unique_key(taken, name: str) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}_{n}", n + 1
    return candidate


def name_by_phase(study: Study) -> None:
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


def series_label(ds) -> str:
    text = str(ds.get("SeriesDescription") or "").strip()
    if text:
        return text
    number = ds.get("SeriesNumber")
    return f"{ds.get('Modality', 'series')}_{number}" if number not in (None, "") else str(ds.get("Modality") or "series")


def safe_name(text: str) -> str:
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
    if abs(float(np.dot(ref[0][:3], ref[0][3:]))) > 1e-3:
        raise GeometryError(
            f"DICOM series '{label}' ('{first_path}') has row and column directions that are not perpendicular "
            f"(ImageOrientationPatient {np.round(ref[0], 4).tolist()}): the header is damaged; re-export the series."
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
    shift = np.array([float(v) for v in ordered[-1][1].ImagePositionPatient]) - \
        np.array([float(v) for v in ordered[0][1].ImagePositionPatient])
    tilt = float(np.degrees(np.arccos(min(1.0, abs(np.dot(shift, normal)) / max(np.linalg.norm(shift), 1e-9)))))
    if tilt > 0.5:
        raise GeometryError(
            f"DICOM series '{label}' ('{first_path}') is acquired with a gantry tilt of {tilt:.1f} degrees (slices "
            "are sheared, not stacked): resample it onto an untilted grid (e.g. export with tilt correction) first."
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


