"""DICOM out and back in: image series, SEG of a label map and a TID 1500 measurement SR.

`write_dicom_series` writes a 3D image as a CT/MR series (pydicom) whose tags `phases.detect_phase` reads
back. SEG and SR are built with highdicom:
`write_seg` stores a label map (values per `study.LABELS`, optionally one segment per lesion) as a DICOM
Segmentation that references the source CT/MR series; `write_sr` stores per-lesion measurements (volume,
longest diameter), LI-RADS category and features and prediction probabilities as a Comprehensive 3D SR
(TID 1500) whose measurement groups reference the SEG's segments. `read_seg` and `read_sr` read both back.
`source_series_files` gives the DICOM files of a series, writing the series as DICOM first when it was
loaded from NIfTI. Codes: SNOMED CT for anatomy and findings; LI-RADS terms and prediction names, which
have no standard code, use the private coding scheme "99HCCF".
"""
from __future__ import annotations

import datetime
import logging
import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import SimpleITK as sitk

from . import __version__
from .errors import GeometryError, InputError, require
from .io import atomic_folder, atomic_write
from .study import LABELS, Phase, Series, Study, check_same_grid, same_grid

log = logging.getLogger(__name__)

SCHEME = "99HCCF"
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
#: LI-RADS features written as qualitative evaluations (column name -> meaning).
FEATURES = {
    "aphe": "Nonrim arterial phase hyperenhancement",
    "washout": "Nonperipheral washout",
    "capsule": "Enhancing capsule",
    "threshold_growth": "Threshold growth",
}
LIRADS_MEANING = "LI-RADS v2018 category"
LIRADS_CATEGORIES = ("LR-1", "LR-2", "LR-3", "LR-4", "LR-5", "LR-M", "LR-TIV", "LR-NC")


def _codes():
    from pydicom.sr.codedict import codes

    return codes


def _structures():
    """LABELS name -> (segment label, category code, type code)."""
    codes = _codes()
    anatomy = codes.SCT.AnatomicalStructure
    return {
        "liver": ("Liver", anatomy, codes.SCT.Liver),
        "tumour": ("Tumour", codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm),
        "spleen": ("Spleen", anatomy, codes.SCT.Spleen),
        "portal_vein": ("Portal vein", anatomy, codes.SCT.PortalVein),
    }


def _local(value: str, meaning: str):
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value[:16], scheme_designator=SCHEME, meaning=meaning[:64])


# ---------------------------------------------------------------- source series
def source_series_files(series: Series, folder: "str | Path", *, study_id: str, study_uid: str | None = None,
                        patient_id: str = "ANON", series_number: int = 1) -> list[Path]:
    """The DICOM files of `series` in slice order: the ones it was loaded from (if they still exist and match
    its grid, e.g. the reference series of a registered study), or new ones written into `folder`.

    After writing, `series.meta` records the new files and UIDs, so SEG and SR reference that DICOM series.
    """
    files = [Path(f) for f in series.meta.get("files") or []]
    if files and all(f.is_file() for f in files) and same_grid(_source_image(_read_headers(files)), series.image):
        return files
    files = write_dicom_series(series.image, folder, phase=series.phase, study_id=study_id, study_uid=study_uid,
                               patient_id=patient_id, modality=series.modality.value, series_number=series_number)
    import pydicom

    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    series.meta.update(files=[str(f) for f in files], series_uid=str(first.SeriesInstanceUID),
                       study_uid=str(first.StudyInstanceUID), frame_of_reference_uid=str(first.FrameOfReferenceUID))
    return files


def _read_headers(files: Sequence["str | Path"]):
    import pydicom

    if not files:
        raise InputError("No source DICOM files given: the SEG must reference the series it segments.")
    datasets = [pydicom.dcmread(str(f), stop_before_pixels=True) for f in files]
    for ds in datasets:  # an empty SpecificCharacterSet means the default repertoire; highdicom rejects ''
        if "SpecificCharacterSet" in ds and not ds.SpecificCharacterSet:
            del ds.SpecificCharacterSet
        for key in ("SOPClassUID", "SOPInstanceUID"):  # anonymisers may blank them; the file meta keeps them
            if not str(ds.get(key) or "").strip() and str(ds.file_meta.get(f"MediaStorage{key}") or "").strip():
                setattr(ds, key, ds.file_meta.get(f"MediaStorage{key}"))
    return datasets


