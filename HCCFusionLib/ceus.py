"""Contrast-enhanced ultrasound: 2D+t cine import, time-intensity curves, lognormal perfusion fit, CEUS LI-RADS v2017.

Cine: one multi-frame ultrasound DICOM; pixel size from SequenceOfUltrasoundRegions (PhysicalDeltaX/Y, units cm),
frame times from FrameTimeVector (ms between frames) or FrameTime (ms); t = 0 at the first frame, which is taken
as the injection unless `injection_s` says otherwise.
Linearisation (assumption): the scanner log-compressed echo *power* over a known dynamic range DR (dB) onto the
full grey scale, P = Pmax x 10 log10(I / I0) / DR, so I / I0 = 10^(DR P / (10 Pmax)). Curves are fitted on I / I0.
Models: lognormal I(t) = b + AUC x lognormal pdf(t - t0; mu, sigma), mean transit time MTT = exp(mu + sigma^2 / 2);
gamma variate I(t) = b + AUC x gamma pdf(t - t0; shape alpha + 1, scale beta) (= b + K (t - t0)^alpha e^(-(t - t0)
/ beta)), MTT = (alpha + 1) beta, peak at t0 + alpha beta. `fit_perfusion` fits both and keeps the smaller residual.
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
              "mtt_s": "s", "mu": "ln s", "sigma": "ln s", "alpha": "1", "beta_s": "s", "baseline": "I/I0",
              "fit_rmse": "I/I0"}
MODELS = ("lognormal", "gamma")


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


def gamma_variate(t, baseline, auc, t0, alpha, beta):
    """Baseline + AUC x gamma density of (t - t0) with shape alpha + 1 and scale beta; 0 above baseline before t0."""
    t = np.asarray(t, np.float64)
    s = np.clip(t - t0, 1e-12, None)
    log_pdf = alpha * np.log(s) - s / beta - math.lgamma(alpha + 1) - (alpha + 1) * math.log(beta)
    return baseline + auc * np.where(t > t0, np.exp(log_pdf), 0.0)


def fit_perfusion(times_s: np.ndarray, curve: np.ndarray, model: str = "best") -> dict:
    """Perfusion parameters (`PARAMETERS`, plus "model": the curve fitted) of one time-intensity curve from a scipy
    least-squares fit of the lognormal or the gamma variate (`model`), or of both keeping the smaller RMSE ("best")."""
    if model not in MODELS + ("best",):
        raise InputError(f"Unknown CEUS curve model '{model}': use one of {', '.join(MODELS)} or best.")
    fits = [_fit(times_s, curve, m) for m in (MODELS if model == "best" else (model,))]
    return min(fits, key=lambda f: f["fit_rmse"])


def _fit(times_s: np.ndarray, curve: np.ndarray, model: str) -> dict:
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
    function = lognormal if model == "lognormal" else gamma_variate
    if model == "lognormal":
        sigma0 = 0.5
        start, low, high = [math.log(mode) + sigma0 ** 2, sigma0], [-5.0, 0.05], [10.0, 3.0]
    else:  # mode = alpha beta; start from alpha 3
        start, low, high = [3.0, mode / 3.0], [0.1, 0.05], [50.0, 1000.0]
    lower = [-np.inf, 0.0, float(t[0]) - mode] + low
    upper = [np.inf, np.inf, float(t[peak_i])] + high
    try:
        params, _ = curve_fit(function, t, y, p0=[baseline, auc, t0] + start, bounds=(lower, upper), maxfev=20000)
    except (RuntimeError, ValueError) as exc:
        raise InputError(f"The {model} fit of the CEUS curve did not converge ({exc}): check the ROI and the "
                         "cine timing.") from None
    b, a, t0, p, q = (float(v) for v in params)
    fine = np.linspace(t0, float(t[-1]), 4000)
    fitted = function(fine, *params) - b
    slope = np.gradient(fitted, fine)
    k = int(np.argmax(fitted))
    if model == "lognormal":
        peak_time, mtt, shape = t0 + math.exp(p - q ** 2), math.exp(p + q ** 2 / 2), {"mu": p, "sigma": q}
    else:
        peak_time, mtt, shape = t0 + p * q, (p + 1) * q, {"alpha": p, "beta_s": q}
    return {"arrival_s": t0, "time_to_peak_s": peak_time, "peak_enhancement": float(fitted[k]),
            "wash_in_slope": float(slope[: k + 1].max()), "wash_out_slope": float(slope[k:].min()), "auc": a,
            "mtt_s": mtt, **shape, "baseline": b, "fit_rmse": float(np.sqrt(np.mean((function(t, *params) - y) ** 2))),
            "model": model}


def ceus_features(times_s: np.ndarray, lesion: np.ndarray, liver: np.ndarray, noise: float = 0.05,
                  rim: "tuple[np.ndarray, np.ndarray] | None" = None) -> dict:
    """CEUS LI-RADS v2017 major features from linearised lesion and liver curves (Feature: value, threshold, ...).

    `rim`: (rim curve, centre curve) of the lesion's periphery and inside: rim APHE (LR-M) when, at some time of the
    arterial window, the rim's enhancement exceeds both the centre's and the liver's by the ratio APHE_RATIO.
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
    if rim is not None:
        rim_e, centre_e = (np.asarray(c, np.float64) - np.median(np.asarray(c)[:3]) for c in rim)
        liver_e = np.asarray(liver, np.float64) - vb
        window = (t >= ARTERIAL_WINDOW_S[0]) & (t <= ARTERIAL_WINDOW_S[1]) & (rim_e > 0.05 * np.max(liver_e))
        floor = 0.05 * max(float(np.max(liver_e)), 1e-9)  # keeps a near-void centre's ratio finite
        over = np.minimum(rim_e / np.maximum(centre_e, floor), rim_e / np.maximum(liver_e, floor))
        value = float(np.max(over[window])) if window.any() else math.nan
        feats["rim_aphe"] = Feature("rim_aphe", None if math.isnan(value) else value > APHE_RATIO, value, APHE_RATIO,
                                    "rim/(centre, liver) enhancement", None if math.isnan(value) else
                                    confidence(value - APHE_RATIO, noise), "CEUS arterial",
                                    "rim enhancement over the greater of centre and liver, arterial window (LR-M)")
    return feats


