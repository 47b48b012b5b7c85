"""Study-level DICOM writers: a whole study as DICOM series (+SEG), and SEG + SR of one series' results."""
from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import pandas as pd
import SimpleITK as sitk

from ..errors import InputError
from ..files import atomic_folder
from ..lesions import LesionTable
from ..study import Series, Study
from .seg import write_seg
from .series import source_series_files, write_dicom_series
from .sr import organ_volumes, write_sr

log = logging.getLogger(__name__)


def export_dicom(series: Series, labels: sitk.Image, lesions: LesionTable, folder: "str | Path", *, study_id: str,
                 lirads: "pd.DataFrame | None" = None, lesion_labels: sitk.Image | None = None,
                 predictions: dict[str, float] | None = None, study_uid: str | None = None,
                 keep_identifiers: bool = False, replace: bool = False) -> dict:
    """SEG + SR of one series' segmentation, LesionTable and LI-RADS table (`dicom.write_sr`) into a new `folder`,
    all or nothing.

    De-identified by default: the series is written anew into `folder`/source under a pseudonymous patient
    (`pseudonym`) in a new study, and SEG and SR reference that copy, so no patient, physician, institution
    or accession attribute of the input and none of its UIDs reaches the output. With `keep_identifiers`
    (needed to file the results with the source study in a PACS) SEG and SR reference the input's own DICOM
    files and copy its patient and study attributes; a series without DICOM files (NIfTI) is written into
    `folder`/source either way. Returns {"seg": Path, "sr": Path, "source": [Path]}; push all three to a PACS
    (`Pacs.push` skips what the PACS already holds). An existing non-empty `folder` is refused unless `replace`
    (then swapped out only once the new one is complete).
    """
    folder = Path(folder)
    before = dict(series.meta)
    patient_id = source_patient(series, study_id, keep_identifiers)
    try:
        with atomic_folder(folder, replace=replace) as tmp:
            files = source_series_files(series, tmp / "source", study_id=study_id, study_uid=study_uid,
                                        patient_id=patient_id)
            seg = write_seg(labels, files, tmp / "seg.dcm", lesion_labels=lesion_labels)
            write_sr(lesions, seg, files, tmp / "sr.dcm", lirads=lirads, predictions=predictions,
                     organ_volumes_mm3=organ_volumes(labels))
    except BaseException:
        series.meta.clear()
        series.meta.update(before)
        raise
    files = [folder / "source" / f.name if tmp in f.parents else f for f in files]
    series.meta["files"] = [str(f) for f in files]
    return {"seg": folder / "seg.dcm", "sr": folder / "sr.dcm", "source": files}


def source_patient(series: Series, study_id: str, keep_identifiers: bool = False) -> str:
    """The PatientID under which `source_series_files` writes a copy of `series`. Without `keep_identifiers` the
    input's DICOM files are forgotten (series.meta["files"]), so a de-identified copy under `pseudonym` is written."""
    if keep_identifiers:
        return "ANON"
    series.meta["files"] = []
    return pseudonym(series.meta.get("study_uid") or study_id)


def pseudonym(key: str) -> str:
    """A stable pseudonymous PatientID for a source study: "HCCF-" + 12 hex digits of SHA-256 of `key` (its
    StudyInstanceUID, a random number, so the pseudonym cannot be traced back to the patient without the source)."""
    return "HCCF-" + hashlib.sha256(str(key).encode("utf-8")).hexdigest()[:12].upper()


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
                                       description=series.meta.get("series_description") or None,
                                       contrast_agent=series.meta.get("contrast_agent") or None,
                                       bolus_delay_s=series.meta.get("bolus_delay_s"),
                                       b_value=series.meta.get("b_value"))
            written[series.name] = [Path(folder) / name / f.name for f in files]
            if segmentations and "labels" in series.masks:
                (tmp / f"{name}_seg").mkdir()
                write_seg(series.masks["labels"], files, tmp / f"{name}_seg" / "seg.dcm", series_number=100 + number)
                written[f"{series.name}_seg"] = [Path(folder) / f"{name}_seg" / "seg.dcm"]
    log.info("Wrote %d series as DICOM", len(study))
    return written
