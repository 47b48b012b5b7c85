"""Honest performance estimates: nested cross-validation, discrimination, calibration, clinical utility, survival.

Every metric has a table (pandas, written as CSV) and a matplotlib figure (Agg backend). Nothing here refits
preprocessing on test rows: `nested_cv` clones the whole estimator (blocks, ComBat, selection, classifier)
for every outer training fold and tunes hyper-parameters in an inner loop of that fold only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..progress import silent
from .logistic import fit_logistic, logit


# ---------------------------------------------------------------- nested cross-validation
@dataclass
class NestedCV:
    """Out-of-fold predictions of a nested cross-validation.

    prediction: binary -> probability of the positive class (n,); multiclass -> (n, classes); survival -> risk.
    fold: outer fold of each row; groups: survival risk group by that fold's training cut-offs.
    """

    kind: str
    y: np.ndarray
    prediction: np.ndarray
    fold: np.ndarray
    classes: np.ndarray | None = None
    groups: np.ndarray | None = None
    best_params: list = field(default_factory=list)


def nested_cv(estimator, X: pd.DataFrame, y, *, kind: str, param_grid: dict | None = None, outer: int = 5,
              inner: int = 3, seed: int = 0, progress=None) -> NestedCV:
    """Outer k-fold estimate of `estimator` with an inner grid search (when `param_grid`) on each training fold."""
    from sklearn.base import clone
    from sklearn.model_selection import GridSearchCV, KFold, StratifiedKFold

    progress = progress or silent
    y = np.asarray(y) if kind != "survival" else y
    strata = y[y.dtype.names[0]] if kind == "survival" else y  # survival: stratified by event
    splits = list(StratifiedKFold(outer, shuffle=True, random_state=seed).split(X, strata))
    classes = None if kind == "survival" else np.unique(y)
    prediction = np.zeros((len(X), len(classes))) if kind in ("multiclass", "ordinal") else np.zeros(len(X))
    fold = np.zeros(len(X), dtype=int)
    groups = np.empty(len(X), dtype=object) if kind == "survival" else None
    best = []
    for i, (train, test) in enumerate(splits):
        progress(i / outer, f"outer fold {i + 1}/{outer}")
        model = clone(estimator)
        if param_grid:
            inner_cv = (KFold if kind == "survival" else StratifiedKFold)(inner, shuffle=True, random_state=seed + 1)
            scoring = None if kind == "survival" else ("roc_auc" if kind == "binary" else "roc_auc_ovr")
            search = GridSearchCV(model, param_grid, cv=inner_cv, scoring=scoring, error_score="raise").fit(
                X.iloc[train], y[train])
            model, params = search.best_estimator_, search.best_params_
        else:
            model, params = model.fit(X.iloc[train], y[train]), {}
        best.append(params)
        fold[test] = i
        if kind == "survival":
            prediction[test] = model.predict(X.iloc[test])
            groups[test] = model.risk_group(risk=prediction[test])
        elif kind == "binary":
            prediction[test] = model.predict_proba(X.iloc[test])[:, 1]
        else:
            prediction[test] = model.predict_proba(X.iloc[test])
    progress(1.0, "nested cross-validation done")
    return NestedCV(kind, y, prediction, fold, classes, groups, best)


# ---------------------------------------------------------------- discrimination
def roc_auc_ci(y, p, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
    """ROC AUC with a percentile bootstrap confidence interval (resampling patients)."""
    y, p = np.asarray(y).astype(bool), np.asarray(p, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), (n_boot, len(y)))
    boots = _rank_auc(y[idx], p[idx])
    boots = boots[~np.isnan(boots)]  # resamples with a single class have no AUC
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(boots, [tail, 100 - tail])
    return {"auc": float(_rank_auc(y[None, :], p[None, :])[0]), "auc_low": float(low), "auc_high": float(high),
            "n_boot": int(len(boots))}


def _rank_auc(y, p):
    """Mann-Whitney AUC of each row of (rows, n) labels/scores, ties counted half (midranks)."""
    from scipy.stats import rankdata

    ranks = rankdata(p, axis=1)
    m = y.sum(axis=1)
    n = y.shape[1] - m
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((ranks * y).sum(axis=1) - m * (m + 1) / 2.0) / (m * n)


def roc_table(y, p) -> pd.DataFrame:
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(y, p)
    return pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": thresholds})


def _midrank(x):
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.zeros(len(x))
    i = 0
    while i < len(x):
        j = i
        while j < len(x) and xs[j] == xs[i]:
            j += 1
        ranks[i:j] = 0.5 * (i + j - 1) + 1
        i = j
    out = np.empty(len(x))
    out[order] = ranks
    return out


def delong_test(y, p1, p2) -> dict:
    """DeLong test of two correlated ROC AUCs on the same patients (fast algorithm of Sun & Xu 2014)."""
    from scipy.stats import norm

    y = np.asarray(y).astype(bool)
    preds = np.vstack([np.asarray(p1, float), np.asarray(p2, float)])
    pos, neg = preds[:, y], preds[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    if m < 2 or n < 2:
        raise InputError("The DeLong test needs at least two patients of each class.")
    tx = np.array([_midrank(r) for r in pos])
    ty = np.array([_midrank(r) for r in neg])
    tz = np.array([_midrank(r) for r in preds[:, np.r_[np.flatnonzero(y), np.flatnonzero(~y)]]])
    aucs = tz[:, :m].sum(axis=1) / (m * n) - (m + 1.0) / (2.0 * n)
    v01 = (tz[:, :m] - tx) / n
    v10 = 1.0 - (tz[:, m:] - ty) / m
    cov = np.cov(v01) / m + np.cov(v10) / n
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    diff = aucs[0] - aucs[1]
    z = diff / np.sqrt(var) if var > 0 else 0.0
    return {"auc_1": float(aucs[0]), "auc_2": float(aucs[1]), "difference": float(diff),
            "se": float(np.sqrt(max(var, 0.0))), "z": float(z), "p_value": float(2 * norm.sf(abs(z)))}


def sensitivity_specificity(y, p, threshold: float = 0.5) -> dict:
    y, hit = np.asarray(y).astype(bool), np.asarray(p) >= threshold
    tp, fn = np.sum(hit & y), np.sum(~hit & y)
    tn, fp = np.sum(~hit & ~y), np.sum(hit & ~y)
    return {"threshold": threshold, "sensitivity": tp / max(tp + fn, 1), "specificity": tn / max(tn + fp, 1),
            "ppv": tp / max(tp + fp, 1), "npv": tn / max(tn + fn, 1), "tp": int(tp), "fp": int(fp), "tn": int(tn),
            "fn": int(fn)}


# ---------------------------------------------------------------- calibration and clinical utility
def calibration(y, p, bins: int = 10) -> tuple[dict, pd.DataFrame]:
    """Calibration slope and intercept (logistic recalibration), Brier score, and a quantile-binned curve.

    slope: coefficient of logit(p) in logit P(y) = a + b logit(p); intercept ("calibration-in-the-large"):
    a in logit P(y) = a + logit(p) (slope fixed at 1). Ideal: slope 1, intercept 0.
    """
    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    lp = logit(p)
    beta, cov = fit_logistic(lp[:, None], y)
    intercept, _ = fit_logistic(np.zeros((len(y), 0)), y, offset=lp)
    stats = {"slope": float(beta[1]), "slope_se": float(np.sqrt(cov[1, 1])), "intercept": float(intercept[0]),
             "brier": float(np.mean((p - y) ** 2)), "n": len(y)}
    edges = np.unique(np.quantile(p, np.linspace(0, 1, bins + 1)))
    which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, len(edges) - 2)
    curve = pd.DataFrame({"bin": which, "p": p, "y": y}).groupby("bin").agg(
        predicted=("p", "mean"), observed=("y", "mean"), n=("y", "size")).reset_index(drop=True)
    return stats, curve


def decision_curve(y, p, thresholds=None) -> pd.DataFrame:
    """Net benefit of the model, of treating all and of treating none (Vickers & Elkin 2006)."""
    y, p = np.asarray(y).astype(bool), np.asarray(p, dtype=float)
    thresholds = np.arange(0.01, 0.96, 0.01) if thresholds is None else np.asarray(thresholds)
    n, prevalence = len(y), y.mean()
    rows = []
    for t in thresholds:
        hit = p >= t
        odds = t / (1 - t)
        rows.append({"threshold": t, "net_benefit_model": (np.sum(hit & y) - np.sum(hit & ~y) * odds) / n,
                     "net_benefit_all": prevalence - (1 - prevalence) * odds, "net_benefit_none": 0.0})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- survival
def survival_metrics(y, risk, groups=None, times=None) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Harrell's and Uno's C-index, time-dependent AUC table, Kaplan-Meier table by risk group with log-rank."""
    from sksurv.compare import compare_survival
    from sksurv.metrics import concordance_index_censored, concordance_index_ipcw, cumulative_dynamic_auc
    from sksurv.nonparametric import kaplan_meier_estimator

    event_name, time_name = y.dtype.names
    event, time = y[event_name].astype(bool), y[time_name].astype(float)
    risk = np.asarray(risk, dtype=float)
    stats = {"harrell_c": float(concordance_index_censored(event, time, risk)[0]), "n": len(time),
             "events": int(event.sum())}
    tau = float(np.quantile(time[event], 0.9))
    stats["uno_c"] = float(concordance_index_ipcw(y, y, risk, tau=tau)[0])
    if times is None:
        times = np.quantile(time[event], [0.25, 0.5, 0.75])
    times = np.asarray([t for t in times if time.min() <= t < time.max()])
    auc, mean_auc = cumulative_dynamic_auc(y, y, risk, times)
    stats["mean_td_auc"] = float(mean_auc)
    td = pd.DataFrame({"time": times, "auc": auc})
    km_rows = []
    if groups is not None:
        groups = np.asarray(groups).astype(str)
        for g in np.unique(groups):
            t, s = kaplan_meier_estimator(event[groups == g], time[groups == g])
            km_rows += [{"group": g, "time": ti, "survival": si} for ti, si in zip(t, s)]
        if len(np.unique(groups)) > 1:
            chisq, pvalue = compare_survival(y, groups)
            stats.update(logrank_chi2=float(chisq), logrank_p=float(pvalue))
    return stats, td, pd.DataFrame(km_rows, columns=["group", "time", "survival"])


