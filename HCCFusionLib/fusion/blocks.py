"""Feature blocks and per-block preprocessing (scikit-learn transformers, fitted on training data only).

A wide feature table has columns `<PHASE>__<region>__<feature>`; its block is the part before the first "__"
(AP, PVP, DP, ADC, HBP, ...). Clinical variables form one more block, "clinical". A block pipeline is
  [ComBat by center] -> clinical encoding -> median imputation -> standard scaling      ("prep": values -> z)
  -> variance filter -> correlation filter -> selection (LASSO / mRMR / univariate) -> [PCA]   ("post": linear in z)
so everything after scaling is an affine map of the standardised values, which `explain` uses for exact
contributions of linear models.
"""
from __future__ import annotations

import logging
import re

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_selection import VarianceThreshold
from sklearn.feature_selection._base import SelectorMixin
from sklearn.utils.validation import check_is_fitted

from ..errors import InputError, ModelError

log = logging.getLogger(__name__)

CLINICAL = "clinical"
BATCH_COLUMN = "center"
#: columns of a clinical table that are outcomes or bookkeeping, never predictors
NON_PREDICTORS = ("mvi", "early_recurrence", "survival_months", "event", "response", "diagnosis", "patient_id",
                  "study_id", "grade", "edmondson_grade")
#: further outcome columns by name, so OS and RFS (os_months, rfs_event, ...) in one table never enter as predictors
OUTCOME_NAMES = re.compile(r"^(os|rfs|dfs|pfs|ttp|ttr)(_|$)|_(months|days|event)$", re.IGNORECASE)
#: clinical variables entered on a log10 scale (skewed labs)
LOG_COLUMNS = ("afp",)


def not_predictor(column) -> bool:
    """True for outcome, id and simulation-truth columns (NON_PREDICTORS, OUTCOME_NAMES, 'latent_*')."""
    column = str(column)
    return column in NON_PREDICTORS or column.startswith("latent_") or bool(OUTCOME_NAMES.search(column))


def block_of(column: str) -> str:
    """Block name of a feature column: the text before the first '__' (e.g. 'AP__tumour__...' -> 'AP')."""
    return column.split("__", 1)[0] if "__" in column else CLINICAL


def split_blocks(columns, clinical_columns=(), batch_column: str | None = BATCH_COLUMN) -> dict[str, list[str]]:
    """{block: columns}: imaging blocks by prefix (sorted by name), then 'clinical' (columns without '__')."""
    blocks: dict[str, list[str]] = {}
    for column in list(columns) + [c for c in clinical_columns if c not in columns]:
        if column == batch_column or not_predictor(column):
            continue
        blocks.setdefault(block_of(str(column)), []).append(column)
    ordered = {name: blocks[name] for name in sorted(b for b in blocks if b != CLINICAL)}
    if CLINICAL in blocks:
        ordered[CLINICAL] = blocks[CLINICAL]
    return ordered


def block_present(X: pd.DataFrame, columns) -> np.ndarray:
    """Boolean per row: the block has at least one measured value (its columns exist and are not all NaN)."""
    present = [c for c in columns if c in X.columns]
    if not present:
        return np.zeros(len(X), dtype=bool)
    return X[present].notna().any(axis=1).to_numpy()


