"""Content checks of loaded images and masks: refuse what no stage can use, naming the file and the fix.

Size is checked from the header before any voxel is read (`check_size`); values after reading
(`check_image_values`, `check_label_map`).
"""
from __future__ import annotations

import os

import numpy as np
import SimpleITK as sitk

from .errors import GeometryError, InputError
from .lesions import label_lesions
from .study import LABELS

CONTRAST_PHASES = ("NC", "AP", "PVP", "DP", "HBP")


def memory_bytes() -> int:
    """Physical memory of this machine in bytes (a large default where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 64 << 30


def check_size(path, size, bytes_per_voxel: int) -> None:
    """Refuse an image whose voxels (as float32, as the stages hold them) would need over a quarter of memory."""
    need = int(np.prod([max(int(s), 1) for s in size], dtype=np.float64)) * max(int(bytes_per_voxel), 4)
    if need > memory_bytes() // 4:
        raise InputError(
            f"Image '{path}' has {' x '.join(str(int(s)) for s in size)} voxels ({need / 2**30:.1f} GiB): too large "
            f"for this machine's {memory_bytes() / 2**30:.0f} GiB; crop or resample it (or check its header)."
        )


def check_image_values(image: sitk.Image, path, modality: str | None = None) -> None:
    """Refuse NaN/Inf, a constant image, and CT values that are not Hounsfield units."""
    values = sitk.GetArrayViewFromImage(image)
    if not np.isfinite(values).all():
        raise InputError(f"Image '{path}' holds {int((~np.isfinite(values)).sum())} NaN/Inf voxel(s): re-export it "
                         "from the scanner or fix the conversion that produced them.")
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:
        raise InputError(f"Image '{path}' is constant (every voxel {lo:g}): it holds no image; re-export the series.")
    if (modality or "").upper() == "CT" and (hi - lo < 20 or lo < -3100 or hi > 40000):
        raise InputError(
            f"Image '{path}' is declared CT but its values {lo:g}..{hi:g} are not Hounsfield units (normalised or "
            "wrongly rescaled): export the original CT in HU, or set the series' modality."
        )


def check_label_map(mask: sitk.Image, path, key: str) -> None:
    """Masks hold integer labels; a `labels` map holds LABELS values, a liver, and tumours inside the liver;
    other masks are binary."""
    values = sitk.GetArrayViewFromImage(mask)
    if values.dtype.kind == "f" and not np.array_equal(values, np.rint(values)):
        raise InputError(f"Mask '{path}' holds fractional values: save it as an integer label map (0/1 or LABELS "
                         "values), e.g. threshold a probability map at 0.5.")
    present = set(np.unique(values).astype(int).tolist())
    if key != "labels":
        if key in ("liver", "tumour") and not present <= {0, 1}:
            raise InputError(f"Mask '{path}' ('{key}') holds values {sorted(present)}: a {key} mask must be binary "
                             "(0/1); save it as a binary mask.")
        return
    unknown = present - set(LABELS.values())
    if unknown:
        raise InputError(f"Label map '{path}' holds values {sorted(unknown)} that are not labels "
                         f"({', '.join(f'{v}={k}' for k, v in LABELS.items())}): relabel it with these values.")
    liver = np.asarray(values) == LABELS["liver"]
    tumour = np.asarray(values) == LABELS["tumour"]
    if liver.sum() + tumour.sum() < 27:
        raise InputError(f"Label map '{path}' has {int(liver.sum() + tumour.sum())} liver/tumour voxel(s): it is "
                         "empty or not a liver segmentation; segment the liver (label 1) or omit the label map.")
    parts = sitk.GetArrayFromImage(label_lesions(sitk.GetImageFromArray(np.asarray(values, np.uint8)), min_ml=0.0))
    for label in np.unique(parts)[1:]:
        component = (parts == label).astype(np.uint8)
        grown = sitk.GetArrayFromImage(sitk.BinaryDilate(sitk.GetImageFromArray(component), [1, 1, 1]))
        if liver.any() and not (grown.astype(bool) & liver).any():
            raise GeometryError(f"Label map '{path}' has a tumour (label 2, {int(component.sum())} voxels) that does "
                                "not touch the liver: remove it or fix the liver/tumour labels.")


def check_no_duplicate_phases(series_phases: list[tuple[str, str]], manifest) -> None:
    """Refuse a manifest that declares one contrast phase for two series (which one would be used?)."""
    seen: dict[str, str] = {}
    for name, phase in series_phases:
        if phase in CONTRAST_PHASES and phase in seen:
            raise InputError(f"Study manifest '{manifest}' declares series '{seen[phase]}' and '{name}' both as "
                             f"{phase}: keep one, or declare the other as its true phase.")
        seen.setdefault(phase, name)


def resolve_duplicate_phases(study) -> list[str]:
    """Keep one series per contrast phase of a loaded study; returns a warning per series left out.

    A declared phase (manifest, --phase) wins over a detected one; two declared ones are refused (as in
    `check_no_duplicate_phases`). Among detected ones the rule is: the higher detection confidence, then the
    acquisition time (for NC the earliest: before any contrast; for later phases the latest: LI-RADS' late
    arterial phase, the more delayed repeat), then the lower series number.
    """
    declared = ("manifest", "override")
    warnings = []
    for phase in CONTRAST_PHASES:
        group = [s for s in study if s.phase.value == phase]
        if len(group) < 2:
            continue
        chosen = [s for s in group if s.meta.get("phase_reason") in declared]
        if len(chosen) > 1:
            raise InputError(f"Series '{chosen[0].name}' and '{chosen[1].name}' of study '{study.study_id}' are both "
                             f"declared {phase}: keep one, or declare the other as its true phase (--phase).")
        sign = -1.0 if phase == "NC" else 1.0

        def rank(s):
            seconds = s.meta.get("acquisition_seconds")
            return (float(s.meta.get("phase_confidence") or 0.0), sign * seconds if seconds is not None else 0.0)

        keep = chosen[0] if chosen else max(group, key=rank)  # max keeps the first of equals: study order
        for other in group:
            if other is keep:
                continue
            why = ("its phase is declared" if chosen else
                   f"higher detection confidence ({rank(keep)[0]:.2f} vs {rank(other)[0]:.2f})"
                   if rank(keep)[0] != rank(other)[0] else
                   f"acquired {'earlier' if sign < 0 else 'later'}" if rank(keep) != rank(other) else
                   "same confidence and acquisition time: first in series order")
            warnings.append(f"Series '{other.name}' ({_describe(other)}) and '{keep.name}' ({_describe(keep)}) "
                            f"are both {phase}: using '{keep.name}' ({why}); '{other.name}' is left out. To choose, "
                            f"give --phase {other.name} {phase} (and the other series' true phase).")
            del study.series[other.name]
    return warnings


def _describe(series) -> str:
    meta = series.meta
    return ", ".join(f"{k} {meta[m]!r}" if isinstance(meta.get(m), str) else f"{k} {meta[m]}" for k, m in (
        ("SeriesDescription", "series_description"), ("series number", "series_number"), ("file", "file"))
        if meta.get(m) not in (None, "")) or "no description"
