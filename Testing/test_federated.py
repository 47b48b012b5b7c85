"""Federated fitting (HCCFusionLib.federated): on a planted 3-site cohort with site effects, distributed ComBat
equals the pooled ComBat and federated Newton equals the pooled ridge logistic fit; sites send only aggregates."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from HCCFusionLib.errors import InputError, ModelError
from HCCFusionLib.federated import (combat_from_stats, combat_stats, federated_combat, federated_logistic,
                                    harmonise, logistic_aggregates)
from HCCFusionLib.fusion.blocks import ComBat
from HCCFusionLib.fusion.logistic import expit, fit_logistic

SITES = ("A", "B", "C")
FEATURES = [f"PVP__tumour__f{i}" for i in range(10)]


def planted_cohort(rows=60, seed=0, missing=0.0):
    """{site: (features DataFrame, binary outcome)}: latent features drive the outcome; each site adds its own
    shift and scale per feature (the batch effect ComBat removes)."""
    rng = np.random.default_rng(seed)
    weights = np.array([1.2, -0.8, 0.6, 0, 0, 0.4, 0, 0, -0.5, 0])
    cohort = {}
    for k, site in enumerate(SITES):
        latent = rng.normal(size=(rows + 10 * k, len(FEATURES)))
        y = (rng.random(len(latent)) < expit(latent @ weights - 0.3)).astype(float)
        shift, scale = rng.normal(0, 1.5, len(FEATURES)), rng.uniform(0.5, 2.0, len(FEATURES))
        values = latent * scale + shift + 3.0
        if missing:
            values[rng.random(values.shape) < missing] = np.nan
        cohort[site] = (pd.DataFrame(values, columns=FEATURES), y)
    return cohort


def pooled(cohort):
    X = pd.concat([x.assign(center=s) for s, (x, _) in cohort.items()], ignore_index=True)
    return X, np.concatenate([y for _, y in cohort.values()])


def fit_distributed(cohort, **kw):
    return federated_combat({s: (lambda x=x: combat_stats(x.to_numpy())) for s, (x, _) in cohort.items()},
                            FEATURES, **kw)


@pytest.mark.parametrize("missing, empirical_bayes", [(0.0, True), (0.05, True), (0.0, False)])
def test_distributed_combat_equals_pooled(missing, empirical_bayes):
    cohort = planted_cohort(missing=missing)
    X, _ = pooled(cohort)
    reference = ComBat(empirical_bayes=empirical_bayes).fit(X)
    combat = fit_distributed(cohort, empirical_bayes=empirical_bayes)
    for name in ("mean_", "std_", "gamma_", "delta_"):
        np.testing.assert_allclose(getattr(combat, name), getattr(reference, name), atol=1e-9, rtol=0)
    expected = reference.transform(X)
    for site, (x, _) in cohort.items():
        mine = harmonise(x, combat, site).to_numpy()
        np.testing.assert_allclose(mine, expected[(X["center"] == site).to_numpy()], atol=1e-6, rtol=0)
        assert np.array_equal(np.isnan(mine), x.isna().to_numpy())
    # the site effects are real: harmonisation moves the site means together
    raw = np.array([x.mean().to_numpy() for x, _ in cohort.values()])
    done = np.array([harmonise(x, combat, s).mean().to_numpy() for s, (x, _) in cohort.items()])
    assert np.ptp(done, axis=0).mean() < 0.5 * np.ptp(raw, axis=0).mean()


def test_federated_newton_equals_pooled_logistic():
    cohort = planted_cohort()
    combat = fit_distributed(cohort)
    local = {s: (harmonise(x, combat, s).to_numpy(), y) for s, (x, y) in cohort.items()}
    sites = [lambda beta, x=x, y=y: logistic_aggregates(x, y, beta) for x, y in local.values()]
    C = 1.0
    beta = federated_logistic(sites, len(FEATURES) + 1, C=C)
    Z = np.vstack([x for x, _ in local.values()])
    y = np.concatenate([y for _, y in local.values()])
    central, _ = fit_logistic(Z, y, C=C)
    assert np.max(np.abs(beta - central)) < 1e-3
    design = np.column_stack([np.ones(len(Z)), Z])
    auc_fed, auc_central = roc_auc_score(y, design @ beta), roc_auc_score(y, design @ central)
    assert abs(auc_fed - auc_central) < 0.01 and auc_central > 0.7


def test_site_messages_are_aggregates_only():
    """The shapes of what a site sends depend on the number of features, never on its number of rows."""
    small, large = planted_cohort(rows=20, seed=1)["A"], planted_cohort(rows=200, seed=1)["A"]
    beta = np.full(len(FEATURES) + 1, 0.1)
    for make in (lambda c: logistic_aggregates(c[0].to_numpy(), c[1], beta),
                 lambda c: combat_stats(c[0].to_numpy())):
        a, b = make(small), make(large)
        assert a.keys() == b.keys()
        assert all(a[k].shape == b[k].shape and a[k].size <= (len(FEATURES) + 1) ** 2 for k in a)


def test_errors_say_what_to_do():
    cohort = planted_cohort(rows=10)
    x, y = cohort["A"]
    with pytest.raises(InputError, match="same feature columns"):
        logistic_aggregates(x.to_numpy(), y, np.zeros(3))
    with pytest.raises(InputError, match="impute"):
        logistic_aggregates(np.full((3, 2), np.nan), np.zeros(3), np.zeros(3))
    with pytest.raises(ModelError, match="same feature columns"):
        combat_from_stats({"A": combat_stats(x.to_numpy()[:, :3])}, FEATURES)
    combat = fit_distributed(cohort)
    with pytest.raises(ModelError, match="not in the training data"):
        harmonise(x, combat, "Z")


@pytest.mark.slow
def test_flower_processes_fit_the_pooled_model_and_sites_send_aggregates_only(tmp_path):
    """SuperLink, three SuperNodes and the ServerApp run as separate processes on loopback; the audit mod records
    every message each site sends: only per-feature aggregates, never rows."""
    pytest.importorskip("flwr")
    from HCCFusionLib.federated.processes import run_local

    cohort, tables = planted_cohort(), {}
    for site, (x, y) in cohort.items():
        tables[site] = tmp_path / f"{site}.csv"
        x.assign(outcome=y).to_csv(tables[site], index=False)
    audit = tmp_path / "audit.jsonl"
    result = run_local(tables, tmp_path / "run", C=1.0, audit=audit)

    X, y = pooled(cohort)
    reference = ComBat().fit(X)
    np.testing.assert_allclose(result["mean"], reference.mean_, atol=1e-9)
    np.testing.assert_allclose(result["std"], reference.std_, atol=1e-9)
    Z = reference.transform(X)
    central, _ = fit_logistic(Z, y, C=1.0)
    beta = np.array(result["coefficients"])
    assert np.max(np.abs(beta - central)) < 1e-3
    design = np.column_stack([np.ones(len(Z)), Z])
    assert abs(roc_auc_score(y, design @ beta) - roc_auc_score(y, design @ central)) < 0.01

    entries = [__import__("json").loads(line) for line in audit.read_text().splitlines()]
    d, rows = len(FEATURES), {len(x) for x, _ in cohort.values()}
    assert {e["site"] for e in entries} == set(SITES)
    assert len(entries) == len(SITES) * (1 + result["rounds"])
    allowed = {"combat_stats": {"stats.count": [d], "stats.sum": [d], "stats.centred": [d]},
               "logistic": {"aggregates.gradient": [d + 1], "aggregates.information": [d + 1, d + 1],
                            "aggregates.n": [1]}}  # Flower sends a 0-d array as shape [1]
    for entry in entries:
        assert entry["arrays"] == allowed[entry["task"]], entry
        assert not entry["configs"] and not entry["metrics"], entry
        assert not rows & {n for shape in entry["arrays"].values() for n in shape}


def test_cli_federated_says_what_is_missing(capsys):
    from HCCFusionLib.cli import main

    assert main(["federated", "server"]) != 0
    assert main(["federated", "client", "--site", "A"]) != 0
    assert main(["federated", "server", "--local", "A=/no/such.csv"]) != 0
    err = capsys.readouterr().err
    assert "--sites N" in err and "--superlink HOST:PORT" in err and "SITE=CSV" in err
