"""Contrast phase of a CT volume from the image alone: aorta, portal vein and liver HU fitted to time-density curves.

`measure_phase(image, liver=None)` finds three structures without labels, working on the volume turned to LPS
(`sitk.DICOMOrient`) and block-averaged to ~2 mm voxels:

- body: the largest connected component above -300 HU, holes filled slice by slice;
- spine (anchor): per slice the largest filled bone component (> 400 HU, grown into > 180 HU marrow) in the
  central, posterior part of the body; its anterior edge is the most posterior of the per-column edges within 8 mm
  of the midline (an aorta touching the bone is not the vertebra); median over 7 slices (disc levels);
- aorta: per slice the brightest 13 mm box (aorta-sized; HU clipped to 250: calcified walls; minus 0.5 HU per mm
  beyond 10 mm from the usual place, 15 mm left and 15 mm anterior) 3-70 mm anterior and 10 mm right to 45 mm
  left of the vertebral body's anterior edge, 6 mm away from bone; the position relative to the spine
  that most slices agree on (a vertical tube) is the aorta, and its HU the lower quartile (calcified walls) of the
  voxels within 4 mm of that position on every slice;
- liver (unless a `liver` mask on the image's grid is given): among the main soft-tissue histogram peaks of the
  patient's right side, the HU band (±22 HU) with the biggest thick (> 7 mm from the band's edge: an organ, not
  the muscle wall) component on the right; the liver HU is the median of that region on the patient's right;
- portal vein: the brightest 1 ml (6 mm box mean) in the liver's hull (closed by 10 mm, holes filled: vessels and
  hilum), 12 mm inside the body, right of and not posterior to the aorta, away from anything above 400 HU.

Rule (after TotalSegmentator's idea of phase and time since injection from organ intensities): the measured
(aorta, portal vein, liver) HU are fitted to typical time-density curves (HCC_IMAGING_FACTS.md: non-contrast,
late arterial ~35 s, portal venous ~70 s, delayed ~3 min, interpolated between), with a contrast-dose scale
s (prior 1 ± 0.3). The measured aorta/portal vein are the brightest structures of their regions, so their
predicted values never drop below soft tissue (aorta ≥ 55 HU, portal vein ≥ liver + 8 HU). Cost = Σ((measured −
predicted)/σ)² (σ: aorta 35, portal vein 30, liver 15 HU) + ((s − 1)/0.3)², minimised over t in 0..300 s and s.
Phase from the best t: NC < 15 s (no contrast arrived yet) ≤ AP < 50 s ≤ PVP < 150 s ≤ DP (the tag timing
limits of `phases`); AP is "early arterial" below 30 s. Confidence = the posterior of the chosen phase
(exp(−cost/2) of each phase's best fit, normalised over the four phases; capped at 0.95).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .errors import GeometryError, InputError
from .study import Phase, check_same_grid

log = logging.getLogger(__name__)

#: Seconds after injection and the typical enhancement above the non-contrast baseline (HU) at each time.
CURVE_SECONDS = np.array([0, 10, 15, 25, 35, 50, 70, 100, 180, 300], float)
CURVE_DELTA = {
    "aorta": np.array([0, 0, 80, 220, 270, 200, 125, 95, 75, 55], float),
    "portal_vein": np.array([0, 0, 0, 40, 85, 130, 145, 125, 90, 70], float),
    "liver": np.array([0, 0, 0, 8, 18, 35, 50, 45, 32, 25], float),
}
BASELINE = {"aorta": 40.0, "portal_vein": 40.0, "liver": 60.0}
SIGMA = {"aorta": 35.0, "portal_vein": 30.0, "liver": 15.0}
DOSE_SD = 0.3
#: Phase limits in seconds after injection (same as the tag timing in phases.py) and the early-arterial limit.
LIMITS = ((15.0, Phase.NC), (50.0, Phase.AP), (150.0, Phase.PVP), (np.inf, Phase.DP))
EARLY_ARTERIAL_S = 30.0
_NAMES = {Phase.NC: "non-contrast", Phase.AP: "arterial", Phase.PVP: "portal venous", Phase.DP: "delayed"}
_TIMES = np.arange(0.0, 301.0, 1.0)
_DOSES = np.linspace(0.5, 1.7, 25)
WORK_MM = 2.0  # working grid: block-averaged to about this spacing
AORTA_BOX_MM = 13.0  # fits inside an aorta (diameter 18-30 mm), not inside the portal/mesenteric vein or small arteries


@dataclass
class PhaseMeasurement:
    """Image-based phase of one CT volume, with what was measured (median HU per found region, None = not found)."""

    phase: Phase
    confidence: float
    seconds: float  # estimated time after injection
    aorta_hu: float | None
    portal_vein_hu: float | None
    liver_hu: float | None
    sub_label: str = ""  # "early arterial" / "late arterial" for AP
    reason: str = ""
    probabilities: dict | None = None  # phase code -> posterior


# ---------------------------------------------------------------- classification
def classify(aorta: float | None, portal_vein: float | None, liver: float | None,
             liver_uptake: bool = False) -> PhaseMeasurement:
    """Fit measured HU (None = not measured) to the time-density curves; see the module docstring.
    `liver_uptake` (a hepatobiliary MR agent): from `UPTAKE_S` on, a liver brighter than its curve costs nothing."""
    measured = {"aorta": aorta, "portal_vein": portal_vein, "liver": liver}
    if aorta is None and liver is None:
        raise InputError("Neither the aorta nor the liver could be measured: the image-based phase needs at "
                         "least one of them (is this an abdominal CT?).")
    t, s = _TIMES[:, None], _DOSES[None, :]
    cost = ((s - 1.0) / DOSE_SD) ** 2
    pred_liver = BASELINE["liver"] + s * np.interp(t, CURVE_SECONDS, CURVE_DELTA["liver"])
    if liver is not None:
        liver_cost = ((liver - pred_liver) / SIGMA["liver"]) ** 2
        if liver_uptake:
            liver_cost = np.where((t >= UPTAKE_S) & (liver > pred_liver), 0.0, liver_cost)
        cost = cost + liver_cost
    if aorta is not None:
        pred = np.maximum(BASELINE["aorta"] + s * np.interp(t, CURVE_SECONDS, CURVE_DELTA["aorta"]), 55.0)
        cost = cost + ((aorta - pred) / SIGMA["aorta"]) ** 2
    if portal_vein is not None:
        pred = BASELINE["portal_vein"] + s * np.interp(t, CURVE_SECONDS, CURVE_DELTA["portal_vein"])
        pred = np.maximum(pred, (liver if liver is not None else BASELINE["liver"]) + 8.0)
        cost = cost + ((portal_vein - pred) / SIGMA["portal_vein"]) ** 2
    best_t = cost.min(axis=1)
    seconds = float(_TIMES[int(np.argmin(best_t))])
    lower, by_phase = 0.0, {}
    for upper, phase in LIMITS:
        inside = (_TIMES >= lower) & (_TIMES < upper)
        by_phase[phase] = float(best_t[inside].min())
        lower = upper
    floor = min(by_phase.values())
    weights = {p: np.exp(-0.5 * (c - floor)) for p, c in by_phase.items()}
    total = sum(weights.values())
    probabilities = {p.value: round(float(w / total), 3) for p, w in weights.items()}
    phase = next(p for upper, p in LIMITS if seconds < upper)
    confidence = round(min(0.95, probabilities[phase.value]), 2)
    sub = ("early arterial" if seconds < EARLY_ARTERIAL_S else "late arterial") if phase is Phase.AP else ""
    shown = ", ".join(f"{n.replace('_', ' ')} {v:.0f} HU" for n, v in measured.items() if v is not None)
    missing = [n.replace("_", " ") for n, v in measured.items() if v is None]
    label = sub or _NAMES[phase]
    timing = "" if phase is Phase.NC else f" (~{seconds:.0f} s)"
    reason = (f"image: {shown}{' (' + ', '.join(missing) + ' not found)' if missing else ''} → {label}{timing}, "
              f"confidence {confidence:.2f}")
    return PhaseMeasurement(phase, confidence, seconds, aorta, portal_vein, liver, sub, reason, probabilities)


# ---------------------------------------------------------------- finding the structures
def measure_phase(image: sitk.Image, liver: sitk.Image | None = None) -> PhaseMeasurement:
    """Contrast phase of a CT volume (HU) from its aorta, portal vein and liver; `liver`: optional mask on its grid.

    Raises InputError for an image that is not a 3D CT in HU with a body in it (constant, tiny, MR, …).
    """
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"The image-based phase needs a scalar 3D CT volume, got {image.GetDimension()}D with "
                         f"{image.GetNumberOfComponentsPerPixel()} component(s).")
    if liver is not None:
        check_same_grid(image, liver, "liver mask given to measure_phase")
    work, mask = _working_grid(image, liver)
    a = sitk.GetArrayFromImage(work).astype(np.float32)  # (z, y, x): superior, posterior, left increase
    sx, sy, sz = work.GetSpacing()
    if min(a.shape[1:]) < 16 or a.shape[1] * sy < 100 or a.shape[2] * sx < 100:
        raise InputError(f"Image of {image.GetSize()} voxels ({np.round(image.GetSpacing(), 2).tolist()} mm) is too "
                         "small for the image-based phase: it needs an axial field of view of at least 10 cm.")
    lo, hi = float(np.percentile(a, 0.5)), float(np.percentile(a, 99.5))
    if lo > -500 or hi - lo < 300:
        raise InputError(f"Image intensities {lo:.0f}..{hi:.0f} do not look like CT in HU (no air around the body): "
                         "the image-based phase reads CT only; set the phase by hand (--phase SERIES PHASE).")
    body = _body(a)
    ys, xs = np.flatnonzero(body.any(axis=(0, 2))), np.flatnonzero(body.any(axis=(0, 1)))
    crop = (slice(None), slice(ys[0], ys[-1] + 1), slice(xs[0], xs[-1] + 1))  # the body's box: no air to process
    a, body, mask = a[crop], body[crop], None if mask is None else mask[crop]
    far = _distance(a > 400, (sx, sy, sz)) > 6.0  # centres 6 mm away from bone
    spine = _spine(a, body, sx, sy)
    aorta_hu, aorta_xy = _aorta(a, body, far, spine, sx, sy)
    liver_mask = mask if mask is not None else _liver(a, body, spine, sx, sy, sz)
    liver_hu = _liver_hu(a, liver_mask, spine, sx)
    portal_hu = None if liver_mask is None else _portal_vein(a, body, far, liver_mask, aorta_xy, (sx, sy, sz))
    result = classify(aorta_hu, portal_hu, liver_hu)
    log.debug("%s", result.reason)
    return result


def _working_grid(image: sitk.Image, liver: sitk.Image | None):
    """LPS-oriented image block-averaged to ~WORK_MM voxels (the mask alike)."""
    image = sitk.DICOMOrient(sitk.Cast(image, sitk.sitkFloat32), "LPS")
    spacing = image.GetSpacing()
    factors = [max(1, int(round(WORK_MM / spacing[0]))), max(1, int(round(WORK_MM / spacing[1]))),
               max(1, int(round(WORK_MM / spacing[2])))]
    factors = [min(f, max(1, n // 8)) for f, n in zip(factors, image.GetSize())]
    work = sitk.BinShrink(image, factors)
    mask = None
    if liver is not None:
        m = sitk.DICOMOrient(sitk.Cast(liver > 0, sitk.sitkFloat32), "LPS")
        mask = sitk.GetArrayFromImage(sitk.BinShrink(m, factors)) > 0.5
        if mask.sum() < 10:
            raise GeometryError("The liver mask given to measure_phase is (nearly) empty: pass a mask with the liver "
                                "or none (the liver is then found in the image).")
    return work, mask


def _distance(mask: np.ndarray, spacing) -> np.ndarray:
    """Distance (mm) of every voxel to the nearest True voxel of `mask` (z, y, x); spacing (x, y, z)."""
    if not mask.any():
        return np.full(mask.shape, np.inf, np.float32)
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing(tuple(float(v) for v in spacing))
    d = sitk.SignedMaurerDistanceMap(image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    return np.maximum(sitk.GetArrayFromImage(d), 0.0)


def _body(a: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(a > -300)
    if n == 0:
        raise InputError("No body found in the image (nothing above -300 HU): is this a CT in HU?")
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    body = labels == int(np.argmax(sizes))
    return ndimage.binary_fill_holes(body, structure=np.array([[[0] * 3] * 3, [[0, 1, 0], [1, 1, 1], [0, 1, 0]],
                                                               [[0] * 3] * 3], bool))


def _spine(a, body, sx, sy):
    """Per slice (x, y) in voxels of the vertebral body's centre and anterior edge; NaN where none was found."""
    out = np.full((a.shape[0], 3), np.nan)
    ys, xs = np.mgrid[:a.shape[1], :a.shape[2]]
    for z in range(a.shape[0]):
        if body[z].sum() < 100:
            continue
        cx, cy = xs[body[z]].mean(), ys[body[z]].mean()
        seeds = ndimage.binary_closing(a[z] > 400, iterations=1) & body[z]
        grown, _ = ndimage.label((a[z] > 180) | seeds)  # marrow joins its cortex
        bone = ndimage.binary_fill_holes(np.isin(grown, np.unique(grown[seeds])) & (grown > 0))
        labels, n = ndimage.label(bone)
        if n == 0:
            continue
        index = np.arange(1, n + 1)
        area = ndimage.sum(bone, labels, index)
        mx = np.asarray(ndimage.mean(xs, labels, index))
        my = np.asarray(ndimage.mean(ys, labels, index))
        ok = (np.abs(mx - cx) * sx < 35) & (my > cy - 10 / sy) & (area * sx * sy > 150)
        if not ok.any():
            continue
        k = int(index[ok][np.argmax(area[ok])])
        comp = labels == k
        x0 = float(np.median(xs[comp & seeds]))  # posterior elements are midline; the aorta is not
        strip = comp[:, np.abs(np.arange(comp.shape[1]) - x0) * sx < 8]
        strip = strip[:, strip.any(axis=0)]
        # anterior edge per column, the most posterior of them: an aorta touching the bone is not the vertebra
        out[z] = (x0, my[k - 1], np.argmax(strip, axis=0).max() if strip.size else ys[comp].min())
    found = ~np.isnan(out[:, 0])
    if not found.any():
        return None
    for i in range(3):  # slices without a spine: nearest found value
        out[~found, i] = np.interp(np.flatnonzero(~found), np.flatnonzero(found), out[found, i])
    return ndimage.median_filter(out, size=(7, 1), mode="nearest")  # disc levels have no bright vertebral body


