"""Longitudinal follow-up: a study against its baseline (prior) run — registration, lesion matching, size change,
LI-RADS threshold growth, delta radiomics, mRECIST and RECIST 1.1 response, and a landmark Cox risk curve.

- Frame: the baseline's reference series. The follow-up's reference series is registered to it (liver-masked
  rigid + affine + B-spline, `registration.register`); the follow-up's lesion map is carried onto the baseline
  grid (nearest neighbour), so centroids and overlaps of both time points share one frame.
- Matching: one-to-one assignment (`lesions.assign_pairs`, Hungarian) minimising registered centroid
  distance / `GATE_MM` minus Dice overlap; a pair further apart than the gate that does not overlap is not a
  match. Unmatched baseline lesions are "vanished", unmatched follow-up lesions "new".
- Sizes are measured in each study's own frame: the segmentation's 3D longest diameter and volume
  (`lesions.LesionTable`), and the viable (arterially enhancing) longest diameter of mRECIST: the longest segment
  between enhancing voxels (AP above the liver's median AP and, on CT with NC, AP − NC ≥ `VIABLE_ENHANCEMENT_HU`)
  that crosses at most `NECROSIS_CROSSING` of non-enhancing tumour (so a necrotic core is not bridged).
- Threshold growth (LI-RADS v2018): longest diameter up by ≥ 50 % in ≤ 6 months (`threshold_growth`, also used by
  `lirads`, whose prior observations are paired here too: `read_prior`, `prior_observations`, `pair_prior`).
- RECIST 1.1: up to `TARGETS_PER_ORGAN` measurable (≥ 10 mm) baseline lesions, largest first (all lesions are in
  the liver); sum of longest diameters: CR all gone, PR ≤ −30 %, PD ≥ +20 % and ≥ +5 mm or any new lesion,
  else SD.
  mRECIST: the same on viable diameters of targets enhancing at baseline; CR = no viable tumour left; PD ≥ +20 %
  or a new lesion. The baseline is the only earlier time point, so it is also the nadir.
- Landmark Cox (`landmark_cox`, `risk_curve`): a cohort's survival from a landmark time on delta features
  (scikit-survival, as `fusion.evaluation`); a run draws a patient's curve from a landmark Cox bundle
  (`followup_risk`: `train --landmark`, `run --prior PRIOR --risk-bundle B`).
"""
from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from .errors import InputError
from .lesions import LesionTable, assign_pairs, extreme_points
from .study import LABELS, Phase, Series

log = logging.getLogger(__name__)

GATE_MM = 20.0  # largest registered centroid distance of a match without overlap
THRESHOLD_GROWTH = 0.5  # LI-RADS threshold growth: fractional size increase ...
THRESHOLD_GROWTH_MONTHS = 6.0  # ... within this interval
VIABLE_ENHANCEMENT_HU = 25.0  # CT: AP minus NC of viable tumour
MIN_VIABLE_ML = 0.2  # smaller enhancing islands are noise
NECROSIS_CROSSING = 0.1  # largest fraction of a viable diameter that may cross non-enhancing tumour
MEASURABLE_MM = 10.0
TARGETS_PER_ORGAN = 2
PR_CHANGE, PD_CHANGE, PD_MM = -0.30, 0.20, 5.0
DAYS_PER_MONTH = 365.25 / 12
CRITERIA = {"RECIST 1.1": "diameter_mm", "mRECIST": "viable_mm"}