class ComBat(TransformerMixin, BaseEstimator):
    """ComBat harmonisation of location and scale per batch (Johnson et al. 2007), empirical Bayes.

    Input: a DataFrame with the feature columns, `batch_column` and the `covariates` columns; output: the features
    (batch and covariate columns dropped) with each batch's mean and variance moved to the pooled ones (or to the
    `reference_batch`'s). NaN values are ignored in the estimates and kept.

    - `covariates`: biological covariates whose effects are preserved (as neuroCombat's design matrix): each
      feature is regressed on batch indicators + covariates (numeric as is, categorical one-hot by the training
      levels; missing numeric values take the training mean), and only the batch part is removed.
    - `reference_batch`: harmonise every batch to this one (it is left unchanged, and the pooled mean and
      scale are its own). A batch not seen in training is then estimated from its own rows at transform time
      (at least 2 rows: its shift and scale against the reference, shrunk by empirical Bayes) instead of refused.
    Without a reference batch an unseen batch raises a ModelError. Fitted on training rows only.
    """

    def __init__(self, batch_column: str = BATCH_COLUMN, empirical_bayes: bool = True, covariates=(),
                 reference_batch: str | None = None):
        self.batch_column = batch_column
        self.empirical_bayes = empirical_bayes
        self.covariates = covariates
        self.reference_batch = reference_batch

    def fit(self, X, y=None):
        values, batches = self._split(X)
        design = self._design(X, fit=True)
        self.feature_names_in_ = np.array([c for c in X.columns if c not in self._extra()], dtype=object)
        levels = sorted(pd.unique(batches).tolist())
        reference = None if self.reference_batch is None else str(self.reference_batch)
        if reference is not None and reference not in levels:
            raise InputError(f"The reference batch '{reference}' is not among the training batches {levels}.")
        if len(levels) < 2:
            log.info("ComBat: a single batch in training; harmonisation is the identity")
        index = np.array([levels.index(b) for b in batches])
        means, self.beta_ = _batch_regression(values, index, len(levels), design)
        counts = np.array([np.sum(~np.isnan(values[index == i]), axis=0) for i in range(len(levels))], dtype=float)
        rows = np.ones(len(values), bool) if reference is None else batches == reference
        self.mean_ = (means[levels.index(reference)] if reference is not None
                      else (counts * means).sum(0) / np.maximum(counts.sum(0), 1))
        resid = values - means[index] - design @ self.beta_
        self.std_ = np.sqrt(np.nanmean(resid[rows] ** 2, axis=0))
        self.std_[~(self.std_ > 1e-12)] = 1.0
        z = self._z(values, design)
        self.batches_ = np.array(levels, dtype=object)
        self.gamma_, self.delta_ = np.empty((len(levels), values.shape[1])), np.empty((len(levels), values.shape[1]))
        for i, b in enumerate(levels):
            self.gamma_[i], self.delta_[i] = self._batch_effect(z[index == i])
        if reference is not None:  # the reference batch is the target: unchanged
            self.gamma_[levels.index(reference)], self.delta_[levels.index(reference)] = 0.0, 1.0
        return self

    @classmethod
    def from_parameters(cls, feature_names, batches, mean, std, gamma, delta, **options) -> "ComBat":
        """A fitted batch-only ComBat from its parameters (distributed ComBat builds it from site statistics)."""
        combat = cls(**options)
        combat.feature_names_in_ = np.array(list(feature_names), dtype=object)
        combat.batches_ = np.array(list(batches), dtype=object)
        combat.mean_, combat.std_, combat.gamma_, combat.delta_ = mean, std, gamma, delta
        combat.beta_, combat.covariate_levels_ = np.zeros((0, len(combat.feature_names_in_))), {}
        combat.covariate_mean_ = np.zeros(0)
        return combat

    def transform(self, X):
        check_is_fitted(self, "gamma_")
        values, batches = self._split(X)
        design = self._design(X, fit=False)
        z = self._z(values, design)
        known = list(self.batches_)
        unknown = sorted(set(batches) - set(known))
        if unknown and self.reference_batch is None:
            raise ModelError(
                f"Center(s) {unknown} were not in the training data, so ComBat cannot harmonise them "
                f"(known: {known}): retrain with these centers, train with a reference center (--reference-center; "
                "new centers are then estimated from their own rows) or use a model trained without harmonisation."
            )
        gamma, delta = np.zeros_like(z), np.ones_like(z)
        for b in set(batches):
            rows = batches == b
            if b in known:
                gamma[rows], delta[rows] = self.gamma_[known.index(b)], self.delta_[known.index(b)]
                continue
            if rows.sum() < 2:
                raise ModelError(f"Center '{b}' was not in the training data and has {rows.sum()} row: its shift and "
                                 "scale against the reference center need at least 2 rows; harmonise it with more.")
            log.info("ComBat: center '%s' not seen in training, estimated from its %d rows", b, rows.sum())
            gamma[rows], delta[rows] = self._batch_effect(z[rows])
        return (z - gamma) / np.sqrt(delta) * self.std_ + self.mean_ + design @ self.beta_

    def _batch_effect(self, z):
        """(gamma, delta) of one batch's standardised rows: moments, shrunk by empirical Bayes when asked."""
        gamma_hat = np.nanmean(z, axis=0)
        delta_hat = np.nanvar(z, axis=0, ddof=1)
        delta_hat[~(delta_hat > 1e-12)] = 1.0
        return _eb_shrink(z, gamma_hat, delta_hat) if self.empirical_bayes else (gamma_hat, delta_hat)

    def _z(self, values, design):
        return (values - self.mean_ - design @ self.beta_) / self.std_

    def _extra(self) -> list:
        return [self.batch_column, *self.covariates]

    def _design(self, X, fit: bool) -> np.ndarray:
        """Covariates as numbers, centred at their training means (rows x covariate columns)."""
        columns = []
        if fit:
            self.covariate_levels_ = {}
        for name in self.covariates:
            if name not in X.columns:
                raise InputError(f"ComBat covariate '{name}' is not in the table: give it in the clinical table.")
            values = X[name]
            if fit and not (pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)):
                self.covariate_levels_[name] = sorted(str(v) for v in values.dropna().unique())
            if name in self.covariate_levels_:
                levels = self.covariate_levels_[name]
                unknown = sorted(set(values.dropna().astype(str)) - set(levels))
                if unknown:
                    raise ModelError(f"ComBat covariate '{name}' has level(s) {unknown} not seen in training "
                                     f"(known: {levels}).")
                columns += [(values.astype(str) == level).to_numpy(float) for level in levels[1:]]
            else:
                columns.append(pd.to_numeric(values, errors="coerce").to_numpy(float))
        design = np.column_stack(columns) if columns else np.zeros((len(X), 0))
        if fit:
            self.covariate_mean_ = np.nanmean(design, axis=0) if design.shape[1] else np.zeros(0)
        design = np.where(np.isnan(design), self.covariate_mean_, design)
        return design - self.covariate_mean_

    def get_feature_names_out(self, input_features=None):
        return self.feature_names_in_

    def _split(self, X):
        if not isinstance(X, pd.DataFrame) or self.batch_column not in X.columns:
            raise InputError(f"ComBat needs a table with a '{self.batch_column}' column naming each row's center.")
        batches = X[self.batch_column].astype(str).to_numpy()
        values = X.drop(columns=[c for c in self._extra() if c in X.columns]).to_numpy(dtype=float)
        return values, batches


