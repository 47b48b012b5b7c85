"""Contrast-enhanced ultrasound: 2D+t cine import, time-intensity curves, lognormal perfusion fit, CEUS LI-RADS v2017.

Cine: one multi-frame ultrasound DICOM; pixel size from SequenceOfUltrasoundRegions (PhysicalDeltaX/Y, units cm),
frame times from FrameTimeVector (ms between frames) or FrameTime (ms); t = 0 at the first frame, which is taken
as the injection unless `injection_s` says otherwise.
Linearisation (assumption): the scanner log-compressed echo *power* over a known dynamic range DR (dB) onto the
full grey scale, P = Pmax x 10 log10(I / I0) / DR, so I / I0 = 10^(DR P / (10 Pmax)). Curves are fitted on I / I0.
Model: I(t) = b + AUC x lognormal pdf(t - t0; mu, sigma); mean transit time MTT = exp(mu + sigma^2 / 2).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .lirads import Feature, confidence

CM_UNITS = 3  # PhysicalUnitsXDirection code for cm
ARTERIAL_WINDOW_S = (10.0, 45.0)  # CEUS arterial phase
EARLY_WASHOUT_S = 60.0  # washout before this is "early" (LR-M)
MARKED_BY_S = 120.0  # marked washout: (near) void within 2 minutes
APHE_RATIO, WASHOUT_RATIO, MARKED_RATIO = 1.2, 0.8, 0.2  # lesion / liver (linear) thresholds
PARAMETERS = {"arrival_s": "s", "time_to_peak_s": "s", "peak_enhancement": "linear (I/I0) above baseline",
              "wash_in_slope": "1/s (I/I0)", "wash_out_slope": "1/s (I/I0)", "auc": "s (I/I0)",
              "mtt_s": "s", "mu": "ln s", "sigma": "ln s", "baseline": "I/I0", "fit_rmse": "I/I0"}


@dataclass
class Cine:
    """frames: (time, rows, columns) stored grey values; times_s: seconds after injection; spacing_mm: (x, y)."""

    frames: np.ndarray
    times_s: np.ndarray
    spacing_mm: tuple[float, float]
    max_value: float


def read_cine(path: "str | Path", injection_s: float = 0.0) -> Cine:
    """Read a multi-frame ultrasound DICOM cine (colour frames become their luminance)."""
    import pydicom

    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
        frames = np.asarray(ds.pixel_array, np.float64)
    except Exception as exc:
        raise InputError(f"Cannot read CEUS cine '{path}' ({exc}): give a multi-frame ultrasound DICOM file.") from None
    count = int(ds.get("NumberOfFrames") or 1)
    if count < 3:
        raise InputError(f"CEUS cine '{path}' has {count} frame(s): export the whole contrast cine (multi-frame).")
    if frames.ndim == 4:  # RGB frames
        frames = frames @ np.array([0.299, 0.587, 0.114])
    regions = ds.get("SequenceOfUltrasoundRegions") or []
    region = next((r for r in regions if r.get("PhysicalDeltaX") and int(r.get("PhysicalUnitsXDirection") or 0)
                   == CM_UNITS), None)
    if region is None:
        raise InputError(f"CEUS cine '{path}' lacks SequenceOfUltrasoundRegions with PhysicalDeltaX/Y in cm: the "
                         "pixel size is unknown; export the cine with its region calibration.")
    spacing = (abs(float(region.PhysicalDeltaX)) * 10.0, abs(float(region.PhysicalDeltaY)) * 10.0)
    if ds.get("FrameTimeVector"):
        steps = np.asarray([float(v) for v in ds.FrameTimeVector], np.float64)
        times = np.cumsum(steps) / 1000.0 - steps[0] / 1000.0
    elif ds.get("FrameTime"):
        times = np.arange(count) * float(ds.FrameTime) / 1000.0
    else:
        raise InputError(f"CEUS cine '{path}' lacks FrameTime (0018,1063) and FrameTimeVector (0018,1065): frame "
                         "times are unknown; export the cine with its frame timing.")
    if len(times) != count:
        raise InputError(f"CEUS cine '{path}' has {len(times)} frame times for {count} frames: re-export it.")
    return Cine(frames, times - injection_s, spacing, float(2 ** int(ds.get("BitsStored") or 8) - 1))


def linearise(values: np.ndarray, dynamic_range_db: float, max_value: float = 255.0) -> np.ndarray:
    """Log-compressed grey values -> relative echo power I / I0 (see the module docstring for the assumption)."""
    return 10.0 ** (dynamic_range_db * np.asarray(values, np.float64) / (10.0 * max_value))


def circle_roi(cine: Cine, centre_mm: tuple[float, float], radius_mm: float) -> np.ndarray:
    """Boolean (rows, columns) mask of a circle given in mm from the top-left pixel centre (x, y)."""
    rows, cols = cine.frames.shape[1:3]
    y, x = np.mgrid[:rows, :cols]
    inside = (x * cine.spacing_mm[0] - centre_mm[0]) ** 2 + (y * cine.spacing_mm[1] - centre_mm[1]) ** 2 <= radius_mm ** 2
    if not inside.any():
        raise InputError(f"CEUS ROI at {centre_mm} mm, radius {radius_mm} mm lies outside the cine: check it.")
    return inside


def time_intensity_curve(cine: Cine, roi: np.ndarray, dynamic_range_db: float) -> np.ndarray:
    """Mean linearised intensity of the ROI in every frame (averaged after linearisation)."""
    return linearise(cine.frames[:, roi], dynamic_range_db, cine.max_value).mean(axis=1)


def lognormal(t, baseline, auc, t0, mu, sigma):
    """Baseline + AUC x lognormal density of (t - t0); 0 above baseline before t0."""
    t = np.asarray(t, np.float64)
    s = np.clip(t - t0, 1e-9, None)
    pdf = np.exp(-(np.log(s) - mu) ** 2 / (2 * sigma ** 2)) / (s * sigma * math.sqrt(2 * math.pi))
    return baseline + auc * np.where(t > t0, pdf, 0.0)


def fit_perfusion(times_s: np.ndarray, curve: np.ndarray) -> dict:
    """Lognormal fit (scipy least squares) and the perfusion parameters of one time-intensity curve (`PARAMETERS`)."""
    from scipy.optimize import curve_fit

    t, y = np.asarray(times_s, np.float64), np.asarray(curve, np.float64)
    baseline = float(np.median(y[: max(3, len(y) // 20)]))
    rise = y - baseline
    peak_i = int(np.argmax(rise))
    if rise[peak_i] <= 0:
        raise InputError("The CEUS curve never rises above its baseline: the ROI does not enhance; check the ROI.")
    above = np.flatnonzero(rise[: peak_i + 1] < 0.1 * rise[peak_i])
    t0 = float(t[above[-1]]) if above.size else float(t[0])
    mode = max(float(t[peak_i]) - t0, 1e-3)
    auc = float(np.trapezoid(np.clip(rise, 0, None), t))
    sigma0 = 0.5
    start = [baseline, auc, t0, math.log(mode) + sigma0 ** 2, sigma0]
    lower = [-np.inf, 0.0, float(t[0]) - mode, -5.0, 0.05]
    upper = [np.inf, np.inf, float(t[peak_i]), 10.0, 3.0]
    try:
        params, _ = curve_fit(lognormal, t, y, p0=start, bounds=(lower, upper), maxfev=20000)
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"The lognormal fit of the CEUS curve did not converge ({exc}): check the ROI and the "
                         "cine timing.") from None
    b, a, t0, mu, sigma = (float(p) for p in params)
    fine = np.linspace(t0, float(t[-1]), 4000)
    fitted = lognormal(fine, *params) - b
    slope = np.gradient(fitted, fine)
    k = int(np.argmax(fitted))
    return {"arrival_s": t0, "time_to_peak_s": t0 + math.exp(mu - sigma ** 2), "peak_enhancement": float(fitted[k]),
            "wash_in_slope": float(slope[: k + 1].max()), "wash_out_slope": float(slope[k:].min()), "auc": a,
            "mtt_s": math.exp(mu + sigma ** 2 / 2), "mu": mu, "sigma": sigma, "baseline": b,
            "fit_rmse": float(np.sqrt(np.mean((lognormal(t, *params) - y) ** 2)))}


def ceus_features(times_s: np.ndarray, lesion: np.ndarray, liver: np.ndarray, noise: float = 0.05) -> dict:
    """CEUS LI-RADS v2017 major features from linearised lesion and liver curves (Feature: value, threshold, ...).

    APHE: max lesion/liver ratio in the arterial window > APHE_RATIO. Washout: after the lesion's peak, the first
    time the ratio, having been >= WASHOUT_RATIO, stays below it; early if before 60 s. Marked: ratio < MARKED_RATIO by 120 s.
    `noise`: standard deviation of the ratio (e.g. from the fit residuals), for the confidences.
    """
    t = np.asarray(times_s, np.float64)
    lb, vb = np.median(lesion[:3]), np.median(liver[:3])
    ratio = (np.asarray(lesion) - lb + 1e-9) / (np.asarray(liver) - vb + 1e-9)  # enhancement ratio
    ratio = np.where(np.asarray(liver) - vb > 0.05 * (np.max(liver) - vb), ratio, np.nan)
    arterial = (t >= ARTERIAL_WINDOW_S[0]) & (t <= ARTERIAL_WINDOW_S[1]) & np.isfinite(ratio)
    aphe_value = float(np.nanmax(ratio[arterial])) if arterial.any() else math.nan
    feats = {"aphe": Feature("aphe", None if math.isnan(aphe_value) else aphe_value > APHE_RATIO, aphe_value,
                             APHE_RATIO, "lesion/liver enhancement", None if math.isnan(aphe_value) else
                             confidence(aphe_value - APHE_RATIO, noise), "CEUS arterial",
                             f"maximum lesion/liver enhancement ratio {ARTERIAL_WINDOW_S[0]:g}-{ARTERIAL_WINDOW_S[1]:g} s")}
    after = t > t[int(np.argmax(lesion))]
    was_up = np.maximum.accumulate(np.nan_to_num(ratio, nan=-np.inf)) >= WASHOUT_RATIO  # washout: lost enhancement
    below = after & was_up & (ratio < WASHOUT_RATIO)
    onset = math.nan
    for i in np.flatnonzero(below):  # first time it stays below to the end of the cine (sustained)
        if np.all(below[i:] | ~np.isfinite(ratio[i:])):
            onset = float(t[i])
            break
    washout = not math.isnan(onset)
    feats["washout"] = Feature("washout", washout, onset, WASHOUT_RATIO, "s (onset)",
                               confidence(float(np.nanmin(ratio[after])) - WASHOUT_RATIO, noise) if after.any() else None,
                               "CEUS late", f"first sustained lesion/liver ratio < {WASHOUT_RATIO:g} after the peak")
    feats["early_washout"] = Feature("early_washout", washout and onset < EARLY_WASHOUT_S, onset, EARLY_WASHOUT_S,
                                     "s", None, "CEUS", "washout onset before 60 s (LR-M)")
    by = after & (t <= MARKED_BY_S) & np.isfinite(ratio)
    low = float(np.nanmin(ratio[by])) if by.any() else math.nan
    feats["marked_washout"] = Feature("marked_washout", None if math.isnan(low) else low < MARKED_RATIO, low,
                                      MARKED_RATIO, "lesion/liver enhancement", None if math.isnan(low) else
                                      confidence(low - MARKED_RATIO, noise), "CEUS <= 120 s",
                                      f"lowest lesion/liver ratio by {MARKED_BY_S:g} s (punched out)")
    return feats


def ceus_category(features: dict, diameter_mm: float) -> str:
    """CEUS LI-RADS v2017 category from APHE, washout timing/degree and size (no rim APHE assessed here)."""
    if features["early_washout"].present or features["marked_washout"].present:
        return "LR-M"
    aphe, late_mild = bool(features["aphe"].present), bool(features["washout"].present)
    if aphe and late_mild:
        return "LR-5" if diameter_mm >= 10 else "LR-4"
    if aphe or late_mild:
        return "LR-4" if diameter_mm >= 10 else "LR-3"
    return "LR-3"


def assess(cine: Cine, lesion_roi: np.ndarray, liver_roi: np.ndarray, dynamic_range_db: float, diameter_mm: float):
    """(perfusion table: roi, parameter, value, unit; CEUS LI-RADS evidence with the category as its last row;
    category) of one cine. The feature confidences use the fits' median RMSE relative to the liver's enhancement."""
    import pandas as pd

    curves, rows = {}, []
    for name, roi in (("lesion", lesion_roi), ("liver", liver_roi)):
        curves[name] = time_intensity_curve(cine, roi, dynamic_range_db)
        fit = fit_perfusion(cine.times_s, curves[name])
        rows += [{"roi": name, "parameter": k, "value": v, "unit": PARAMETERS[k]} for k, v in fit.items()]
    noise = float(np.median([r["value"] for r in rows if r["parameter"] == "fit_rmse"])
                  / max(float(np.max(curves["liver"]) - np.min(curves["liver"])), 1e-9))
    features = ceus_features(cine.times_s, curves["lesion"], curves["liver"], noise=noise)
    category = ceus_category(features, diameter_mm)
    evidence = [{"feature": f.name, **{k: v for k, v in asdict(f).items() if k not in ("name", "source")}}
                for f in features.values()]
    evidence.append({"feature": "category", "present": None, "value": category, "threshold": None,
                     "unit": "CEUS LI-RADS v2017", "confidence": None, "phase": "",
                     "evidence": f"diameter {diameter_mm:g} mm"})
    return pd.DataFrame(rows), pd.DataFrame(evidence), category

