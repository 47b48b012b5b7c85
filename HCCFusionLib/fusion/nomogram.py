"""Nomogram: a radiomics score plus clinical variables in a logistic (or Cox) model, drawn as points scales.

The radiomics score is the out-of-fold log-odds (or Cox risk) of a fused imaging model, so the nomogram is not
fitted on scores the imaging model has already seen. Clinical covariates: log10 AFP, Child-Pugh score and ALBI
score (computed from the raw labs with `HCCFusionLib.clinical`), largest tumour size and tumour number.
Points: the variable with the widest effect range (1st-99th percentile of the training values) spans 0-100
points; every other variable is scaled alike; total points map back to the linear predictor and then to a
probability (logistic) or to survival at a chosen time (Cox: S(t) = S0(t) ** exp(lp)).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError, ModelError
from .logistic import expit, fit_logistic, logit, wald_interval

log = logging.getLogger(__name__)
CLINICAL_COVARIATES = ("log10_afp", "child_pugh_score", "albi_score", "tumour_size_mm", "tumour_number")


def clinical_covariates(table: pd.DataFrame) -> pd.DataFrame:
    """log10 AFP, Child-Pugh score, ALBI score, tumour size and number from a clinical table (raw labs)."""
    from ..clinical import staging_table

    staged = staging_table(table)
    get = lambda column: pd.to_numeric(table[column], errors="coerce") if column in table else np.nan  # noqa: E731
    return pd.DataFrame({"log10_afp": np.log10(get("afp").clip(lower=1e-3)) if "afp" in table else np.nan,
                         "child_pugh_score": staged.child_pugh_score, "albi_score": staged.albi_score,
                         "tumour_size_mm": get("tumour_size_mm"), "tumour_number": get("tumour_number")},
                        index=table.index)


def radiomics_score(model, X: pd.DataFrame, y, *, cv: int = 5, seed: int = 0) -> pd.Series:
    """Out-of-fold log-odds of the positive class (classification) or Cox risk (survival) of `model`."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    survival = getattr(y, "dtype", None) is not None and y.dtype.names is not None
    strata = y[y.dtype.names[0]] if survival else y
    folds = list(StratifiedKFold(cv, shuffle=True, random_state=seed).split(X, strata))
    if survival:
        score = cross_val_predict(model, X, y, cv=folds)
    else:
        score = logit(cross_val_predict(model, X, y, cv=folds, method="predict_proba")[:, -1])
    return pd.Series(score, index=X.index, name="radiomics_score")


