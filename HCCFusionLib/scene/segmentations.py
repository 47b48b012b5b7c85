"""Label maps <-> MRML segmentation nodes (one segment per label value, with terminology)."""
from __future__ import annotations


import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util import numpy_support

from ..errors import GeometryError, InputError
from ..study import LABELS
from .nodes import LABEL_VALUE_TAG, SEGMENTS, SegmentInfo
from .volumes import image_to_volume, set_image_data, volume_to_image


# ---------------------------------------------------------------- segmentations
def _segment_info(value: int, names: "dict[int, str] | None") -> SegmentInfo:
    known = SEGMENTS.get(value)
    name = (names or {}).get(value) or (known.name if known else f"label_{value}")
    if known and known.name == name:
        return known
    rng = np.random.default_rng(value)  # stable colour for labels without a table entry
    return SegmentInfo(name, tuple(float(c) for c in rng.uniform(0.2, 1.0, 3)))


def labels_to_segmentation(scene, labels: sitk.Image, name: str = "Segmentation",
                           names: "dict[int, str] | None" = None, reference_volume=None):
    """Segmentation node with one segment per nonzero label of `labels` (an integer label map).

    Segment names, colours and SNOMED-CT terminology come from SEGMENTS (study.LABELS values) unless
    `names` maps a value to another name; each segment keeps its label value in the tag LABEL_VALUE_TAG.
    The import goes through a label map node + colour table and Segmentations' ImportLabelmapToSegmentationNode.
    """
    array = sitk.GetArrayViewFromImage(labels)
    if labels.GetNumberOfComponentsPerPixel() != 1 or array.dtype.kind not in "iub":
        raise InputError(f"Label map for segmentation '{name}' must be a single-component integer image "
                         f"(got {labels.GetPixelIDTypeAsString()}): round or cast it to UInt8.")
    values = [int(v) for v in np.unique(array) if v > 0]
    if values and min(values) < 0:
        raise InputError(f"Label map for segmentation '{name}' has negative labels: use 0 for background.")
    colors = scene.AddNewNodeByClass("vtkMRMLColorTableNode", f"{name}_colors")
    labelmap = None
    try:
        colors.SetTypeToUser()
        colors.SetNumberOfColors((max(values) if values else 0) + 1)
        colors.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
        infos = {v: _segment_info(v, names) for v in values}
        for value, info in infos.items():
            colors.SetColor(value, info.name, *info.color, 1.0)
            if info.terminology:
                colors.SetTerminologyFromString(value, info.terminology)
        labelmap = image_to_volume(scene, sitk.Cast(labels, sitk.sitkInt32), f"{name}_labelmap", labelmap=True)
        labelmap.GetDisplayNode().SetAndObserveColorNodeID(colors.GetID())
        segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume or labelmap)
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation)
        if not ok:
            scene.RemoveNode(segmentation)
            raise InputError(f"Slicer could not import the label map of segmentation '{name}'.")
        segmentation.CreateDefaultDisplayNodes()
        seg = segmentation.GetSegmentation()
        for value, info in infos.items():
            segment = seg.GetSegment(seg.GetSegmentIdBySegmentName(info.name))
            segment.SetColor(*info.color)
            if info.terminology:
                segment.SetTerminology(info.terminology)
            segment.SetTag(LABEL_VALUE_TAG, str(value))
        return segmentation
    finally:
        if labelmap is not None:
            scene.RemoveNode(labelmap)
        scene.RemoveNode(colors)


def segment_label_values(segmentation, labels: "dict[str, int] | None" = None) -> dict[str, int]:
    """Segment ID → label value: `labels[name]`, else the segment's LABEL_VALUE_TAG, else study.LABELS[name],
    else its position (1-based)."""
    seg = segmentation.GetSegmentation()
    result = {}
    for i in range(seg.GetNumberOfSegments()):
        segment_id = seg.GetNthSegmentID(i)
        segment = seg.GetSegment(segment_id)
        name = segment.GetName()
        tag = vtk.reference("")
        segment.GetTag(LABEL_VALUE_TAG, tag)
        tag = str(tag)
        if labels and name in labels:
            result[segment_id] = int(labels[name])
        elif tag:
            result[segment_id] = int(tag)
        elif name in LABELS:
            result[segment_id] = LABELS[name]
        else:
            result[segment_id] = i + 1
    return result


def segmentation_to_labels(segmentation, reference, labels: "dict[str, int] | None" = None) -> sitk.Image:
    """Label map (UInt8, or UInt16 for values > 255) of a segmentation node on a reference grid.

    `reference`: a SimpleITK image or a volume node (its own geometry). Label values per segment as in
    `segment_label_values`; where segments overlap, later ones win.
    """
    if not isinstance(reference, sitk.Image):
        reference = volume_to_image(reference, ignore_transform=True)
    scene = segmentation.GetScene()
    values = segment_label_values(segmentation, labels)
    if any(v <= 0 for v in values.values()):
        raise InputError(f"Segment label values must be positive: {values}.")
    grid = sitk.Image(reference.GetSize(), sitk.sitkUInt8)
    grid.CopyInformation(reference)
    out = np.zeros(reference.GetSize()[::-1], dtype=np.uint16 if max(values.values(), default=0) > 255 else np.uint8)
    ref = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "hccfusion_reference")
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "hccfusion_export")
    try:
        set_image_data(ref, grid)
        for segment_id, value in values.items():
            ids = vtk.vtkStringArray()
            ids.InsertNextValue(segment_id)
            ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                segmentation, ids, labelmap, ref, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
            if not ok:
                raise GeometryError(f"Segment '{segment_id}' of '{segmentation.GetName()}' could not be "
                                    "exported on the reference grid.")
            mask = numpy_support.vtk_to_numpy(labelmap.GetImageData().GetPointData().GetScalars())
            out[mask.reshape(out.shape) > 0] = value
    finally:
        scene.RemoveNode(labelmap)
        scene.RemoveNode(ref)
    image = sitk.GetImageFromArray(out)
    image.CopyInformation(reference)
    return image