@dataclass
class Timepoint:
    """One registered study: its reference series, label map and lesion map (on that grid), AP/NC images on the
    same grid (None when absent), ISO study date and radiomics long table (None when unknown)."""

    reference: Series
    labels: sitk.Image
    lesions: sitk.Image
    ap: sitk.Image | None = None
    nc: sitk.Image | None = None
    date: str | None = None
    features: pd.DataFrame | None = None

    @classmethod
    def from_study(cls, study, reference: str, labels, lesions, features=None) -> "Timepoint":
        """From a registered Study (series on the reference grid): arterial AP (else MR_AP), unenhanced NC (else
        MR_PRE; subtracted on CT only); the date from study.meta["study_date"]."""
        ap, nc = (next((s.image for s in map(study.get, pair) if s is not None), None)
                  for pair in ((Phase.AP, Phase.MR_AP), (Phase.NC, Phase.MR_PRE)))
        return cls(study[reference], labels, lesions, ap, nc, study.meta.get("study_date"), features)

    @classmethod
    def from_run(cls, out: "str | Path") -> "Timepoint":
        """From an earlier `hccfusion run` folder (its registration, segmentation and radiomics)."""
        from .layout import RunFolder
        from .registration import RegistrationResult
        from .segmentation.predictor import read_segmentation

        paths = RunFolder(out)
        if not paths.registered_study.is_file() or not paths.labels.is_file():
            raise InputError(f"'{out}' is not a completed `hccfusion run` folder (no {paths.registered_study.name} "
                             "or segmentation): give the baseline run's --out folder as --prior.")
        registration = RegistrationResult.read(paths.registration)
        seg, _ = read_segmentation(paths.segmentation)
        features = pd.read_csv(paths.features_long) if paths.features_long.is_file() else None
        return cls.from_study(registration.study, registration.reference, seg.labels, seg.lesion_map, features)


@dataclass
class FollowupResult:
    """matches: one row per lesion pair / new / vanished lesion; response: one row per criteria (RECIST 1.1,
    mRECIST); delta: per matched lesion and feature, the relative change; registration: the pair's QC."""

    matches: pd.DataFrame
    response: pd.DataFrame
    delta: pd.DataFrame
    registration: dict = field(default_factory=dict)
    transform: sitk.Transform | None = None  # baseline point -> follow-up point
    interval_months: float | None = None
    risk: tuple | None = None  # (curve, inputs) of followup_risk.patient_risk, with a landmark Cox bundle

    def save(self, folder: "str | Path") -> Path:
        """The run folder's followup/ files (layout.RunFolder.followup_*) in `folder`."""
        from .files import atomic_folder
        from .layout import RunFolder

        with atomic_folder(folder, replace=True) as tmp:
            paths = RunFolder(tmp.parent)  # typed names inside the temporary folder
            name = {k: getattr(paths, f"followup_{k}").name for k in ("matches", "response", "delta", "registration",
                                                                      "transform")}
            self.matches.to_csv(tmp / name["matches"], index=False)
            self.response.to_csv(tmp / name["response"], index=False)
            self.delta.to_csv(tmp / name["delta"], index=False)
            qc = {k: ("; ".join(v) if isinstance(v, list) else v) for k, v in self.registration.items()}
            pd.DataFrame([{**qc, "interval_months": self.interval_months}]).to_csv(tmp / name["registration"],
                                                                                 index=False)
            if self.transform is not None:
                sitk.WriteTransform(self.transform, str(tmp / name["transform"]))
            if self.risk is not None:
                self.risk[0].to_csv(tmp / paths.followup_risk_curve.name, index=False)
                self.risk[1].to_csv(tmp / paths.followup_risk_inputs.name, index=False)
        return Path(folder)

    def carried(self, prior: list[dict]) -> list[dict]:
        """Prior observations ({"centre_mm", ...} in the baseline frame) with centres carried into the follow-up's
        frame by the registration (for `lirads.assess(prior=...)`)."""
        return [{**p, "centre_mm": self.transform.TransformPoint(tuple(float(v) for v in p["centre_mm"]))}
                for p in prior]

    def describe(self) -> list[str]:
        """Plain-text lines: matches, new/vanished lesions, response categories."""
        lines = []
        for row in self.matches.itertuples():
            if row.status == "matched":
                lines.append(f"  follow-up lesion {row.lesion:.0f} = baseline {row.prior_lesion:.0f}: "
                             f"{row.prior_diameter_mm:.1f} -> {row.diameter_mm:.1f} mm, viable "
                             f"{row.prior_viable_mm:.1f} -> {row.viable_mm:.1f} mm"
                             + (", threshold growth" if row.threshold_growth is True else ""))
            else:
                which = row.lesion if row.status == "new" else row.prior_lesion
                lines.append(f"  {row.status} lesion {which:.0f}")
        lines += [f"  {r.criteria}: {r.category} (sum {r.baseline_sum_mm:.1f} -> {r.followup_sum_mm:.1f} mm)"
                  for r in self.response.itertuples()]
        if self.risk is not None:
            end = self.risk[0].iloc[-1]
            lines.append(f"  dynamic risk: {end.risk:.2f} by {end.months_after_landmark:.0f} months after the landmark")
        return lines


