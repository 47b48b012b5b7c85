"""SimpleITK transforms <-> MRML transform nodes (linear, B-spline, displacement field), hardening."""
from __future__ import annotations

import os
import tempfile

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from ..errors import GeometryError, InputError
from .nodes import LINEAR_TRANSFORMS
from .volumes import np_matrix, vtk_matrix


# ---------------------------------------------------------------- transforms
def _flatten(transform: sitk.Transform) -> list[sitk.Transform]:
    if transform.GetTransformEnum() == sitk.sitkComposite:
        composite = sitk.CompositeTransform(transform)
        return [t for i in range(composite.GetNumberOfTransforms()) for t in _flatten(composite.GetNthTransform(i))]
    return [transform]


def _linear_matrix_lps(transform: sitk.Transform) -> np.ndarray:
    """4x4 matrix of a linear transform, read off its point mapping (exact for affine maps)."""
    offset = np.array(transform.TransformPoint((0.0, 0.0, 0.0)))
    matrix = np.eye(4)
    for axis in range(3):
        unit = [0.0, 0.0, 0.0]
        unit[axis] = 1.0
        matrix[:3, axis] = np.array(transform.TransformPoint(unit)) - offset
    matrix[:3, 3] = offset
    return matrix


def _lps_ras(matrix: np.ndarray) -> np.ndarray:
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ matrix @ flip


def transform_to_node(scene, transform: sitk.Transform, name: str, *, moving=None):
    """Transform node for a SimpleITK transform (points of the fixed frame → moving frame, LPS).

    The node's "transform from parent" is `transform` in RAS: linear transforms (incl. composites of linear
    ones) give a vtkMRMLLinearTransformNode set directly; B-spline → vtkMRMLBSplineTransformNode,
    displacement field → vtkMRMLGridTransformNode, other composites → vtkMRMLTransformNode, read from an
    ITK .h5 file through vtkMRMLTransformStorageNode (the path Slicer uses to load ITK transforms).
    With `moving`, that volume is placed under the node, which aligns it to the fixed volume.
    """
    parts = _flatten(transform)
    kinds = {p.GetTransformEnum() for p in parts}
    if kinds <= LINEAR_TRANSFORMS:
        node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
        node.SetMatrixTransformFromParent(vtk_matrix(_lps_ras(_linear_matrix_lps(transform))))
    else:
        if len(parts) == 1 and kinds == {sitk.sitkBSplineTransform}:
            cls = "vtkMRMLBSplineTransformNode"
        elif len(parts) == 1 and kinds == {sitk.sitkDisplacementField}:
            cls = "vtkMRMLGridTransformNode"
        else:
            cls = "vtkMRMLTransformNode"
        node = scene.AddNewNodeByClass(cls, name)
        with tempfile.TemporaryDirectory(prefix="hccfusion-tfm-") as tmp:
            path = os.path.join(tmp, "transform.h5")
            sitk.WriteTransform(transform, path)
            storage = slicer.vtkMRMLTransformStorageNode()
            storage.SetFileName(path)
            if not storage.ReadData(node):
                scene.RemoveNode(node)
                raise InputError(f"Slicer could not read transform '{name}' ({transform.GetName()}).")
        _interpolate_grids_linearly(node.GetTransformFromParent())
    node.CreateDefaultDisplayNodes()
    if moving is not None:
        moving.SetAndObserveTransformNodeID(node.GetID())
    return node


def _interpolate_grids_linearly(transform) -> None:
    """Displacement grids interpolate linearly in ITK; Slicer's reader sets cubic. Match ITK."""
    if transform is None:
        return
    if transform.IsA("vtkGridTransform"):
        transform.SetInterpolationModeToLinear()
    for i in range(transform.GetNumberOfConcatenatedTransforms() if transform.IsA("vtkGeneralTransform") else 0):
        _interpolate_grids_linearly(transform.GetConcatenatedTransform(i))


def node_to_transform(node) -> sitk.Transform:
    """SimpleITK transform (fixed → moving, LPS) of a transform node's "transform from parent".

    Linear nodes convert directly; others are written by vtkMRMLTransformStorageNode as ITK .h5 and read
    with SimpleITK.
    """
    if node.IsLinear():
        matrix = vtk.vtkMatrix4x4()
        node.GetMatrixTransformFromParent(matrix)
        m = _lps_ras(np_matrix(matrix))
        return sitk.AffineTransform(m[:3, :3].ravel().tolist(), m[:3, 3].tolist())
    with tempfile.TemporaryDirectory(prefix="hccfusion-tfm-") as tmp:
        path = os.path.join(tmp, "transform.h5")
        storage = slicer.vtkMRMLTransformStorageNode()
        storage.SetFileName(path)
        if not storage.WriteData(node):
            raise InputError(f"Slicer could not write transform '{node.GetName()}' as an ITK file.")
        transform = sitk.ReadTransform(path)
    parts = _flatten(transform)
    return parts[0] if len(parts) == 1 else transform


def harden(node):
    """Bake the node's parent transform into it (volumes: geometry, or voxels for non-linear transforms)."""
    if node.GetParentTransformNode() is not None and not node.HardenTransform():
        raise GeometryError(f"Slicer could not harden the transform of '{node.GetName()}'.")
    return node
