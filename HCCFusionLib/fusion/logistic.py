"""Small binary logistic regression by Newton's method, with the coefficient covariance (Wald intervals).

Used where a few-parameter logistic model needs its uncertainty: combiners, calibration slope/intercept,
nomograms. Large models use scikit-learn.
"""
from __future__ import annotations

import numpy as np


def expit(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=float)))


def logit(p, eps=1e-6):
    p = np.clip(np.asarray(p, dtype=float), eps, 1 - eps)
    return np.log(p / (1 - p))


def fit_logistic(Z, y, C=np.inf, offset=None, iterations=100):
    """Ridge-penalised (1/C on the slopes, intercept free) logistic regression of binary y on Z (n, d).

    Returns (beta, cov): coefficients with the intercept first, and their covariance (inverse penalised
    information). `offset` is added to the linear predictor with a fixed coefficient of 1.
    """
    Z = np.asarray(Z, dtype=float).reshape(len(y), -1)
    y = np.asarray(y, dtype=float)
    offset = np.zeros(len(y)) if offset is None else np.asarray(offset, dtype=float)
    design = np.column_stack([np.ones(len(Z)), Z])
    penalty = np.eye(design.shape[1]) * (0.0 if np.isinf(C) else 1.0 / C)
    penalty[0, 0] = 0.0
    beta = np.zeros(design.shape[1])

    def information(beta):
        p = expit(offset + design @ beta)
        return p, design.T @ (design * (p * (1 - p))[:, None]) + penalty

    for _ in range(iterations):
        p, info = information(beta)
        step = np.linalg.lstsq(info + 1e-9 * np.eye(len(beta)), design.T @ (y - p) - penalty @ beta, rcond=None)[0]
        beta = beta + step
        if np.max(np.abs(step)) < 1e-9:
            break
    return beta, np.linalg.pinv(information(beta)[1])


def wald_interval(design, beta, cov, z=1.959964):
    """Linear predictor and its 95% Wald interval for rows of `design` (intercept column included)."""
    eta = design @ beta
    se = np.sqrt(np.clip(np.einsum("ij,jk,ik->i", design, cov, design), 0, None))
    return eta, eta - z * se, eta + z * se
