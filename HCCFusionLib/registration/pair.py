"""Register one moving series to a fixed (reference) series: `register(fixed, moving, ...) -> PairResult`."""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from ..errors import InputError, RegistrationError
from ..progress import ProgressFn, scaled, silent
from ..study import Modality, Series, check_same_grid
from . import quality, sitk_engine
from .checks import check_mask, check_modality, check_overlap, check_volume
from .intensity import body_mask, guess_modality, registration_intensity, valid_mask

log = logging.getLogger(__name__)

MODES = ("rigid", "affine", "deformable")
ENGINES = ("sitk", "elastix")


@dataclass
class PairResult:
    """transform: fixed→moving (maps reference points into the moving series, as ITK resampling expects);
    resampled: the moving image on the fixed grid; qc: numbers and `warnings` (list of str)."""

    transform: sitk.Transform
    resampled: sitk.Image
    qc: dict = field(default_factory=dict)

    @property
    def warnings(self) -> list[str]:
        return self.qc["warnings"]


@dataclass
class _Input:
    name: str
    image: sitk.Image
    modality: Modality
    masks: dict


def _as_input(value, default_name: str) -> _Input:
    if isinstance(value, Series):
        check_volume(value.image, value.name)
        check_modality(value.image, value.modality, value.name)
        return _Input(value.name, value.image, value.modality, value.masks)
    if isinstance(value, sitk.Image):
        check_volume(value, default_name)
        return _Input(default_name, value, guess_modality(value), {})
    raise InputError(f"Cannot register a {type(value).__name__} as the {default_name} image: "
                     "pass a Series or a SimpleITK image.")


def _downsample(image: sitk.Image, spacing_mm: float, interpolator=sitk.sitkLinear) -> sitk.Image:
    """Resample to at least `spacing_mm` per axis over the same physical extent (Gaussian anti-aliasing)."""
    spacing = np.array(image.GetSpacing())
    target = np.maximum(spacing, spacing_mm)
    if np.allclose(target, spacing):
        return image
    if interpolator != sitk.sitkNearestNeighbor:
        variance = np.where(target > spacing * 1.01, (0.5 * target) ** 2 - (0.5 * spacing) ** 2, 0.0)
        image = sitk.DiscreteGaussian(image, variance.tolist(), 32, 0.01, True)
    size = np.maximum(np.round(np.array(image.GetSize()) * spacing / target), 1).astype(int)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    origin = np.array(image.GetOrigin()) + direction @ (0.5 * (target - spacing))
    return sitk.Resample(image, size.tolist(), sitk.Transform(), interpolator, origin.tolist(), target.tolist(),
                         image.GetDirection(), 0.0, image.GetPixelID())


def _crop(image: sitk.Image, lower_mm: np.ndarray, upper_mm: np.ndarray) -> sitk.Image:
    """Sub-image covering the physical box [lower_mm, upper_mm] (clamped to the image)."""
    corners = np.array([[x, y, z] for x in (lower_mm[0], upper_mm[0]) for y in (lower_mm[1], upper_mm[1])
                        for z in (lower_mm[2], upper_mm[2])])
    index = np.array([image.TransformPhysicalPointToContinuousIndex(c.tolist()) for c in corners])
    low = np.clip(np.floor(index.min(axis=0)).astype(int), 0, np.array(image.GetSize()) - 1)
    high = np.clip(np.ceil(index.max(axis=0)).astype(int), 0, np.array(image.GetSize()) - 1)
    if np.any(high - low < 3):
        return image
    return sitk.RegionOfInterest(image, (high - low + 1).tolist(), low.tolist())


def _valid_on(image: sitk.Image, modality: Modality | None, grid: sitk.Image) -> sitk.Image | None:
    """`image`'s data (non-padding) mask on `grid`, eroded by one voxel there (the blurred padding edge)."""
    valid = valid_mask(image, modality)
    if valid is None:
        return None
    on_grid = quality.resample(valid, grid, sitk.Transform(), nearest=True)
    return sitk.BinaryErode(on_grid, [1, 1, 1])


