"""Decision-level fusion: one calibrated model per block, combined; works with any subset of blocks.

Each block model is `block_pipeline -> classifier` with sigmoid calibration (`CalibratedBlock`). Its
out-of-fold probabilities on the training data teach the combiner, fitted separately for every subset of
blocks a patient may have, so a patient without MRI gets a combination learned for exactly the blocks present:
- 'weighted': weighted average of probabilities, weights (on the simplex) minimising out-of-fold log loss;
- 'vote': soft voting (mean probability); 'majority': fraction of blocks voting for each class;
- 'stack': logistic meta-learner on the blocks' log-odds;
- 'bayes': sum of log-likelihood ratios, logit p = logit prior + sum_b (logit p_b - logit prior)
  (naive Bayes over blocks).
Except for 'stack', a final logistic recalibration (also fitted out-of-fold) corrects the combined probability
(soft voting is under-confident, naive Bayes over correlated blocks over-confident). Binary endpoints get a 95%
Wald interval of the final logistic step and, per subset, the out-of-fold AUC and Brier score of that subset.
"""
from __future__ import annotations

import itertools
import logging

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from ..errors import InputError, ModelError
from .blocks import BATCH_COLUMN, block_transformer
from .data import check_prediction, check_training, resolve_blocks
from .feature_level import make_classifier
from .logistic import expit, fit_logistic, wald_interval

log = logging.getLogger(__name__)
COMBINE = ("weighted", "vote", "majority", "stack", "bayes")
EPS = 1e-6
MIN_SUBSET_ROWS = 10


class Combiner(ClassifierMixin, BaseEstimator):
    """Combine block probabilities X (n, blocks, classes) into class probabilities; see the module docstring."""

    def __init__(self, method="stack", prior=None, C=1.0):
        self.method = method
        self.prior = prior
        self.C = C

    def fit(self, X, y):
        X, y = np.asarray(X, dtype=float), np.asarray(y)
        self.classes_ = np.unique(y)
        self.weights_ = self._weights(X, y) if self.method == "weighted" else None
        Z = self._features(X)
        if len(self.classes_) == 2:
            self.coef_, self.cov_ = fit_logistic(Z, (y == self.classes_[1]).astype(float), self.C)
        else:
            from sklearn.linear_model import LogisticRegression

            self.final_ = LogisticRegression(C=self.C, max_iter=2000).fit(Z, y)
        return self

    def predict_proba(self, X):
        Z = self._features(np.asarray(X, dtype=float))
        if len(self.classes_) == 2:
            p = expit(self.coef_[0] + Z @ self.coef_[1:])
            return np.column_stack([1 - p, p])
        return self.final_.predict_proba(Z)

    def logit_interval(self, X, z=1.959964):
        """(logit, low, high) of the positive class with a 95% Wald interval (binary only)."""
        Z = self._features(np.asarray(X, dtype=float))
        return wald_interval(np.column_stack([np.ones(len(Z)), Z]), self.coef_, self.cov_, z)

    def _features(self, X):
        """Inputs of the final logistic step: log-odds (vs. the first class) of the stacked or combined probabilities."""
        X = np.clip(X, EPS, 1 - EPS)
        if self.method == "stack":
            return np.concatenate([_log_ratios(X[:, b]) for b in range(X.shape[1])], axis=1)
        if self.method == "vote":
            combined = X.mean(axis=1)
        elif self.method == "majority":
            votes = np.eye(X.shape[2])[X.argmax(axis=2)].mean(axis=1)
            combined = (votes + 0.5 / X.shape[1]) / (1 + 0.5 * X.shape[2] / X.shape[1])  # keep away from 0/1
        elif self.method == "weighted":
            combined = np.einsum("nbk,b->nk", X, self.weights_)
        elif self.method == "bayes":
            log_prior = np.log(np.asarray(self.prior, dtype=float))
            combined = _softmax(log_prior + (np.log(X) - log_prior).sum(axis=1))
        else:
            raise InputError(f"Unknown combination '{self.method}': use one of {', '.join(COMBINE)}.")
        return _log_ratios(np.clip(combined, EPS, 1 - EPS))

    def _weights(self, X, y, iterations=200):
        """Simplex weights maximising the likelihood of the weighted mean probability (EM for mixture weights)."""
        onehot = (y[:, None] == self.classes_[None, :]).astype(float)
        truth = np.clip(np.einsum("nbk,nk->nb", X, onehot), EPS, None)  # each block's probability of the truth
        w = np.full(X.shape[1], 1.0 / X.shape[1])
        for _ in range(iterations):
            new = (w * truth / (truth @ w)[:, None]).mean(axis=0)
            if np.max(np.abs(new - w)) < 1e-6:
                break
            w = new
        return new


def _log_ratios(P):
    return np.log(P[:, 1:]) - np.log(P[:, :1])


def _softmax(A):
    A = A - A.max(axis=1, keepdims=True)
    E = np.exp(A)
    return E / E.sum(axis=1, keepdims=True)


