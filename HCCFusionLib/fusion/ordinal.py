"""Ordinal endpoint (e.g. Edmondson-Steiner grade I-IV): a cumulative-logit (proportional-odds) classifier.

    P(y <= k | x) = expit(theta_k - x . beta),   theta_1 < theta_2 < ... < theta_{K-1}

fitted by penalised maximum likelihood (L2 on beta, strength 1/C; thresholds unpenalised) with scipy's L-BFGS
and an analytic gradient. Thresholds are parametrised as theta_1 and log-increments, so they stay ordered.
scikit-learn compatible: classes_, predict_proba, predict, decision_function (the latent score x . beta).
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from ..errors import InputError, ModelError
from scipy.special import expit


class OrdinalLogistic(ClassifierMixin, BaseEstimator):
    """Proportional-odds logistic regression; `C=np.inf` is the unpenalised maximum-likelihood fit."""

    def __init__(self, C: float = 1.0, max_iter: int = 500, tol: float = 1e-8):
        self.C = C
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X, y):
        from scipy.optimize import minimize

        X = np.asarray(X, dtype=float)
        self.classes_ = np.unique(np.asarray(y))
        if len(self.classes_) < 2:
            raise InputError("An ordinal model needs at least two ordered categories in the training data.")
        code = np.searchsorted(self.classes_, np.asarray(y))
        n, p = X.shape
        K = len(self.classes_)
        penalty = 0.0 if not np.isfinite(self.C) else 1.0 / self.C
        counts = np.cumsum(np.bincount(code, minlength=K))[:-1] / n
        start = np.r_[np.log(counts[0] / (1 - counts[0])), np.log(np.maximum(np.diff(np.log(counts / (1 - counts))),
                                                                             1e-3)), np.zeros(p)]

        def objective(params):
            theta, beta = self._unpack(params, K)
            eta = X @ beta
            upper = expit(np.r_[theta, np.inf][code] - eta)  # P(y <= k)
            lower = expit(np.r_[-np.inf, theta][code] - eta)  # P(y <= k-1)
            prob = np.maximum(upper - lower, 1e-300)
            loss = -np.log(prob).sum() + 0.5 * penalty * beta @ beta
            # d/d(cut) of log(F(a) - F(b)) = f(a)/prob for the upper cut, -f(b)/prob for the lower
            du, dl = upper * (1 - upper) / prob, lower * (1 - lower) / prob
            grad_theta = np.zeros(K - 1)
            np.add.at(grad_theta, code[code < K - 1], -du[code < K - 1])
            np.add.at(grad_theta, code[code > 0] - 1, dl[code > 0])
            grad_beta = X.T @ (du - dl) + penalty * beta
            # chain rule through theta = theta_1 + cumsum(exp(log-increments))
            grad_raw = np.r_[grad_theta.sum(), [grad_theta[j:].sum() * np.exp(params[j]) for j in range(1, K - 1)]]
            return loss, np.r_[grad_raw, grad_beta]

        result = minimize(objective, start, jac=True, method="L-BFGS-B",
                          options={"maxiter": self.max_iter, "gtol": self.tol})
        if not np.all(np.isfinite(result.x)):
            raise ModelError("The ordinal model did not converge: check the features for constant or infinite values.")
        self.thresholds_, self.coef_ = self._unpack(result.x, K)
        self.n_features_in_ = p
        self.n_iter_ = result.nit
        return self

    @staticmethod
    def _unpack(params, K):
        theta = params[0] + np.r_[0.0, np.cumsum(np.exp(params[1:K - 1]))]
        return theta, params[K - 1:]

    def decision_function(self, X):
        """Latent score x . beta (higher = higher category)."""
        check_is_fitted(self, "coef_")
        return np.asarray(X, dtype=float) @ self.coef_

    def predict_proba(self, X):
        cumulative = expit(self.thresholds_[None, :] - self.decision_function(X)[:, None])
        cumulative = np.column_stack([np.zeros(len(cumulative)), cumulative, np.ones(len(cumulative))])
        return np.diff(cumulative, axis=1)

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def ordinal_metrics(y, P, classes) -> dict:
    """Mean absolute grade error of the most probable grade, and Harrell's C of the expected grade."""
    from sksurv.metrics import concordance_index_censored

    y = np.asarray(y)
    rank = np.searchsorted(classes, y).astype(float)
    expected = P @ np.arange(len(classes))
    # concordance of the expected grade with the true grade: pairs with different grades (no censoring)
    c_index = concordance_index_censored(np.ones(len(y), bool), -rank, expected)[0]
    return {"mae_grade": float(np.mean(np.abs(P.argmax(axis=1) - rank))), "c_index_grade": float(c_index)}
