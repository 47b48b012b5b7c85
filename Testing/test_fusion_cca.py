"""CCA and sparse CCA (Witten et al. 2009 PMD) on data with a planted canonical pair, and CCA as a fusion block."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from HCCFusionLib.errors import InputError
from HCCFusionLib.fusion.cca import CCAFusion, CanonicalVariates, sparse_cca
from HCCFusionLib.fusion.evaluation import nested_cv, roc_auc_ci

# planted pair: X_0..2 = u + N(0, 0.5^2), Y_0..1 = u + N(0, 1); the best linear combinations are the means, whose
# correlation is corr(mean X, u) * corr(mean Y, u) = 1/sqrt(1 + 0.25/3) * 1/sqrt(1 + 1/2)
EXPECTED_RHO = 1 / np.sqrt(1 + 0.25 / 3) / np.sqrt(1.5)


def _planted(n, p, q, seed):
    rng = np.random.default_rng(seed)
    u = rng.normal(size=n)
    X, Y = rng.normal(size=(n, p)), rng.normal(size=(n, q))
    X[:, :3] = u[:, None] + rng.normal(0, 0.5, (n, 3))
    Y[:, :2] = u[:, None] + rng.normal(0, 1.0, (n, 2))
    return X, Y, u


def _held_out_rho(wx, wy, seed, p, q):
    X, Y, _ = _planted(4000, p, q, seed + 100)
    return abs(np.corrcoef(X @ wx, Y @ wy)[0, 1])


def test_sparse_cca_finds_the_planted_pair_and_only_it():
    X, Y, _ = _planted(300, 40, 30, seed=0)
    # L1 bounds just under those of the planted unit weights (sqrt 3, sqrt 2): the bound forces their support
    U, V, d = sparse_cca(X, Y, penalty_x=(1.6 - 1) / (np.sqrt(40) - 1), penalty_y=(1.35 - 1) / (np.sqrt(30) - 1),
                         n_components=2)
    u, v = U[:, 0], V[:, 0]
    assert set(np.flatnonzero(u)) == {0, 1, 2} and set(np.flatnonzero(v)) == {0, 1}
    assert np.linalg.norm(u) == pytest.approx(1) and np.linalg.norm(v) == pytest.approx(1)
    assert np.abs(u).sum() <= 1.6 + 1e-6 and np.abs(v).sum() <= 1.35 + 1e-6
    assert d[0] > 2 * abs(d[1])  # a single planted pair: the second is at the noise level
    rho = _held_out_rho(u / X.std(0), v / Y.std(0), 0, 40, 30)
    assert rho == pytest.approx(EXPECTED_RHO, abs=0.03), (rho, EXPECTED_RHO)
    dense, _, _ = sparse_cca(X, Y, penalty_x=1.0, penalty_y=1.0)  # no L1 bound: every weight non-zero
    assert np.count_nonzero(dense) == 40
    with pytest.raises(InputError, match="fraction"):
        sparse_cca(X, Y, penalty_x=0)


def test_plain_cca_reaches_the_planted_correlation():
    X, Y, _ = _planted(1000, 5, 4, seed=1)
    cv = CanonicalVariates([range(5), range(5, 9)], n_components=1, sparse=False).fit(np.hstack([X, Y]))
    assert cv.correlations_[0] == pytest.approx(EXPECTED_RHO, abs=0.04)
    W = cv.weights_ / cv.scale_[:, None]
    rho = _held_out_rho(W[:5, 0], W[5:, 1], 1, 5, 4)
    assert rho == pytest.approx(EXPECTED_RHO, abs=0.03)


def _two_view_table(n, seed):
    """CT and MR blocks sharing a latent trait that drives the outcome, plus noise columns and a clinical one."""
    X, Y, u = _planted(n, 12, 10, seed)
    rng = np.random.default_rng(seed)
    table = pd.DataFrame({**{f"AP__tumour__f{j}": X[:, j] for j in range(12)},
                          **{f"HBP__tumour__f{j}": Y[:, j] for j in range(10)},
                          "age": rng.normal(60, 10, n)}, index=[f"P{i}" for i in range(n)])
    y = (u + rng.logistic(0, 0.4, n) > 0).astype(int)
    return table, y


def test_cca_fusion_block_predicts_and_explains(tmp_path):
    X, y = _two_view_table(200, seed=2)
    model = CCAFusion(n_components=2, sparse=True, penalty=0.3).fit(X, y)
    assert model.views_ == [["AP"], ["HBP"]]  # CT phase vs MRI sequence
    cca = model.pipeline_.named_steps["cca"]
    assert cca.correlations_[0] == pytest.approx(EXPECTED_RHO, abs=0.08)
    auc = roc_auc_ci(y, nested_cv(CCAFusion(sparse=True), X, y, kind="binary", outer=3).prediction, n_boot=50)["auc"]
    assert auc > 0.85, auc
    # contributions are exact: baseline + feature terms = the model's log-odds
    from HCCFusionLib.fusion.explain import contributions

    table = contributions(model, X.iloc[:10])
    total = table.groupby("patient_id", sort=False).contribution.sum().reindex(X.index[:10])
    assert np.allclose(total.to_numpy(), model.decision_function(X.iloc[:10]), atol=1e-6)
    # bundle round trip with the trusted types
    from HCCFusionLib.fusion.bundle import load_bundle, save_bundle

    save_bundle(model, tmp_path / "b", {"endpoint": "y", "kind": "binary"})
    again = load_bundle(tmp_path / "b").model
    assert np.allclose(again.predict_proba(X), model.predict_proba(X))


def test_cca_fusion_through_train_and_predict(tmp_path):
    from HCCFusionLib.fusion.workflow import ModelSpec, predict, train

    X, y = _two_view_table(120, seed=3)
    clinical = pd.DataFrame({"mvi": y}, index=X.index)
    path = train(X, clinical, "mvi", tmp_path / "m", ModelSpec(fusion="scca"), cv=3)
    out = predict(X.iloc[:4], clinical.iloc[:4], path, tmp_path / "p")
    assert out["prediction"].probability.between(0, 1).all() and out["prediction"].interval.eq("none").all()
    with pytest.raises(InputError, match="two imaging blocks"):
        CCAFusion().fit(X[[c for c in X.columns if not c.startswith("HBP")]], y)
