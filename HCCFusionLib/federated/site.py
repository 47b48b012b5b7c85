"""Site side: aggregates of one centre's rows (sums, cross-products, counts), never the rows themselves."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import InputError
from ..fusion.logistic import expit


def _design(X, y=None):
    X = np.asarray(X, dtype=float)
    if X.ndim != 2 or not np.all(np.isfinite(X)):
        raise InputError("Federated logistic regression needs a finite 2-D feature matrix at each site: impute or "
                         "harmonise missing values at the site first.")
    design = np.column_stack([np.ones(len(X)), X])
    if y is None:
        return design
    y = np.asarray(y, dtype=float).ravel()
    if len(y) != len(X) or not np.all((y == 0) | (y == 1)):
        raise InputError("Federated logistic regression needs one binary (0/1) outcome per feature row at each site.")
    return design, y


def logistic_aggregates(X, y, beta) -> dict[str, np.ndarray]:
    """Score and information of the site's logistic log-likelihood at `beta` (intercept first).

    Returns {"gradient": (d+1,), "information": (d+1, d+1), "n": ()}; shapes depend only on d.
    """
    design, y = _design(X, y)
    beta = np.asarray(beta, dtype=float)
    if beta.shape != (design.shape[1],):
        raise InputError(f"Coefficients have shape {beta.shape}; this site has {design.shape[1] - 1} features "
                         "(plus the intercept): all sites must use the same feature columns.")
    p = expit(design @ beta)
    return {"gradient": design.T @ (y - p), "information": design.T @ (design * (p * (1 - p))[:, None]),
            "n": np.asarray(float(len(y)))}


def cox_aggregates(X, time, event, beta) -> dict[str, np.ndarray]:
    """Score and information of the site's own Cox partial log-likelihood (Breslow ties) at `beta`.

    The site is its own stratum (its own baseline hazard): risk sets hold only its rows, so the stratified
    likelihood is the sum over sites. Returns {"gradient": (d,), "information": (d, d), "n": ()}: no rows, no
    event times.
    """
    X = np.asarray(X, dtype=float)
    time, event = np.asarray(time, dtype=float).ravel(), np.asarray(event, dtype=float).ravel()
    if X.ndim != 2 or not np.all(np.isfinite(X)) or not np.all(np.isfinite(time)):
        raise InputError("Federated Cox regression needs a finite 2-D feature matrix and finite times at each site: "
                         "impute or harmonise missing values at the site first.")
    if len(time) != len(X) or len(event) != len(X) or not np.all((event == 0) | (event == 1)):
        raise InputError("Federated Cox regression needs one time and one 0/1 event per feature row at each site.")
    beta = np.asarray(beta, dtype=float)
    if beta.shape != (X.shape[1],):
        raise InputError(f"Coefficients have shape {beta.shape}; this site has {X.shape[1]} features: all sites "
                         "must use the same feature columns.")
    order = np.argsort(-time, kind="stable")
    X, time, event = X[order], time[order], event[order]
    eta = X @ beta
    w = np.exp(eta - eta.max())  # the common factor cancels in every ratio below
    s0, s1 = np.cumsum(w), np.cumsum(w[:, None] * X, axis=0)
    s2 = np.cumsum(w[:, None, None] * X[:, :, None] * X[:, None, :], axis=0)
    last = np.searchsorted(-time, -time, side="right") - 1  # a row's risk set: every row with time >= its time
    dead = event == 1
    s0, s1, s2 = s0[last[dead]], s1[last[dead]], s2[last[dead]]
    mean = s1 / s0[:, None]
    information = (s2 / s0[:, None, None]).sum(0) - mean.T @ mean
    return {"gradient": (X[dead] - mean).sum(0), "information": information, "n": np.asarray(float(len(X)))}


def combat_stats(values) -> dict[str, np.ndarray]:
    """Per-feature count, sum and centred sum of squares of one site's values (NaN ignored), each (d,)."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 2:
        raise InputError("ComBat statistics need a 2-D table of feature values (rows by features) at each site.")
    count = np.sum(~np.isnan(values), axis=0).astype(float)
    total = np.nansum(values, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    centred = np.nansum((values - mean) ** 2, axis=0)
    return {"count": count, "sum": total, "centred": centred}


def harmonise(X: pd.DataFrame, combat, site: str, batch_column: str | None = None) -> pd.DataFrame:
    """The site's own rows harmonised with the federated ComBat parameters (a fitted `fusion.blocks.ComBat`)."""
    column = batch_column or combat.batch_column
    frame = X.drop(columns=[column], errors="ignore").assign(**{column: site})
    return pd.DataFrame(combat.transform(frame), columns=list(combat.feature_names_in_), index=X.index)


def harmonise_rows(values: np.ndarray, params: dict) -> np.ndarray:
    """`harmonise` in numpy from the site's batch-only ComBat parameters (mean, std, gamma, delta), as
    `fusion.blocks.ComBat.transform` computes it without covariates (tested equal): a Flower ClientApp process
    (one per message) then never imports scikit-learn."""
    z = (values - params["mean"]) / params["std"]
    return (z - params["gamma"]) / np.sqrt(params["delta"]) * params["std"] + params["mean"]