# ---------------------------------------------------------------- the comparison
def compare(prior: Timepoint, current: Timepoint, *, mode: str = "deformable", seed: int = 0,
            gate_mm: float = GATE_MM, interval_months: float | None = None, **options) -> FollowupResult:
    """Register `current` to `prior`, match lesions, measure changes and response. `options` go to
    `registration.register` (e.g. spacing_mm); interval_months defaults to the studies' dates."""
    from .registration import liver_mask, register
    from .registration.quality import resample

    fixed = Series(prior.reference.name, prior.reference.phase, prior.reference.image, prior.reference.modality,
                   {"labels": prior.labels})
    pair = register(fixed, current.reference, mode=mode, fixed_mask=liver_mask(fixed), seed=seed, **options)
    mapped = resample(current.lesions, prior.lesions, pair.transform, nearest=True)
    pairs = match_lesions(prior.labels, prior.lesions, mapped, gate_mm=gate_mm)
    months = interval_months if interval_months is not None else months_between(prior.date, current.date)
    matches = measure_changes(pairs, measure(prior), measure(current), months)
    delta = delta_radiomics(prior.features, current.features, matches)
    log.info("follow-up: %d matched, %d new, %d vanished lesion(s)", *(int((matches.status == s).sum())
                                                                       for s in ("matched", "new", "vanished")))
    return FollowupResult(matches, response(matches), delta, pair.qc, pair.transform, months)


def months_between(before: str | None, after: str | None) -> float | None:
    """Months between two ISO dates (None when either is unknown)."""
    if not before or not after:
        return None
    try:
        days = (datetime.date.fromisoformat(str(after)[:10]) - datetime.date.fromisoformat(str(before)[:10])).days
    except ValueError as exc:
        raise InputError(f"Study dates '{before}' / '{after}' are not ISO dates (YYYY-MM-DD): {exc}.") from None
    return round(days / DAYS_PER_MONTH, 2)


def match_lesions(labels: sitk.Image, prior_lesions: sitk.Image, mapped_lesions: sitk.Image, *,
                  gate_mm: float = GATE_MM) -> pd.DataFrame:
    """Pairs of baseline lesions and follow-up lesions mapped onto the baseline grid (both instance maps there).

    Columns prior_lesion, lesion (NaN when absent), status (matched / new / vanished), distance_mm, dice."""
    before = LesionTable.from_map(labels, prior_lesions).frame
    after = LesionTable.from_map(labels, mapped_lesions).frame
    centre = ["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]
    a, b = before[centre].to_numpy(float), after[centre].to_numpy(float)
    distance = np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1)) if len(a) and len(b) else np.zeros((len(a), len(b)))
    joint = _overlaps(prior_lesions, mapped_lesions, before.lesion.to_numpy(), after.lesion.to_numpy())
    dice = 2 * joint / (before.voxels.to_numpy()[:, None] + after.voxels.to_numpy()[None] + 1e-9)
    rows, used_a, used_b = [], set(), set()
    for i, j in assign_pairs(distance, gate_mm, dice):
        used_a.add(i), used_b.add(j)
        rows.append({"prior_lesion": int(before.lesion[i]), "lesion": int(after.lesion[j]), "status": "matched",
                     "distance_mm": round(float(distance[i, j]), 2), "dice": round(float(dice[i, j]), 3)})
    rows += [{"prior_lesion": int(before.lesion[i]), "lesion": np.nan, "status": "vanished"}
             for i in range(len(a)) if i not in used_a]
    rows += [{"prior_lesion": np.nan, "lesion": int(after.lesion[j]), "status": "new"}
             for j in range(len(b)) if j not in used_b]
    return pd.DataFrame(rows, columns=["prior_lesion", "lesion", "status", "distance_mm", "dice"])


