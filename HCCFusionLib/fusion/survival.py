"""Survival endpoint: per-block preprocessing -> penalised Cox model (scikit-survival); risk groups."""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator

from ..errors import InputError
from .blocks import BATCH_COLUMN, block_transformer
from .data import BlockPipeline, check_training, resolve_blocks

RISK_GROUPS = {"median": ("low", "high"), "tertiles": ("low", "intermediate", "high")}


class SurvivalFusion(BlockPipeline, BaseEstimator):
    """Feature-level fusion for time-to-event data: blocks (no supervised selection; the Cox penalty selects)
    -> `CoxnetSurvivalAnalysis` (elastic net, fixed `alpha`) or `CoxPHSurvivalAnalysis` (ridge `alpha`).

    y: a scikit-survival structured array (event, time), e.g. `sksurv.util.Surv.from_arrays`.
    `predict` gives the risk score (linear predictor; higher = worse); `risk_group` cuts it at the training
    median or tertiles.
    """

    def __init__(self, blocks=None, model="coxnet", alpha=0.05, l1_ratio=0.5, corr_threshold=0.95, pca=None,
                 harmonize=False, batch_column=BATCH_COLUMN, groups="median", random_state=0):
        self.blocks = blocks
        self.model = model
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.corr_threshold = corr_threshold
        self.pca = pca
        self.harmonize = harmonize
        self.batch_column = batch_column
        self.groups = groups
        self.random_state = random_state

    def _cox(self):
        from sksurv.linear_model import CoxnetSurvivalAnalysis, CoxPHSurvivalAnalysis

        if self.model == "coxnet":
            return CoxnetSurvivalAnalysis(alphas=[self.alpha], l1_ratio=self.l1_ratio, fit_baseline_model=True)
        if self.model == "coxph":
            return CoxPHSurvivalAnalysis(alpha=self.alpha, ties="efron")
        raise InputError(f"Unknown survival model '{self.model}': use coxnet or coxph.")

    def fit(self, X, y):
        from sklearn.pipeline import Pipeline

        if self.groups not in RISK_GROUPS:
            raise InputError(f"Unknown risk grouping '{self.groups}': use {' or '.join(RISK_GROUPS)}.")
        self.blocks_ = resolve_blocks(X, self.blocks, self.batch_column)
        check_training(X, y, self.blocks_, kind="survival", harmonize=self.harmonize, batch_column=self.batch_column)
        self.pipeline_ = Pipeline([
            ("blocks", block_transformer(self.blocks_, harmonize=self.harmonize, batch_column=self.batch_column,
                                         selection=None, corr_threshold=self.corr_threshold, pca=self.pca,
                                         random_state=self.random_state)),
            ("model", self._cox()),
        ]).fit(X, y)
        risk = self.pipeline_.predict(X)
        n_groups = len(RISK_GROUPS[self.groups])
        self.cutoffs_ = np.quantile(risk, np.arange(1, n_groups) / n_groups)
        self.feature_names_in_ = np.array(X.columns, dtype=object)
        return self

    def predict(self, X):
        """Risk score (Cox linear predictor)."""
        return self.pipeline_.predict(self._checked(X))

    def risk_group(self, X=None, risk=None):
        """'low'/'high' (median) or 'low'/'intermediate'/'high' (tertiles) by the training cut-offs."""
        risk = self.predict(X) if risk is None else np.asarray(risk)
        return np.array(RISK_GROUPS[self.groups])[np.searchsorted(self.cutoffs_, risk, side="right")]

    def predict_survival(self, X, times) -> np.ndarray:
        """Survival probability at `times` (n, len(times)), from the Cox baseline hazard."""
        functions = self.pipeline_.predict_survival_function(self._checked(X))
        return np.array([[fn(t) for t in times] for fn in functions])

    def score(self, X, y):
        """Harrell's C-index (used by hyper-parameter search)."""
        from sksurv.metrics import concordance_index_censored

        event, time = (y[name] for name in y.dtype.names)
        return concordance_index_censored(event.astype(bool), time, self.predict(X))[0]
