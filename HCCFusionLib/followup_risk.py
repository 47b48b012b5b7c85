"""A patient's dynamic risk curve after a follow-up: a landmark Cox bundle applied to the follow-up's delta features.

- Delta features (`delta_features`, one row per patient, block "delta"): relative change of the summed longest
  diameters of the matched lesions (`delta__diameter`) and of their viable diameters (`delta__viable`), the number
  of new lesions (`delta__new_lesions`), and the relative change of every radiomic feature of the index lesion (the
  largest matched baseline lesion): `delta__<phase>_<image type>_<class>_<feature>`. A cohort's table of these rows
  (one `run --prior` per patient, `delta_table`) with survival outcomes trains the model.
- Landmark Cox: `hccfusion train DELTAS CLINICAL --endpoint survival --landmark MONTHS` (fusion.workflow.train):
  a Cox model (SurvivalFusion) of the time after the landmark (the follow-up scan, MONTHS after baseline), fitted on
  the patients still at risk then; the bundle (skops + SHA-256 sums, `fusion.bundle`) records `landmark_months`.
- `patient_risk(bundle, followup)`: cumulative event probability 1 − S(t | delta features) from the landmark on
  (0 at the landmark, non-decreasing), with its inputs; `run --prior PRIOR --risk-bundle B` writes it to
  OUT/followup/ and the report draws it. A bundle trained on phantoms only (`train --sample`) is labelled a sample.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError

log = logging.getLogger(__name__)

PREFIX = "delta__"
SIZE_FEATURES = ("delta__diameter", "delta__viable", "delta__new_lesions")


def delta_features(matches: pd.DataFrame, delta: pd.DataFrame | None = None, patient: str = "patient") -> pd.DataFrame:
    """One row (index `patient`) of delta features from a follow-up's matches (and its delta radiomics)."""
    matched = matches[matches.status == "matched"]
    row = {"delta__diameter": _relative(matched.diameter_mm.sum(), matched.prior_diameter_mm.sum()),
           "delta__viable": _relative(matched.viable_mm.fillna(0).sum(), matched.prior_viable_mm.fillna(0).sum()),
           "delta__new_lesions": float((matches.status == "new").sum())}
    if delta is not None and len(delta) and len(matched):
        index = matched.sort_values("prior_diameter_mm", ascending=False).prior_lesion.iloc[0]
        own = delta[delta.prior_lesion == index]
        row.update({f"{PREFIX}{r.phase}_{r.image_type}_{r.feature_class}_{r.feature}": float(r.delta)
                    for r in own.itertuples()})
    return pd.DataFrame([row], index=pd.Index([patient], name="patient_id"))


def _relative(after: float, before: float) -> float:
    return float(after / before - 1.0) if before > 0 else float("nan")


def delta_table(runs: dict) -> pd.DataFrame:
    """A cohort's delta features: {patient id: follow-up run folder (`run --prior`)} -> one row per patient."""
    from .layout import RunFolder

    rows = []
    for patient, out in runs.items():
        paths = RunFolder(out)
        if not paths.followup_matches.is_file():
            raise InputError(f"'{out}' has no {paths.followup_matches.name}: run it with --prior PRIOR_RUN first.")
        delta = pd.read_csv(paths.followup_delta) if paths.followup_delta.is_file() else None
        rows.append(delta_features(pd.read_csv(paths.followup_matches), delta, str(patient)))
    return pd.concat(rows)


def at_landmark(X: pd.DataFrame, y: np.ndarray, landmark: float) -> tuple[pd.DataFrame, np.ndarray]:
    """(X, y) of the patients still at risk at `landmark` (time > landmark), time counted from the landmark.
    y: a scikit-survival array (event, time)."""
    from sksurv.util import Surv

    if not landmark >= 0:
        raise InputError(f"The landmark must be a time >= 0 (months after baseline), not {landmark}.")
    event, time = (np.asarray(y[name]) for name in y.dtype.names)
    keep = time > landmark
    log.info("landmark %g months: %d of %d patients still at risk", landmark, int(keep.sum()), len(X))
    if int(event[keep].astype(bool).sum()) < 2:
        raise InputError(f"Fewer than 2 events after the landmark ({landmark:g} months): a landmark Cox model "
                         "needs more patients with events after it.")
    return X[keep], Surv.from_arrays(event[keep].astype(bool), time[keep] - landmark)


def patient_risk(bundle: "str | Path", matches: pd.DataFrame, delta: pd.DataFrame | None,
                 points: int = 40) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(curve, inputs): the patient's cumulative risk from the landmark on, by the landmark Cox bundle.

    curve: months_after_landmark, months_since_baseline, risk (0 at the landmark, non-decreasing up to the last
    event time of the training cohort). inputs: the bundle's delta features with this patient's values, and the
    bundle, its landmark and whether it is a sample (trained on phantoms only)."""
    from .fusion.bundle import load_bundle
    from .fusion.survival import SurvivalFusion

    loaded = load_bundle(bundle)
    landmark = loaded.card.get("landmark_months")
    if not isinstance(loaded.model, SurvivalFusion) or landmark is None:
        raise InputError(f"'{bundle}' is not a landmark survival bundle: train one with `hccfusion train DELTAS "
                         "CLINICAL --endpoint survival --landmark MONTHS` on delta features (followup_risk).")
    row = delta_features(matches, delta)
    needed = list(loaded.card["features"])
    missing = [f for f in needed if f not in row.columns or not np.isfinite(row.at[row.index[0], f])]
    if missing:
        raise InputError(f"This follow-up lacks the delta feature(s) {missing[:5]} the risk bundle needs (no matched "
                         "lesion, or radiomics the bundle was trained on): no risk curve.")
    X = row[needed]
    survival = loaded.model.pipeline_.predict_survival_function(X)[0]  # columns checked above
    times = np.unique(np.concatenate([[0.0], np.linspace(0.0, float(survival.x[-1]), points)]))
    risk = np.where(times < survival.x[0], 0.0, 1.0 - survival(np.clip(times, survival.x[0], survival.x[-1])))
    risk = np.maximum.accumulate(np.clip(risk, 0.0, 1.0))
    curve = pd.DataFrame({"months_after_landmark": times, "months_since_baseline": times + float(landmark),
                          "risk": risk})
    sample = bool(loaded.card.get("sample"))
    inputs = pd.DataFrame([{"input": f, "value": float(X.at[X.index[0], f])} for f in needed]
                          + [{"input": "bundle", "value": str(Path(bundle))},
                             {"input": "landmark_months", "value": float(landmark)},
                             {"input": "sample", "value": loaded.card.get("sample") or "no"}])
    log.info("risk curve: %.3f at %.1f months after the landmark%s", risk[-1], times[-1],
             " (sample bundle)" if sample else "")
    return curve, inputs
