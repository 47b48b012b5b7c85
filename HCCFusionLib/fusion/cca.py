"""CCA and sparse CCA as feature-level fusion of two views (e.g. CT phases and MRI sequences).

- `sparse_cca`: penalised matrix decomposition of X'Y (Witten, Tibshirani & Hastie 2009, Biostatistics 10:515):
  u, v maximise u'X'Yv subject to ||u||2 <= 1, ||v||2 <= 1, ||u||1 <= c1, ||v||1 <= c2 (X, Y standardised, the
  "diagonal" CCA of the paper); alternating soft-thresholded updates with the threshold found by bisection;
  further pairs by deflating X'Y.
- `CanonicalVariates`: a transformer from the preprocessed block features to the canonical variates of the two
  views (concatenated, or summed as in Sun et al. 2005), passing other columns (clinical) through. Linear, so
  `pullback` maps a linear model's coefficients back to the block features (exact contributions in `explain`).
- `CCAFusion`: `FeatureFusion` with the CCA step between the block preprocessing and the classifier.
"""
from __future__ import annotations

import logging

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from ..errors import InputError
from .blocks import block_of
from .data import check_training, resolve_blocks
from .feature_level import FeatureFusion, make_classifier

log = logging.getLogger(__name__)


def _soft(a, delta):
    return np.sign(a) * np.maximum(np.abs(a) - delta, 0.0)


def _l1_unit(a, bound, iterations=60):
    """soft(a, d) / ||soft(a, d)||2 with the smallest d >= 0 giving an L1 norm <= bound (bisection)."""
    norm = np.linalg.norm(a)
    if norm == 0:
        return a
    unit = a / norm
    if np.abs(unit).sum() <= bound:
        return unit
    low, high = 0.0, np.abs(a).max()
    for _ in range(iterations):
        mid = (low + high) / 2
        s = _soft(a, mid)
        if np.abs(s).sum() / np.linalg.norm(s) > bound:
            low = mid
        else:
            high = mid
    s = _soft(a, high)
    return s / np.linalg.norm(s)


def sparse_cca(X, Y, *, penalty_x: float = 0.3, penalty_y: float = 0.3, n_components: int = 1,
               max_iter: int = 200, tol: float = 1e-7):
    """(U, V, d): sparse canonical weights (p, k), (q, k) and the values u'X'Yv of standardised X, Y.

    `penalty_x`, `penalty_y` in (0, 1]: the L1 bounds as a fraction of their range, c = 1 + penalty*(sqrt(p)-1)
    (1 = no sparsity; Witten et al. use c between 1 and sqrt(p)). Inputs are standardised here.
    """
    X, Y = _standardise(np.asarray(X, dtype=float)), _standardise(np.asarray(Y, dtype=float))
    if len(X) != len(Y) or len(X) < 3:
        raise InputError("Sparse CCA needs the two views for the same rows (at least 3).")
    for name, value in (("penalty_x", penalty_x), ("penalty_y", penalty_y)):
        if not 0 < value <= 1:
            raise InputError(f"{name}={value}: give a fraction in (0, 1] (1 = no sparsity).")
    K = X.T @ Y / len(X)
    c1 = 1 + penalty_x * (np.sqrt(X.shape[1]) - 1)
    c2 = 1 + penalty_y * (np.sqrt(Y.shape[1]) - 1)
    U, V, D = [], [], []
    for _ in range(min(n_components, X.shape[1], Y.shape[1])):
        v = np.linalg.svd(K, full_matrices=False)[2][0]
        u = np.zeros(X.shape[1])
        for _ in range(max_iter):
            u_new = _l1_unit(K @ v, c1)
            v_new = _l1_unit(K.T @ u_new, c2)
            done = np.abs(u_new - u).sum() + np.abs(v_new - v).sum() < tol
            u, v = u_new, v_new
            if done:
                break
        d = float(u @ K @ v)
        U.append(u), V.append(v), D.append(d)
        K = K - d * np.outer(u, v)
    return np.column_stack(U), np.column_stack(V), np.array(D)


def _standardise(A):
    sd = A.std(axis=0)
    return (A - A.mean(axis=0)) / np.where(sd > 0, sd, 1.0)