def _aorta(a, body, far, spine, sx, sy):
    """Median HU around the aorta (consensus of per-slice brightest boxes anterior to the spine) and its (x, y)."""
    if spine is None:
        return None, None
    box = (1, max(3, int(round(AORTA_BOX_MM / sy))), max(3, int(round(AORTA_BOX_MM / sx))))
    mean = ndimage.uniform_filter(np.clip(a, -100, 250), box)  # wall calcification must not win
    ys, xs = np.mgrid[:a.shape[1], :a.shape[2]]
    picks = []
    for z in range(a.shape[0]):
        x0, _, front = spine[z]
        dx, dy = (xs - x0) * sx, (ys - front) * sy
        roi = body[z] & far[z] & (dx > -10) & (dx < 45) & (dy < -3) & (dy > -70)
        if roi.sum() < 4:
            continue
        prior = 0.5 * np.maximum(np.hypot(dx - 15, dy + 15) - 10, 0)  # HU per mm away from the usual place
        i = np.argmax(np.where(roi, mean[z] - prior, -np.inf))
        picks.append((z, (xs.flat[i] - x0) * sx, (ys.flat[i] - front) * sy))
    if not picks:
        return None, None
    picks = np.array(picks)
    offsets = picks[:, 1:]
    close = np.hypot(*(offsets[:, None, :] - offsets[None, :, :]).transpose(2, 0, 1)) < 10
    cluster = close[int(np.argmax(close.sum(axis=1)))]  # the position most slices agree on: a vertical tube
    centre = np.median(offsets[cluster], axis=0)
    values = []
    for z in range(a.shape[0]):
        x0, _, front = spine[z]
        px, py = x0 + centre[0] / sx, front + centre[1] / sy
        disc = (((xs - px) * sx) ** 2 + ((ys - py) * sy) ** 2 < 16) & body[z]
        values.append(a[z][disc])
    values = np.concatenate(values)
    if values.size == 0:
        return None, None
    xy = (float(np.median(spine[:, 0]) + centre[0] / sx), float(np.median(spine[:, 2]) + centre[1] / sy))
    return float(np.percentile(values, 25)), xy  # lower quartile: robust to a calcified wall in the disc