def _working_images(fixed: _Input, moving: _Input, mask: sitk.Image | None, spacing_mm: float,
                    dilation_mm: float, margin_mm: float = 60.0) -> tuple[sitk.Image, sitk_engine.WorkingImages]:
    """Images for the metric: fixed cropped to the dilated mask's box, both downsampled to `spacing_mm`.

    Returns the downsampled fixed image (original intensities) and the WorkingImages (metric intensities;
    fixed mask = dilated mask within the fixed data region; moving mask = moving data region).
    """
    fixed_image = fixed.image
    if mask is not None:
        stats = sitk.LabelShapeStatisticsImageFilter()
        stats.Execute(mask)
        box = np.array(stats.GetBoundingBox(1))
        corner_a = np.array(mask.TransformIndexToPhysicalPoint(box[:3].tolist()))
        corner_b = np.array(mask.TransformIndexToPhysicalPoint((box[:3] + box[3:] - 1).tolist()))
        low, high = np.minimum(corner_a, corner_b), np.maximum(corner_a, corner_b)
        fixed_image = _crop(fixed_image, low - dilation_mm - 10.0, high + dilation_mm + 10.0)
    fixed_raw = _downsample(sitk.Cast(fixed_image, sitk.sitkFloat32), spacing_mm)
    fixed_low = np.array(fixed_raw.TransformContinuousIndexToPhysicalPoint([0, 0, 0]))
    fixed_high = np.array(fixed_raw.TransformContinuousIndexToPhysicalPoint([s - 1 for s in fixed_raw.GetSize()]))
    moving_image = _crop(moving.image, np.minimum(fixed_low, fixed_high) - margin_mm,
                         np.maximum(fixed_low, fixed_high) + margin_mm)
    moving_work = _downsample(registration_intensity(moving_image, moving.modality), spacing_mm)
    fixed_mask = _valid_on(fixed.image, fixed.modality, fixed_raw)
    if mask is not None:
        on_grid = quality.resample(mask, fixed_raw, sitk.Transform(), nearest=True)
        distance = sitk.SignedMaurerDistanceMap(on_grid, insideIsPositive=False, squaredDistance=False,
                                                useImageSpacing=True)
        dilated = sitk.Cast(distance <= dilation_mm, sitk.sitkUInt8)
        fixed_mask = dilated if fixed_mask is None else dilated & fixed_mask
    work = sitk_engine.WorkingImages(registration_intensity(fixed_raw, fixed.modality), moving_work, fixed_mask,
                                     _valid_on(moving_image, moving.modality, moving_work))
    return fixed_raw, work


def _stage(run, *args):
    """Run an affine / B-spline stage; None when it diverged (samples left the moving image)."""
    try:
        return run(*args)
    except RegistrationError as exc:
        log.info("stage %s failed: %s", run.__name__, exc)
        return None


#: A stage is kept only if a second fit from other random metric samples moves the reference region's points
#: to within this median distance (mm) of the first fit; otherwise the images do not determine the stage's
#: extra parameters (partial field of view, little structure, e.g. PET or a limb MR) and it is dropped.
#: Measured: phantoms (small seeds 1-6, full seeds 3-4; 24 pairs) affine 0.09-0.43 mm, B-spline 0.42-0.84 mm;
#: real STS MR/PET (6 pairs) affine 1.47-4.3 mm, B-spline 2.6-11.6 mm, where kept stages had drifted 2-8 mm
#: away from the known transform.
REPRODUCIBLE_MM = {"affine": 0.8, "bspline": 1.4}


#: QC status of a pair: "ok", or FAILED when no stage improved the metric and the input alignment is returned.
OK = "ok"
FAILED = "failed: initial alignment kept"


