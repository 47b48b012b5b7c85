"""Studies into a scene (volumes in the subject hierarchy) and scene bundles (.mrb) saved and loaded."""
from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import SimpleITK as sitk
import slicer

from ..errors import InputError
from ..study import CT_WINDOW, Modality, check_same_grid
from .nodes import new_scene
from .volumes import image_to_volume
from .segmentations import labels_to_segmentation


# ---------------------------------------------------------------- subject hierarchy
def place_in_study(scene, nodes, study_id: str, patient: str = "Anonymous") -> int:
    """Put `nodes` under the study item `study_id` (below patient item `patient`) in subject hierarchy.

    The items are reused when they exist; returns the study item ID. No identifiers are added beyond
    the given names.
    """
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    root = sh.GetSceneItemID()
    patient_item = sh.GetItemChildWithName(root, patient) or sh.CreateSubjectItem(root, patient)
    study_item = sh.GetItemChildWithName(patient_item, study_id) or sh.CreateStudyItem(patient_item, study_id)
    for node in nodes:
        item = sh.GetItemByDataNode(node) or sh.CreateItem(study_item, node)
        sh.SetItemParent(item, study_item)
    return study_item


# ---------------------------------------------------------------- studies


def add_study(scene, study, *, labels: "sitk.Image | None" = None, reference: "str | None" = None,
              segmentation_name: str = "Segmentation") -> dict:
    """Add every series of a Study as a volume node, and `labels` (on the reference series' grid) as a
    segmentation node, all under the study in subject hierarchy. Returns {series name | segmentation_name: node}.
    """
    nodes = {}
    for series in study:
        window = CT_WINDOW if series.modality is Modality.CT else None
        node = image_to_volume(scene, series.image, series.name, window_level=window)
        node.SetAttribute("HCCFusion.Phase", series.phase.value)
        nodes[series.name] = node
    if labels is not None:
        ref = study[reference] if reference else next(iter(study))
        check_same_grid(ref.image, labels, f"segmentation of study '{study.study_id}'")
        nodes[segmentation_name] = labels_to_segmentation(scene, labels, segmentation_name,
                                                          reference_volume=nodes[ref.name])
    place_in_study(scene, nodes.values(), study.study_id)
    return nodes


# ---------------------------------------------------------------- scene bundles
def save_scene_mrb(scene, path: "str | Path") -> Path:
    """Write the scene as a Slicer bundle (.mrb) atomically; nodes without storage get default storage."""
    path = Path(path)
    if path.suffix.lower() != ".mrb":
        raise InputError(f"Scene file '{path}' must end in .mrb.")
    nodes = scene.GetNodesByClass("vtkMRMLStorableNode")
    for i in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(i)
        if node.GetStorageNode() is None and not node.GetHideFromEditors():
            node.AddDefaultStorageNode()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.stem}.", dir=path.parent))
    try:
        messages = slicer.vtkMRMLMessageCollection()
        if not scene.WriteToMRB(str(tmp / path.name), None, messages):
            raise InputError(f"Could not write scene '{path}': {messages.GetAllMessagesAsString().strip()}")
        os.replace(tmp / path.name, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def load_scene_mrb(path: "str | Path", scene=None):
    """Read a .mrb bundle into `scene` (default: a new headless scene, or Slicer's scene in the app)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Scene file '{path}' does not exist: check the path.")
    if not zipfile.is_zipfile(path):
        raise InputError(f"Cannot read scene '{path}': it is not a Slicer .mrb bundle (zip) or it is truncated.")
    scene = scene if scene is not None else new_scene()
    messages = slicer.vtkMRMLMessageCollection()
    cwd = os.getcwd()
    try:
        ok = scene.ReadFromMRB(str(path.resolve()), False, messages)
    finally:
        os.chdir(cwd)  # Slicer's unzip can leave the process in its (deleted) extraction folder on failure
    if not ok:
        raise InputError(f"Cannot read scene '{path}' ({messages.GetAllMessagesAsString().strip()[:300]}): "
                         "the file is not a Slicer .mrb bundle or is truncated.")
    return scene