# ---------------------------------------------------------------- plots and report folders
def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=110)
    return plt, fig, ax


def _save(plt, fig, path: Path):
    from ..files import atomic_write

    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _write_csv(table: pd.DataFrame, path: Path, index=False):
    from ..files import atomic_write

    with atomic_write(path) as tmp:
        table.to_csv(tmp, index=index)


def plot_roc(curves: dict, path: Path):
    """curves: name -> (roc_table, auc dict)."""
    plt, fig, ax = _figure()
    for name, (table, auc) in curves.items():
        ax.plot(table.fpr, table.tpr, label=f"{name}: AUC {auc['auc']:.2f} ({auc['auc_low']:.2f}-{auc['auc_high']:.2f})")
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC (out-of-fold)")
    ax.legend(fontsize=7, loc="lower right")
    _save(plt, fig, path)


def plot_calibration(curve: pd.DataFrame, stats: dict, path: Path):
    plt, fig, ax = _figure()
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.plot(curve.predicted, curve.observed, "o-")
    ax.set(xlabel="predicted probability", ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1),
           title=f"Calibration: slope {stats['slope']:.2f}, intercept {stats['intercept']:.2f}, "
                 f"Brier {stats['brier']:.3f}")
    ax.title.set_fontsize(8)
    _save(plt, fig, path)