class _Judge:
    """Decides whether a stage is kept. Every stage must improve the metric evaluated on every working voxel
    (the optimisers saw a random subset) over what it started from, else the previous result stays (for the
    rigid stage: the input alignment). An affine / B-spline stage must also not fold, keep the reference region
    inside the moving image, and be reproducible (a refit from other samples agrees): a stage that diverged,
    drifted or is not determined by the images is dropped rather than returned. Metric values and
    displacement stats are cached per transform object."""

    def __init__(self, work: sitk_engine.WorkingImages, seed: int, grid: sitk.Image, region: sitk.Image | None,
                 moving: sitk.Image):
        self.work, self.seed, self.grid, self.region, self.moving = work, seed, grid, region, moving
        self._cache: dict = {}
        self.rejected: sitk.Transform | None = None  # a result that ended worse than the input alignment

    def _cached(self, kind: str, transform: sitk.Transform, compute):
        key = (kind, id(transform))
        if key not in self._cache:
            self._cache[key] = (transform, compute())  # holding the transform keeps its id unique
        return self._cache[key][1]

    def stats(self, transform: sitk.Transform) -> dict:
        """quality.displacement_stats on the working grid, within the reference region."""
        return self._cached("stats", transform, lambda: quality.displacement_stats(
            transform, self.grid, self.region, self.moving))

    def held_out(self, transform: sitk.Transform) -> float:
        """Mattes MI on every working voxel (sitk_engine.metric_value)."""
        return self._cached("metric", transform, lambda: sitk_engine.metric_value(self.work, transform))

    def better(self, previous: sitk.Transform, candidate: sitk.Transform | None) -> bool:
        """`candidate`'s metric is finite and lower (better) than `previous`'s (or `previous`'s is not finite)."""
        if candidate is None:
            return False
        before, after = self.held_out(previous), self.held_out(candidate)
        return bool(np.isfinite(after) and (not np.isfinite(before) or after < before))

    def _improves(self, previous: sitk.Transform, candidate: sitk.Transform | None) -> bool:
        if not self.better(previous, candidate):
            return False
        old, new = self.stats(previous), self.stats(candidate)
        return new["min_jacobian"] > 0.05 and new["overlap_fraction"] >= old["overlap_fraction"] - 0.05

    def keep(self, stage: str, fit, compose, previous: sitk.Transform,
             progress: ProgressFn) -> sitk.Transform | None:
        """`compose(fit(seed, progress))` if it passes the checks above and `compose(fit(seed + 1, ...))`
        moves the region's points within REPRODUCIBLE_MM[stage] (median) of it; else None."""
        first = fit(self.seed, scaled(progress, 0.0, 0.5))
        candidate = None if first is None else compose(first)
        if not self._improves(previous, candidate):
            return None
        second = fit(self.seed + 1, scaled(progress, 0.5, 1.0))
        if second is None:
            return None
        spread = quality.disagreement(candidate, compose(second), self.grid, self.region)
        log.debug("%s: a refit from other samples differs by %.2f mm (median)", stage, spread)
        return candidate if spread <= REPRODUCIBLE_MM[stage] else None