def _batch_regression(values, index, k: int, design):
    """Per-feature least squares of values on batch indicators + centred covariates, NaN rows left out per
    feature: (batch intercepts (k, d), covariate slopes (c, d)). Without covariates: the batch means."""
    if design.shape[1] == 0:
        means = np.array([np.nanmean(values[index == i], axis=0) for i in range(k)])
        return means, np.zeros((0, values.shape[1]))
    full = np.column_stack([(index[:, None] == np.arange(k)[None, :]).astype(float), design])
    coef = np.empty((full.shape[1], values.shape[1]))
    missing = np.isnan(values)
    if not missing.any():
        coef[:] = np.linalg.lstsq(full, values, rcond=None)[0]
    else:
        for j in range(values.shape[1]):
            keep = ~missing[:, j]
            coef[:, j] = np.linalg.lstsq(full[keep], values[keep, j], rcond=None)[0]
    return coef[:k], coef[k:]


def _eb_shrink(z, gamma_hat, delta_hat, tol=1e-4, max_iter=200):
    """Parametric empirical-Bayes estimates of one batch's shift (normal prior) and scale (inverse gamma prior)."""
    n = np.sum(~np.isnan(z), axis=0).astype(float)
    centred = np.nansum((z - np.nanmean(z, axis=0)) ** 2, axis=0)
    return eb_shrink_stats(n, centred, gamma_hat, delta_hat, tol, max_iter)


def eb_shrink_stats(n, centred, gamma_hat, delta_hat, tol=1e-4, max_iter=200):
    """`_eb_shrink` from one batch's summary statistics per feature: count `n`, centred sum of squares of z
    (`centred`), mean `gamma_hat` and variance `delta_hat` of z; so distributed ComBat needs no rows."""
    n = np.asarray(n, dtype=float)
    gamma_bar, tau2 = gamma_hat.mean(), max(gamma_hat.var(ddof=1) if gamma_hat.size > 1 else 0.0, 1e-12)
    m, s2 = delta_hat.mean(), max(delta_hat.var(ddof=1) if delta_hat.size > 1 else 0.0, 1e-12)
    a, b = (2 * s2 + m**2) / s2, (m * s2 + m**3) / s2
    gamma, delta = gamma_hat.copy(), delta_hat.copy()
    for _ in range(max_iter):
        gamma_new = (n * tau2 * gamma_hat + delta * gamma_bar) / (n * tau2 + delta)
        ss = centred + n * (gamma_hat - gamma_new) ** 2  # sum over rows of (z - gamma_new)^2
        delta_new = (b + 0.5 * ss) / (n / 2.0 + a - 1.0)
        done = np.max(np.abs(gamma_new - gamma)) < tol and np.max(np.abs(delta_new - delta) / delta) < tol
        gamma, delta = gamma_new, delta_new
        if done:
            break
    return gamma, delta


