"""SimpleITK images <-> MRML scalar/vector/label map volume nodes (LPS <-> RAS)."""
from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk
import vtk
from vtk.util import numpy_support

from ..errors import GeometryError, InputError
from .nodes import CHANNELS_ATTRIBUTE, LPS_TO_RAS


# ---------------------------------------------------------------- volumes
def ijk_to_ras(image: sitk.Image) -> np.ndarray:
    """4x4 IJK→RAS matrix of a SimpleITK image (its LPS geometry with x and y flipped)."""
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = LPS_TO_RAS @ direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = LPS_TO_RAS @ np.array(image.GetOrigin(), dtype=float)
    return matrix


def vtk_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def np_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def set_image_data(node, image: sitk.Image) -> None:
    array = sitk.GetArrayViewFromImage(image)
    if array.dtype.kind == "c":
        raise InputError(f"Image for node '{node.GetName()}' is complex-valued: MRML volumes need real voxels.")
    components = image.GetNumberOfComponentsPerPixel()
    data = vtk.vtkImageData()
    data.SetDimensions(*image.GetSize())
    flat = np.ascontiguousarray(array).reshape(-1, components) if components > 1 else np.ascontiguousarray(array).ravel()
    scalars = numpy_support.numpy_to_vtk(flat, deep=True)
    scalars.SetName("ImageScalars")
    data.GetPointData().SetScalars(scalars)
    node.SetAndObserveImageData(data)
    node.SetIJKToRASMatrix(vtk_matrix(ijk_to_ras(image)))


def image_to_volume(scene, image: sitk.Image, name: str, *, labelmap: bool = False,
                    channels: "list[str] | None" = None, window_level: "tuple[float, float] | None" = None):
    """Add a volume node holding `image` (voxels copied, geometry exact).

    Scalar images become vtkMRMLScalarVolumeNode (vtkMRMLLabelMapVolumeNode with `labelmap=True`),
    multi-component images vtkMRMLVectorVolumeNode (channel names kept in the node attribute
    CHANNELS_ATTRIBUTE).
    """
    if image.GetDimension() != 3:
        raise GeometryError(f"Image '{name}' is {image.GetDimension()}D: MRML volumes here are 3D.")
    vector = image.GetNumberOfComponentsPerPixel() > 1
    if vector and labelmap:
        raise InputError(f"Label map '{name}' has {image.GetNumberOfComponentsPerPixel()} components: use one.")
    cls = "vtkMRMLVectorVolumeNode" if vector else (
        "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode")
    node = scene.AddNewNodeByClass(cls, name)
    set_image_data(node, image)
    node.CreateDefaultDisplayNodes()
    if vector:
        names = list(channels or [f"channel{i}" for i in range(image.GetNumberOfComponentsPerPixel())])
        if len(names) != image.GetNumberOfComponentsPerPixel():
            raise InputError(f"Vector image '{name}' has {image.GetNumberOfComponentsPerPixel()} channels "
                             f"but {len(names)} channel names were given.")
        node.SetAttribute(CHANNELS_ATTRIBUTE, json.dumps(names))
    elif window_level and not labelmap:
        display = node.GetDisplayNode()
        display.AutoWindowLevelOff()
        display.SetWindowLevel(*window_level)
    return node


def volume_to_image(node, *, ignore_transform: bool = False) -> sitk.Image:
    """SimpleITK image (voxels copied, LPS geometry) of a scalar, label map or vector volume node.

    A node under a transform raises GeometryError unless `ignore_transform` (then the node's own
    geometry is used); call `harden(node)` first to bake the transform in.
    """
    data = node.GetImageData() if node is not None else None
    if data is None:
        raise InputError(f"Volume node '{node.GetName() if node else None}' has no voxels.")
    if node.GetParentTransformNode() is not None and not ignore_transform:
        raise GeometryError(
            f"Volume '{node.GetName()}' is under transform '{node.GetParentTransformNode().GetName()}': "
            "harden it first (scene.harden) or pass ignore_transform=True.")
    scalars = data.GetPointData().GetScalars()
    components = scalars.GetNumberOfComponents()
    size = data.GetDimensions()
    shape = (size[2], size[1], size[0]) + ((components,) if components > 1 else ())
    array = numpy_support.vtk_to_numpy(scalars).reshape(shape).copy()
    image = sitk.GetImageFromArray(array, isVector=components > 1)
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    m = LPS_TO_RAS @ np_matrix(matrix)[:3]
    spacing = np.linalg.norm(m[:, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((m[:, :3] / spacing).ravel().tolist())
    image.SetOrigin(m[:, 3].tolist())
    return image


def channel_names(node) -> list[str]:
    """Channel names of a vector volume created by `image_to_volume`."""
    text = node.GetAttribute(CHANNELS_ATTRIBUTE)
    return json.loads(text) if text else []