def plot_decision_curve(table: pd.DataFrame, path: Path):
    plt, fig, ax = _figure()
    ax.plot(table.threshold, table.net_benefit_model, label="model")
    ax.plot(table.threshold, table.net_benefit_all, ls="--", label="treat all")
    ax.plot(table.threshold, table.net_benefit_none, ls=":", c="grey", label="treat none")
    top = max(table.net_benefit_model.max(), table.net_benefit_all.max())
    ax.set(xlabel="threshold probability", ylabel="net benefit", ylim=(-0.05, top + 0.05), title="Decision curve")
    ax.legend(fontsize=8)
    _save(plt, fig, path)


def plot_km(km: pd.DataFrame, stats: dict, path: Path):
    plt, fig, ax = _figure()
    for group, rows in km.groupby("group"):
        ax.step(np.r_[0, rows.time], np.r_[1, rows.survival], where="post", label=group)
    p = stats.get("logrank_p")
    ax.set(xlabel="time", ylabel="survival probability", ylim=(0, 1.02),
           title="Kaplan-Meier by risk group" + (f" (log-rank p = {p:.2g})" if p is not None else ""))
    ax.legend(fontsize=8)
    _save(plt, fig, path)


def plot_td_auc(td: pd.DataFrame, stats: dict, path: Path):
    plt, fig, ax = _figure()
    ax.plot(td.time, td.auc, "o-")
    ax.axhline(0.5, ls=":", c="grey")
    ax.set(xlabel="time", ylabel="cumulative/dynamic AUC", ylim=(0.3, 1.0),
           title=f"Time-dependent AUC; Harrell C {stats['harrell_c']:.2f}, Uno C {stats['uno_c']:.2f}")
    ax.title.set_fontsize(8)
    _save(plt, fig, path)


