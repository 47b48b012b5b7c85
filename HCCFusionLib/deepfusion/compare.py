"""Deep fusion (early / intermediate / late) against the project's radiomics feature-level fusion, in one nested
cross-validation (the same outer folds: `fusion.evaluation.nested_cv` with the same seed and labels).

Noise is stated three ways per model: the bootstrap 95% CI of its out-of-fold AUC, the spread (SD) of its
per-fold AUCs, and, for each gain over radiomics, the DeLong standard error and p-value of the paired difference.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import pandas as pd

from ..fusion.evaluation import delong_test, nested_cv, roc_auc_ci
from .network import FUSIONS

log = logging.getLogger(__name__)

RADIOMICS = "radiomics"


def fold_auc_sd(y, p, fold) -> float:
    """SD of the per-fold AUCs of out-of-fold predictions."""
    from sklearn.metrics import roc_auc_score

    y, p, fold = np.asarray(y), np.asarray(p), np.asarray(fold)
    return float(np.std([roc_auc_score(y[fold == f], p[fold == f]) for f in np.unique(fold)], ddof=1))


def compare(table: pd.DataFrame, radiomics: pd.DataFrame, y, *, fusions=FUSIONS, outer: int = 5, seed: int = 0,
            deep: dict | None = None, radiomics_grid: dict | None = None, n_boot: int = 1000) -> pd.DataFrame:
    """One row per model (radiomics + each deep fusion point): auc, auc_low, auc_high, fold_sd, seconds, and for
    deep models gain (AUC minus radiomics AUC), gain_se and gain_p (DeLong, paired).

    table: the deep fusion table (`patches` + clinical); radiomics: the wide feature table of the same lesions
    (same row order; the clinical columns of `table` are added to it). deep: DeepFusion parameters.
    """
    from ..fusion.feature_level import FeatureFusion
    from .model import PATCHES, DeepFusion

    y = np.asarray(y)
    clinical = table.drop(columns=[PATCHES]).reset_index(drop=True)
    features = pd.concat([radiomics.reset_index(drop=True), clinical], axis=1)
    grid = {"C": [0.1, 1.0]} if radiomics_grid is None else radiomics_grid
    models = {RADIOMICS: (FeatureFusion(classifier="logistic", selection="lasso", k=10), features, grid)}
    models.update({f: (DeepFusion(fusion=f, **(deep or {})), table, None) for f in fusions})
    rows, predictions = [], {}
    for name, (estimator, X, param_grid) in models.items():
        start = time.perf_counter()
        result = nested_cv(estimator, X, y, kind="binary", param_grid=param_grid, outer=outer, seed=seed)
        seconds = time.perf_counter() - start
        predictions[name] = result.prediction
        auc = roc_auc_ci(y, result.prediction, n_boot=n_boot, seed=seed)
        row = {"model": name, **{k: auc[k] for k in ("auc", "auc_low", "auc_high")},
               "fold_sd": fold_auc_sd(y, result.prediction, result.fold), "seconds": seconds}
        if name != RADIOMICS:
            test = delong_test(y, result.prediction, predictions[RADIOMICS])
            row.update(gain=test["difference"], gain_se=test["se"], gain_p=test["p_value"])
        log.info("nested CV %s: AUC %.3f (%.1f s)", name, row["auc"], seconds)
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")