def _sitk_stages(work: sitk_engine.WorkingImages, judge: _Judge, initial: sitk.Transform, mode: str, seed: int,
                 init: str, grid_spacing_mm: float, progress: ProgressFn, name: str):
    """Rigid, then affine, then B-spline (as `mode` asks); each stage is kept only if the judge finds it better
    than what it started from. Returns (transform, chosen initialisation, kept stages, dropped stages); no kept
    stage means the rigid stage ended worse than `initial` (kept in judge.rejected), which is returned (and later
    stages are not tried)."""
    start, chosen_init = sitk_engine.initial_transform(work, init)
    progress(0.05, f"{name}: initialised ({chosen_init})")
    rigid = sitk_engine.rigid(work, start, seed, scaled(progress, 0.05, 0.3))
    if not judge.better(initial, rigid):
        judge.rejected = rigid
        return initial, chosen_init, [], ["rigid"]
    transform, stages, dropped = rigid, ["rigid"], []
    if mode in ("affine", "deformable"):
        def fit_affine(s, step):
            return _stage(sitk_engine.affine, work, rigid, s, step)

        candidate = judge.keep("affine", fit_affine, lambda t: t, transform, scaled(progress, 0.3, 0.45))
        if candidate is None:
            dropped.append("affine")
        else:
            transform, stages = candidate, stages + ["affine"]
    if mode == "deformable":
        linear = transform

        def fit_spline(s, step):
            return _stage(sitk_engine.bspline, work, linear, s, grid_spacing_mm, step)

        # the spline is applied first, then the linear part
        candidate = judge.keep("bspline", fit_spline, lambda t: sitk.CompositeTransform([linear, t]), linear,
                               scaled(progress, 0.45, 0.85))
        if candidate is None:
            dropped.append("bspline")
        else:
            transform, stages = candidate, stages + ["bspline"]
    return transform, chosen_init, stages, dropped