def _overlaps(first: sitk.Image, second: sitk.Image, ids_a, ids_b) -> np.ndarray:
    """Voxels shared by lesion ids_a[i] of `first` and ids_b[j] of `second` (same grid)."""
    x = sitk.GetArrayViewFromImage(first).ravel().astype(np.int64)
    y = sitk.GetArrayViewFromImage(second).ravel().astype(np.int64)
    both = (x > 0) & (y > 0)
    counts = pd.Series(1, index=pd.MultiIndex.from_arrays([x[both], y[both]])).groupby(level=[0, 1]).sum()
    out = np.zeros((len(ids_a), len(ids_b)))
    for i, la in enumerate(ids_a):
        for j, lb in enumerate(ids_b):
            out[i, j] = counts.get((int(la), int(lb)), 0)
    return out


# ---------------------------------------------------------------- sizes
def measure(point: Timepoint) -> pd.DataFrame:
    """Per lesion (index = lesion id): diameter_mm (3D longest), volume_ml and viable_mm (mRECIST) in its frame."""
    table = LesionTable.from_map(point.labels, point.lesions).frame.set_index("lesion")
    viable = viable_diameters(point) if point.ap is not None else {}
    return pd.DataFrame({"diameter_mm": table.max_diameter_mm, "volume_ml": table.volume_ml,
                         "viable_mm": pd.Series(viable, dtype=float).reindex(table.index)}, index=table.index)


def viable_mask(point: Timepoint) -> np.ndarray:
    """Arterially enhancing voxels (numpy z, y, x) of the tumour label, islands under MIN_VIABLE_ML removed."""
    ap = sitk.GetArrayFromImage(sitk.Median(sitk.Cast(point.ap, sitk.sitkFloat32), [1, 1, 1]))
    labels = sitk.GetArrayViewFromImage(point.labels)
    tumour = sitk.GetArrayViewFromImage(point.lesions) > 0
    liver = labels == LABELS["liver"]
    enhancing = ap > np.median(ap[liver]) if liver.any() else np.ones(ap.shape, bool)  # brighter than the liver
    if point.nc is not None and point.reference.modality.value == "CT":
        nc = sitk.GetArrayFromImage(sitk.Median(sitk.Cast(point.nc, sitk.sitkFloat32), [1, 1, 1]))
        enhancing &= ap - nc >= VIABLE_ENHANCEMENT_HU
    viable = sitk.GetImageFromArray((enhancing & tumour).astype(np.uint8))
    viable.CopyInformation(point.labels)
    voxel_ml = float(np.prod(point.labels.GetSpacing())) / 1000.0
    islands = sitk.RelabelComponent(sitk.ConnectedComponent(viable), int(np.ceil(MIN_VIABLE_ML / voxel_ml)))
    return sitk.GetArrayFromImage(islands) > 0


def viable_diameters(point: Timepoint) -> dict[int, float]:
    """mRECIST viable longest diameter (mm) of every lesion: 0 when nothing enhances."""
    viable, lesions = viable_mask(point), sitk.GetArrayViewFromImage(point.lesions)
    spacing = np.array(point.labels.GetSpacing())[::-1]  # z, y, x
    out = {}
    for lesion in np.unique(lesions[lesions > 0]):
        inside = lesions == lesion
        out[int(lesion)] = _longest_viable_chord(np.argwhere(viable & inside), inside & ~viable, spacing)
    return out


def _longest_viable_chord(points: np.ndarray, necrotic: np.ndarray, spacing: np.ndarray, samples: int = 24) -> float:
    """Longest segment (mm) between two `points` (voxel indices) crossing at most NECROSIS_CROSSING necrosis."""
    if len(points) < 2:
        return 0.0
    cand = extreme_points(points * spacing, 128) / spacing
    i, j = np.triu_indices(len(cand), 1)
    length = np.sqrt((((cand[i] - cand[j]) * spacing) ** 2).sum(-1))
    t = np.linspace(0.0, 1.0, samples)
    path = np.rint(cand[i][:, None] + t[None, :, None] * (cand[j] - cand[i])[:, None]).astype(int)
    crossing = necrotic[path[..., 0], path[..., 1], path[..., 2]].mean(1)
    ok = crossing <= NECROSIS_CROSSING
    return round(float(length[ok].max()), 2) if ok.any() else 0.0