def _source_image(datasets) -> sitk.Image:
    """Empty image with the grid of the (slice-ordered) source datasets, for geometry checks."""
    first, last = datasets[0], datasets[-1]
    row, col = np.array(first.ImageOrientationPatient[:3], float), np.array(first.ImageOrientationPatient[3:], float)
    normal = np.cross(row, col)
    p0, p1 = np.array(first.ImagePositionPatient, float), np.array(last.ImagePositionPatient, float)
    n = len(datasets)
    step = float(np.dot(p1 - p0, normal)) / (n - 1) if n > 1 else float(first.get("SliceThickness") or 1.0)
    image = sitk.Image(int(first.Columns), int(first.Rows), n, sitk.sitkUInt8)
    image.SetOrigin(p0.tolist())
    image.SetSpacing((float(first.PixelSpacing[1]), float(first.PixelSpacing[0]), abs(step)))
    z = normal if step >= 0 else -normal
    image.SetDirection(np.column_stack([row, col, z]).ravel().tolist())
    return image


# ---------------------------------------------------------------- SEG
def write_seg(labels: sitk.Image, source_files: Sequence["str | Path"], path: "str | Path", *,
              lesion_labels: sitk.Image | None = None, series_number: int = 100,
              description: str = "HCCFusion segmentation") -> Path:
    """Write `labels` (values per LABELS) as a DICOM SEG referencing the series in `source_files`.

    `source_files` are the series' files in slice order (`Series.meta["files"]` or `source_series_files`);
    `labels` must lie on that series' grid. With `lesion_labels` (instance map 1..n on the same grid) each
    lesion becomes its own "Lesion <n>" segment (SNOMED Neoplasm); otherwise all tumour voxels form one
    "Tumour" segment. Empty structures are left out. Returns `path`, written atomically.
    """
    hd = require("highdicom", "dicom")
    codes = _codes()
    datasets = _read_headers(source_files)
    grid = _source_image(datasets)
    check_same_grid(grid, labels, f"label map for the SEG of series '{datasets[0].get('SeriesDescription', '')}'")
    array = sitk.GetArrayFromImage(labels).astype(np.int64)
    unknown = sorted(set(np.unique(array).tolist()) - set(LABELS.values()))
    if unknown:
        raise InputError(f"Label map holds values {unknown} that are not in LABELS {LABELS}: relabel it first.")
    lesions = None
    if lesion_labels is not None:
        check_same_grid(grid, lesion_labels, "lesion instance map for the SEG")
        lesions = sitk.GetArrayFromImage(lesion_labels).astype(np.int64)
    structures = _structures()
    masks, descriptions = [], []

    def add(mask, label, category, kind, tracking_id):
        number = len(masks) + 1
        masks.append(mask)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=label, segmented_property_category=category,
            segmented_property_type=kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name="HCCFusion", version=__version__, family=codes.cid7162.ArtificialIntelligence),
            tracking_uid=hd.UID(), tracking_id=tracking_id))

    for name, value in LABELS.items():
        if name == "background" or not (array == value).any():
            continue
        label, category, kind = structures[name]
        if name == "tumour" and lesions is not None:
            for index in sorted(set(np.unique(lesions[lesions > 0]).tolist())):
                add(lesions == index, f"Lesion {index}", category, kind, f"Lesion {index}")
        else:
            add(array == value, label, category, kind, label)
    if not masks:
        raise InputError("The label map is empty: there is nothing to store in a DICOM SEG.")
    stacked = np.stack(masks, axis=-1).astype(np.uint8)  # (slices, rows, columns, segments)
    seg = hd.seg.Segmentation(
        source_images=datasets, pixel_array=stacked, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=series_number,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="HCCFusion",
        manufacturer_model_name="HCCFusionLib", software_versions=__version__, device_serial_number="0",
        series_description=description[:64], content_label="HCCFUSION", content_description=description[:64],
    )
    path = Path(path)
    with atomic_write(path) as tmp:
        seg.save_as(tmp)
    log.info("Wrote DICOM SEG with %d segment(s)", len(descriptions))
    return path