def ceus_category(features: dict, diameter_mm: float) -> str:
    """CEUS LI-RADS v2017 category from APHE, rim APHE, washout timing/degree and size."""
    if any(features[n].present for n in ("early_washout", "marked_washout", "rim_aphe") if n in features):
        return "LR-M"
    aphe, late_mild = bool(features["aphe"].present), bool(features["washout"].present)
    if aphe and late_mild:
        return "LR-5" if diameter_mm >= 10 else "LR-4"
    if aphe or late_mild:
        return "LR-4" if diameter_mm >= 10 else "LR-3"
    return "LR-3"


def assess(cine: Cine, lesion_roi: np.ndarray, liver_roi: np.ndarray, dynamic_range_db: float, diameter_mm: float,
           rim_roi: "np.ndarray | None" = None):
    """(perfusion table: roi, parameter, value, unit, model; CEUS LI-RADS evidence with the category as its last
    row; category) of one cine. The feature confidences use the fits' median RMSE relative to the liver's
    enhancement. `rim_roi` (the lesion's periphery, inside `lesion_roi`) adds rim APHE against the rest."""
    import pandas as pd

    curves, rows = {}, []
    for name, roi in (("lesion", lesion_roi), ("liver", liver_roi)):
        curves[name] = time_intensity_curve(cine, roi, dynamic_range_db)
        fit = fit_perfusion(cine.times_s, curves[name])
        rows += [{"roi": name, "parameter": k, "value": v, "unit": PARAMETERS[k], "model": fit["model"]}
                 for k, v in fit.items() if k != "model"]
    noise = float(np.median([r["value"] for r in rows if r["parameter"] == "fit_rmse"])
                  / max(float(np.max(curves["liver"]) - np.min(curves["liver"])), 1e-9))
    rim = None
    if rim_roi is not None:
        centre = lesion_roi & ~rim_roi
        if not rim_roi.any() or not centre.any():
            raise InputError("The CEUS rim ROI must cover part of the lesion ROI and leave a centre: use a rim "
                             "thinner than the lesion radius.")
        rim = tuple(time_intensity_curve(cine, roi, dynamic_range_db) for roi in (rim_roi, centre))
    features = ceus_features(cine.times_s, curves["lesion"], curves["liver"], noise=noise, rim=rim)
    category = ceus_category(features, diameter_mm)
    evidence = [{"feature": f.name, **{k: v for k, v in asdict(f).items() if k not in ("name", "source")}}
                for f in features.values()]
    evidence.append({"feature": "category", "present": None, "value": category, "threshold": None,
                     "unit": "CEUS LI-RADS v2017", "confidence": None, "phase": "",
                     "evidence": f"diameter {diameter_mm:g} mm"})
    return pd.DataFrame(rows), pd.DataFrame(evidence), category