def report_binary(y, p, out_dir: Path, *, threshold: float = 0.5, others: dict | None = None, name="model",
                  n_boot: int = 1000, seed: int = 0) -> dict:
    """Write metrics.csv, roc.csv/png, calibration.csv/png, decision_curve.csv/png (+ delong.csv vs `others`)."""
    out_dir = Path(out_dir)
    auc = roc_auc_ci(y, p, n_boot=n_boot, seed=seed)
    cal, curve = calibration(y, p)
    metrics = {**auc, **sensitivity_specificity(y, p, threshold), **{f"calibration_{k}": v for k, v in cal.items()}}
    curves = {name: (roc_table(y, p), auc)}
    comparisons = []
    for other, q in (others or {}).items():
        curves[other] = (roc_table(y, q), roc_auc_ci(y, q, n_boot=n_boot, seed=seed))
        comparisons.append({"model": name, "other": other, **delong_test(y, p, q)})
    _write_csv(pd.DataFrame([metrics]), out_dir / "metrics.csv")
    _write_csv(pd.concat([t.assign(model=n) for n, (t, _) in curves.items()]), out_dir / "roc.csv")
    plot_roc(curves, out_dir / "roc.png")
    _write_csv(curve, out_dir / "calibration.csv")
    plot_calibration(curve, cal, out_dir / "calibration.png")
    dca = decision_curve(y, p)
    _write_csv(dca, out_dir / "decision_curve.csv")
    plot_decision_curve(dca, out_dir / "decision_curve.png")
    if comparisons:
        _write_csv(pd.DataFrame(comparisons), out_dir / "delong.csv")
    return metrics


def report_multiclass(y, P, classes, out_dir: Path) -> dict:
    """Write metrics.csv (one-vs-rest AUC per class and macro) and confusion.csv."""
    from sklearn.metrics import confusion_matrix, roc_auc_score

    out_dir = Path(out_dir)
    y = np.asarray(y)
    metrics = {"auc_macro_ovr": float(roc_auc_score(y, P, multi_class="ovr", labels=classes)),
               "accuracy": float(np.mean(classes[P.argmax(axis=1)] == y))}
    for k, c in enumerate(classes):
        metrics[f"auc_{c}"] = float(roc_auc_score(y == c, P[:, k]))
    _write_csv(pd.DataFrame([metrics]), out_dir / "metrics.csv")
    confusion = pd.DataFrame(confusion_matrix(y, classes[P.argmax(axis=1)], labels=classes),
                             index=[f"true_{c}" for c in classes], columns=[f"predicted_{c}" for c in classes])
    _write_csv(confusion, out_dir / "confusion.csv", index=True)
    plot_roc({str(c): (roc_table(y == c, P[:, k]), roc_auc_ci(y == c, P[:, k], n_boot=200))
              for k, c in enumerate(classes)}, out_dir / "roc.png")
    return metrics


def report_survival(y, risk, groups, out_dir: Path) -> dict:
    """Write metrics.csv (Harrell/Uno C, mean td-AUC, log-rank), td_auc.csv/png, km.csv/png."""
    out_dir = Path(out_dir)
    stats, td, km = survival_metrics(y, risk, groups)
    _write_csv(pd.DataFrame([stats]), out_dir / "metrics.csv")
    _write_csv(td, out_dir / "td_auc.csv")
    plot_td_auc(td, stats, out_dir / "td_auc.png")
    _write_csv(km, out_dir / "km.csv")
    plot_km(km, stats, out_dir / "km.png")
    return stats


def out_of_fold_predictions(result: NestedCV, index) -> pd.DataFrame:
    """Table of the nested-CV predictions (what every metric above was computed from)."""
    table = pd.DataFrame({"fold": result.fold}, index=index)
    if result.kind in ("multiclass", "ordinal"):
        for k, c in enumerate(result.classes):
            table[f"p_{c}"] = result.prediction[:, k]
    else:
        table["risk" if result.kind == "survival" else "probability"] = result.prediction
    if result.groups is not None:
        table["risk_group"] = result.groups
    return table