def read_seg(path: "str | Path", reference: sitk.Image | None = None) -> tuple[sitk.Image, pd.DataFrame]:
    """Read a DICOM SEG as a label map in LABELS values, plus a table describing its segments.

    Segments are mapped by their SNOMED property type (liver, neoplasm → tumour, spleen, portal vein);
    others are reported with label_value None and left out of the map. With `reference` the map is
    resampled (nearest neighbour) onto that image's grid, e.g. the CT series the SEG references.
    """
    hd = require("highdicom", "dicom")
    path = Path(path)
    try:
        seg = hd.seg.segread(path)
    except Exception as exc:
        raise InputError(f"Cannot read DICOM SEG '{path}' ({exc}): it is not a valid Segmentation object.") from None
    structures = _structures()
    rows = []
    for number in seg.segment_numbers:
        desc = seg.get_segment_description(number)
        kind = desc.segmented_property_type  # pydicom's Code equality maps legacy SNOMED-RT (SRT) codes to SCT
        name = next((n for n, (_, _, code) in structures.items() if kind == code), None)
        rows.append({"segment_number": number, "label": desc.segment_label, "property_type": kind.meaning,
                     "property_code": f"{kind.scheme_designator}:{kind.value}", "structure": name,
                     "label_value": LABELS.get(name) if name else None,
                     "tracking_id": desc.get("TrackingID"), "tracking_uid": desc.get("TrackingUID")})
    segments = pd.DataFrame(rows)
    volume = seg.get_volume(combine_segments=False)
    stack = np.asarray(volume.array)
    if stack.ndim == 3:
        stack = stack[..., None]
    out = np.zeros(stack.shape[:3], np.uint8)
    for channel, row in enumerate(rows):  # later LABELS values (tumour over liver) drawn last
        if row["label_value"]:
            out[stack[..., channel] > 0] = np.maximum(out[stack[..., channel] > 0], row["label_value"])
    image = _volume_to_sitk(out, np.asarray(volume.affine))
    if reference is not None:
        image = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return image, segments