class Nomogram:
    """Logistic (`kind='logistic'`, y binary 0/1) or Cox (`kind='cox'`, y a scikit-survival array) nomogram."""

    def __init__(self, kind: str = "logistic", C: float = np.inf):
        if kind not in ("logistic", "cox"):
            raise InputError(f"Unknown nomogram kind '{kind}': use logistic or cox.")
        self.kind = kind
        self.C = C

    def fit(self, covariates: pd.DataFrame, y) -> "Nomogram":
        complete = covariates.notna().all(axis=1).to_numpy()
        if complete.sum() < 10:
            raise InputError(f"Only {complete.sum()} patients have every nomogram variable "
                             f"({', '.join(covariates.columns)}): at least 10 are needed.")
        if (~complete).any():
            log.info("nomogram: %d patient(s) with a missing variable left out of the fit", (~complete).sum())
        data = covariates[complete]
        self.variables_ = list(covariates.columns)
        if self.kind == "logistic":
            self.coef_, self.cov_ = fit_logistic(data.to_numpy(float), np.asarray(y)[complete], C=self.C)
        else:
            from sksurv.linear_model import CoxPHSurvivalAnalysis

            ridge = 0.0 if np.isinf(self.C) else 1.0 / self.C
            self.cox_ = CoxPHSurvivalAnalysis(alpha=ridge).fit(data.to_numpy(float), y[complete])
            self.coef_ = np.r_[0.0, self.cox_.coef_]
        self.low_ = data.quantile(0.01).to_numpy()
        self.high_ = data.quantile(0.99).to_numpy()
        beta = self.coef_[1:]
        self.reference_ = np.where(beta >= 0, self.low_, self.high_)  # value scoring 0 points
        self.span_ = float(np.max(np.abs(beta) * (self.high_ - self.low_)))
        if not self.span_ > 0:
            raise ModelError("Every nomogram variable has a zero effect: there is nothing to draw.")
        return self

    def linear_predictor(self, covariates: pd.DataFrame) -> np.ndarray:
        missing = [v for v in self.variables_ if v not in covariates.columns]
        if missing:
            raise ModelError(f"The nomogram needs the variable(s) {missing}.")
        return self.coef_[0] + covariates[self.variables_].to_numpy(float) @ self.coef_[1:]

    def points(self, covariates: pd.DataFrame) -> pd.DataFrame:
        """Points per variable and total points for each patient."""
        values = covariates[self.variables_].to_numpy(float)
        pts = 100.0 * self.coef_[1:] * (values - self.reference_) / self.span_
        table = pd.DataFrame(pts, index=covariates.index, columns=self.variables_)
        table["total_points"] = table.sum(axis=1)
        return table

    def _lp_of_total(self, total):
        return self.coef_[0] + self.coef_[1:] @ self.reference_ + np.asarray(total) * self.span_ / 100.0

    def predict_proba(self, covariates: pd.DataFrame) -> np.ndarray:
        if self.kind != "logistic":
            raise ModelError("A Cox nomogram predicts survival (predict_survival), not a probability.")
        return expit(self.linear_predictor(covariates))

    def predict_interval(self, covariates: pd.DataFrame) -> pd.DataFrame:
        """Probability with its 95% Wald interval (logistic nomogram)."""
        design = np.column_stack([np.ones(len(covariates)), covariates[self.variables_].to_numpy(float)])
        eta, low, high = wald_interval(design, self.coef_, self.cov_)
        return pd.DataFrame({"probability": expit(eta), "low": expit(low), "high": expit(high)},
                            index=covariates.index)

    def predict_survival(self, covariates: pd.DataFrame, time: float) -> np.ndarray:
        return self.cox_.baseline_survival_(time) ** np.exp(self.linear_predictor(covariates))

    def draw(self, path: "str | Path", *, time: float | None = None, labels: dict | None = None) -> Path:
        """Nomogram figure (PNG): points scale, one scale per variable, total points, probability/survival."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from ..files import atomic_write

        labels = labels or {}
        rows = ["Points"] + [labels.get(v, v) for v in self.variables_] + ["Total points"]
        outcome = "Probability" if self.kind == "logistic" else f"Survival at {time:g}"
        rows.append(outcome)
        fig, ax = plt.subplots(figsize=(9, 0.6 * len(rows) + 1), dpi=110)
        total_max = 100.0 * np.sum(np.abs(self.coef_[1:]) * (self.high_ - self.low_)) / self.span_

        def scale(y, positions, texts):
            ax.plot([min(positions), max(positions)], [y, y], c="k", lw=1)
            for x, text in zip(positions, texts):
                ax.plot([x, x], [y, y + 0.12], c="k", lw=1)
                ax.text(x, y + 0.18, text, ha="center", va="bottom", fontsize=7)

        n = len(rows)
        scale(n - 1, np.linspace(0, 100, 11), [f"{v:g}" for v in np.linspace(0, 100, 11)])
        for i, (variable, low, high, beta, ref) in enumerate(
                zip(self.variables_, self.low_, self.high_, self.coef_[1:], self.reference_)):
            width = 100.0 * abs(beta) * (high - low) / self.span_
            ticks = np.unique(np.round(np.linspace(low, high, int(np.clip(width // 12, 1, 5)) + 1), 2))
            scale(n - 2 - i, 100.0 * beta * (ticks - ref) / self.span_, [f"{t:g}" for t in ticks])
        totals = np.linspace(0, total_max, 9)
        scale(1, totals * 100.0 / total_max, [f"{t:.0f}" for t in totals])  # drawn over the same width
        levels = np.array([0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99])
        if self.kind == "logistic":
            lp = logit(levels)
        else:
            s0 = self.cox_.baseline_survival_(time)
            lp = np.log(np.log(levels) / np.log(s0))
        at = (lp - self._lp_of_total(0.0)) * 100.0 / self.span_  # total points giving each outcome level
        keep = (at >= 0) & (at <= total_max)
        if keep.sum() >= 2:
            scale(0, at[keep] * 100.0 / total_max, [f"{v:g}" for v in levels[keep]])
        ax.set_yticks(range(n))
        ax.set_yticklabels(list(reversed(rows)), fontsize=8)
        ax.set_xlim(-5, 105)
        ax.set_ylim(-0.5, n - 0.3)
        ax.set_xticks([])
        for side in ("top", "right", "bottom", "left"):
            ax.spines[side].set_visible(False)
        ax.set_title("Nomogram: add the points of each variable; read the outcome below the total", fontsize=9)
        fig.tight_layout()
        path = Path(path)
        with atomic_write(path) as tmp:
            fig.savefig(tmp, format="png")
        plt.close(fig)
        return path


# ---------------------------------------------------------------- nomogram of a trained model (bundle, CLI, report)
SCORE = "radiomics_score"


def fit_for_model(X: pd.DataFrame, y, kind: str, out_of_fold) -> "Nomogram":
    """Nomogram of a fused model's out-of-fold output (`nested_cv` prediction: probability or Cox risk) plus the
    clinical covariates X carries (those with no value for anybody are left out)."""
    if kind not in ("binary", "survival"):
        raise InputError(f"A nomogram needs a binary or survival endpoint (this one is {kind}).")
    covariates = clinical_covariates(X)
    covariates = covariates.loc[:, covariates.notna().any()]
    score = logit(out_of_fold) if kind == "binary" else np.asarray(out_of_fold, dtype=float)
    covariates.insert(0, SCORE, score)
    return Nomogram("logistic" if kind == "binary" else "cox").fit(covariates, y)


def covariates_for(nomogram: "Nomogram", model, X: pd.DataFrame) -> pd.DataFrame:
    """The nomogram's variables for new patients: the model's score (log-odds or risk) and clinical covariates."""
    covariates = clinical_covariates(X)
    score = model.predict(X) if nomogram.kind == "cox" else logit(model.predict_proba(X)[:, -1])
    covariates.insert(0, SCORE, score)
    return covariates[nomogram.variables_]


def scale_table(nomogram: "Nomogram", *, time: float | None = None, steps: int = 5) -> pd.DataFrame:
    """The figure as numbers: rows (variable, value, points) along each variable's 1st-99th percentile range, then
    (total_points, value = probability or survival at `time`) along the total-points scale."""
    rows = []
    for j, variable in enumerate(nomogram.variables_):
        for value in np.linspace(nomogram.low_[j], nomogram.high_[j], steps):
            frame = pd.DataFrame([nomogram.reference_], columns=nomogram.variables_)
            frame[variable] = value
            rows.append({"variable": variable, "value": float(value),
                         "points": float(nomogram.points(frame)[variable].iloc[0])})
    total_max = 100.0 * np.sum(np.abs(nomogram.coef_[1:]) * (nomogram.high_ - nomogram.low_)) / nomogram.span_
    lp = nomogram._lp_of_total(np.linspace(0, total_max, 2 * steps + 1))
    if nomogram.kind == "logistic":
        outcome, name = expit(lp), "probability"
    else:
        outcome, name = nomogram.cox_.baseline_survival_(time) ** np.exp(lp), f"survival_{time:g}m"
    rows += [{"variable": name, "value": float(o), "points": float(t)}
             for o, t in zip(outcome, np.linspace(0, total_max, 2 * steps + 1))]
    return pd.DataFrame(rows)
