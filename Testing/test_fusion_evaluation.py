"""Evaluation statistics, explanations and the nomogram, checked against direct computations."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from HCCFusionLib.fusion.data import assemble
from HCCFusionLib.fusion.decision_level import DecisionFusion
from HCCFusionLib.fusion.evaluation import (calibration, decision_curve, delong_test, report_binary, roc_auc_ci,
                                            sensitivity_specificity)
from HCCFusionLib.fusion.explain import contributions
from HCCFusionLib.fusion.feature_level import FeatureFusion
from HCCFusionLib.fusion.logistic import expit, logit
from HCCFusionLib.fusion.nomogram import Nomogram, clinical_covariates, radiomics_score
from HCCFusionLib.fusion.survival import SurvivalFusion
from HCCFusionLib.phantom import make_cohort


@pytest.fixture(scope="module")
def cohort():
    return make_cohort(200, seed=8)


@pytest.fixture(scope="module")
def mvi(cohort):
    X, y, _ = assemble(cohort.simulated_features(), cohort.table, "mvi")
    return X, y


def _delong_slow(y, p1, p2):
    """DeLong, Delong & Clarke-Pearson (1988) directly from the pairwise kernel psi(x, y) (O(m n))."""
    pos, neg = y == 1, y == 0

    def components(p):
        psi = (p[pos][:, None] > p[neg][None, :]) + 0.5 * (p[pos][:, None] == p[neg][None, :])
        return psi.mean(), psi.mean(axis=1), psi.mean(axis=0)

    (a1, v10_1, v01_1), (a2, v10_2, v01_2) = components(p1), components(p2)
    s10 = np.cov(np.vstack([v10_1, v10_2]))
    s01 = np.cov(np.vstack([v01_1, v01_2]))
    cov = s10 / pos.sum() + s01 / neg.sum()
    return a1 - a2, np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])


def test_delong_matches_the_direct_definition_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 150)
    p1 = np.round(y + rng.normal(0, 1.0, 150), 1)  # rounded: ties included
    p2 = np.round(y + rng.normal(0, 1.6, 150), 1)
    result = delong_test(y, p1, p2)
    diff, se = _delong_slow(y, p1, p2)
    assert result["auc_1"] == pytest.approx(roc_auc_score(y, p1))
    assert result["difference"] == pytest.approx(diff)
    assert result["se"] == pytest.approx(se)
    assert 0 <= result["p_value"] < 0.05  # the stronger score wins clearly
    same = delong_test(y, p1, 2 * p1 + 1)  # a monotone transform has the same ROC curve
    assert same["difference"] == pytest.approx(0.0) and same["p_value"] == pytest.approx(1.0)


def test_auc_ci_sensitivity_and_decision_curve():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    p = expit(1.5 * (y - 0.5) + rng.normal(size=300))
    auc = roc_auc_ci(y, p, n_boot=300)
    assert auc["auc_low"] < auc["auc"] < auc["auc_high"] and auc["auc_high"] - auc["auc_low"] < 0.15
    s = sensitivity_specificity(y, p, 0.5)
    assert s["sensitivity"] == pytest.approx(np.mean(p[y == 1] >= 0.5))
    assert s["specificity"] == pytest.approx(np.mean(p[y == 0] < 0.5))
    dca = decision_curve(y, p, thresholds=[0.2, 0.5])
    t = 0.2
    expected = (np.sum((p >= t) & (y == 1)) - np.sum((p >= t) & (y == 0)) * t / (1 - t)) / len(y)
    assert dca.net_benefit_model.iloc[0] == pytest.approx(expected)
    assert dca.net_benefit_all.iloc[0] == pytest.approx(y.mean() - (1 - y.mean()) * 0.25)


def test_calibration_slope_and_intercept_recover_known_miscalibration():
    rng = np.random.default_rng(2)
    true_logit = rng.normal(0, 1.5, 20000)
    y = (rng.random(20000) < expit(true_logit)).astype(int)
    good, _ = calibration(y, expit(true_logit))
    over, _ = calibration(y, expit(2.0 * true_logit))  # over-confident: slope 0.5
    shifted, curve = calibration(y, expit(true_logit + 1.0))  # predicts too high: intercept -1
    assert good["slope"] == pytest.approx(1.0, abs=0.05) and good["intercept"] == pytest.approx(0.0, abs=0.05)
    assert over["slope"] == pytest.approx(0.5, abs=0.03)
    assert shifted["intercept"] == pytest.approx(-1.0, abs=0.06)
    assert len(curve) == 10 and (np.diff(curve.predicted) > 0).all()


def test_report_binary_writes_tables_and_plots(tmp_path):
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    p, q = expit(2 * (y - 0.5) + rng.normal(size=200)), expit(0.5 * (y - 0.5) + rng.normal(size=200))
    metrics = report_binary(y, p, tmp_path, others={"weak": q}, n_boot=100)
    for name in ("metrics.csv", "roc.csv", "roc.png", "calibration.csv", "calibration.png", "decision_curve.csv",
                 "decision_curve.png", "delong.csv"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"
    delong = pd.read_csv(tmp_path / "delong.csv")
    assert delong.p_value.iloc[0] < 0.05 and metrics["auc"] > delong.auc_2.iloc[0]


@pytest.mark.parametrize("options", [dict(), dict(pca=0.9, harmonize=True), dict(classifier="rf"),
                                     dict(classifier="gb", selection="univariate")])
def test_feature_contributions_add_up_to_the_prediction(mvi, options):
    X, y = mvi
    model = FeatureFusion(**options).fit(X.iloc[:150], y[:150])
    table = contributions(model, X.iloc[150:])
    total = table.groupby("patient_id", sort=False).contribution.sum().to_numpy()
    p = model.predict_proba(X.iloc[150:])[:, 1]
    expected = p if table.units.iloc[0] == "probability" else logit(p, eps=1e-15)
    assert np.allclose(total, expected, atol=1e-9)
    baseline = table[table.kind == "baseline"].contribution
    assert np.allclose(baseline, baseline.iloc[0])  # one constant for everybody
    if options.get("pca") is None and options.get("classifier", "logistic") == "logistic":
        # exact linear terms: coefficient x standardised value, and the measured value is the table's own
        row = table[(table.kind == "feature") & table.name.str.startswith("AP__")].iloc[0]
        assert row.value == pytest.approx(X.loc[row.patient_id, row["name"]])
        assert np.sign(row.contribution) in (np.sign(row.z), -np.sign(row.z))


def test_decision_and_survival_contributions_are_exact(cohort, mvi):
    X, y = mvi
    model = DecisionFusion(combine="stack", cv=3).fit(X.iloc[:150], y[:150])
    Xt = X.iloc[150:].copy()
    Xt.loc[Xt.index[:10], model.blocks_["ADC"] + model.blocks_["HBP"]] = np.nan
    table = contributions(model, Xt)
    fused = table[table.kind.isin(["baseline", "block"])].groupby("patient_id", sort=False).contribution.sum()
    assert np.allclose(fused.loc[Xt.index], logit(model.predict_proba(Xt)[:, 1]), atol=1e-9)
    assert set(table[(table.patient_id == Xt.index[0]) & (table.kind == "block")].name) == {
        "AP", "DP", "PVP", "clinical"}
    Xs, ys, _ = assemble(cohort.simulated_features(), cohort.table, "survival")
    surv = SurvivalFusion().fit(Xs, ys)
    terms = contributions(surv, Xs.iloc[:20])
    assert np.allclose(terms.groupby("patient_id", sort=False).contribution.sum(), surv.predict(Xs.iloc[:20]))


def test_nomogram_from_radiomics_score_and_raw_labs(cohort, mvi, tmp_path):
    X, y = mvi
    imaging = X[[c for c in X.columns if "__" in c]]
    score = radiomics_score(FeatureFusion(), imaging, y, cv=5)
    covariates = clinical_covariates(cohort.table).join(score)
    # Child-Pugh and ALBI come from the raw labs, e.g. the first patient by hand:
    first = cohort.table.iloc[0]
    from HCCFusionLib.clinical import albi, child_pugh

    assert covariates.child_pugh_score.iloc[0] == child_pugh(first.bilirubin, first.albumin, first.inr,
                                                             first.ascites, first.encephalopathy).score
    assert covariates.albi_score.iloc[0] == pytest.approx(albi(first.bilirubin, first.albumin).score)
    nomogram = Nomogram().fit(covariates, y)
    points = nomogram.points(covariates)
    # the widest effect spans exactly 0-100 points between its 1st and 99th percentile; others span less
    ends = nomogram.points(pd.DataFrame([nomogram.low_, nomogram.high_], columns=nomogram.variables_))
    spans = ends.drop(columns="total_points").diff().abs().iloc[1]
    assert spans.max() == pytest.approx(100.0) and (spans <= 100.0 + 1e-9).all()
    assert (ends.drop(columns="total_points").min() >= -1e-9).all()  # the reference end scores 0 points
    # the probability read off the total-points axis is the model's probability
    assert np.allclose(expit(nomogram._lp_of_total(points.total_points)), nomogram.predict_proba(covariates))
    beta = dict(zip(nomogram.variables_, nomogram.coef_[1:]))
    assert beta["radiomics_score"] > 0 and beta["log10_afp"] > 0  # both planted
    combined = roc_auc_score(y, nomogram.predict_proba(covariates))
    assert combined > roc_auc_score(y, score)  # clinical data add to the imaging score
    intervals = nomogram.predict_interval(covariates)
    assert (intervals.low < intervals.probability).all() and (intervals.probability < intervals.high).all()
    assert nomogram.draw(tmp_path / "nomogram.png").read_bytes()[:4] == b"\x89PNG"
    Xs, ys, _ = assemble(cohort.simulated_features(), cohort.table, "survival")
    cox = Nomogram(kind="cox").fit(clinical_covariates(cohort.table).join(
        radiomics_score(SurvivalFusion(), Xs[[c for c in Xs.columns if "__" in c]], ys)), ys)
    assert cox.draw(tmp_path / "cox.png", time=24.0).is_file()


def test_top_contributions_of_one_patient_by_magnitude():
    from HCCFusionLib.fusion.explain import top_contributions

    table = pd.DataFrame({"patient_id": ["a", "a", "a", "a", "b"], "name": ["x", "y", "z", "ct", "x"],
                          "kind": ["feature", "feature", "feature", "block", "feature"],
                          "block": ["ct", "ct", "clin", "ct", "ct"], "value": [1.0, 2.0, 3.0, 0.0, 9.0],
                          "z": [0.1, 0.2, 0.3, 0.0, 0.9], "contribution": [0.2, -0.5, 0.2, 3.0, 9.0]})
    top = top_contributions(table, "a", n=2)
    assert list(top.columns) == ["name", "block", "value", "contribution"]
    assert top["name"].tolist() == ["y", "x"]  # |-0.5| first; ties keep table order; block rows left out
    assert top_contributions(table[table.patient_id == "b"], "other")["name"].tolist() == ["x"]  # one patient