def _volume_to_sitk(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """highdicom Volume (slice, row, column) with its LPS affine -> SimpleITK image (x=column, y=row, z=slice)."""
    image = sitk.GetImageFromArray(array)
    axes = [affine[:3, 2], affine[:3, 1], affine[:3, 0]]
    spacing = [float(np.linalg.norm(a)) for a in axes]
    image.SetSpacing(spacing)
    image.SetDirection(np.column_stack([a / s for a, s in zip(axes, spacing)]).ravel().tolist())
    image.SetOrigin(affine[:3, 3].tolist())
    return image


# ---------------------------------------------------------------- SR
def _lesion_rows(lesions: pd.DataFrame) -> list[dict]:
    table = lesions.reset_index(drop="lesion" in lesions.columns)
    if "lesion" not in table.columns:
        table["lesion"] = np.arange(1, len(table) + 1)
    rows = []
    for record in table.to_dict("records"):
        volume = record.get("volume_mm3")
        if _missing(volume) and not _missing(record.get("volume_ml")):
            volume = float(record["volume_ml"]) * 1000.0
        diameter = record.get("diameter_mm", record.get("max_diameter_mm"))  # lirads / segmentation tables
        lirads = record.get("lirads", record.get("category"))
        if not _missing(lirads) and str(lirads) not in LIRADS_CATEGORIES:
            raise InputError(f"Lesion {record['lesion']}: LI-RADS category '{lirads}' is not one of {LIRADS_CATEGORIES}.")
        rows.append({"lesion": record["lesion"], "volume_mm3": volume, "diameter_mm": diameter,
                     "lirads": lirads, **{k: record.get(k) for k in FEATURES},
                     **{k: v for k, v in record.items() if str(k).startswith("p_")}})
    return rows


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def write_sr(lesions: pd.DataFrame, seg_path: "str | Path", source_files: Sequence["str | Path"],
             path: "str | Path", *, predictions: dict[str, float] | None = None, series_number: int = 101,
             title: str = "HCCFusion liver lesion report", organ_volumes_mm3: dict[str, float] | None = None) -> Path:
    """Write a TID 1500 Measurement Report (Comprehensive 3D SR) referencing the SEG at `seg_path`.

    `lesions` has one row per lesion (the `lirads.Observations.table()` and segmentation `lesions.csv` layouts
    fit): `lesion` (id, column or index; default 1..n), `volume_mm3` (or `volume_ml`), `diameter_mm` (or
    `max_diameter_mm`), `lirads` (or `category`: "LR-3", …), booleans `aphe`, `washout`, `capsule`, `threshold_growth`
    and probabilities in `p_<endpoint>` columns (each optional; missing values are left out). Each lesion
    references its "Lesion <id>" segment, or else the SEG's tumour segment. `predictions` (endpoint ->
    probability) become one study-level measurement group; `organ_volumes_mm3` (LABELS name -> volume, e.g.
    the liver) one volume group per organ, referencing its segment. Returns `path`, written atomically.
    """
    hd = require("highdicom", "dicom")
    import pydicom

    codes = _codes()
    seg = pydicom.dcmread(str(seg_path))
    if seg.SOPClassUID != SEG_STORAGE:
        raise InputError(f"'{seg_path}' is not a DICOM SEG: write the segmentation with write_seg first.")
    datasets = _read_headers(source_files)
    segments = {str(s.SegmentLabel): int(s.SegmentNumber) for s in seg.SegmentSequence}
    tumour = next((number for s, number in segments.items() if s == "Tumour"), None)
    source_series = hd.sr.SourceSeriesForSegmentation(str(datasets[0].SeriesInstanceUID))
    groups = []
    for row in _lesion_rows(lesions):
        number = segments.get(f"Lesion {row['lesion']}", tumour)
        if number is None:
            raise InputError(
                f"SEG '{seg_path}' has neither a 'Lesion {row['lesion']}' nor a 'Tumour' segment for lesion "
                f"{row['lesion']}: write the SEG from the same segmentation as the lesion table."
            )
        measurements = []
        if not _missing(row["volume_mm3"]):
            measurements.append(hd.sr.Measurement(name=codes.SCT.Volume, value=float(row["volume_mm3"]),
                                                  unit=codes.UCUM.CubicMillimeter))
        if not _missing(row["diameter_mm"]):
            measurements.append(hd.sr.Measurement(name=codes.SCT.Diameter, value=float(row["diameter_mm"]),
                                                  unit=codes.UCUM.Millimeter, derivation=codes.SCT.Maximum))
        measurements += _probabilities(hd, codes, {k[2:]: v for k, v in row.items() if k.startswith("p_")})
        evaluations = []
        if not _missing(row["lirads"]):
            evaluations.append(hd.sr.QualitativeEvaluation(
                _local("LIRADS", LIRADS_MEANING), _local(str(row["lirads"]), str(row["lirads"]))))
        for key, meaning in FEATURES.items():
            if not _missing(row[key]):
                evaluations.append(hd.sr.QualitativeEvaluation(
                    _local(key.upper(), meaning), codes.SCT.Present if bool(row[key]) else codes.SCT.Absent))
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"Lesion {row['lesion']}"),
            referenced_segment=hd.sr.ReferencedSegment(sop_class_uid=seg.SOPClassUID,
                                                       sop_instance_uid=seg.SOPInstanceUID,
                                                       segment_number=number, source_series=source_series),
            finding_type=codes.SCT.Neoplasm, finding_sites=[hd.sr.FindingSite(codes.SCT.Liver)],
            measurements=measurements or None, qualitative_evaluations=evaluations or None))
    structures = _structures()
    for name, volume in (organ_volumes_mm3 or {}).items():
        label, _, kind = structures[name]
        if label not in segments:
            raise InputError(f"SEG '{seg_path}' has no '{label}' segment for the {name} volume: write the SEG from "
                             "the same label map.")
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=label),
            referenced_segment=hd.sr.ReferencedSegment(sop_class_uid=seg.SOPClassUID,
                                                       sop_instance_uid=seg.SOPInstanceUID,
                                                       segment_number=segments[label], source_series=source_series),
            finding_type=kind, measurements=[hd.sr.Measurement(name=codes.SCT.Volume, value=float(volume),
                                                               unit=codes.UCUM.CubicMillimeter)]))
    if predictions:
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="Prediction"),
            measurements=_probabilities(hd, codes, predictions)))
    if not groups:
        raise InputError("Nothing to report: no liver, an empty lesion table and no prediction.")
    modality = str(datasets[0].get("Modality") or "CT")
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=hd.UID(), name="HCCFusion", manufacturer_name="HCCFusion", model_name=f"HCCFusionLib {__version__}"))),
        procedure_reported=codes.LN.MRIUnspecifiedBodyRegion if modality == "MR" else codes.LN.CTUnspecifiedBodyRegion,
        imaging_measurements=groups, title=codes.DCM.ImagingMeasurementReport)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*datasets, seg], content=report, series_instance_uid=hd.UID(), series_number=series_number,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="HCCFusion", is_complete=True,
        series_description=title[:64])
    scheme = pydicom.Dataset()
    scheme.CodingSchemeDesignator, scheme.CodingSchemeName = SCHEME, "HCCFusion local codes (LI-RADS terms, predictions)"
    scheme.CodingSchemeResponsibleOrganization = "HCCFusion"
    sr.CodingSchemeIdentificationSequence = [scheme]
    path = Path(path)
    with atomic_write(path) as tmp:
        sr.save_as(tmp)
    log.info("Wrote DICOM SR with %d measurement group(s)", len(groups))
    return path


