"""Register a whole study to one reference series and save the result (transforms, resampled study, QC)."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk

from .. import views
from ..errors import InputError
from ..progress import ProgressFn, scaled, silent
from ..study import LABELS, Phase, Series, Study
from . import quality
from .intensity import stack
from .pair import PairResult, register

log = logging.getLogger(__name__)

#: Default reference, in order of preference: portal venous CT, else hepatobiliary MRI, else T1.
#: reference preference: anatomy-rich series first (a single series of any phase serves itself; DWI/ADC/PET last)
DEFAULT_REFERENCES = (Phase.PVP, Phase.HBP, Phase.MR_PVP, Phase.T1, Phase.DCE, Phase.MR_PRE, Phase.T2,
                      Phase.DP, Phase.AP, Phase.NC)
MASKS = ("liver",)
#: Labels that make up the liver region used as registration mask (parenchyma, tumours, portal vein).
LIVER_LABELS = (LABELS["liver"], LABELS["tumour"], LABELS["portal_vein"])


@dataclass
class RegistrationResult:
    """Transforms (series name -> fixed=reference → series transform; identity for the reference), the
    registered Study (every series and mask on the reference grid), QC table (pandas, one row per moving
    series), and checkerboard / difference images per moving series."""

    reference: str
    transforms: dict[str, sitk.Transform]
    study: Study
    qc: "pandas.DataFrame"  # noqa: F821
    checkerboards: dict[str, sitk.Image] = field(default_factory=dict)
    differences: dict[str, sitk.Image] = field(default_factory=dict)

    @property
    def warnings(self) -> dict[str, list[str]]:
        return {row.series: list(row.warnings) for row in self.qc.itertuples() if row.warnings}

    def save(self, folder: "str | Path") -> Path:
        """Write (or replace, see files.atomic_folder) a registration folder atomically: <series>_transform.h5 (ITK, reference → series),
        <series>.nii.gz (+ <series>_<mask>.nii.gz) on the reference grid with study.json, fused.nii.gz +
        channels.json, qc.csv, qc/<series>_checkerboard.nii.gz and qc/<series>_difference.nii.gz, and
        their axial slices through the reference liver's centroid (else the centre) as .png (radiological)."""
        from ..io import save_study
        from ..files import atomic_folder

        folder = Path(folder)
        with atomic_folder(folder, replace=True) as tmp:
            for name, transform in self.transforms.items():
                sitk.WriteTransform(transform, str(tmp / f"{name}_transform.h5"))
            fused, channels, notes = stack(self.study)
            sitk.WriteImage(fused, str(tmp / "fused.nii.gz"), True)
            (tmp / "channels.json").write_text(json.dumps(
                {"reference": self.reference, "channels": channels, "normalisation": notes}, indent=2) + "\n")
            table = self.qc.copy()
            table["warnings"] = ["; ".join(w) for w in table["warnings"]]
            table.to_csv(tmp / "qc.csv", index=False)
            (tmp / "qc").mkdir()
            point = self._qc_point()
            for name in self.checkerboards:
                sitk.WriteImage(self.checkerboards[name], str(tmp / "qc" / f"{name}_checkerboard.nii.gz"), True)
                sitk.WriteImage(self.differences[name], str(tmp / "qc" / f"{name}_difference.nii.gz"), True)
                views.write_png(self.checkerboards[name], tmp / "qc" / f"{name}_checkerboard.png", 0.0, 1.0,
                                point=point)
                views.write_png(self.differences[name], tmp / "qc" / f"{name}_difference.png", -1.0, 1.0,
                                point=point, cmap="RdBu_r")
            save_study(self.study, tmp, overwrite=True)
        return folder

    @classmethod
    def read(cls, folder: "str | Path") -> "RegistrationResult":
        """What `save(folder)` wrote, for the later stages (`run --resume`): reference, registered study, QC table
        and checkerboards (transforms and difference images are not read back)."""
        import pandas as pd

        from ..io import load_study, read_image

        folder = Path(folder)
        try:
            reference = json.loads((folder / "channels.json").read_text())["reference"]
            qc = pd.read_csv(folder / "qc.csv")
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(f"Cannot read the registration in '{folder}' ({exc}): rerun the registration.") from exc
        qc["warnings"] = [[w for w in str(v).split("; ") if w] if v == v else [] for v in qc["warnings"]]
        boards = {p.name[:-len("_checkerboard.nii.gz")]: read_image(p)
                  for p in sorted((folder / "qc").glob("*_checkerboard.nii.gz"))}
        return cls(reference, {}, load_study(folder), qc, boards)

    def _qc_point(self):
        """Centroid (LPS mm) of the reference's liver, or None (the volume's centre) without a liver mask."""
        try:
            return views.centroid(liver_mask(self.study[self.reference]))
        except InputError:
            return None