class CalibratedBlock(ClassifierMixin, BaseEstimator):
    """A classifier with sigmoid (Platt) calibration fitted on its cross-validated scores.

    Same method as scikit-learn's `CalibratedClassifierCV(method="sigmoid", ensemble=False)` (base model refitted
    on all rows, calibrator learnt from out-of-fold scores), but `fit_oof` also returns the calibrated
    out-of-fold probabilities, which the combiner is trained on, without refitting the block model again.
    Scores: the log-odds of the positive class (binary), or the K log-probabilities (multiclass).
    """

    def __init__(self, estimator, cv=5, random_state=0):
        self.estimator = estimator
        self.cv = cv
        self.random_state = random_state

    def fit(self, X, y):
        self.fit_oof(X, y)
        return self

    def fit_oof(self, X, y) -> np.ndarray:
        from sklearn.base import clone
        from sklearn.model_selection import StratifiedKFold, cross_val_predict

        y = np.asarray(y)
        self.classes_ = np.unique(y)
        folds = StratifiedKFold(self.cv, shuffle=True, random_state=self.random_state)
        oof = self._scores(cross_val_predict(clone(self.estimator), X, y, cv=folds, method="predict_proba"))
        if len(self.classes_) == 2:
            self.calibrator_, _ = fit_logistic(oof, (y == self.classes_[1]).astype(float), C=1e4)
        else:
            from sklearn.linear_model import LogisticRegression

            self.calibrator_ = LogisticRegression(C=1e4, max_iter=2000).fit(oof, y)
        self.estimator_ = clone(self.estimator).fit(X, y)
        return self._calibrated(oof)

    def predict_proba(self, X):
        return self._calibrated(self._scores(self.estimator_.predict_proba(X)))

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def _scores(self, proba):
        logp = np.log(np.clip(proba, EPS, 1))
        return logp[:, 1:] - logp[:, :1] if len(self.classes_) == 2 else logp

    def _calibrated(self, scores):
        if len(self.classes_) == 2:
            p = expit(self.calibrator_[0] + scores @ self.calibrator_[1:])
            return np.column_stack([1 - p, p])
        return self.calibrator_.predict_proba(scores)


