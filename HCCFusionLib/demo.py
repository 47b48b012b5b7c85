"""`hccfusion demo`: a phantom patient through the whole pipeline, shown as a Slicer scene.

phantom → study folder → `pipeline.run` (register, segment, radiomics, LI-RADS, staging, prediction, report,
DICOM SEG/SR) → registration error against the phantom's true landmarks → scene (.mrb) with the volumes,
the registration transforms, the segmentations and the tables. Also the synthetic data behind the
`phantom`, `phantom-cohort` and `train-seg --phantoms` verbs: `demo` is the only library module that imports
`phantom`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .phantom import make_cohort, make_patient, phantom_case, save_cohort, save_patient
from .progress import ProgressFn, scaled, silent
from .layout import RunFolder

log = logging.getLogger(__name__)

SCENE_FILE = Path("scene") / "HCCFusion_demo.mrb"


@dataclass
class DemoResult:
    study_id: str
    summary: list[dict]  # one row per series (Study.summary)
    lesions: list[dict]  # one row per ground-truth lesion
    written: dict[str, Path] = field(default_factory=dict)  # what -> path
    run: object = None  # pipeline.RunResult
    tre: list[dict] = field(default_factory=list)  # per moving series: TRE (mm) before/after registration
    segmentation_source: str = ""
    dice: dict = field(default_factory=dict)  # structure -> Dice of the pipeline's segmentation vs the truth

    def describe(self) -> str:
        lines = [f"Demo study {self.study_id}: {len(self.summary)} series, {len(self.lesions)} true lesion(s)."]
        if self.run is not None:
            lines.append(self.run.describe())
        for row in self.tre:
            lines.append(f"  TRE {row['series']}: {row['tre_before_mm']:.2f} mm before, {row['tre_mean_mm']:.2f} mm "
                         f"after registration (max {row['tre_max_mm']:.2f} mm, {row['landmarks']} landmarks)")
        if self.segmentation_source:
            lines.append(f"  segmentation: {self.segmentation_source}")
        if self.dice:
            lines.append("  Dice vs the phantom's truth: " + ", ".join(
                f"{k} {'-' if v is None else f'{v:.3f}'}" for k, v in self.dice.items()))
        lines += [f"  {what}: {path}" for what, path in self.written.items()]
        return "\n".join(lines)


def run_demo(out: "str | Path", seed: int = 7, size: str = "full", progress: ProgressFn | None = None, *,
             mode: str = "deformable", registration_spacing_mm: float = 4.0, preset: "str | Path | None" = None,
             truth_segmentation: bool = False, overwrite: bool = True) -> DemoResult:
    """Generate a phantom patient, run every pipeline stage on it into OUT/, write OUT/scene/HCCFusion_demo.mrb.

    The segmentation is made by the engine `auto` picks for the study (the shipped phantom sample model), and
    its Dice against the phantom's truth is reported beside the TRE; with `truth_segmentation` (or when no model
    is installed) the ground truth is entered as the user's segmentation instead. The summary says which.
    `preset`: radiomics preset for every series (default: by modality).
    `overwrite` replaces the stage folders of an earlier demo in OUT.
    """
    from . import pipeline
    from .io import load_study, save_image, save_study
    from .segmentation.bundle import default_bundle_path

    progress = progress or silent
    out = Path(out)
    progress(0.0, "phantom")
    patient = make_patient(seed, size)
    progress(0.05, "saving study")
    study_dir = save_study(patient.study, out / "study", overwrite=True)
    study = load_study(study_dir)
    segmentation, source = None, f"model ({default_bundle_path().name}, chosen by engine auto)"
    if truth_segmentation or not (default_bundle_path() / "checksums.sha256").is_file():
        segmentation = save_image(patient.labels, out / "truth" / "labels.nii.gz")
        source = ("phantom ground truth (asked for)" if truth_segmentation
                  else "phantom ground truth (no shipped segmentation model installed)")
    result = pipeline.run(study_dir, out, segmentation=segmentation, mode=mode, overwrite=overwrite,
                          registration_options={"spacing_mm": registration_spacing_mm},
                          presets={"*": preset} if preset else None,
                          progress=scaled(progress, 0.1, 0.9))
    progress(0.9, "registration error and scene")
    transforms = {name: sitk.ReadTransform(str(RunFolder(out).transform(name)))
                  for name in patient.transforms}
    tre = target_registration_error(patient, transforms)
    dice = truth_dice(patient.labels, RunFolder(out).labels) if segmentation is None else {}
    truth = lesion_table(patient)
    scene_path = write_scene(out / SCENE_FILE, study, patient, truth, result, transforms, tre)
    progress(1.0, "done")
    written = {"study folder": study_dir, "report": result.report, "DICOM SEG": result.dicom.get("seg"),
               "DICOM SR": result.dicom.get("sr"), "Slicer scene": scene_path}
    written = {k: v for k, v in written.items() if v is not None}
    demo = DemoResult(study.study_id, study.summary(), truth.reset_index().to_dict("records"), written, result,
                      tre.reset_index().to_dict("records"), source, dice)
    log.info("%s", demo.describe())
    return demo


def target_registration_error(patient, transforms: dict):
    """Per moving series: mean/max distance (mm) between the true landmark positions in that series and the
    reference landmarks mapped by the registration transform (and by identity, before registration)."""
    import pandas as pd

    reference = np.asarray(patient.landmarks[patient.reference], float)
    rows = []
    for name, transform in transforms.items():
        if name == patient.reference:
            continue
        true = np.asarray(patient.landmarks[name], float)
        mapped = np.array([transform.TransformPoint(tuple(map(float, p))) for p in reference])
        error = np.linalg.norm(mapped - true, axis=1)
        rows.append({"series": name, "landmarks": len(true),
                     "tre_before_mm": round(float(np.linalg.norm(reference - true, axis=1).mean()), 3),
                     "tre_mean_mm": round(float(error.mean()), 3), "tre_max_mm": round(float(error.max()), 3)})
    return pd.DataFrame(rows).set_index("series")


def truth_dice(truth: sitk.Image, segmentation: Path) -> dict:
    """Dice of the segmentation against the truth: liver (liver + tumour, the whole organ) and tumour."""
    from .io import read_image
    from .study import LABELS

    true, found = sitk.GetArrayFromImage(truth), sitk.GetArrayFromImage(read_image(segmentation))
    dice = {}
    for name, values in (("liver", (LABELS["liver"], LABELS["tumour"])), ("tumour", (LABELS["tumour"],))):
        a, b = np.isin(true, values), np.isin(found, values)
        total = int(a.sum() + b.sum())
        dice[name] = round(2.0 * float((a & b).sum()) / total, 4) if total else None
    return dice


def lesion_table(patient):
    """Ground-truth lesions: centre (LPS, mm), diameter, pattern, kinetics, expected LI-RADS, volume (mL)."""
    import pandas as pd

    instances = sitk.GetArrayFromImage(patient.lesion_labels)
    voxel_ml = float(np.prod(patient.lesion_labels.GetSpacing())) / 1000.0
    rows = []
    for lesion in patient.lesions:
        x, y, z = lesion.centre_mm
        rows.append({"lesion": int(lesion.index), "centre_x_mm": round(float(x), 2), "centre_y_mm": round(float(y), 2),
                     "centre_z_mm": round(float(z), 2), "diameter_mm": round(float(lesion.diameter_mm), 2),
                     "pattern": lesion.pattern, "aphe": bool(lesion.aphe), "washout": bool(lesion.washout),
                     "capsule": bool(lesion.capsule), "lirads": lesion.lirads or "",
                     "volume_ml": round(float((instances == lesion.index).sum() * voxel_ml), 3)})
    columns = ["lesion", "centre_x_mm", "centre_y_mm", "centre_z_mm", "diameter_mm", "pattern", "aphe", "washout",
               "capsule", "lirads", "volume_ml"]
    return pd.DataFrame(rows, columns=columns).set_index("lesion")


def write_scene(path: Path, study, patient, truth, result, transforms: dict, tre) -> Path:
    """Scene with every series (each under its registration transform, so all line up with the reference),
    the true transforms, the ground-truth and pipeline segmentations, and the lesion / QC / prediction tables."""
    from . import scene as mrml
    from .io import read_image

    scene = mrml.new_scene()
    reference = patient.reference
    nodes = mrml.add_study(scene, study, labels=study[reference].masks["labels"], reference=reference,
                           segmentation_name="Ground truth")
    labels = read_image(RunFolder(result.out).labels)
    extra = [mrml.labels_to_segmentation(scene, labels, "Segmentation (pipeline)", reference_volume=nodes[reference]),
             mrml.dataframe_to_table(scene, truth, "Lesions (ground truth)"),
             mrml.dataframe_to_table(scene, result.lesions.drop(columns=["reason"], errors="ignore"),
                                     "Lesions (LI-RADS)"),
             mrml.dataframe_to_table(scene, result.registration_qc[["series", "mode", "metric_before", "metric_after"]]
                                     .set_index("series").join(tre), "Registration QC")]
    if result.prediction is not None:
        extra.append(mrml.dataframe_to_table(scene, result.prediction, "Prediction"))
    for name, transform in transforms.items():
        if name != reference and name in nodes:
            extra.append(mrml.transform_to_node(scene, transform, f"{name} to {reference} (registered)",
                                                moving=nodes[name]))
            extra.append(mrml.transform_to_node(scene, patient.transforms[name], f"{name} to {reference} (true)"))
    mrml.place_in_study(scene, extra, study.study_id)
    return mrml.save_scene_mrb(scene, path)


# ---------------------------------------------------------------- synthetic data for the CLI verbs
def write_phantom(out: "str | Path", seed: int = 0, size: str = "small", *, mri: bool = False,
                  n_tumours: int | None = None, misalignment: str = "deformable", mr_agent: str | None = None,
                  progress: ProgressFn | None = None):
    """Make a phantom patient and save it (study folder + truth/) into the new folder `out`; return the patient.
    `mr_agent` ("extracellular"/"gadoxetate"): an MRI-only study (T1 dynamic, T2, DWI, ADC) instead of CT."""
    progress = progress or silent
    patient = make_patient(seed, size, mri=mri, n_tumours=n_tumours, misalignment=misalignment, mr_agent=mr_agent,
                           **({"phases": ()} if mr_agent else {}), progress=scaled(progress, 0.0, 0.7))
    progress(0.7, "writing")
    save_patient(patient, out)
    progress(1.0, "done")
    return patient


def write_phantom_cohort(out: "str | Path", n: int, seed: int, centers: int = 3) -> Path:
    """A simulated cohort (`phantom.make_cohort`) saved as CSV files into the new folder `out`."""
    return save_cohort(make_cohort(n, seed, centers=centers), out, feature_seed=seed)


def phantom_cases(n: int, seed: int, channels, size: str = "small", progress: ProgressFn | None = None) -> list:
    """`n` phantom segmentation cases (seeds `seed`, `seed`+1, ...) for training."""
    progress = progress or silent
    cases = []
    for i in range(n):
        cases.append(phantom_case(seed + i, channels, size))
        progress(0.1 * (i + 1) / n, f"phantom {i + 1}/{n}")
    return cases
