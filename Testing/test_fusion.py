"""Fusion must-shows on phantom cohorts (planted signal split over AP, PVP/DP, MRI and clinical blocks).

Every estimate is out-of-fold from (nested) cross-validation with fixed seeds; measured values are printed
with `pytest -s` for the report.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from HCCFusionLib.errors import InputError, ModelError
from HCCFusionLib.fusion.blocks import ComBat, Selector, split_blocks
from HCCFusionLib.fusion.data import assemble
from HCCFusionLib.fusion.decision_level import DecisionFusion
from HCCFusionLib.fusion.evaluation import calibration, nested_cv, roc_auc_ci, survival_metrics
from HCCFusionLib.fusion.feature_level import FeatureFusion
from HCCFusionLib.fusion.survival import SurvivalFusion
from HCCFusionLib.phantom import make_cohort


@pytest.fixture(scope="module")
def cohort():
    return make_cohort(300, seed=11)


@pytest.fixture(scope="module")
def mvi(cohort):
    X, y, kind = assemble(cohort.simulated_features(), cohort.table, "mvi")
    assert kind == "binary"
    return X, y


def _auc(model, X, y, **kw):
    result = nested_cv(model, X, y, kind="binary", seed=0, **kw)
    return roc_auc_ci(y, result.prediction, n_boot=200)["auc"], result.prediction


def test_blocks_follow_column_prefixes(mvi):
    X, _ = mvi
    blocks = split_blocks(X.columns)
    assert list(blocks) == ["ADC", "AP", "DP", "HBP", "PVP", "clinical"]
    assert all(c.startswith("AP__") for c in blocks["AP"])
    assert "afp" in blocks["clinical"] and "center" not in blocks["clinical"]
    assert not any(c.startswith("latent_") or c in ("mvi", "event") for cols in blocks.values() for c in cols)


def test_fused_models_beat_every_single_block_and_are_calibrated(mvi):
    X, y = mvi
    blocks = split_blocks(X.columns)
    single = {name: _auc(FeatureFusion(blocks={name: cols}), X, y)[0] for name, cols in blocks.items()}
    best = max(single.values())
    feature_auc, p_feature = _auc(FeatureFusion(harmonize=True), X, y, param_grid={"C": [0.05, 0.2]}, inner=3)
    decision_auc, p_decision = _auc(DecisionFusion(combine="stack", harmonize=True), X, y)
    slopes = {"feature": calibration(y, p_feature)[0]["slope"], "decision": calibration(y, p_decision)[0]["slope"]}
    print(f"\nsingle-block AUCs {single}; feature-level {feature_auc:.3f}; decision-level {decision_auc:.3f}; "
          f"calibration slopes {slopes}")
    assert feature_auc >= best + 0.05
    assert decision_auc >= best + 0.05
    for slope in slopes.values():
        assert 0.8 <= slope <= 1.2


def test_decision_fusion_with_blocks_removed_degrades_gracefully():
    cohort = make_cohort(500, seed=23)
    X, y, _ = assemble(cohort.simulated_features(), cohort.table, "mvi")
    train, test = slice(0, 300), slice(300, 500)
    model = DecisionFusion(combine="bayes", harmonize=True).fit(X.iloc[train], y[train])
    Xt, yt = X.iloc[test], y[test]

    def without(*names):
        out = Xt.copy()
        for name in names:
            out[model.blocks_[name]] = np.nan
        return out

    scenarios = {"all": Xt, "no MRI": without("ADC", "HBP"), "no clinical": without("clinical"),
                 "CT only": without("ADC", "HBP", "clinical"), "AP only": without("ADC", "HBP", "clinical", "DP", "PVP")}
    aucs = {k: roc_auc_ci(yt, model.predict_proba(v)[:, 1], n_boot=10)["auc"] for k, v in scenarios.items()}
    intervals = model.predict_interval(scenarios["no MRI"])
    print(f"\nheld-out AUC by available blocks: {aucs}")
    assert aucs["all"] > 0.8
    # one block of four (a quarter of the planted signal) alone still beats chance; any two or more clearly
    assert aucs["AP only"] > 0.58 and min(aucs["no MRI"], aucs["no clinical"], aucs["CT only"]) > 0.7
    # graceful: each removal costs a little, no cliff
    assert aucs["all"] >= aucs["no MRI"] - 0.02 >= aucs["CT only"] - 0.04 >= aucs["AP only"] - 0.06
    assert aucs["all"] - aucs["no MRI"] < 0.12 and aucs["all"] - aucs["no clinical"] < 0.12
    # the uncertainty that goes with fewer blocks: the subset's own out-of-fold AUC is reported and lower
    assert set(intervals.blocks_used) == {"AP+DP+PVP+clinical"}
    table = model.subset_table()
    assert table.loc["ADC+AP+DP+HBP+PVP+clinical", "auc"] > table.loc["AP+DP+PVP+clinical", "auc"] > \
        table.loc["AP", "auc"]
    assert (intervals.low < intervals.probability).all() and (intervals.probability < intervals.high).all()
    with pytest.raises(ModelError, match="none of the model's blocks"):
        model.predict_proba(without(*model.blocks_))


# linear pooling ('weighted') and hard votes ('majority') cannot add up independent evidence the way log-odds
# rules ('stack', 'bayes') do, so they are expected to be weaker on this planted model
@pytest.mark.parametrize("combine, floor", [("weighted", 0.62), ("majority", 0.62), ("vote", 0.75), ("stack", 0.75)])
def test_every_combination_rule_beats_chance_on_held_out_patients(combine, floor):
    cohort = make_cohort(260, seed=5)
    X, y, _ = assemble(cohort.simulated_features(), cohort.table, "mvi")
    model = DecisionFusion(combine=combine, cv=4).fit(X.iloc[:180], y[:180])
    auc = roc_auc_ci(y[180:], model.predict_proba(X.iloc[180:])[:, 1], n_boot=10)["auc"]
    assert auc > floor, (combine, auc)


def test_pure_noise_features_give_chance_auc_under_nested_cv(cohort):
    rng = np.random.default_rng(0)
    n, y = 120, cohort.table["mvi"].to_numpy()[:120]
    noise = pd.DataFrame(rng.normal(size=(n, 200)), index=cohort.table.index[:n],
                         columns=[f"{b}__tumour__f{j}" for b in ("AP", "PVP", "DP", "ADC") for j in range(50)])
    aucs = [_auc(FeatureFusion(selection=s, k=5), noise, y)[0] for s in ("lasso", "univariate")]
    # a leaky pipeline: choose the 10 features most associated with y on ALL patients, then cross-validate
    from sklearn.feature_selection import f_classif

    top = np.argsort(-f_classif(noise.to_numpy(), y)[0])[:10]
    leaky = _auc(FeatureFusion(selection=None), noise.iloc[:, top], y)[0]
    print(f"\nnoise AUCs (nested, lasso/univariate): {aucs}; leaky selection: {leaky:.3f}")
    assert all(abs(a - 0.5) < 0.1 for a in aucs)
    assert leaky > 0.7  # the same test would catch leakage


def test_survival_c_index_and_km_separation(cohort):
    X, y, kind = assemble(cohort.simulated_features(), cohort.table, "survival")
    assert kind == "survival"
    result = nested_cv(SurvivalFusion(harmonize=True), X, y, kind="survival", param_grid={"alpha": [0.02, 0.1]},
                       inner=3)
    stats, td, km = survival_metrics(y, result.prediction, result.groups)
    print(f"\nsurvival: {stats}")
    assert stats["harrell_c"] >= 0.7 and stats["uno_c"] >= 0.7
    assert stats["logrank_p"] < 0.05
    high, low = (km[km.group == g].survival.iloc[-1] for g in ("high", "low"))
    assert high < low
    assert (td.auc > 0.65).all()
    tertiles = SurvivalFusion(groups="tertiles").fit(X, y)
    assert set(tertiles.risk_group(X)) == {"low", "intermediate", "high"}
    assert tertiles.predict_survival(X.iloc[:3], [12.0, 24.0]).shape == (3, 2)


def test_multiclass_diagnosis(cohort):
    # diagnosis planted on the AP and MRI factors: four classes HCC / ICC / FNH / metastasis
    t = cohort.table
    diagnosis = np.select([(t.latent_z_ap > 0) & (t.latent_z_mr > 0), t.latent_z_ap > 0, t.latent_z_mr > 0],
                          ["HCC", "FNH", "ICC"], "metastasis")
    clinical = t.assign(diagnosis=diagnosis)
    X, y, kind = assemble(cohort.simulated_features(), clinical, "diagnosis")
    assert kind == "multiclass"
    result = nested_cv(FeatureFusion(selection="univariate"), X, y, kind="multiclass", outer=3)
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(y, result.prediction, multi_class="ovr", labels=result.classes)
    assert set(result.classes) == {"HCC", "ICC", "FNH", "metastasis"} and auc > 0.75
    decision = DecisionFusion(blocks={b: c for b, c in split_blocks(X.columns).items() if b in ("AP", "ADC")},
                              combine="bayes", cv=3).fit(X.iloc[:200], y[:200])
    proba = decision.predict_proba(X.iloc[200:])
    assert proba.shape == (100, 4) and np.allclose(proba.sum(axis=1), 1)
    assert roc_auc_score(y[200:], proba, multi_class="ovr", labels=decision.classes_) > 0.75


def test_classifiers_and_options_run_in_a_pipeline(mvi):
    from sklearn.base import clone
    from sklearn.pipeline import Pipeline

    X, y = mvi
    for options in (dict(classifier="svm"), dict(classifier="rf", selection="mrmr", k=4),
                    dict(classifier="gb", pca=0.9, harmonize=True)):
        model = Pipeline([("fusion", FeatureFusion(**options))]).fit(X.iloc[:200], y[:200])
        auc = roc_auc_ci(y[200:], model.predict_proba(X.iloc[200:])[:, 1], n_boot=10)["auc"]
        assert auc > 0.7, (options, auc)
        assert clone(model).get_params()["fusion__classifier"] == options["classifier"]


def test_combat_removes_center_shifts_using_training_data_only():
    rng = np.random.default_rng(3)
    center = np.repeat(["A", "B", "C"], 100)
    shift = {"A": 0.0, "B": 3.0, "C": -2.0}
    scale = {"A": 1.0, "B": 2.0, "C": 0.5}
    values = rng.normal(size=(300, 4)) * [[scale[c]] for c in center] + [[shift[c]] for c in center]
    table = pd.DataFrame(values, columns=[f"AP__t__f{j}" for j in range(4)]).assign(center=center)
    combat = ComBat().fit(table.iloc[::2])  # training rows only
    out = pd.DataFrame(combat.transform(table.iloc[1::2]), columns=table.columns[:4]).assign(center=center[1::2])
    means = out.groupby("center").mean()
    sds = out.groupby("center").std()
    assert np.abs(means.to_numpy() - means.to_numpy().mean(axis=0)).max() < 0.35
    assert sds.to_numpy().max() / sds.to_numpy().min() < 1.5
    # a single held-out row is harmonised with the training estimates, not re-estimated from the test rows
    one = combat.transform(table.iloc[[1]])
    assert np.allclose(one, combat.transform(table.iloc[1::2])[:1])
    with pytest.raises(ModelError, match="not in the training data"):
        combat.transform(table.iloc[:3].assign(center="Z"))


def test_mrmr_prefers_relevant_non_redundant_features():
    rng = np.random.default_rng(1)
    signal = rng.normal(size=400)
    y = (signal + 0.5 * rng.normal(size=400) > 0).astype(int)
    X = np.column_stack([signal + 0.3 * rng.normal(size=400), signal + 0.3 * rng.normal(size=400),
                         rng.normal(size=400), 0.6 * rng.normal(size=400) + 0.4 * (y - 0.5) * 2])
    mask = Selector("mrmr", k=2).fit(X, y).get_support()
    assert mask[3] and mask[:2].sum() == 1  # one of the two redundant copies, plus the independent signal
    assert Selector("lasso", k=2).fit(X, y).get_support()[:2].any()


def test_bad_inputs_give_clear_errors(mvi):
    X, y = mvi
    model = FeatureFusion(harmonize=True).fit(X.iloc[:150], y[:150])
    needed = model.blocks_["AP"][0]
    with pytest.raises(ModelError, match="lacks 1 column.*block 'AP'"):
        model.predict_proba(X.drop(columns=[needed]))
    with pytest.raises(ModelError, match="etiology.*not seen in training"):
        model.predict_proba(X.iloc[150:].assign(etiology="wilson"))
    with pytest.raises(ModelError, match="not in the training data"):
        model.predict_proba(X.iloc[150:].assign(center="C9"))
    with pytest.raises(ModelError, match="has no values for patient"):
        model.predict_proba(X.iloc[150:].assign(**{c: np.nan for c in model.blocks_["HBP"]}))
    with pytest.raises(InputError, match="Block 'HBP' is empty"):
        FeatureFusion().fit(X.assign(**{c: np.nan for c in model.blocks_["HBP"]}), y)
    with pytest.raises(InputError, match="single class"):
        FeatureFusion().fit(X, np.zeros(len(y), dtype=int))
    with pytest.raises(InputError, match="single class"):
        DecisionFusion().fit(X, np.ones(len(y), dtype=int))
    with pytest.raises(InputError, match="center"):
        FeatureFusion(harmonize=True).fit(X.drop(columns=["center"]), y)
    with pytest.raises(InputError, match="Unknown classifier"):
        FeatureFusion(classifier="xgboost").fit(X, y)
    with pytest.raises(InputError, match="Unknown combination"):
        DecisionFusion(combine="max").fit(X, y)


def test_correlation_filter_keeps_one_of_each_redundant_group():
    from HCCFusionLib.fusion.blocks import CorrelationFilter

    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(2, 100))
    X = np.column_stack([a, a + 0.01 * rng.normal(size=100), -a, b])
    assert CorrelationFilter(0.95).fit(X).get_support().tolist() == [True, False, False, True]


def test_feature_fusion_interval_matches_its_probability(mvi):
    X, y = mvi
    model = FeatureFusion().fit(X.iloc[:200], y[:200])
    interval = model.predict_interval(X.iloc[200:])
    assert np.allclose(interval.probability, model.predict_proba(X.iloc[200:])[:, 1])
    assert ((interval.low < interval.probability) & (interval.probability < interval.high)).all()
    with pytest.raises(ModelError, match="classifier='logistic'"):
        FeatureFusion(classifier="rf").fit(X.iloc[:200], y[:200]).predict_interval(X.iloc[200:])


def test_decision_fusion_trains_when_some_patients_lack_a_block(mvi):
    X, y = mvi
    X = X.copy()
    mri = [c for c in X.columns if c.startswith(("ADC__", "HBP__"))]
    X.loc[X.index[::3], mri] = np.nan  # a third of the patients had no MRI
    model = DecisionFusion(cv=3).fit(X.iloc[:240], y[:240])
    table = model.subset_table()
    assert table.loc["ADC+AP+DP+HBP+PVP+clinical", "n"] == 160 and table.loc["AP+DP+PVP+clinical", "n"] == 240
    used = model.predict_interval(X.iloc[240:]).blocks_used
    assert set(used) == {"ADC+AP+DP+HBP+PVP+clinical", "AP+DP+PVP+clinical"}
    few = X.copy()
    few.loc[few.index[4:], mri] = np.nan
    with pytest.raises(InputError, match="Block 'ADC' is present for only"):
        DecisionFusion(cv=3).fit(few, y)
