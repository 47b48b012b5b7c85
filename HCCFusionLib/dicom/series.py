"""DICOM image series: write a 3D image (or a whole study) as CT/MR series; reuse a series' source files."""
from __future__ import annotations

import datetime
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from ..errors import GeometryError, InputError
from ..files import atomic_folder
from ..study import Phase, Series, same_grid

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- source series
def source_series_files(series: Series, folder: "str | Path", *, study_id: str, study_uid: str | None = None,
                        patient_id: str = "ANON", series_number: int = 1) -> list[Path]:
    """The DICOM files of `series` in slice order: the ones it was loaded from (if they still exist and match
    its grid, e.g. the reference series of a registered study), or new ones written into `folder`.

    After writing, `series.meta` records the new files and UIDs, so SEG and SR reference that DICOM series.
    """
    files = [Path(f) for f in series.meta.get("files") or []]
    if files and all(f.is_file() for f in files) and same_grid(source_image(read_headers(files)), series.image):
        return files
    files = write_dicom_series(series.image, folder, phase=series.phase, study_id=study_id, study_uid=study_uid,
                               patient_id=patient_id, modality=series.modality.value, series_number=series_number)
    import pydicom

    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    series.meta.update(files=[str(f) for f in files], series_uid=str(first.SeriesInstanceUID),
                       study_uid=str(first.StudyInstanceUID), frame_of_reference_uid=str(first.FrameOfReferenceUID))
    return files


def read_headers(files: Sequence["str | Path"]):
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


def source_image(datasets) -> sitk.Image:
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


# ---------------------------------------------------------------- image series
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
_PHASE_DESCRIPTION = {
    Phase.NC: "Non-contrast (NC)", Phase.AP: "Late arterial phase (AP)", Phase.PVP: "Portal venous phase (PVP)",
    Phase.DP: "Delayed phase (DP) 3 min", Phase.T1: "T1 VIBE", Phase.T2: "T2 HASTE", Phase.DWI: "DWI b800",
    Phase.ADC: "ADC", Phase.DCE: "T1 dynamic post-contrast", Phase.HBP: "Hepatobiliary phase (HBP) 20 min",
    Phase.MR_PRE: "T1 VIBE pre-contrast", Phase.MR_AP: "T1 VIBE arterial", Phase.MR_PVP: "T1 VIBE portal venous",
    Phase.TP: "T1 VIBE transitional 3 min",
}
#: Seconds from bolus start to acquisition written for each contrast phase (see _TIMING).
_PHASE_DELAY = {Phase.AP: 35, Phase.PVP: 70, Phase.DP: 180, Phase.DCE: 70, Phase.HBP: 1200, Phase.MR_AP: 35,
                Phase.MR_PVP: 70, Phase.TP: 180}
#: (EchoTime, RepetitionTime) in ms written for MR sequences.
_MR_TIMES = {Phase.T1: (2.0, 5.0), Phase.DCE: (2.0, 5.0), Phase.HBP: (2.0, 5.0), Phase.MR_PRE: (2.0, 5.0),
             Phase.MR_AP: (2.0, 5.0), Phase.MR_PVP: (2.0, 5.0), Phase.TP: (2.0, 5.0), Phase.T2: (90.0, 3000.0),
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