def _liver(a, body, spine, sx, sy, sz):
    """Liver mask: the soft-tissue HU band of the patient's right side whose largest component is biggest."""
    smooth = ndimage.uniform_filter(a, (1, max(1, int(round(5 / sy))), max(1, int(round(5 / sx)))))
    xs = np.arange(a.shape[2])[None, None, :]
    midline = np.median(spine[:, 0]) if spine is not None else a.shape[2] / 2
    right = body & (xs < midline - 20 / sx)
    values = smooth[right & (smooth > -20) & (smooth < 250)]
    if values.size < 100:
        return None
    hist, edges = np.histogram(values, bins=np.arange(-20, 252, 4))
    hist = ndimage.uniform_filter1d(hist.astype(float), 3)
    peaks = [i for i in range(1, len(hist) - 1) if hist[i] >= hist[i - 1] and hist[i] >= hist[i + 1]]
    peaks = sorted(peaks, key=lambda i: -hist[i])[:4]
    voxel_ml = sx * sy * sz / 1000
    best, best_size = None, 0.0
    counts = [int(np.sum(np.abs(values - (edges[i] + edges[i + 1]) / 2) < 22)) for i in peaks]
    for i, count in zip(peaks, counts):
        if count < 0.25 * max(counts):
            continue
        centre = (edges[i] + edges[i + 1]) / 2
        band = body & (np.abs(smooth - centre) < 22)
        core = _distance(~band, (sx, sy, sz)) > 7  # thick: an organ, not the muscle wall
        labels, n = ndimage.label(core & right)
        if n == 0:
            continue
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        k = int(np.argmax(sizes))
        if sizes[k] * voxel_ml > best_size:
            grown = _distance(labels == k, (sx, sy, sz)) < 8
            best, best_size = grown & band, sizes[k] * voxel_ml
    min_ml = min(30.0, 0.5 * a.shape[0] * sz)  # liver core; a thin slab holds only a slice of the liver
    if best is None or best_size < min_ml:
        return None
    return best


