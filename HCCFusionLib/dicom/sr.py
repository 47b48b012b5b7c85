"""TID 1500 measurement SR (highdicom): per-lesion measurements, LI-RADS and predictions, and back;
`export_dicom` writes SEG + SR of one series."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import SimpleITK as sitk

from .. import __version__
from ..errors import InputError, require
from ..files import atomic_write
from ..lesions import LesionTable
from ..study import LABELS
from .codes import (SCHEME, FEATURES, LIRADS_CATEGORIES, LIRADS_MEANING, SEG_STORAGE, local_code, pydicom_codes,
                    segment_structures)
from .series import read_headers

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- SR
def _lesion_rows(lesions: LesionTable, lirads: "pd.DataFrame | None" = None) -> list[dict]:
    """One SR row per lesion of the LesionTable; category and features from the LI-RADS table (by lesion) if given."""
    if not isinstance(lesions, LesionTable):
        raise InputError(f"The SR takes a lesions.LesionTable, not {type(lesions).__name__}: build it with "
                         "LesionTable.from_labels (or read a lesions.csv with LesionTable.from_csv).")
    assessed = {} if lirads is None or lirads.empty else lirads.to_dict("index")
    rows = []
    for record in lesions.frame.to_dict("records"):
        lesion = int(record["lesion"])
        extra = assessed.get(lesion, {})
        category = extra.get("category")
        if not _missing(category) and str(category) not in LIRADS_CATEGORIES:
            raise InputError(f"Lesion {lesion}: LI-RADS category '{category}' is not one of {LIRADS_CATEGORIES}.")
        rows.append({"lesion": lesion, "volume_mm3": float(record["volume_ml"]) * 1000.0,
                     "diameter_mm": record["max_diameter_mm"], "lirads": category,
                     **{k: extra.get(k) for k in FEATURES}})
    return rows


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def write_sr(lesions: LesionTable, seg_path: "str | Path", source_files: Sequence["str | Path"],
             path: "str | Path", *, lirads: "pd.DataFrame | None" = None,
             predictions: dict[str, float] | None = None, series_number: int = 101,
             title: str = "HCCFusion liver lesion report", organ_volumes_mm3: dict[str, float] | None = None) -> Path:
    """Write a TID 1500 Measurement Report (Comprehensive 3D SR) referencing the SEG at `seg_path`.

    `lesions` (lesions.LesionTable, the one lesion model) gives each lesion's id, volume and 3D maximum diameter;
    `lirads` (LiradsAssessment.table(): indexed by lesion, `category` "LR-3"…, booleans `aphe`, `washout`,
    `capsule`, `threshold_growth`) adds its category and features (missing values are left out). Each lesion
    references its "Lesion <id>" segment, or else the SEG's tumour segment. `predictions` (endpoint ->
    probability) become one study-level measurement group; `organ_volumes_mm3` (LABELS name -> volume, e.g.
    the liver) one volume group per organ, referencing its segment. Returns `path`, written atomically.
    """
    hd = require("highdicom", "dicom")
    import pydicom

    codes = pydicom_codes()
    seg = pydicom.dcmread(str(seg_path))
    if seg.SOPClassUID != SEG_STORAGE:
        raise InputError(f"'{seg_path}' is not a DICOM SEG: write the segmentation with write_seg first.")
    datasets = read_headers(source_files)
    segments = {str(s.SegmentLabel): int(s.SegmentNumber) for s in seg.SegmentSequence}
    tumour = next((number for s, number in segments.items() if s == "Tumour"), None)
    source_series = hd.sr.SourceSeriesForSegmentation(str(datasets[0].SeriesInstanceUID))
    groups = []
    for row in _lesion_rows(lesions, lirads):
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
        evaluations = []
        if not _missing(row["lirads"]):
            evaluations.append(hd.sr.QualitativeEvaluation(
                local_code("LIRADS", LIRADS_MEANING), local_code(str(row["lirads"]), str(row["lirads"]))))
        for key, meaning in FEATURES.items():
            if not _missing(row[key]):
                evaluations.append(hd.sr.QualitativeEvaluation(
                    local_code(key.upper(), meaning), codes.SCT.Present if bool(row[key]) else codes.SCT.Absent))
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"Lesion {row['lesion']}"),
            referenced_segment=hd.sr.ReferencedSegment(sop_class_uid=seg.SOPClassUID,
                                                       sop_instance_uid=seg.SOPInstanceUID,
                                                       segment_number=number, source_series=source_series),
            finding_type=codes.SCT.Neoplasm, finding_sites=[hd.sr.FindingSite(codes.SCT.Liver)],
            measurements=measurements or None, qualitative_evaluations=evaluations or None))
    structures = segment_structures()
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
        out.append(hd.sr.Measurement(name=local_code(f"P-{endpoint}".upper(), f"Probability of {endpoint}"),
                                     value=float(value), unit=codes.UCUM.NoUnits))
    return out


def organ_volumes(labels: sitk.Image, organs=("liver",)) -> dict[str, float]:
    """LABELS name -> volume (mm³) of each of `organs` present in the label map (for the SR)."""
    array, voxel = sitk.GetArrayViewFromImage(labels), float(np.prod(labels.GetSpacing()))
    return {name: n * voxel for name in organs if (n := int((array == LABELS[name]).sum()))}


def read_sr(path: "str | Path") -> pd.DataFrame:
    """Read a TID 1500 SR written by `write_sr` (or any TID 1500 with volumetric groups) into a table.

    One row per measurement group: `lesion` (tracking identifier), `tracking_uid`, `seg_uid` and
    `segment_number` (the referenced segment; empty for the study-level "Prediction" group), then
    `volume_mm3`, `diameter_mm`, `lirads`, the LI-RADS features (True/False) and `p_<endpoint>` columns.
    """
    hd = require("highdicom", "dicom")
    codes = pydicom_codes()
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