def choose_reference(study: Study, reference: "str | Phase | None" = None) -> Series:
    """The named series / phase, else the first present of DEFAULT_REFERENCES, else the first series."""
    if reference is not None:
        return study[reference]
    for phase in DEFAULT_REFERENCES:
        if study.get(phase) is not None:
            return study.get(phase)
    if not len(study):
        raise InputError(f"Study '{study.study_id}' has no series to register.")
    return next(iter(study))


def liver_mask(series: Series) -> sitk.Image:
    """Liver region of a series: its 'liver' mask, else LIVER_LABELS of its 'labels' map."""
    if "liver" in series.masks:
        return sitk.Cast(series.masks["liver"] != 0, sitk.sitkUInt8)
    if "labels" in series.masks:
        labels = series.masks["labels"]
        region = sitk.Image(labels.GetSize(), sitk.sitkUInt8)
        region.CopyInformation(labels)
        for value in LIVER_LABELS:
            region = region | sitk.Cast(labels == value, sitk.sitkUInt8)
        return region
    raise InputError(f"Reference series '{series.name}' has no liver mask ('liver' mask or 'labels' map): "
                     "segment the liver first, add the mask to the study, or register without --mask.")


def register_study(study: Study, reference: "str | Phase | None" = None, *, mode: str = "deformable",
                   mask: str | None = None, fixed_mask: sitk.Image | None = None, engine: str = "sitk",
                   seed: int = 0, progress: ProgressFn | None = None, **options) -> RegistrationResult:
    """Register every series of `study` to the reference (default PVP, else HBP, else T1).

    mask="liver" restricts the metric to the reference's liver (dilated) so the liver is aligned rather
    than the spine; `fixed_mask` (a liver mask on the reference grid, e.g. segmented before registration) does
    the same without mask. `options` go to `register` (init, spacing_mm, mask_dilation_mm, grid_spacing_mm).
    Resampled images use linear interpolation, masks nearest neighbour, both onto the reference grid.
    """
    import pandas as pd

    progress = progress or silent
    if mask not in (None, *MASKS):
        raise InputError(f"Unknown registration mask '{mask}': use one of {', '.join(MASKS)} or none.")
    ref = choose_reference(study, reference)
    if mask and fixed_mask is not None:
        raise InputError("Give either mask='liver' (the reference's own liver mask) or a fixed_mask, not both.")
    fixed_mask = liver_mask(ref) if mask == "liver" else fixed_mask
    moving = [s for s in study if s.name != ref.name]
    transforms = {ref.name: sitk.Transform(3, sitk.sitkIdentity)}
    used = mask or ("liver" if fixed_mask is not None else None)
    registered = Study(study.study_id, clinical=study.clinical,
                       meta={**study.meta, "registration": {"reference": ref.name, "mode": mode, "engine": engine,
                                                            "mask": used}})
    registered.add(Series(ref.name, ref.phase, ref.image, ref.modality, dict(ref.masks), dict(ref.meta)))
    rows, checkerboards, differences = [], {}, {}
    for k, series in enumerate(moving):
        step = scaled(progress, k / max(len(moving), 1), (k + 1) / max(len(moving), 1))
        pair: PairResult = register(ref, series, mode=mode, fixed_mask=fixed_mask, engine=engine, seed=seed,
                                    progress=step, **options)
        transforms[series.name] = pair.transform
        masks = {key: quality.resample(m, ref.image, pair.transform, nearest=True) for key, m in series.masks.items()}
        registered.add(Series(series.name, series.phase, pair.resampled, series.modality, masks,
                              {**series.meta, "registered_to": ref.name}))
        rows.append(pair.qc)
        checkerboards[series.name] = quality.checkerboard(ref.image, pair.resampled)
        differences[series.name] = quality.difference(ref.image, pair.resampled)
    columns = ["series", "reference", "mode", "engine", "init", "stages", "status", "metric_before", "metric_after"]
    qc = pd.DataFrame(rows)
    if qc.empty:
        qc = pd.DataFrame(columns=columns + ["warnings"])
    dice = sorted((c for c in qc.columns if c.startswith("dice_")),
                  key=lambda c: (c.split("_", 2)[2], c.split("_", 2)[1] == "after"))
    qc = qc[columns + dice
            + [c for c in qc.columns if c not in columns and not c.startswith("dice_")]]
    progress(1.0, "registration done")
    return RegistrationResult(ref.name, transforms, registered, qc, checkerboards, differences)