def measure_changes(pairs: pd.DataFrame, before: pd.DataFrame, after: pd.DataFrame,
                    months: float | None) -> pd.DataFrame:
    """`pairs` (match_lesions) with both time points' sizes, their relative changes and threshold growth."""
    out = pairs.copy()
    for column in ("diameter_mm", "volume_ml", "viable_mm"):
        out[f"prior_{column}"] = out.prior_lesion.map(before[column])
        out[column] = out.lesion.map(after[column])
        out.loc[out.status == "vanished", column] = 0.0
        out[f"{column.rsplit('_', 1)[0]}_change"] = (out[column] / out[f"prior_{column}"] - 1).round(3)
    out["interval_months"] = months
    out["threshold_growth"] = [threshold_growth(b, a, months) if s == "matched" else None
                               for b, a, s in zip(out.prior_diameter_mm, out.diameter_mm, out.status)]
    return out


def threshold_growth(before_mm: float, after_mm: float, months: float | None) -> bool | None:
    """LI-RADS threshold growth: size up by >= 50 % in <= 6 months; None when the interval is unknown."""
    if months is None or not np.isfinite(months):
        return None
    return bool(after_mm >= (1 + THRESHOLD_GROWTH) * before_mm and months <= THRESHOLD_GROWTH_MONTHS)


def read_prior(path: "str | Path") -> list[dict]:
    """Prior observations from an earlier run's lirads.csv (centre_x/y/z_mm and diameter_mm columns)."""
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"Cannot read prior table '{path}' ({exc}): give an earlier run's lirads.csv.") from None
    needed = ["centre_x_mm", "centre_y_mm", "centre_z_mm", "diameter_mm"]
    if not set(needed) <= set(frame.columns):
        raise InputError(f"Prior table '{path}' lacks columns {sorted(set(needed) - set(frame.columns))}: "
                         "give the lirads.csv of an earlier `hccfusion lirads` run.")
    return [{"centre_mm": (r.centre_x_mm, r.centre_y_mm, r.centre_z_mm), "diameter_mm": r.diameter_mm}
            for r in frame.itertuples()]


def prior_observations(prior) -> list[dict]:
    """[{"centre_mm", "diameter_mm"}] from such a list or a LiradsAssessment (its observations), checked."""
    if hasattr(prior, "observations"):
        prior = [{"centre_mm": o.centre_mm, "diameter_mm": o.diameter_mm} for o in prior.observations]
    prior = list(prior or [])
    for k, p in enumerate(prior):
        if len(p.get("centre_mm", ())) != 3 or not float(p.get("diameter_mm", 0)) > 0:
            raise InputError(f"Prior observation {k + 1} needs 'centre_mm' (x, y, z) and a positive 'diameter_mm'.")
    return prior


def pair_prior(centres, prior: list[dict]) -> dict[int, int]:
    """Row of `centres` (N, 3 mm, this study's frame) -> index of its prior observation, by `assign_pairs` with a
    gate of max(prior diameter, 10 mm) and no overlap term (a prior table holds centres only)."""
    if not prior or not len(centres):
        return {}
    before = np.array([p["centre_mm"] for p in prior], float)
    distance = np.sqrt(((np.asarray(centres, float)[:, None] - before[None]) ** 2).sum(-1))
    gate = np.maximum([float(p["diameter_mm"]) for p in prior], 10.0)
    return dict(assign_pairs(distance, gate))


# ---------------------------------------------------------------- response
def targets(diameters: pd.Series, per_organ: int = TARGETS_PER_ORGAN) -> list:
    """Target lesions: measurable (>= MEASURABLE_MM) ones, largest first, at most `per_organ` (all in the liver)."""
    measurable = diameters[diameters >= MEASURABLE_MM].sort_values(ascending=False, kind="stable")
    return list(measurable.index[:per_organ])


def category(before_sum: float, after_sum: float, new_lesions: int, *, absolute_mm: float = 0.0) -> str:
    """CR / PR / SD / PD from target sums (before = baseline = nadir); `absolute_mm` the PD minimum increase."""
    if new_lesions:
        return "PD"
    if after_sum == 0:
        return "CR"
    change = round(after_sum / before_sum - 1, 9)  # thresholds are inclusive: no float dust
    if change >= PD_CHANGE and after_sum - before_sum >= absolute_mm:
        return "PD"
    return "PR" if change <= PR_CHANGE else "SD"