def _probabilities(hd, codes, values: dict) -> list:
    out = []
    for endpoint, value in values.items():
        if _missing(value):
            continue
        if not 0.0 <= float(value) <= 1.0:
            raise InputError(f"Probability of '{endpoint}' is {value}: probabilities must lie in [0, 1].")
        out.append(hd.sr.Measurement(name=_local(f"P-{endpoint}".upper(), f"Probability of {endpoint}"),
                                     value=float(value), unit=codes.UCUM.NoUnits))
    return out


def organ_volumes(labels: sitk.Image, organs=("liver",)) -> dict[str, float]:
    """LABELS name -> volume (mm³) of each of `organs` present in the label map (for the SR)."""
    array, voxel = sitk.GetArrayViewFromImage(labels), float(np.prod(labels.GetSpacing()))
    return {name: n * voxel for name in organs if (n := int((array == LABELS[name]).sum()))}


def export_dicom(series: Series, labels: sitk.Image, lesions: pd.DataFrame, folder: "str | Path", *, study_id: str,
                 lesion_labels: sitk.Image | None = None, predictions: dict[str, float] | None = None,
                 study_uid: str | None = None) -> dict:
    """SEG + SR of one series' segmentation and lesion table into a new `folder`, all or nothing.

    When `series` has no DICOM files (it came from NIfTI) the series itself is written first into
    `folder`/source, so the SEG can reference it. Returns {"seg": Path, "sr": Path, "source": [Path]};
    push all three to a PACS (`Pacs.push` skips what the PACS already holds).
    """
    folder = Path(folder)
    before = dict(series.meta)
    try:
        with atomic_folder(folder) as tmp:
            files = source_series_files(series, tmp / "source", study_id=study_id, study_uid=study_uid)
            seg = write_seg(labels, files, tmp / "seg.dcm", lesion_labels=lesion_labels)
            write_sr(lesions, seg, files, tmp / "sr.dcm", predictions=predictions,
                     organ_volumes_mm3=organ_volumes(labels))
    except BaseException:
        series.meta.clear()
        series.meta.update(before)
        raise
    files = [folder / "source" / f.name if tmp in f.parents else f for f in files]
    series.meta["files"] = [str(f) for f in files]
    return {"seg": folder / "seg.dcm", "sr": folder / "sr.dcm", "source": files}


