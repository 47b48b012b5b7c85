"""Feature-level fusion: preprocess each block, concatenate, fit one classifier."""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from ..errors import InputError, ModelError
from .blocks import BATCH_COLUMN, block_transformer
from .data import BlockPipeline, check_training, resolve_blocks
from .logistic import expit, wald_interval

CLASSIFIERS = ("logistic", "svm", "rf", "gb", "ordinal")


def make_classifier(name: str, *, C: float = 1.0, random_state: int = 0):
    """'logistic' (L2-penalised), 'svm' (RBF, probabilities by sigmoid calibration), 'rf', 'gb', 'ordinal'
    (cumulative logit, for ordered grades)."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    if name == "logistic":
        return LogisticRegression(C=C, solver="newton-cholesky", max_iter=200)
    if name == "svm":
        return CalibratedClassifierCV(SVC(C=C, kernel="rbf", gamma="scale", random_state=random_state),
                                      method="sigmoid", cv=5, ensemble=False)
    if name == "rf":
        return RandomForestClassifier(n_estimators=300, min_samples_leaf=3, max_features="sqrt",
                                      random_state=random_state, n_jobs=1)
    if name == "gb":
        return GradientBoostingClassifier(n_estimators=150, learning_rate=0.05, max_depth=2, subsample=0.8,
                                          random_state=random_state)
    if name == "ordinal":
        from .ordinal import OrdinalLogistic

        return OrdinalLogistic(C=C)
    raise InputError(f"Unknown classifier '{name}': use one of {', '.join(CLASSIFIERS)}.")


class FeatureFusion(BlockPipeline, ClassifierMixin, BaseEstimator):
    """Per-block preprocessing (see `blocks.block_pipeline`) -> concatenation -> classifier.

    X: DataFrame of feature columns `<BLOCK>__...`, clinical columns (block 'clinical') and, with
    `harmonize=True`, the `batch_column` (center). `blocks=None` infers blocks from the column names.
    Every row needs every block at prediction time (use `DecisionFusion` when blocks may be missing).
    """

    def __init__(self, blocks=None, classifier="logistic", C=0.1, selection="lasso", k=10, C_select=0.5,
                 corr_threshold=0.95, pca=None, harmonize=False, batch_column=BATCH_COLUMN, random_state=0):
        self.blocks = blocks
        self.classifier = classifier
        self.C = C
        self.selection = selection
        self.k = k
        self.C_select = C_select
        self.corr_threshold = corr_threshold
        self.pca = pca
        self.harmonize = harmonize
        self.batch_column = batch_column
        self.random_state = random_state

    def _pipeline(self):
        from sklearn.pipeline import Pipeline

        return Pipeline([
            ("blocks", block_transformer(self.blocks_, harmonize=self.harmonize, batch_column=self.batch_column,
                                         selection=self.selection, k=self.k, C_select=self.C_select,
                                         corr_threshold=self.corr_threshold, pca=self.pca,
                                         random_state=self.random_state)),
            ("model", make_classifier(self.classifier, C=self.C, random_state=self.random_state)),
        ])

    def fit(self, X, y):
        self.blocks_ = resolve_blocks(X, self.blocks, self.batch_column)
        check_training(X, y, self.blocks_, kind="classification", harmonize=self.harmonize,
                       batch_column=self.batch_column)
        self.pipeline_ = self._pipeline().fit(X, np.asarray(y))
        self.classes_ = self.pipeline_.classes_
        final = self.pipeline_.named_steps["model"]
        if self.classifier == "logistic" and len(self.classes_) == 2:  # for Wald intervals of the log-odds
            Z = self.pipeline_.named_steps["blocks"].transform(X)
            p = final.predict_proba(Z)[:, 1]
            design = np.column_stack([np.ones(len(Z)), Z])
            info = design.T @ (design * (p * (1 - p))[:, None])
            info[1:, 1:] += np.eye(Z.shape[1]) / self.C
            self.cov_ = np.linalg.pinv(info)
        self.feature_names_in_ = np.array(X.columns, dtype=object)
        return self

    def predict_proba(self, X):
        return self.pipeline_.predict_proba(self._checked(X))

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def decision_function(self, X):
        """Log-odds of the positive class (binary) from the predicted probability."""
        p = np.clip(self.predict_proba(X)[:, -1], 1e-12, 1 - 1e-12)
        return np.log(p / (1 - p))

    def predict_interval(self, X) -> "pd.DataFrame":
        """Probability with a 95% Wald interval of the logistic model's log-odds, given the selected features.

        Available for binary endpoints with classifier='logistic'; other classifiers raise a ModelError.
        """
        import pandas as pd

        if not hasattr(self, "cov_"):
            raise ModelError(f"Prediction intervals need classifier='logistic' and a binary endpoint "
                             f"(this model: {self.classifier}, {len(self.classes_)} classes).")
        final = self.pipeline_.named_steps["model"]
        design = np.column_stack([np.ones(len(X)), self.transform(X)])
        eta, low, high = wald_interval(design, np.r_[final.intercept_, final.coef_[0]], self.cov_)
        return pd.DataFrame({"probability": expit(eta), "low": expit(low), "high": expit(high)}, index=X.index)