class DecisionFusion(ClassifierMixin, BaseEstimator):
    """One calibrated model per block, combined per subset of available blocks (see the module docstring)."""

    def __init__(self, blocks=None, combine="stack", base="logistic", C=0.1, selection="lasso", k=10, C_select=0.5,
                 corr_threshold=0.95, pca=None, harmonize=False, batch_column=BATCH_COLUMN, cv=5, random_state=0):
        self.blocks = blocks
        self.combine = combine
        self.base = base
        self.C = C
        self.selection = selection
        self.k = k
        self.C_select = C_select
        self.corr_threshold = corr_threshold
        self.pca = pca
        self.harmonize = harmonize
        self.batch_column = batch_column
        self.cv = cv
        self.random_state = random_state

    def _block_model(self, name):
        from sklearn.pipeline import Pipeline

        pipeline = Pipeline([
            ("blocks", block_transformer({name: self.blocks_[name]}, harmonize=self.harmonize,
                                         batch_column=self.batch_column, selection=self.selection, k=self.k,
                                         C_select=self.C_select, corr_threshold=self.corr_threshold, pca=self.pca,
                                         random_state=self.random_state)),
            ("model", make_classifier(self.base, C=self.C, random_state=self.random_state)),
        ])
        return CalibratedBlock(pipeline, cv=self.cv, random_state=self.random_state)

    def fit(self, X, y):
        if self.combine not in COMBINE:
            raise InputError(f"Unknown combination '{self.combine}': use one of {', '.join(COMBINE)}.")
        self.blocks_ = resolve_blocks(X, self.blocks, self.batch_column)
        check_training(X, y, self.blocks_, kind="classification", harmonize=self.harmonize,
                       batch_column=self.batch_column, min_per_class=self.cv)
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        self.prior_ = np.array([np.mean(y == c) for c in self.classes_])
        present = check_prediction(X, self.blocks_, harmonize=self.harmonize, batch_column=self.batch_column,
                                   allow_missing_blocks=True)
        oof = np.full((len(X), len(self.blocks_), len(self.classes_)), np.nan)
        self.block_models_ = {}
        for b, name in enumerate(self.blocks_):
            rows = present[name].to_numpy()
            Xb, yb = X.loc[rows], y[rows]
            fewest = min(np.sum(yb == c) for c in self.classes_)
            if fewest < self.cv:
                raise InputError(f"Block '{name}' is present for only {fewest} patient(s) of one class; at least "
                                 f"{self.cv} per class are needed to train and calibrate it: remove the block or "
                                 "add patients.")
            self.block_models_[name] = self._block_model(name)
            oof[rows, b] = self.block_models_[name].fit_oof(Xb, yb)
        self._fit_combiners(oof, y, present.to_numpy())
        self.feature_names_in_ = np.array(X.columns, dtype=object)
        return self

    def _fit_combiners(self, oof, y, present):
        from sklearn.model_selection import StratifiedKFold

        names = list(self.blocks_)
        self.combiners_, self.subset_metrics_ = {}, {}
        for size in range(1, len(names) + 1):
            for subset in itertools.combinations(range(len(names)), size):
                rows = present[:, subset].all(axis=1)
                yr = y[rows]
                counts = [np.sum(yr == c) for c in self.classes_]
                if rows.sum() < MIN_SUBSET_ROWS or min(counts) < 3:
                    log.info("decision fusion: too few training patients with blocks %s; no combiner for them",
                             "+".join(names[i] for i in subset))
                    continue
                P = oof[rows][:, subset]
                key = "+".join(names[i] for i in subset)
                self.combiners_[key] = Combiner(self.combine, prior=self.prior_).fit(P, yr)
                folds = StratifiedKFold(min(5, min(counts)), shuffle=True, random_state=self.random_state)
                pred = np.zeros((rows.sum(), len(self.classes_)))
                for train, test in folds.split(P, yr):
                    pred[test] = Combiner(self.combine, prior=self.prior_).fit(P[train], yr[train]).predict_proba(P[test])
                self.subset_metrics_[key] = {"n_blocks": len(subset), "n": int(rows.sum()),
                                                       **_quality(yr, pred, self.classes_)}

    def subset_table(self) -> pd.DataFrame:
        """Out-of-fold AUC and Brier score of the fused prediction for every subset of blocks (index: blocks)."""
        check_is_fitted(self, "subset_metrics_")
        return pd.DataFrame.from_dict(self.subset_metrics_, orient="index").rename_axis("blocks")

    def block_probabilities(self, X) -> np.ndarray:
        """(n, blocks, classes) calibrated probability of each block model; NaN where the block is absent."""
        check_is_fitted(self, "combiners_")
        present = check_prediction(X, self.blocks_, harmonize=self.harmonize, batch_column=self.batch_column,
                                   allow_missing_blocks=True)
        out = np.full((len(X), len(self.blocks_), len(self.classes_)), np.nan)
        for b, name in enumerate(self.blocks_):
            rows = present[name].to_numpy()
            if rows.any():
                out[rows, b] = self.block_models_[name].predict_proba(X.loc[rows])
        return out

    def _by_subset(self, X):
        """Yield (rows, subset key 'AP+PVP+...', block probabilities of those rows) per pattern of present blocks."""
        P = self.block_probabilities(X)
        names = list(self.blocks_)
        present = ~np.isnan(P[:, :, 0])
        if not present.any(axis=1).all():
            rows = X.index[~present.any(axis=1)][:3].tolist()
            raise ModelError(f"Patient(s) {rows} have none of the model's blocks ({', '.join(names)}): nothing to "
                             "predict from.")
        patterns = pd.Series([tuple(r) for r in present])
        for pattern in patterns.unique():
            rows = (patterns == pattern).to_numpy()
            subset = [i for i, on in enumerate(pattern) if on]
            key = "+".join(names[i] for i in subset)
            if key not in self.combiners_:
                raise ModelError(f"Too few training patients had exactly the blocks {key} to learn their "
                                 "combination: provide more blocks for these patients.")
            yield rows, key, P[rows][:, subset]

    def predict_proba(self, X):
        out = np.zeros((len(X), len(self.classes_)))
        for rows, key, P in self._by_subset(X):
            out[rows] = self.combiners_[key].predict_proba(P)
        return out

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def predict_interval(self, X) -> pd.DataFrame:
        """Per patient: probability, 95% interval, blocks used and that subset's out-of-fold AUC/Brier."""
        if len(self.classes_) != 2:
            raise ModelError("Prediction intervals are available for binary endpoints only.")
        out = pd.DataFrame(index=X.index, columns=["probability", "low", "high", "blocks_used", "subset_auc",
                                                   "subset_brier"], dtype=object)
        metrics = self.subset_table()
        for rows, key, P in self._by_subset(X):
            eta, low, high = self.combiners_[key].logit_interval(P)
            out.loc[rows, ["probability", "low", "high"]] = np.column_stack([expit(eta), expit(low), expit(high)])
            out.loc[rows, "blocks_used"] = key
            out.loc[rows, ["subset_auc", "subset_brier"]] = metrics.loc[key, ["auc", "brier"]].to_numpy(float)
        return out.astype({c: float for c in ("probability", "low", "high", "subset_auc", "subset_brier")})


def _quality(y, proba, classes) -> dict:
    from sklearn.metrics import roc_auc_score

    onehot = (np.asarray(y)[:, None] == classes[None, :]).astype(float)
    if len(classes) == 2:
        auc = roc_auc_score(onehot[:, 1], proba[:, 1])
        return {"auc": float(auc), "brier": float(np.mean((proba[:, 1] - onehot[:, 1]) ** 2))}
    auc = roc_auc_score(y, proba, multi_class="ovr", labels=classes)
    return {"auc": float(auc), "brier": float(np.mean(np.sum((proba - onehot) ** 2, axis=1)))}