def read_sr(path: "str | Path") -> pd.DataFrame:
    """Read a TID 1500 SR written by `write_sr` (or any TID 1500 with volumetric groups) into a table.

    One row per measurement group: `lesion` (tracking identifier), `tracking_uid`, `seg_uid` and
    `segment_number` (the referenced segment; empty for the study-level "Prediction" group), then
    `volume_mm3`, `diameter_mm`, `lirads`, the LI-RADS features (True/False) and `p_<endpoint>` columns.
    """
    hd = require("highdicom", "dicom")
    codes = _codes()
    path = Path(path)
    try:
        sr = hd.sr.srread(path)
        report = sr.content
    except Exception as exc:
        raise InputError(f"Cannot read DICOM SR '{path}' ({exc}): it is not a TID 1500 measurement report.") from None
    if not isinstance(report, hd.sr.MeasurementReport):
        raise InputError(f"'{path}' is an SR but not a TID 1500 measurement report.")
    features = {meaning: key for key, meaning in FEATURES.items()}
    rows = []
    groups = report.get_volumetric_roi_measurement_groups() + report.get_image_measurement_groups()
    for group in groups:
        row = {"lesion": group.tracking_identifier, "tracking_uid": str(group.tracking_uid)}
        segment = getattr(group, "referenced_segment", None)
        if segment is not None:
            row["seg_uid"] = str(segment.referenced_sop_instance_uid)
            row["segment_number"] = int(segment.referenced_segment_numbers[0])
        for m in group.get_measurements():
            if m.name == codes.SCT.Volume:
                row["volume_mm3"] = float(m.value)
            elif m.name == codes.SCT.Diameter:
                row["diameter_mm"] = float(m.value)
            elif m.name.meaning.startswith("Probability of "):
                row["p_" + m.name.meaning[len("Probability of "):]] = float(m.value)
            else:
                row[m.name.meaning] = float(m.value)
        for q in group.get_qualitative_evaluations():
            if q.name.meaning == LIRADS_MEANING:
                row["lirads"] = q.value.meaning
            elif q.name.meaning in features:
                row[features[q.name.meaning]] = q.value == codes.SCT.Present
            else:
                row[q.name.meaning] = q.value.meaning
        rows.append(row)
    table = pd.DataFrame(rows)
    if "segment_number" in table:
        table["segment_number"] = table["segment_number"].astype("Int64")
    return table


# ---------------------------------------------------------------- image series
def write_study_dicom(study: Study, folder: "str | Path", *, patient_id: str = "ANON", study_uid: str | None = None,
                      segmentations: bool = False) -> dict[str, list[Path]]:
    """Write every series of `study` as a DICOM series under `folder`/<series>/, all in one new DICOM study.

    All series share one StudyInstanceUID and FrameOfReferenceUID (one patient, one scanner frame); each keeps
    its own geometry. With `segmentations`, each series' "labels" mask is added as a DICOM SEG
    (`folder`/<series>_seg/seg.dcm). `folder` appears only when everything is written.
    Returns {series name: files} (SEG files under "<series>_seg").
    """
    from pydicom.uid import generate_uid

    unsupported = [s.name for s in study if s.modality.value not in ("CT", "MR")]
    if unsupported:
        raise InputError(f"Series {unsupported} of study '{study.study_id}' are not CT or MR: DICOM export writes "
                         "CT and MR image series only; leave them out of the study to export.")
    study_uid, frame_uid = study_uid or generate_uid(), generate_uid()
    written: dict[str, list[Path]] = {}
    with atomic_folder(folder) as tmp:
        for number, series in enumerate(study, start=1):
            name = re.sub(r"[^A-Za-z0-9._-]+", "_", series.name)
            files = write_dicom_series(series.image, tmp / name, phase=series.phase, study_id=study.study_id,
                                       study_uid=study_uid, frame_of_reference_uid=frame_uid, patient_id=patient_id,
                                       modality=series.modality.value, series_number=number,
                                       description=series.meta.get("series_description") or None)
            written[series.name] = [Path(folder) / name / f.name for f in files]
            if segmentations and "labels" in series.masks:
                (tmp / f"{name}_seg").mkdir()
                write_seg(series.masks["labels"], files, tmp / f"{name}_seg" / "seg.dcm", series_number=100 + number)
                written[f"{series.name}_seg"] = [Path(folder) / f"{name}_seg" / "seg.dcm"]
    log.info("Wrote %d series as DICOM", len(study))
    return written


CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
_PHASE_DESCRIPTION = {
    Phase.NC: "Non-contrast (NC)", Phase.AP: "Late arterial phase (AP)", Phase.PVP: "Portal venous phase (PVP)",
    Phase.DP: "Delayed phase (DP) 3 min", Phase.T1: "T1 VIBE", Phase.T2: "T2 HASTE", Phase.DWI: "DWI b800",
    Phase.ADC: "ADC", Phase.DCE: "T1 dynamic post-contrast", Phase.HBP: "Hepatobiliary phase (HBP) 20 min",
}
#: Seconds from bolus start to acquisition written for each contrast phase (see _TIMING).
_PHASE_DELAY = {Phase.AP: 35, Phase.PVP: 70, Phase.DP: 180, Phase.DCE: 70, Phase.HBP: 1200}
#: (EchoTime, RepetitionTime) in ms written for MR sequences.
_MR_TIMES = {Phase.T1: (2.0, 5.0), Phase.DCE: (2.0, 5.0), Phase.HBP: (2.0, 5.0), Phase.T2: (90.0, 3000.0),
             Phase.DWI: (70.0, 4000.0), Phase.ADC: (70.0, 4000.0)}


def write_dicom_series(image: sitk.Image, folder: "str | Path", *, phase, study_id: str, study_uid: str | None = None,
                       series_uid: str | None = None, frame_of_reference_uid: str | None = None,
                       patient_id: str = "ANON", description: str | None = None, modality: str = "CT",
                       series_number: int = 1, study_time: datetime.datetime | None = None) -> list[Path]:
    """Write a 3D image as a DICOM series (CT or MR Image Storage), one file per slice, atomically.

    Geometry tags reproduce the image's origin, spacing and direction (a left-handed direction is
    stored by reversing the slice order, which keeps every voxel's physical position). CT values are
    stored as integer HU (RescaleSlope 1, exact for integer images); MR values are scaled linearly into
    16 bits. SeriesDescription, contrast and timing tags are set per phase so that `detect_phase` reads
    the phase back. `folder` must not exist or be empty. Returns the written files in slice order.
    """
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid
    from pydicom.valuerep import format_number_as_ds

    phase = Phase.parse(phase)
    modality = modality.upper()
    if modality not in ("CT", "MR"):
        raise InputError(f"write_dicom_series writes CT or MR series, not '{modality}'.")
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise GeometryError(f"write_dicom_series needs a scalar 3D image, got {image.GetDimension()}D "
                            f"with {image.GetNumberOfComponentsPerPixel()} component(s).")
    direction = np.array(image.GetDirection()).reshape(3, 3)
    if np.linalg.det(direction) < 0:  # DICOM slice normal is row × column: store slices in reverse order
        image = sitk.Flip(image, [False, False, True])
        direction = np.array(image.GetDirection()).reshape(3, 3)
    voxels = sitk.GetArrayFromImage(image).astype(np.float64)  # (z, y, x)
    slope, intercept = 1.0, 0.0
    if modality == "CT":
        stored = np.rint(voxels)
    else:
        lo, hi = float(voxels.min()), float(voxels.max())
        integral = np.allclose(voxels, np.rint(voxels)) and lo >= -32768 and hi <= 32767
        slope = 1.0 if integral or hi == lo else (hi - lo) / 65000.0
        intercept = 0.0 if integral else lo
        stored = np.rint((voxels - intercept) / slope) - (0 if integral else 32768)
        intercept = intercept if integral else intercept + 32768 * slope
    if stored.min() < -32768 or stored.max() > 32767:
        raise InputError(f"Image values {stored.min():g}..{stored.max():g} do not fit 16-bit DICOM pixels: rescale them.")
    stored = stored.astype(np.int16)

    injection = study_time or datetime.datetime(2024, 1, 1, 12, 0, 0)
    acquired = injection + datetime.timedelta(seconds=_PHASE_DELAY.get(phase, -300 - 60 * series_number))
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = frame_of_reference_uid or generate_uid()
    sop_class = CT_IMAGE_STORAGE if modality == "CT" else MR_IMAGE_STORAGE
    spacing = image.GetSpacing()
    written: list[Path] = []
    with atomic_folder(folder) as tmp:
        for k in range(image.GetSize()[2]):
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = sop_class
            meta.MediaStorageSOPInstanceUID = generate_uid()
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            ds = pydicom.Dataset()
            ds.file_meta = meta
            ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
            ds.SpecificCharacterSet = "ISO_IR 100"
            ds.PatientName, ds.PatientID = patient_id if "^" in patient_id else f"{patient_id}^", patient_id
            ds.PatientBirthDate, ds.PatientSex = "", ""
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
            ds.StudyID, ds.StudyDescription = str(study_id)[:16], f"HCCFusion {study_id}"[:64]
            ds.AccessionNumber, ds.ReferringPhysicianName, ds.PositionReferenceIndicator = "", "", ""
            ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = injection.strftime("%Y%m%d")
            ds.StudyTime = (injection - datetime.timedelta(minutes=30)).strftime("%H%M%S")
            ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = acquired.strftime("%H%M%S")
            ds.Modality, ds.Manufacturer = modality, "HCCFusion"
            ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = int(series_number), k + 1, 1
            ds.SeriesDescription = (description or _PHASE_DESCRIPTION.get(phase, phase.value))[:64]
            ds.ImageType = ["DERIVED", "PRIMARY", "ADC"] if phase is Phase.ADC else ["ORIGINAL", "PRIMARY", "AXIAL"]
            ds.PatientPosition, ds.BodyPartExamined = "HFS", "ABDOMEN"  # unpaired: no Laterality
            if phase in _PHASE_DELAY:
                ds.ContrastBolusAgent = "Gd-EOB-DTPA" if modality == "MR" else "Iodinated contrast"
                ds.ContrastBolusRoute = "IV"
                ds.ContrastBolusStartTime = injection.strftime("%H%M%S")
            if modality == "CT":
                ds.KVP, ds.RescaleType = "", "HU"
            else:
                te, tr = _MR_TIMES.get(phase, (2.0, 5.0))
                ds.ScanningSequence = "EP" if phase in (Phase.DWI, Phase.ADC) else ("SE" if phase is Phase.T2 else "GR")
                ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "NONE", "", "3D"
                ds.EchoTime, ds.RepetitionTime, ds.EchoTrainLength, ds.MagneticFieldStrength = te, tr, 1, 1.5
                if phase is Phase.DWI:
                    ds.DiffusionBValue = 800.0
            ds.ImagePositionPatient = [f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))]
            ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*direction[:, 0], *direction[:, 1])]
            ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
            ds.SliceThickness = ds.SpacingBetweenSlices = f"{spacing[2]:.6f}"
            ds.SliceLocation = f"{float(np.dot(np.cross(direction[:, 0], direction[:, 1]), ds.ImagePositionPatient)):.6f}"
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.Rows, ds.Columns = image.GetSize()[1], image.GetSize()[0]
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleIntercept, ds.RescaleSlope = format_number_as_ds(intercept), format_number_as_ds(slope)
            plane = stored[k]
            real = plane * slope + intercept
            ds.WindowCenter, ds.WindowWidth = f"{(real.max() + real.min()) / 2:.1f}", f"{max(real.max() - real.min(), 1):.1f}"
            ds.PixelData = plane.tobytes()
            path = tmp / f"IM{k + 1:04d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            written.append(Path(folder) / path.name)
    return written
