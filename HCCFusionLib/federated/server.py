"""Server side: combine site aggregates into the pooled fit (federated Newton, distributed ComBat)."""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np

from ..errors import InputError, ModelError

if TYPE_CHECKING:
    from ..fusion.blocks import ComBat

log = logging.getLogger(__name__)


def newton_step(aggregates: Sequence[Mapping[str, np.ndarray]], beta, C: float = np.inf,
                intercept: bool = True) -> np.ndarray:
    """One Newton step of a ridge-penalised log-likelihood (penalty ||beta||^2 / 2C) from the sites' summed
    gradients and information matrices; with `intercept` the first coefficient is free.

    Logistic: the objective of `fusion.logistic.fit_logistic`; Cox (intercept=False): that of scikit-survival's
    `CoxPHSurvivalAnalysis(alpha=1/C)`, stratified by site.
    """
    if not aggregates:
        raise InputError("Federated Newton needs aggregates from at least one site.")
    beta = np.asarray(beta, dtype=float)
    gradient = sum(np.asarray(a["gradient"], dtype=float) for a in aggregates)
    information = sum(np.asarray(a["information"], dtype=float) for a in aggregates)
    penalty = np.eye(len(beta)) * (0.0 if np.isinf(C) else 1.0 / C)
    if intercept:
        penalty[0, 0] = 0.0
    step = np.linalg.lstsq(information + penalty + 1e-9 * np.eye(len(beta)), gradient - penalty @ beta,
                           rcond=None)[0]
    return beta + step


def federated_newton(sites: Sequence[Callable[[np.ndarray], Mapping[str, np.ndarray]]], n_coefficients: int,
                     C: float = np.inf, iterations: int = 50, tol: float = 1e-9, intercept: bool = True) -> np.ndarray:
    """Federated Newton: each round sends beta to every site (`site(beta)` -> aggregates) and takes one step."""
    beta = np.zeros(n_coefficients)
    for round_ in range(iterations):
        new = newton_step([site(beta) for site in sites], beta, C, intercept)
        step, beta = np.max(np.abs(new - beta)), new
        log.info("federated Newton round %d: max step %.3g", round_ + 1, step)
        if step < tol:
            return beta
    log.warning("federated Newton did not converge in %d rounds (last step %.3g)", iterations, step)
    return beta


def federated_logistic(sites: Sequence[Callable[[np.ndarray], Mapping[str, np.ndarray]]], n_coefficients: int,
                       C: float = np.inf, iterations: int = 50, tol: float = 1e-9) -> np.ndarray:
    """Ridge logistic regression (intercept first) by federated Newton: `site(beta)` -> `site.logistic_aggregates`."""
    return federated_newton(sites, n_coefficients, C, iterations, tol, intercept=True)


def federated_cox(sites: Sequence[Callable[[np.ndarray], Mapping[str, np.ndarray]]], n_coefficients: int,
                  alpha: float = 0.0, iterations: int = 50, tol: float = 1e-9) -> np.ndarray:
    """Site-stratified Cox by federated Newton: `site(beta)` -> `site.cox_aggregates`; ridge `alpha` as in
    scikit-survival's `CoxPHSurvivalAnalysis` (no intercept)."""
    return federated_newton(sites, n_coefficients, 1.0 / alpha if alpha else np.inf, iterations, tol, intercept=False)


def combat_from_stats(stats: Mapping[str, Mapping[str, np.ndarray]], feature_names, batch_column: str = "center",
                      empirical_bayes: bool = True) -> ComBat:
    """A fitted `fusion.blocks.ComBat` from per-site `site.combat_stats` ({site: stats}): distributed ComBat.

    Pooled mean, pooled within-site scale, site shifts and scales with the same empirical-Bayes shrinkage as
    the pooled fit, all from counts, sums and centred sums of squares: equal to the pooled `ComBat()` (no
    covariates, no reference batch; those need more than these per-site sums).
    """
    levels = sorted(str(s) for s in stats)
    if not levels:
        raise InputError("Distributed ComBat needs statistics from at least one site.")
    from ..fusion.blocks import ComBat, eb_shrink_stats  # scikit-learn: only where ComBat is fitted (not at sites)
    count = np.array([np.asarray(stats[s]["count"], dtype=float) for s in levels])
    total = np.array([np.asarray(stats[s]["sum"], dtype=float) for s in levels])
    centred = np.array([np.asarray(stats[s]["centred"], dtype=float) for s in levels])
    if count.shape[1] != len(feature_names):
        raise ModelError(f"Sites sent statistics for {count.shape[1]} features, expected {len(feature_names)}: "
                         "all sites must use the same feature columns.")
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total.sum(0) / count.sum(0)
        std = np.sqrt(centred.sum(0) / count.sum(0))
        std[~(std > 1e-12)] = 1.0
        site_mean = total / count
        gamma_hat = (site_mean - mean) / std
        delta_hat = centred / (count - 1) / std**2
    delta_hat[~(delta_hat > 1e-12)] = 1.0
    gamma, delta = gamma_hat, delta_hat
    if empirical_bayes:
        gamma, delta = np.empty_like(gamma_hat), np.empty_like(delta_hat)
        for i in range(len(levels)):
            gamma[i], delta[i] = eb_shrink_stats(count[i], centred[i] / std**2, gamma_hat[i], delta_hat[i])
    return ComBat.from_parameters(feature_names, levels, mean, std, gamma, delta, batch_column=batch_column,
                                  empirical_bayes=empirical_bayes)


def federated_combat(sites: Mapping[str, Callable[[], Mapping[str, np.ndarray]]], feature_names,
                     batch_column: str = "center", empirical_bayes: bool = True) -> ComBat:
    """Distributed ComBat in one round: ask every site (`site()` -> `combat_stats`) and combine."""
    return combat_from_stats({name: site() for name, site in sites.items()}, feature_names, batch_column,
                             empirical_bayes)
