"""itk-elastix engine: elastix's default parameter maps, result converted to a SimpleITK transform.

Runs on the full-resolution images (elastix builds its own pyramid) with the dilated fixed mask, so it is
the reference implementation the SimpleITK engine is compared with.
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..errors import RegistrationError, require
from ..progress import ProgressFn, silent

#: Default elastix parameter maps per mode (elastix's own defaults, unchanged).
MAPS = {"rigid": ("rigid",), "affine": ("rigid", "affine"), "deformable": ("rigid", "bspline")}


def _to_itk(itk, image: sitk.Image, pixel=np.float32):
    converted = itk.GetImageFromArray(np.ascontiguousarray(sitk.GetArrayViewFromImage(image), dtype=pixel))
    converted.SetOrigin(image.GetOrigin())
    converted.SetSpacing(image.GetSpacing())
    converted.SetDirection(itk.matrix_from_array(np.array(image.GetDirection()).reshape(3, 3)))
    return converted


def _floats(pmap, key) -> list[float]:
    return [float(v) for v in pmap[key]]


def to_sitk(pmap) -> sitk.Transform:
    """One elastix transform parameter map (Euler, affine or B-spline) as a SimpleITK transform."""
    kind = pmap["Transform"][0]
    params = _floats(pmap, "TransformParameters")
    if kind == "EulerTransform":
        tx = sitk.Euler3DTransform()
        tx.SetCenter(_floats(pmap, "CenterOfRotationPoint"))
        tx.SetComputeZYX(pmap.get("ComputeZYX", ("false",))[0] == "true")
        tx.SetParameters(params)
        return tx
    if kind == "AffineTransform":
        tx = sitk.AffineTransform(3)
        tx.SetCenter(_floats(pmap, "CenterOfRotationPoint"))
        tx.SetParameters(params)
        return tx
    if kind == "BSplineTransform":
        if int(pmap.get("BSplineTransformSplineOrder", ("3",))[0]) != 3:
            raise RegistrationError("Only cubic elastix B-spline transforms can be converted.")
        direction = np.array(_floats(pmap, "GridDirection")).reshape(3, 3).T  # elastix writes column-major
        tx = sitk.BSplineTransform(3, 3)
        tx.SetFixedParameters(_floats(pmap, "GridSize") + _floats(pmap, "GridOrigin")
                              + _floats(pmap, "GridSpacing") + direction.ravel().tolist())
        tx.SetParameters(params)
        return tx
    raise RegistrationError(f"Cannot convert an elastix '{kind}' transform.")


def elastix_register(fixed: sitk.Image, moving: sitk.Image, mask: sitk.Image | None, mode: str, seed: int,
                     progress: ProgressFn = silent) -> sitk.Transform:
    """Register with elastix's default maps for `mode`; returns the fixed→moving composite transform."""
    itk = require("itk", "elastix")
    parameters = itk.ParameterObject.New()
    for name in MAPS[mode]:
        pmap = parameters.GetDefaultParameterMap(name)
        pmap["RandomSeed"] = [str(seed)]
        pmap["WriteResultImage"] = ["false"]
        pmap["ErodeMask"] = ["false"]
        parameters.AddParameterMap(pmap)
    progress(0.0, f"elastix {'+'.join(MAPS[mode])}")
    method = itk.ElastixRegistrationMethod.New(_to_itk(itk, fixed), _to_itk(itk, moving))
    method.SetParameterObject(parameters)
    if mask is not None:
        method.SetFixedMask(_to_itk(itk, mask, np.uint8))
    method.SetLogToConsole(False)
    try:
        method.UpdateLargestPossibleRegion()
    except RuntimeError as exc:
        raise RegistrationError(f"elastix failed: {str(exc).strip().splitlines()[-1][:200]}") from None
    result = method.GetTransformParameterObject()
    maps = [result.GetParameterMap(i) for i in range(result.GetNumberOfParameterMaps())]
    progress(1.0, "elastix: done")
    # elastix composes T(x) = T_last(...T_first(x)); a SimpleITK composite applies its last entry first.
    return sitk.CompositeTransform([to_sitk(m) for m in reversed(maps)])
