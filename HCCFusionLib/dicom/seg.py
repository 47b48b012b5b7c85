"""DICOM Segmentation (highdicom): a label map to SEG referencing its source series, and back."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import SimpleITK as sitk

from .. import __version__
from ..errors import InputError, require
from ..files import atomic_write
from ..study import LABELS, check_same_grid
from .codes import pydicom_codes, segment_structures
from .series import read_headers, source_image

log = logging.getLogger(__name__)


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
    codes = pydicom_codes()
    datasets = read_headers(source_files)
    grid = source_image(datasets)
    check_same_grid(grid, labels, f"label map for the SEG of series '{datasets[0].get('SeriesDescription', '')}'")
    array = sitk.GetArrayFromImage(labels).astype(np.int64)
    unknown = sorted(set(np.unique(array).tolist()) - set(LABELS.values()))
    if unknown:
        raise InputError(f"Label map holds values {unknown} that are not in LABELS {LABELS}: relabel it first.")
    lesions = None
    if lesion_labels is not None:
        check_same_grid(grid, lesion_labels, "lesion instance map for the SEG")
        lesions = sitk.GetArrayFromImage(lesion_labels).astype(np.int64)
    structures = segment_structures()
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
    """A damaged SEG whose header parses but whose frames or segment data do not (truncated, mutated) raises
    InputError naming the file, never a library exception.
    """
    try:
        return _read_seg(path, reference)
    except (ValueError, KeyError, AttributeError, TypeError, IndexError, OverflowError, EOFError) as exc:
        raise InputError(f"DICOM SEG '{path}' is damaged ({type(exc).__name__}: {str(exc)[:120]}): re-export "
                         "the segmentation.") from None


def _read_seg(path: "str | Path", reference: sitk.Image | None = None) -> tuple[sitk.Image, pd.DataFrame]:
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
    structures = segment_structures()
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


