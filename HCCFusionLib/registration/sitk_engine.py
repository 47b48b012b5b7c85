"""SimpleITK engine: initialisation → rigid (Euler3D) → affine → B-spline, Mattes MI, multi-resolution.

All stages run on the small working images prepared by `pair.py` (cropped around the fixed mask,
downsampled); every stage optimises the fixed→moving transform with deterministic random sampling.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import SimpleITK as sitk

from dataclasses import dataclass

from ..errors import RegistrationError
from ..progress import ProgressFn, silent

log = logging.getLogger(__name__)

INITS = ("auto", "identity", "geometry", "moments")


#: Metric samples drawn at random (fixed seed) at the finest level: linear stages / B-spline stage
#: (Mattes MI costs grow with samples x transform support; these keep a pair within seconds).
SAMPLES = 20000
BSPLINE_SAMPLES = 10000
#: LBFGSB iterations and cost convergence factor (x machine precision) of the B-spline stage.
BSPLINE_ITERATIONS = 20
BSPLINE_CONVERGENCE = 1e7


@dataclass
class WorkingImages:
    """What the metric sees: fixed/moving intensities on working grids, optional masks (1 = sample here)."""

    fixed: sitk.Image
    moving: sitk.Image
    fixed_mask: sitk.Image | None = None
    moving_mask: sitk.Image | None = None


def metric_method(work: WorkingImages, seed: int, samples: int = SAMPLES, bins: int = 32) -> sitk.ImageRegistrationMethod:
    """Mattes MI on about `samples` random fixed voxels (fixed seed: deterministic), within the masks."""
    mask = work.fixed_mask
    voxels = float(np.prod(work.fixed.GetSize())) if mask is None else float(np.sum(sitk.GetArrayViewFromImage(mask)))
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    # ITK seed 0 means "wall clock" (non-deterministic) in SimpleITK, so seeds are shifted by one.
    method.SetMetricSamplingPercentage(min(1.0, samples / max(voxels, 1.0)), int(seed) + 1)
    if mask is not None:
        method.SetMetricFixedMask(mask)
    if work.moving_mask is not None:
        method.SetMetricMovingMask(work.moving_mask)
    method.SetInterpolator(sitk.sitkLinear)
    return method


def metric_value(work: WorkingImages, transform: sitk.Transform, seed: int) -> float:
    """Mattes MI (negative; lower is better) of the moving image under `transform` on the fixed samples."""
    method = metric_method(work, seed)
    method.MetricUseMovingImageGradientFilterOff()  # a value needs no gradient image of the moving image: 4x faster
    method.SetMovingInitialTransform(transform)
    method.SetInitialTransform(sitk.TranslationTransform(3), inPlace=False)
    try:
        return float(method.MetricEvaluate(work.fixed, work.moving))
    except RuntimeError:  # too few samples map inside the moving image
        return float("nan")


def _levels(image: sitk.Image, finest: int = 1) -> tuple[list[int], list[float]]:
    """Shrink factors / smoothing sigmas (voxels) such that the coarsest level keeps >= 12 voxels per axis."""
    factors = [f for f in (4, 2, 1) if f >= finest and min(image.GetSize()) // f >= 12] or [finest]
    return factors, [f / 2.0 if f > 1 else 0.0 for f in factors]


def _run(method: sitk.ImageRegistrationMethod, work: WorkingImages, factors, sigmas, progress: ProgressFn, stage: str):
    method.SetShrinkFactorsPerLevel(factors)
    method.SetSmoothingSigmasPerLevel(sigmas)
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    level = [0]

    def on_level():
        if level[0]:
            log.debug("%s level %d: %d iterations, metric %.4f", stage, level[0], method.GetOptimizerIteration(),
                      method.GetMetricValue())
        level[0] += 1
        progress((level[0] - 1) / len(factors), f"{stage}: level {level[0]}/{len(factors)}")

    method.AddCommand(sitk.sitkMultiResolutionIterationEvent, on_level)
    started = time.perf_counter()
    try:
        method.Execute(work.fixed, work.moving)
    except RuntimeError as exc:
        raise RegistrationError(
            f"The {stage} registration failed ({str(exc).strip().splitlines()[-1][:200]}): the images barely "
            "overlap or the mask is too small; check the inputs or try --mode rigid without a mask."
        ) from None
    log.debug("%s level %d: %s after %d iterations, metric %.4f (%.1f s in all)", stage, level[0],
              method.GetOptimizerStopConditionDescription(), method.GetOptimizerIteration(), method.GetMetricValue(),
              time.perf_counter() - started)
    progress(1.0, f"{stage}: done")


def initial_transform(work: WorkingImages, seed: int, init: str = "auto") -> tuple[sitk.Euler3DTransform, str]:
    """Euler3D start: scanner frame as is ('identity'), image centres ('geometry') or centres of mass
    ('moments'); 'auto' keeps whichever gives the best metric."""
    if init not in INITS:
        raise RegistrationError(f"Unknown initialisation '{init}': use one of {', '.join(INITS)}.")
    fixed = work.fixed
    centre = fixed.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2.0 for s in fixed.GetSize()])
    candidates = {}
    if init in ("auto", "identity"):
        identity = sitk.Euler3DTransform()
        identity.SetCenter(centre)
        candidates["identity"] = identity
    for name, how in (("geometry", sitk.CenteredTransformInitializerFilter.GEOMETRY),
                      ("moments", sitk.CenteredTransformInitializerFilter.MOMENTS)):
        if init in ("auto", name):
            candidates[name] = sitk.Euler3DTransform(sitk.CenteredTransformInitializer(
                fixed, work.moving, sitk.Euler3DTransform(), how))
    if len(candidates) == 1:
        return next(iter(candidates.values())), init
    scores = {name: metric_value(work, tx, seed) for name, tx in candidates.items()}
    finite = {k: v for k, v in scores.items() if np.isfinite(v)}
    best = min(finite, key=finite.get) if finite else "identity"
    log.debug("initialisation metrics %s -> %s", scores, best)
    return candidates[best], best


def rigid(work: WorkingImages, start: sitk.Euler3DTransform, seed: int, progress: ProgressFn = silent):
    method = metric_method(work, seed)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=0.01, numberOfIterations=100,
                                                    relaxationFactor=0.5, gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScalesFromPhysicalShift()
    transform = sitk.Euler3DTransform(start)
    method.SetInitialTransform(transform, inPlace=True)
    _run(method, work, *_levels(work.fixed), progress, "rigid")
    return transform


def affine(work: WorkingImages, start: sitk.Euler3DTransform, seed: int, progress: ProgressFn = silent):
    initial = sitk.AffineTransform(3)
    initial.SetCenter(start.GetCenter())
    initial.SetMatrix(start.GetMatrix())
    initial.SetTranslation(start.GetTranslation())
    method = metric_method(work, seed)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=0.5, minStep=0.01, numberOfIterations=60,
                                                    relaxationFactor=0.5, gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetInitialTransform(initial, inPlace=True)
    factors, sigmas = _levels(work.fixed)
    _run(method, work, factors[-2:], sigmas[-2:], progress, "affine")
    return initial


def bspline(work: WorkingImages, linear: sitk.Transform, seed: int, grid_spacing_mm: float,
            progress: ProgressFn = silent) -> sitk.BSplineTransform:
    """Cubic B-spline on the fixed working domain (control points `grid_spacing_mm` apart), on top of `linear`."""
    fixed = work.fixed
    extent = [(n - 1) * s for n, s in zip(fixed.GetSize(), fixed.GetSpacing())]
    mesh = [max(1, int(round(e / grid_spacing_mm))) for e in extent]
    initial = sitk.BSplineTransformInitializer(fixed, mesh, order=3)
    factors, sigmas = (v[-2:] for v in _levels(fixed))
    method = metric_method(work, seed, BSPLINE_SAMPLES)
    method.SetMovingInitialTransform(linear)
    method.SetInitialTransform(initial, inPlace=True)
    method.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=BSPLINE_ITERATIONS,
                                maximumNumberOfCorrections=5, maximumNumberOfFunctionEvaluations=500,
                                costFunctionConvergenceFactor=BSPLINE_CONVERGENCE)
    _run(method, work, factors, sigmas, progress, "deformable")
    return initial