def _liver_hu(a, mask, spine, sx):
    if mask is None:
        return None
    core = ndimage.binary_erosion(mask, iterations=1)
    core = core if core.sum() >= 50 else mask
    if spine is not None:
        right = core & (np.arange(a.shape[2])[None, None, :] < np.median(spine[:, 0]) - 10 / sx)
        core = right if right.sum() >= 50 else core
    return float(np.median(a[core]))


def _portal_vein(a, body, far, liver, aorta_xy, spacing):
    """Median HU of the brightest 1 ml (6 mm box mean) in the liver hull, right of and not behind the aorta."""
    sx, sy, sz = spacing
    radius = max(1, int(round(10 / sx)))
    ys, xs = np.flatnonzero(liver.any(axis=(0, 2))), np.flatnonzero(liver.any(axis=(0, 1)))
    y0, x0 = max(0, ys[0] - radius - 2), max(0, xs[0] - radius - 2)
    crop = (slice(None), slice(y0, ys[-1] + radius + 3), slice(x0, xs[-1] + radius + 3))
    a, body, far, liver = a[crop], body[crop], far[crop], liver[crop]
    plane = np.zeros((3, 3, 3), bool)
    plane[1] = True
    closed = sitk.BinaryMorphologicalClosing(sitk.GetImageFromArray(liver.astype(np.uint8)), (radius, radius, 0))
    hull = ndimage.binary_fill_holes(sitk.GetArrayFromImage(closed) > 0, plane)  # with its vessels and the hilum
    region = hull & far & (_distance(~body, spacing) > 12)  # no ribs, no body wall
    if aorta_xy is not None:
        ys, xs = np.mgrid[:a.shape[1], :a.shape[2]]
        px, py = aorta_xy[0] - x0, aorta_xy[1] - y0
        keep = (xs < px - 5 / sx) & (ys < py + 5 / sy) & (np.hypot((xs - px) * sx, (ys - py) * sy) > 15)
        region &= keep[None]
    if region.sum() < 20:
        return None
    box = (1, max(1, int(round(6 / sy))), max(1, int(round(6 / sx))))
    mean = ndimage.uniform_filter(np.clip(a, -200, 400), box)
    values = mean[region]
    count = int(min(max(20, 1000 / (sx * sy * sz)), max(20, 0.02 * values.size)))
    top = np.argpartition(values, -count)[-count:]
    return float(np.median(a[region][top]))