def register(fixed: "Series | sitk.Image", moving: "Series | sitk.Image", *, mode: str = "deformable",
             fixed_mask: sitk.Image | None = None, engine: str = "sitk", seed: int = 0,
             progress: ProgressFn | None = None, init: str = "auto", spacing_mm: float = 2.0,
             mask_dilation_mm: float = 50.0, grid_spacing_mm: float = 100.0) -> PairResult:
    """Register `moving` to `fixed` with Mattes mutual information (works across CT, MR and PET).

    mode: "rigid" (Euler3D), "affine" (rigid then affine) or "deformable" (rigid, affine, then a cubic
    B-spline with control points `grid_spacing_mm` apart; breathing is smooth, and finer grids overfit the
    metric's noise, most on the low-contrast non-contrast CT). No result is worse than its input: each stage
    is kept only if it improves the metric evaluated on every working voxel over what it started from; a rigid
    stage that does not returns the input alignment (identity) with QC status "failed: initial alignment kept"
    and a warning. An affine / B-spline stage must also not fold or lose overlap, and a refit from other samples
    must agree with it (REPRODUCIBLE_MM); otherwise it is dropped and the QC warns. The result depends only on
    the inputs, options and `seed` (single-threaded metric, seeded sampling), not on thread settings.
    fixed_mask: binary mask on the fixed grid (e.g. the liver); it is dilated by `mask_dilation_mm`, the
    metric only samples inside it, and registration runs on the fixed image cropped to it, so the organ
    (not the spine) is aligned; the B-spline then covers that crop only (outside it the transform is the
    affine part). The default 50 mm band keeps the liver's neighbours (spleen, kidneys, gallbladder, vessels,
    spine) in the metric: an unenhanced liver has almost no inner contrast, and a narrow band leaves its
    deformation to the liver outline alone. The SimpleITK engine registers on images downsampled to `spacing_mm`.
    engine: "sitk" (default) or "elastix" (itk-elastix default rigid/affine/B-spline maps, full resolution).
    init: "auto" (best metric of identity / image centres / centres of mass, then of that start turned and
    shifted a little), "identity", "geometry", "moments".
    Raises GeometryError / InputError for 2D images, sheared or degenerate directions, empty masks,
    images without physical overlap and series whose intensities contradict their declared modality.
    """
    if mode not in MODES:
        raise InputError(f"Unknown registration mode '{mode}': use one of {', '.join(MODES)}.")
    if engine not in ENGINES:
        raise InputError(f"Unknown registration engine '{engine}': use one of {', '.join(ENGINES)}.")
    progress = progress or silent
    started = time.perf_counter()
    fixed_in, moving_in = _as_input(fixed, "fixed"), _as_input(moving, "moving")
    check_overlap(fixed_in.image, moving_in.image, fixed_in.name, moving_in.name)
    mask = None
    if fixed_mask is not None:
        check_same_grid(fixed_in.image, fixed_mask, f"fixed mask of '{fixed_in.name}'")
        mask = check_mask(fixed_mask, f"of the reference '{fixed_in.name}'")
    progress(0.0, f"{moving_in.name}: preparing")
    fixed_raw, work = _working_images(fixed_in, moving_in, mask, spacing_mm, mask_dilation_mm)
    region = work.fixed_mask if work.fixed_mask is not None else body_mask(fixed_raw, fixed_in.modality)

    judge = _Judge(work, seed, fixed_raw, region, moving_in.image)
    initial = sitk.Transform()  # the input alignment (scanner frames as they are)
    if engine == "elastix":
        from .elastix_engine import MAPS, elastix_register

        native_mask = None if work.fixed_mask is None else quality.resample(
            work.fixed_mask, fixed_in.image, sitk.Transform(), nearest=True)
        transform = elastix_register(sitk.Cast(fixed_in.image, sitk.sitkFloat32),
                                     sitk.Cast(moving_in.image, sitk.sitkFloat32), native_mask, mode, seed,
                                     scaled(progress, 0.05, 0.85))
        chosen_init, stages, dropped = "elastix", list(MAPS[mode]), []
        if not judge.better(initial, transform):
            judge.rejected, transform, stages, dropped = transform, initial, [], ["elastix " + "+".join(stages)]
    else:
        transform, chosen_init, stages, dropped = _sitk_stages(work, judge, initial, mode, seed, init,
                                                               grid_spacing_mm, progress, moving_in.name)
    status = OK if stages else FAILED

    progress(0.85, f"{moving_in.name}: resampling and QC")
    qc = {"series": moving_in.name, "reference": fixed_in.name, "mode": mode, "engine": engine, "init": chosen_init,
          "stages": "+".join(stages) or "none", "status": status,
          "metric_before": judge.held_out(initial), "metric_after": judge.held_out(transform)}
    qc.update(judge.stats(transform))
    if not isinstance(transform, sitk.CompositeTransform):
        transform = sitk.CompositeTransform([transform])
    for key in sorted(set(fixed_in.masks) & set(moving_in.masks)):
        reference = fixed_in.masks[key]
        before = quality.dice_per_label(reference, quality.resample(moving_in.masks[key], reference, sitk.Transform(),
                                                                    nearest=True))
        after = quality.dice_per_label(reference, quality.resample(moving_in.masks[key], reference, transform,
                                                                   nearest=True))
        prefix = "" if key == "labels" else f"{key}_"
        qc.update({f"dice_before_{prefix}{label}": value for label, value in before.items()})
        qc.update({f"dice_after_{prefix}{label}": value for label, value in after.items()})
    resampled = quality.resample(moving_in.image, fixed_in.image, transform)
    failed = [] if stages else [
        f"{FAILED}: the {'+'.join(dropped)} registration ended with a worse metric than the input alignment "
        f"({judge.held_out(judge.rejected):.4f} >= {qc['metric_before']:.4f}), so no stage was applied; check that "
        "both series show the same anatomy, or align them roughly by hand first"]
    qc["warnings"] = failed + quality.warnings_for(qc) + [
        f"{stage} stage dropped: it diverged, folded, did not improve the held-out metric or was not "
        f"reproducible (a refit from other samples disagreed: the images do not determine it) "
        f"(result is {'+'.join(stages)})"
        for stage in dropped if stages]
    qc["seconds"] = time.perf_counter() - started
    for warning in qc["warnings"]:
        log.warning("registration of '%s' to '%s': %s", moving_in.name, fixed_in.name, warning)
    if not np.isfinite(qc["metric_after"]) and qc["overlap_fraction"] == 0:
        raise RegistrationError(f"Registration of '{moving_in.name}' to '{fixed_in.name}' moved the series out of "
                                "the reference field of view: check the inputs or use --mode rigid.")
    progress(1.0, f"{moving_in.name}: done")
    return PairResult(transform, resampled, qc)