def response(matches: pd.DataFrame) -> pd.DataFrame:
    """One row per criteria (RECIST 1.1 on longest diameters, mRECIST on viable diameters)."""
    rows = []
    baseline = matches[matches.status != "new"].set_index("prior_lesion")
    new = int((matches.status == "new").sum())
    for criteria, column in CRITERIA.items():
        chosen = targets(baseline[f"prior_{column}"].dropna())
        if not chosen:
            rows.append({"criteria": criteria, "category": "not evaluable", "targets": "",
                         "baseline_sum_mm": np.nan, "followup_sum_mm": np.nan, "change": np.nan, "new_lesions": new,
                         "note": f"no measurable (>= {MEASURABLE_MM:g} mm) baseline target"})
            continue
        before, after = baseline.loc[chosen, f"prior_{column}"].sum(), baseline.loc[chosen, column].fillna(0).sum()
        rows.append({"criteria": criteria,
                     "category": category(before, after, new, absolute_mm=PD_MM if criteria == "RECIST 1.1" else 0),
                     "targets": ";".join(str(int(t)) for t in chosen), "baseline_sum_mm": round(before, 2),
                     "followup_sum_mm": round(after, 2), "change": round(after / before - 1, 3), "new_lesions": new,
                     "note": "baseline taken as nadir"})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- delta radiomics
def delta_radiomics(before: pd.DataFrame | None, after: pd.DataFrame | None, matches: pd.DataFrame) -> pd.DataFrame:
    """Relative change (after / before − 1) of every per-lesion feature (regions lesion<k>) of matched lesions."""
    columns = ["prior_lesion", "lesion", "phase", "image_type", "feature_class", "feature", "before", "after", "delta"]
    if before is None or after is None:
        return pd.DataFrame(columns=columns)
    key = ["phase", "image_type", "feature_class", "feature"]
    frames = []
    for row in matches[matches.status == "matched"].itertuples():
        a = before[before.region == f"lesion{int(row.prior_lesion)}"].set_index(key)["value"]
        b = after[after.region == f"lesion{int(row.lesion)}"].set_index(key)["value"]
        both = pd.concat([a.rename("before"), b.rename("after")], axis=1, join="inner").reset_index()
        both["delta"] = np.where(both.before != 0, both.after / both.before.where(both.before != 0) - 1, np.nan)
        frames.append(both.assign(prior_lesion=int(row.prior_lesion), lesion=int(row.lesion)))
    return pd.concat(frames)[columns] if frames else pd.DataFrame(columns=columns)


# ---------------------------------------------------------------- landmark Cox risk curve
def landmark_cox(table: pd.DataFrame, features: list[str], *, time: str = "time", event: str = "event",
                 landmark: float = 0.0, alpha: float = 0.1):
    """Cox model (sksurv CoxPHSurvivalAnalysis, ridge `alpha`) of the time after `landmark` on `features`, fitted
    on the patients still at risk at the landmark (time > landmark). Returns the fitted model."""
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.util import Surv

    missing = [c for c in [*features, time, event] if c not in table]
    if missing:
        raise InputError(f"Landmark Cox table lacks column(s) {missing}: give one row per patient with the delta "
                         f"features, '{time}' and '{event}'.")
    at_risk = table[table[time] > landmark].dropna(subset=[*features, time, event])
    if at_risk[event].astype(bool).sum() < 2:
        raise InputError(f"Fewer than 2 events after the landmark ({landmark:g}): a landmark Cox model needs more.")
    y = Surv.from_arrays(at_risk[event].astype(bool).to_numpy(), (at_risk[time] - landmark).to_numpy(float))
    model = CoxPHSurvivalAnalysis(alpha=alpha).fit(at_risk[features].to_numpy(float), y)
    model.feature_names_ = list(features)
    model.landmark_ = float(landmark)
    return model


def risk_curve(model, row: "pd.Series | dict", times=None) -> pd.DataFrame:
    """One patient's dynamic risk: cumulative event probability 1 − S(t | delta features) after the landmark."""
    x = np.array([[float(row[f]) for f in model.feature_names_]])
    curve = model.predict_survival_function(x)[0]
    times = curve.x if times is None else np.asarray(times, float)
    return pd.DataFrame({"time_after_landmark": times, "risk": 1 - curve(np.clip(times, curve.x[0], curve.x[-1]))})
