"""Lesion patches for the deep fusion network, from registered images or a run folder, and their radiomics.

A patch set of one lesion is a float32 array (phases, 2, s, s, s): channel 0 the lesion patch (s voxels of
`spacing_mm` around the lesion centroid), channel 1 its liver context (2s voxels around it, averaged down by 2
to s). A phase that was not acquired is all NaN. Images are sampled on an axis-aligned grid (linear
interpolation; outside the image: NaN, which the model treats as the training mean).
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import SimpleITK as sitk

from ..errors import InputError
from .model import PATCHES

log = logging.getLogger(__name__)

PATCH_SIZE = 16
PATCH_SPACING_MM = 1.0


def context_volume(image: sitk.Image, centre_mm, size: int = PATCH_SIZE, spacing_mm: float = PATCH_SPACING_MM):
    """(2s, 2s, 2s) array (z, y, x) of `image` sampled around the physical point `centre_mm` (LPS, mm)."""
    full = 2 * size
    reference = sitk.Image([full] * 3, sitk.sitkFloat32)
    reference.SetSpacing([spacing_mm] * 3)
    reference.SetOrigin([float(c) - (full - 1) / 2 * spacing_mm for c in centre_mm])
    resampled = sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), reference, sitk.Transform(), sitk.sitkLinear,
                              float("nan"), sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampled)


def split_context(volumes: np.ndarray) -> np.ndarray:
    """(..., 2s, 2s, 2s) context volumes -> (..., 2, s, s, s): the central s^3 and the whole averaged down by 2."""
    full = volumes.shape[-1]
    size, lo = full // 2, full // 4
    centre = volumes[..., lo:lo + size, lo:lo + size, lo:lo + size]
    shape = volumes.shape[:-3] + (size, 2, size, 2, size, 2)
    context = volumes.reshape(shape).mean(axis=(-5, -3, -1))
    return np.stack([centre, context], axis=-4)


def lesion_patches(images: dict, centre_mm, size: int = PATCH_SIZE,
                   spacing_mm: float = PATCH_SPACING_MM) -> np.ndarray:
    """(phases, 2, s, s, s) patches of one lesion; `images`: phase name -> registered image or None (absent)."""
    volumes = np.stack([np.full((2 * size,) * 3, np.nan, np.float32) if image is None
                        else context_volume(image, centre_mm, size, spacing_mm) for image in images.values()])
    return split_context(volumes).astype(np.float32)


def patches_from_run(run_folder, phases=("AP", "PVP", "DP"), size: int = PATCH_SIZE,
                     spacing_mm: float = PATCH_SPACING_MM) -> pd.DataFrame:
    """One row per lesion of a completed `hccfusion run` folder: `patches` of the registered `phases` around the
    lesion centroid (a phase the study lacks is all NaN), plus the lesion columns of `lesions.LesionTable`."""
    from ..layout import RunFolder
    from ..lesions import LesionTable
    from ..registration import RegistrationResult
    from ..segmentation.predictor import read_segmentation

    paths = RunFolder(run_folder)
    if not paths.registered_study.is_file() or not paths.labels.is_file():
        raise InputError(f"'{run_folder}' is not a completed `hccfusion run` folder (no "
                         f"{paths.registered_study.name} or segmentation): run `hccfusion run` first.")
    study = RegistrationResult.read(paths.registration).study
    seg, _ = read_segmentation(paths.segmentation)
    table = LesionTable.from_map(seg.labels, seg.lesion_map).frame
    images = {phase: (study.get(phase).image if study.get(phase) is not None else None) for phase in phases}
    if all(image is None for image in images.values()):
        raise InputError(f"'{run_folder}' has none of the phases {list(phases)}; it has {list(study.series)}.")
    rows = table.assign(**{PATCHES: [
        lesion_patches(images, (r.centroid_x_mm, r.centroid_y_mm, r.centroid_z_mm), size, spacing_mm)
        for r in table.itertuples()]})
    log.info("%d lesion patch set(s) from %s", len(rows), run_folder)
    return rows


def patch_radiomics(patches: np.ndarray, masks: np.ndarray, phases, spacing_mm: float = PATCH_SPACING_MM,
                    preset: str = "ct_v1", image_types=("Original",)) -> pd.DataFrame:
    """Wide radiomics table (columns `<phase>__tumour__<feature>`) of the lesion patches (n, phases, 2, s, s, s)
    with lesion masks (n, s, s, s), through HCCFusionLib.radiomics (the preset's preprocessing, `image_types`)."""
    from ..radiomics.features import preprocess_image, preprocess_mask, series_features
    from ..radiomics.presets import column_name, load_preset

    spec = load_preset(preset).with_image_types(image_types)
    rows = []
    for lesion, mask_array in zip(patches, masks):
        row = {}
        mask = _image(mask_array.astype(np.uint8), spacing_mm)
        for phase, volume in zip(phases, lesion[:, 0]):
            if np.isnan(volume).all():
                continue
            image = _image(volume.astype(np.float32), spacing_mm)
            prepared = preprocess_image(image, spec)
            values = series_features(prepared, {"tumour": preprocess_mask(mask, image, spec)}, spec).values
            row.update({column_name(phase, "tumour", *key.split("_", 2)): float(v)
                        for key, v in values.get("tumour", {}).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def _image(array: np.ndarray, spacing_mm: float) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing([spacing_mm] * 3)
    return image