class ClinicalEncoder(TransformerMixin, BaseEstimator):
    """Clinical variables as numbers: log10 of skewed labs, one-hot categorical levels seen in training.

    A level not seen in training raises a ModelError naming the column and the known levels.
    """

    def __init__(self, log_columns=LOG_COLUMNS):
        self.log_columns = log_columns

    def fit(self, X, y=None):
        X = _frame(X)
        self.feature_names_in_ = np.array(X.columns, dtype=object)
        self.levels_ = {}
        for column in X.columns:
            if not _numeric(X[column]):
                self.levels_[column] = sorted(str(v) for v in X[column].dropna().unique())
        return self

    def transform(self, X):
        check_is_fitted(self, "levels_")
        X = _frame(X)
        out = {}
        for column in self.feature_names_in_:
            values = X[column]
            if column in self.levels_:
                seen = values.dropna().astype(str)
                unknown = sorted(set(seen) - set(self.levels_[column]))
                if unknown:
                    raise ModelError(
                        f"Clinical column '{column}' has level(s) {unknown} not seen in training "
                        f"(known: {self.levels_[column]}): recode them or leave them empty."
                    )
                for level in self.levels_[column][1:]:  # first level is the reference
                    out[f"{column}={level}"] = np.where(values.isna(), np.nan, (values.astype(str) == level) * 1.0)
            else:
                numbers = pd.to_numeric(values, errors="coerce").astype(float)
                if column in self.log_columns:
                    numbers = np.log10(numbers.clip(lower=1e-3))
                    out[f"log10_{column}"] = numbers.to_numpy()
                else:
                    out[column] = numbers.to_numpy()
        self.feature_names_out_ = np.array(list(out), dtype=object)
        return np.column_stack(list(out.values())) if out else np.empty((len(X), 0))

    def get_feature_names_out(self, input_features=None):
        names = []
        for column in self.feature_names_in_:
            if column in self.levels_:
                names += [f"{column}={level}" for level in self.levels_[column][1:]]
            else:
                names.append(f"log10_{column}" if column in self.log_columns else column)
        return np.array(names, dtype=object)


def _frame(X) -> pd.DataFrame:
    if not isinstance(X, pd.DataFrame):
        raise InputError("Clinical data must be a table (pandas DataFrame) with named columns.")
    return X


def _numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series)


class CorrelationFilter(SelectorMixin, BaseEstimator):
    """Drop a feature whose |Pearson r| with an earlier kept feature exceeds `threshold`."""

    def __init__(self, threshold: float = 0.95):
        self.threshold = threshold

    def fit(self, X, y=None):
        X = np.asarray(X, dtype=float)
        self.n_features_in_ = X.shape[1]
        sd = X.std(axis=0)
        Z = (X - X.mean(axis=0)) / np.where(sd > 0, sd, 1.0) / np.sqrt(len(X))  # Z[:, i] @ Z[:, j] = Pearson r
        keep = np.zeros(X.shape[1], dtype=int)
        count = 0
        for j in range(X.shape[1]):  # memory O(n p): no p x p matrix, so thousands of features are fine
            if count == 0 or np.abs(Z[:, keep[:count]].T @ Z[:, j]).max() <= self.threshold:
                keep[count] = j
                count += 1
        self.mask_ = np.zeros(X.shape[1], dtype=bool)
        self.mask_[keep[:count]] = True
        return self

    def _get_support_mask(self):
        return self.mask_