class CanonicalVariates(TransformerMixin, BaseEstimator):
    """Canonical variates of two column groups of a numeric matrix, other columns passed through.

    `views`: two lists of column indices. `sparse`: PMD sparse CCA (`sparse_cca`), else scikit-learn's CCA.
    `combine`: 'concat' (2k variates: X u_j and Y v_j) or 'sum' (k variates X u_j + Y v_j).
    """

    def __init__(self, views=((), ()), n_components: int = 2, sparse: bool = True, penalty: float = 0.3,
                 combine: str = "concat"):
        self.views = views
        self.n_components = n_components
        self.sparse = sparse
        self.penalty = penalty
        self.combine = combine

    def fit(self, Z, y=None):
        Z = np.asarray(Z, dtype=float)
        a, b = (np.asarray(v, dtype=int) for v in self.views)
        if a.size == 0 or b.size == 0:
            raise InputError("CCA fusion needs two non-empty views (feature blocks) after preprocessing.")
        if self.combine not in ("concat", "sum"):
            raise InputError(f"Unknown CCA combination '{self.combine}': use concat or sum.")
        self.mean_, self.scale_ = Z.mean(axis=0), np.where(Z.std(axis=0) > 0, Z.std(axis=0), 1.0)
        S = (Z - self.mean_) / self.scale_
        k = max(1, min(self.n_components, a.size, b.size))
        if self.sparse:
            U, V, _ = sparse_cca(S[:, a], S[:, b], penalty_x=self.penalty, penalty_y=self.penalty, n_components=k)
        else:
            from sklearn.cross_decomposition import CCA

            cca = CCA(n_components=k, scale=False, max_iter=1000).fit(S[:, a], S[:, b])
            U, V = cca.x_rotations_, cca.y_rotations_
        Wa, Wb = np.zeros((Z.shape[1], k)), np.zeros((Z.shape[1], k))
        Wa[a], Wb[b] = U, V
        # unit-variance variates, so the classifier's penalty treats them alike
        Wa /= np.where((S @ Wa).std(axis=0) > 0, (S @ Wa).std(axis=0), 1.0)
        Wb /= np.where((S @ Wb).std(axis=0) > 0, (S @ Wb).std(axis=0), 1.0)
        self.correlations_ = np.array([np.corrcoef(S @ Wa[:, j], S @ Wb[:, j])[0, 1] for j in range(k)])
        rest = np.setdiff1d(np.arange(Z.shape[1]), np.r_[a, b])
        passthrough = np.zeros((Z.shape[1], rest.size))
        passthrough[rest, np.arange(rest.size)] = 1.0
        canon = np.hstack([Wa, Wb]) if self.combine == "concat" else Wa + Wb
        self.weights_ = np.hstack([canon, passthrough])  # variates = (Z - mean) / scale @ weights_
        self.n_features_in_ = Z.shape[1]
        log.info("CCA fusion: canonical correlations %s (training rows)", np.round(self.correlations_, 3).tolist())
        return self

    def transform(self, Z):
        check_is_fitted(self, "weights_")
        return (np.asarray(Z, dtype=float) - self.mean_) / self.scale_ @ self.weights_

    def pullback(self, coef, intercept):
        """(coefficients on Z, intercept) of a linear model b0 + transform(Z) @ coef."""
        w = self.weights_ @ np.asarray(coef, dtype=float) / self.scale_
        return w, float(intercept) - float(self.mean_ @ w)


class CCAFusion(FeatureFusion):
    """Blocks -> (sparse) CCA between two views -> classifier. `views`: two lists of block names (default: the
    CT phases vs the MRI sequences when both are present, else the first imaging block vs the other imaging
    blocks); the clinical block passes through. No supervised selection (CCA is unsupervised).
    """

    def __init__(self, blocks=None, views=None, n_components=2, sparse=True, penalty=0.3, combine="concat",
                 classifier="logistic", C=0.1, corr_threshold=0.95, pca=None, harmonize=False,
                 batch_column="center", random_state=0):
        super().__init__(blocks=blocks, classifier=classifier, C=C, selection=None, corr_threshold=corr_threshold,
                         pca=pca, harmonize=harmonize, batch_column=batch_column, random_state=random_state)
        self.views = views
        self.n_components = n_components
        self.sparse = sparse
        self.penalty = penalty
        self.combine = combine

    def fit(self, X, y):
        from sklearn.pipeline import Pipeline

        from .blocks import block_transformer

        self.blocks_ = resolve_blocks(X, self.blocks, self.batch_column)
        check_training(X, y, self.blocks_, kind="classification", harmonize=self.harmonize,
                       batch_column=self.batch_column)
        self.views_ = [list(v) for v in (self.views or default_views(self.blocks_))]
        unknown = [b for v in self.views_ for b in v if b not in self.blocks_]
        if len(self.views_) != 2 or unknown:
            raise InputError(f"CCA views must be two lists of block names from {list(self.blocks_)} "
                             f"(unknown: {unknown}).")
        y = np.asarray(y)
        blocks = block_transformer(self.blocks_, harmonize=self.harmonize, batch_column=self.batch_column,
                                   selection=None, corr_threshold=self.corr_threshold, pca=self.pca,
                                   random_state=self.random_state).fit(X, y)
        names = [str(n) for n in blocks.get_feature_names_out()]
        index = [[i for i, n in enumerate(names) if block_of(n) in view] for view in self.views_]
        cca = CanonicalVariates(index, n_components=self.n_components, sparse=self.sparse, penalty=self.penalty,
                                combine=self.combine).fit(blocks.transform(X))
        model = make_classifier(self.classifier, C=self.C, random_state=self.random_state)
        model.fit(cca.transform(blocks.transform(X)), y)
        self.pipeline_ = Pipeline([("blocks", blocks), ("cca", cca), ("model", model)])
        self.classes_ = model.classes_
        self.feature_names_in_ = np.array(X.columns, dtype=object)
        return self

    def predict_interval(self, X):
        from ..errors import ModelError

        raise ModelError("Prediction intervals are not available for CCA fusion models.")


def default_views(blocks: dict) -> list[list[str]]:
    """CT phases vs MRI sequences when both exist, else the first imaging block vs the other imaging blocks."""
    from ..study import Modality, Phase

    imaging = [b for b in blocks if b != "clinical"]
    if len(imaging) < 2:
        raise InputError(f"CCA fusion needs at least two imaging blocks (found {imaging}).")
    modality = {b: Phase(b).modality if b in Phase.__members__ else None for b in imaging}
    ct = [b for b in imaging if modality[b] is Modality.CT]
    mr = [b for b in imaging if modality[b] is Modality.MR]
    if ct and mr:
        return [ct, mr]
    return [imaging[:1], imaging[1:]]