# ---------------------------------------------------------------- dynamic MRI
#: CT phase of the fitted curves -> the MR dynamic phase of the same time window.
MR_OF_CT = {Phase.NC: Phase.MR_PRE, Phase.AP: Phase.MR_AP, Phase.PVP: Phase.MR_PVP, Phase.DP: Phase.TP}
UPTAKE_S = 70.0  # gadoxetate: hepatocyte uptake keeps the liver enhancing from the portal venous phase on
ARTERIAL_TOP = 99.8  # percentile of the arterial-peak enhancement that marks the aorta (and heart)


def measure_mr_phases(posts: dict, pre: sitk.Image, liver: "sitk.Image | None" = None,
                      hepatobiliary: bool = False) -> dict:
    """Phases of untimed dynamic MR series {name: image} from their percent enhancement over `pre` (one grid).

    MR follows CT's wash-in and wash-out (HCC_IMAGING_FACTS.md), and percent enhancement is read as HU above
    baseline on the same time-enhancement curves (`classify`). Measured on 3x3x3-median-filtered images, inside
    the body (pre-contrast signal above 15 % of its 99th percentile): the aorta is the region where the series
    with the highest arterial peak enhances most (its top `ARTERIAL_TOP` percentile), followed through every
    series; the liver is `liver` (a mask) or the largest connected tissue that enhances moderately in every
    series (5-120 %, > 25 % at its peak: not muscle, fat nor blood). With a hepatobiliary agent, a series where
    the liver enhances more than the aorta is HBP. Returns {name: PhaseMeasurement}, its *_hu fields holding
    the enhancement (%) and the phase an MR code."""
    for name, image in posts.items():
        check_same_grid(pre, image, f"dynamic MR series '{name}' (the pre-contrast series' grid)")
    if not posts:
        return {}
    smooth = {n: sitk.GetArrayFromImage(sitk.Median(sitk.Cast(i, sitk.sitkFloat32), [1, 1, 1])) for n, i in
              {**posts, "": pre}.items()}
    base = smooth.pop("")
    body = base > 0.15 * np.percentile(base, 99)
    if body.sum() < 100:
        raise InputError("The pre-contrast MR series shows no body (nearly empty): the image-based MR phase needs "
                         "an abdominal T1 series before contrast.")
    enhancement = {n: 100.0 * (a - base) / np.maximum(base, 1.0) for n, a in smooth.items()}
    peak = max(enhancement, key=lambda n: np.percentile(enhancement[n][body], ARTERIAL_TOP))
    aorta = body & (enhancement[peak] >= np.percentile(enhancement[peak][body], ARTERIAL_TOP))
    if liver is not None:
        check_same_grid(pre, liver, "liver mask given to measure_mr_phases")
        mask = sitk.GetArrayFromImage(liver) > 0
    else:
        stack = np.stack(list(enhancement.values()))
        tissue = body & (stack.min(0) > 5) & (stack.max(0) < 120) & (stack.max(0) > 25)
        components, n = ndimage.label(tissue)
        sizes = np.bincount(components.ravel())
        sizes[0] = 0
        mask = components == int(np.argmax(sizes)) if n else tissue
    if mask.sum() < 10:
        raise InputError("No liver found in the dynamic MR series (no tissue enhancing 5-120 %): pass a liver mask.")
    out = {}
    for name, e in enhancement.items():
        a, lv = float(np.median(e[aorta])), float(np.median(e[mask]))
        fit = classify(BASELINE["aorta"] + a, None, BASELINE["liver"] + lv, liver_uptake=hepatobiliary)
        phase, confidence = MR_OF_CT[fit.phase], fit.confidence
        label = phase.value
        if hepatobiliary and fit.phase is Phase.DP and lv > a:
            phase, label = Phase.HBP, "HBP (liver enhancing more than the blood pool: hepatocyte uptake)"
        timing = "" if phase in (Phase.MR_PRE, Phase.HBP) else f" (~{fit.seconds:.0f} s)"
        reason = (f"image: aorta +{a:.0f} %, liver +{lv:.0f} % over the pre-contrast series → {label}{timing}, "
                  f"confidence {confidence:.2f}")
        out[name] = PhaseMeasurement(phase, confidence, fit.seconds, a, None, lv, fit.sub_label, reason,
                                     fit.probabilities)
    return out
