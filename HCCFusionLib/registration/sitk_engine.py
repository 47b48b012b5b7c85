"""SimpleITK engine: initialisation → rigid (Euler3D) → affine → B-spline, Mattes MI, multi-resolution.

All stages run on the small working images prepared by `pair.py` (cropped around the fixed mask,
downsampled); every stage optimises the fixed→moving transform with seeded random sampling and a
single-threaded metric (METRIC_THREADS), so a result depends on its inputs and seed only.
"""
from __future__ import annotations

import logging
import time
from contextlib import contextmanager

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
#: Threads of every Mattes MI metric evaluation and optimisation. ITK sums the metric's histogram and derivative
#: contributions across threads in an order that depends on the thread count and on scheduling: with 2 threads
#: the same call gave different rigid transforms from run to run (real MR to CT: TRE 3.0-6.5 mm), and results
#: changed with SimpleITK's global thread count, which any caller may set. The metric takes the global default
#: when it is built, so `metric_threads()` sets it for the call and restores it.
METRIC_THREADS = 1
#: Multi-start: the best of identity / image centres / centres of mass is also tried turned by ±START_DEGREES
#: about each axis and shifted by ±START_MM along each axis; the start with the best metric is kept.
START_DEGREES = 8.0
START_MM = 8.0


@dataclass
class WorkingImages:
    """What the metric sees: fixed/moving intensities on working grids, optional masks (1 = sample here)."""

    fixed: sitk.Image
    moving: sitk.Image
    fixed_mask: sitk.Image | None = None
    moving_mask: sitk.Image | None = None


@contextmanager
def metric_threads():
    """SimpleITK's global default thread count at METRIC_THREADS inside the block, restored after it."""
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(METRIC_THREADS)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


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


def metric_value(work: WorkingImages, transform: sitk.Transform) -> float:
    """Mattes MI (negative; lower is better) of the moving image under `transform` on every fixed working voxel
    within the masks (the optimisers see a random subset of them)."""
    method = metric_method(work, 0)
    method.SetMetricSamplingStrategy(method.NONE)
    method.MetricUseMovingImageGradientFilterOff()  # a value needs no gradient image of the moving image: 4x faster
    method.SetMovingInitialTransform(transform)
    method.SetInitialTransform(sitk.TranslationTransform(3), inPlace=False)
    try:
        with metric_threads():
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
        with metric_threads():
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


def _perturbed(start: sitk.Euler3DTransform) -> dict[str, sitk.Euler3DTransform]:
    """`start` turned by ±START_DEGREES about each axis (about its centre) or shifted by ±START_MM along each."""
    out = {}
    for axis, name in enumerate("xyz"):
        for sign in (-1, 1):
            turned = sitk.Euler3DTransform(start)
            angles = [turned.GetAngleX(), turned.GetAngleY(), turned.GetAngleZ()]
            angles[axis] += sign * np.deg2rad(START_DEGREES)
            turned.SetRotation(*angles)
            out[f"turned {sign * START_DEGREES:+g} deg about {name}"] = turned
            shifted = sitk.Euler3DTransform(start)
            translation = list(shifted.GetTranslation())
            translation[axis] += sign * START_MM
            shifted.SetTranslation(translation)
            out[f"shifted {sign * START_MM:+g} mm along {name}"] = shifted
    return out


def initial_transform(work: WorkingImages, init: str = "auto") -> tuple[sitk.Euler3DTransform, str]:
    """Euler3D start: scanner frame as is ('identity'), image centres ('geometry') or centres of mass
    ('moments'); 'auto' keeps whichever gives the best metric, then tries that one turned and shifted a little
    (multi-start, for a flat metric) and keeps the best of those too."""
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
    best = _best(work, candidates, "identity")
    nearby = {f"{best} {how}": tx for how, tx in _perturbed(candidates[best]).items()}
    best = _best(work, {best: candidates[best], **nearby}, best)
    return {**candidates, **nearby}[best], best


def _best(work: WorkingImages, candidates: dict[str, sitk.Transform], fallback: str) -> str:
    """Name of the candidate with the lowest (best) finite metric; `fallback` when none is finite. Ties keep
    the earlier candidate."""
    scores = {name: metric_value(work, tx) for name, tx in candidates.items()}
    finite = {k: v for k, v in scores.items() if np.isfinite(v)}
    best = min(finite, key=finite.get) if finite else fallback
    log.debug("initialisation metrics %s -> %s", {k: round(v, 4) for k, v in scores.items()}, best)
    return best


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
