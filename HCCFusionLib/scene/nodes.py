"""Scenes and terminology: `new_scene`, `module_logic`, node attribute names, `SEGMENTS`, `LPS_TO_RAS`."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer

from .. import terminology
from ..errors import InputError
from ..study import LABELS


LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

#: Node attribute / segment tag names written by HCCFusion.
CHANNELS_ATTRIBUTE = "HCCFusion.Channels"
LABEL_VALUE_TAG = "HCCFusion.LabelValue"
INDEX_ATTRIBUTE = "HCCFusion.IndexColumns"
DTYPE_PROPERTY = "dtype"

_CONTEXT = terminology.context_name()
_REGION_CONTEXT = "Anatomic codes - DICOM master list"


def terminology_string(context: str, category: str, type_: str, region: str = "^^") -> str:
    """Slicer's serialized terminology entry (context~category~type~modifier~regionContext~region~modifier)."""
    return "~".join([context, category, type_, "^^", _REGION_CONTEXT, region, "^^"])


@dataclass(frozen=True)
class SegmentInfo:
    name: str
    color: tuple[float, float, float]  # RGB 0..1
    terminology: str = ""


#: Segment names, colours and SNOMED-CT terminology for the study label values (study.LABELS), from the
#: one terminology file (HCCFusionLib/hccfusion.term.json, read by `terminology.load`).
SEGMENTS = {
    LABELS[term.label]: SegmentInfo(
        term.label, tuple(v / 255 for v in term.rgb),
        terminology_string(_CONTEXT, term.category.slicer(), term.type.slicer(),
                           term.region.slicer() if term.region else "^^"))
    for term in terminology.load().values()
}

LINEAR_TRANSFORMS = {
    sitk.sitkIdentity, sitk.sitkTranslation, sitk.sitkScale, sitk.sitkScaleLogarithmic, sitk.sitkEuler,
    sitk.sitkSimilarity, sitk.sitkQuaternionRigid, sitk.sitkVersor, sitk.sitkVersorRigid,
    sitk.sitkScaleSkewVersor, sitk.sitkComposeScaleSkewVersor, sitk.sitkScaleVersor, sitk.sitkAffine,
}


# ---------------------------------------------------------------- scene
def in_slicer_app() -> bool:
    """True inside the Slicer application (not the headless slicer-core wheel)."""
    return hasattr(slicer, "app")


def new_scene(cache_dir: "str | Path | None" = None):
    """The scene to work in: `slicer.mrmlScene` inside Slicer, else a new headless scene with its logics.

    Headless, the scene gets an application logic, the Colors logic with Slicer's default colour nodes,
    the Volumes/Segmentations/Transforms/SubjectHierarchy/Tables/Plots/Data module logics and a RemoteIO +
    DataIOManager pair whose cache is `cache_dir` (needed to read .mrb bundles); `slicer.mrmlScene` is set
    to it. The logics stay alive as long as the scene's Python object (kept as `scene.hccfusion_logics`).
    """
    if in_slicer_app():
        return slicer.mrmlScene
    cache = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / f"hccfusion-mrml-{os.getuid()}"
    cache.mkdir(parents=True, exist_ok=True)
    scene = slicer.vtkMRMLScene()
    scene.SetRootDirectory(str(cache))
    app = slicer.vtkSlicerApplicationLogic()
    app.SetTemporaryPath(str(cache))
    # the wheel ships no colour files: point the Colors logic at an empty folder instead of none
    (cache / "share" / "ColorFiles").mkdir(parents=True, exist_ok=True)
    app.SetHomeDirectory(str(cache))
    app.SetShareDirectory("share")
    app.SetMRMLScene(scene)
    logics = {"Application": app}

    def add_logic(name, logic):
        logic.SetMRMLApplicationLogic(app)
        logic.SetMRMLScene(scene)
        app.SetModuleLogic(name, logic)
        logics[name] = logic
        return logic

    app.SetColorLogic(add_logic("Colors", slicer.vtkSlicerColorLogic()))
    for name, cls in (("Volumes", slicer.vtkSlicerVolumesLogic),
                      ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
                      ("Transforms", slicer.vtkSlicerTransformLogic),
                      ("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic),
                      ("Tables", slicer.vtkSlicerTablesLogic),
                      ("Plots", slicer.vtkSlicerPlotsLogic),
                      ("Data", slicer.vtkSlicerDataModuleLogic)):
        add_logic(name, cls())
    remote_io = slicer.vtkMRMLRemoteIOLogic()
    remote_io.SetMRMLApplicationLogic(app)
    remote_io.SetMRMLScene(scene)
    remote_io.AddDataIOToScene()
    remote = cache / "RemoteIO"
    remote.mkdir(exist_ok=True)
    (remote / ".slicer-cache").touch()  # marks the folder as a cache Slicer may clean
    remote_io.GetCacheManager().SetRemoteCacheDirectory(str(remote))
    data_io = slicer.vtkDataIOManagerLogic()
    data_io.SetMRMLApplicationLogic(app)
    data_io.SetMRMLScene(scene)
    data_io.SetAndObserveDataIOManager(remote_io.GetDataIOManager())
    logics.update(RemoteIO=remote_io, DataIO=data_io)
    scene.hccfusion_logics = logics
    slicer.mrmlScene = scene
    return scene


def module_logic(scene, name: str):
    """A module logic ("Volumes", "Segmentations", ...) for `scene`, in the app or headless."""
    logics = getattr(scene, "hccfusion_logics", None)
    if logics and name in logics:
        return logics[name]
    if in_slicer_app():
        return slicer.app.applicationLogic().GetModuleLogic(name)
    raise InputError(f"The scene has no '{name}' logic: create scenes with HCCFusionLib.scene.new_scene().")
