"""`hccfusion demo`: a phantom patient written as a study folder, reloaded, and shown as a Slicer scene.

A sequence of small steps (phantom → study folder → reload → scene → .mrb); later pipeline stages slot
in between reload and scene.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .progress import ProgressFn, silent

log = logging.getLogger(__name__)

SCENE_FILE = Path("scene") / "HCCFusion_demo.mrb"


@dataclass
class DemoResult:
    study_id: str
    summary: list[dict]  # one row per series (Study.summary)
    lesions: list[dict]  # one row per ground-truth lesion
    written: dict[str, Path] = field(default_factory=dict)  # what -> path

    def describe(self) -> str:
        lines = [f"Demo study {self.study_id}: {len(self.summary)} series, {len(self.lesions)} lesion(s)."]
        lines += [f"  {what}: {path}" for what, path in self.written.items()]
        return "\n".join(lines)


def run_demo(out: "str | Path", seed: int = 7, size: str = "full", progress: ProgressFn | None = None) -> DemoResult:
    """Generate a phantom patient, save and reload it as a study folder, write OUT/scene/HCCFusion_demo.mrb."""
    from .io import load_study, save_study
    from .phantom import make_patient

    progress = progress or silent
    out = Path(out)
    progress(0.0, "phantom")
    patient = make_patient(seed, size)
    progress(0.3, "saving study")
    study_dir = save_study(patient.study, out / "study", overwrite=True)
    progress(0.45, "reloading study")
    study = load_study(study_dir)
    progress(0.55, "building scene")
    lesions = lesion_table(patient)
    scene_path = write_scene(out / SCENE_FILE, study, patient, lesions)
    progress(1.0, "done")
    result = DemoResult(study.study_id, study.summary(), lesions.reset_index().to_dict("records"),
                        {"study folder": study_dir, "Slicer scene": scene_path})
    log.info("%s", result.describe())
    return result


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


def write_scene(path: Path, study, patient, lesions) -> Path:
    """Scene with every series, the true transforms (series under them line up with the reference),
    the ground-truth segmentation on the reference grid and the lesion table; saved as .mrb."""
    from . import scene as mrml

    scene = mrml.new_scene()
    reference = patient.reference
    nodes = mrml.add_study(scene, study, labels=study[reference].masks["labels"], reference=reference,
                           segmentation_name="Ground truth")
    extra = [mrml.dataframe_to_table(scene, lesions, "Lesions (ground truth)")]
    for name, transform in patient.transforms.items():
        if name != reference and name in nodes:
            extra.append(mrml.transform_to_node(scene, transform, f"{name} to {reference} (true)",
                                                moving=nodes[name]))
    mrml.place_in_study(scene, extra, study.study_id)
    return mrml.save_scene_mrb(scene, path)