class Selector(SelectorMixin, BaseEstimator):
    """Supervised selection of at most `k` features: 'lasso' (L1 logistic), 'mrmr' or 'univariate' (ANOVA F).

    mRMR (Peng et al. 2005, difference form): greedily add the feature with the largest mutual information
    with the label minus its mean mutual information with the features already chosen.
    """

    def __init__(self, method: str = "lasso", k: int = 10, C: float = 0.5, random_state: int = 0):
        self.method = method
        self.k = k
        self.C = C
        self.random_state = random_state

    def fit(self, X, y):
        X = np.asarray(X, dtype=float)
        y = np.asarray(y)
        self.n_features_in_ = X.shape[1]
        k = min(self.k, X.shape[1])
        scores = {"lasso": self._lasso, "mrmr": self._mrmr, "univariate": self._univariate}
        if self.method not in scores:
            raise InputError(f"Unknown feature selection '{self.method}': use lasso, mrmr or univariate.")
        order = scores[self.method](X, y, k)
        self.mask_ = np.zeros(X.shape[1], dtype=bool)
        self.mask_[order[:k]] = True
        return self

    def _lasso(self, X, y, k):
        from sklearn.linear_model import LogisticRegression

        solver = "liblinear" if len(np.unique(y)) == 2 else "saga"
        model = LogisticRegression(C=self.C, l1_ratio=1.0, solver=solver, max_iter=500, tol=1e-3,
                                   random_state=self.random_state)
        weight = np.abs(model.fit(X, y).coef_).max(axis=0)
        chosen = np.flatnonzero(weight > 0)
        chosen = chosen[np.argsort(-weight[chosen], kind="stable")]
        if chosen.size == 0:  # everything shrunk away: keep the single strongest univariate feature
            return self._univariate(X, y, 1)
        return chosen

    def _univariate(self, X, y, k):
        from sklearn.feature_selection import f_classif

        with np.errstate(invalid="ignore", divide="ignore"):
            f, _ = f_classif(X, y)
        return np.argsort(-np.nan_to_num(f), kind="stable")

    def _mrmr(self, X, y, k):
        from sklearn.feature_selection import mutual_info_classif, mutual_info_regression

        relevance = mutual_info_classif(X, y, random_state=self.random_state)
        chosen = [int(np.argmax(relevance))]
        redundancy = np.zeros(X.shape[1])
        while len(chosen) < k:
            redundancy += mutual_info_regression(X, X[:, chosen[-1]], random_state=self.random_state)
            score = relevance - redundancy / len(chosen)
            score[chosen] = -np.inf
            chosen.append(int(np.argmax(score)))
        return np.array(chosen)

    def _get_support_mask(self):
        return self.mask_


def block_pipeline(columns, *, clinical: bool = False, harmonize: bool = False, batch_column: str = BATCH_COLUMN,
                   selection: str | None = "lasso", k: int = 10, C_select: float = 0.5, corr_threshold=0.95,
                   pca=None, random_state: int = 0):
    """Preprocessing of one block as a Pipeline with two steps, 'prep' (to standardised z) and 'post' (affine)."""
    from sklearn.decomposition import PCA
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    prep = []
    if harmonize:  # True, or the ComBat options {"covariates": [...], "reference_batch": ...}
        prep.append(("combat", ComBat(batch_column=batch_column, **combat_options(harmonize))))
    if clinical:
        prep.append(("encode", ClinicalEncoder()))
    prep += [("impute", SimpleImputer(strategy="median", keep_empty_features=True)), ("scale", StandardScaler())]
    post = [("variance", VarianceThreshold(1e-8)), ("correlation", CorrelationFilter(corr_threshold))]
    if selection:
        post.append(("select", Selector(selection, k=k, C=C_select, random_state=random_state)))
    if pca:
        if not 0 < float(pca) < 1:
            raise InputError(f"pca={pca}: give the fraction of variance to keep, between 0 and 1 (e.g. 0.9).")
        post.append(("pca", PCA(n_components=float(pca), svd_solver="full", random_state=random_state)))
    return Pipeline([("prep", Pipeline(prep)), ("post", Pipeline(post))])


def block_transformer(blocks: dict, *, harmonize=False, batch_column=BATCH_COLUMN, **options):
    """ColumnTransformer with one `block_pipeline` per block (the batch column goes to imaging blocks for ComBat)."""
    from sklearn.compose import ColumnTransformer

    parts = []
    for name, columns in blocks.items():
        combat = bool(harmonize) and name != CLINICAL
        extra = [batch_column, *combat_options(harmonize).get("covariates", ())] if combat else []
        routed = list(columns) + [c for c in extra if c not in columns]
        parts.append((name, block_pipeline(columns, clinical=name == CLINICAL, harmonize=combat and harmonize,
                                           batch_column=batch_column, **options), routed))
    return ColumnTransformer(parts, remainder="drop", verbose_feature_names_out=output_name)


def combat_options(harmonize) -> dict:
    """ComBat keyword arguments from a model's `harmonize` (bool, or a dict of covariates / reference_batch)."""
    if not isinstance(harmonize, dict):
        return {}
    unknown = set(harmonize) - {"covariates", "reference_batch", "empirical_bayes"}
    if unknown:
        raise InputError(f"Unknown harmonisation option(s) {sorted(unknown)}: use covariates, reference_batch, "
                         "empirical_bayes.")
    return {**harmonize, "covariates": tuple(harmonize.get("covariates", ()))}


def output_name(block: str, feature: str) -> str:
    """Name of a preprocessed feature: the column name itself, or '<block>__pca0' for derived ones."""
    return feature if feature.startswith(f"{block}__") or block == CLINICAL else f"{block}__{feature}"
