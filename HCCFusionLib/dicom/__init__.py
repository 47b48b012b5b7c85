"""DICOM out and back in: image series, SEG of a label map and a TID 1500 measurement SR, DICOM folders.

`write_dicom_series` writes a 3D image as a CT/MR series (pydicom) whose tags `phases.detect_phase` reads
back. SEG and SR are built with highdicom:
`write_seg` stores a label map (values per `study.LABELS`, optionally one segment per lesion) as a DICOM
Segmentation that references the source CT/MR series; `write_sr` stores the measurements of each lesion of a
`lesions.LesionTable` (volume, 3D maximum diameter), its LI-RADS category and features and prediction probabilities as a Comprehensive 3D SR
(TID 1500) whose measurement groups reference the SEG's segments. `read_seg` and `read_sr` read both back.
`source_series_files` gives the DICOM files of a series, writing the series as DICOM first when it was
loaded from NIfTI. Codes: SNOMED CT for anatomy and findings; LI-RADS terms and prediction names, which
have no standard code, use the private coding scheme "99HCCF". `read` groups a DICOM folder into series
(used by `io.load_study`).

Modules: `codes`, `series` (image series out), `seg`, `sr`, `export` (study/result writers), `read` (folders in).
Import direction: `io` imports `dicom`; `dicom` never imports `io` (atomic writes come from `files`).
"""
from .codes import FEATURES, LIRADS_CATEGORIES, LIRADS_MEANING, SCHEME, SEG_STORAGE
from .export import export_dicom, pseudonym, source_patient, write_study_dicom
from .read import add_dicom_series, scan_dicom
from .seg import read_seg, write_seg
from .series import CT_IMAGE_STORAGE, MR_IMAGE_STORAGE, source_series_files, write_dicom_series
from .sr import organ_volumes, read_sr, write_sr

__all__ = ["FEATURES", "LIRADS_CATEGORIES", "LIRADS_MEANING", "SCHEME", "SEG_STORAGE", "CT_IMAGE_STORAGE",
           "MR_IMAGE_STORAGE", "export_dicom", "pseudonym", "source_patient", "write_study_dicom", "add_dicom_series", "scan_dicom", "read_seg",
           "write_seg", "source_series_files", "write_dicom_series", "organ_volumes", "read_sr", "write_sr"]
