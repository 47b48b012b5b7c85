"""Research endpoints: OS and RFS from one table, derived early recurrence, mRECIST response, ordinal grade,
and training on ICC-stable features only. Every test trains or computes and checks a known value."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from HCCFusionLib.errors import InputError
from HCCFusionLib.fusion.data import assemble, early_recurrence, ordinal_grade, stable_columns
from HCCFusionLib.fusion.ordinal import OrdinalLogistic
from HCCFusionLib.fusion.workflow import ModelSpec, train
from HCCFusionLib.phantom import make_cohort


@pytest.fixture(scope="module")
def tables():
    """160 phantom patients; clinical table with OS and RFS columns side by side, mRECIST and grade."""
    cohort = make_cohort(160, seed=5)
    t = cohort.table
    rng = np.random.default_rng(0)
    clinical = t[["afp", "tumour_size_mm", "center"]].copy()
    clinical["os_months"], clinical["os_event"] = t.survival_months, t.event
    # RFS: planted on the same latent hazard, shorter
    rfs = 40.0 * (-np.log(rng.random(len(t)))) * np.exp(-t.latent_log_hazard)
    censor = rng.uniform(6, 60, len(t))
    clinical["rfs_months"], clinical["rfs_event"] = np.minimum(rfs, censor).round(2), (rfs <= censor).astype(int)
    responds = t.latent_z_ap - t.latent_z_mr + rng.logistic(0, 0.5, len(t)) > 0  # planted on AP and MRI traits
    clinical["response"] = np.where(responds, rng.choice(["CR", "PR"], len(t)), rng.choice(["SD", "PD"], len(t)))
    latent = t.latent_z_ap + t.latent_z_pv + t.latent_z_mr + rng.logistic(0, 0.5, len(t))
    clinical["grade"] = pd.cut(latent, [-np.inf, -1.5, 0, 1.5, np.inf], labels=["I", "II", "III", "IV"]).astype(str)
    return cohort.simulated_features(), clinical


def _card(path):
    return json.loads((path / "model_card.json").read_text())


def test_early_recurrence_from_time_and_event_censoring_excluded():
    table = pd.DataFrame({"t": [10.0, 30.0, 20.0, 24.0, 5.0, 25.0], "e": [1, 0, 0, 1, np.nan, 1]})
    got = early_recurrence(table, "t", "e")
    # recurrence by 24 m -> 1; followed past 24 m -> 0 (even with a later event); censored before 24 m -> excluded
    assert got.tolist()[:2] == [1.0, 0.0] and np.isnan(got[2]) and got[3] == 1.0 and np.isnan(got[4])
    assert got[5] == 0.0
    with pytest.raises(InputError, match="--time-col"):
        early_recurrence(table, "rfs_months", "e")


def test_os_and_rfs_from_one_table(tables, tmp_path):
    features, clinical = tables
    X, y, kind = assemble(features, clinical, "survival", time_column="rfs_months", event_column="rfs_event")
    assert kind == "survival" and not any(c.startswith(("os_", "rfs_")) for c in X.columns)
    assert np.array_equal(y["time"], clinical.loc[X.index, "rfs_months"].to_numpy())
    spec = ModelSpec(seed=0)
    os_card = _card(train(features, clinical, "survival", tmp_path / "os", spec, cv=3, time_col="os_months",
                          event_col="os_event"))
    rfs_card = _card(train(features, clinical, "survival", tmp_path / "rfs", spec, cv=3, time_col="rfs_months",
                           event_col="rfs_event"))
    assert os_card["outcome_columns"] == {"time": "os_months", "event": "os_event"}
    assert rfs_card["training"]["events"] == int(clinical.rfs_event.sum())
    assert os_card["training"]["events"] == int(clinical.os_event.sum())
    for card in (os_card, rfs_card):  # neither outcome leaks into the predictors
        assert not any(f.startswith(("os_", "rfs_")) for f in card["features"])
        assert card["cv_metrics"]["harrell_c"] > 0.65, card["cv_metrics"]


def test_early_recurrence_and_response_endpoints_train(tables, tmp_path):
    features, clinical = tables
    X, y, _ = assemble(features, clinical, "early_recurrence", time_column="rfs_months", event_column="rfs_event")
    expected = early_recurrence(clinical, "rfs_months", "rfs_event").dropna()
    assert list(X.index) == list(expected.index) and np.array_equal(y, expected.astype(int).to_numpy())
    card = _card(train(features, clinical, "early_recurrence", tmp_path / "er", ModelSpec(seed=0), cv=3,
                       time_col="rfs_months", event_col="rfs_event"))
    assert card["training"]["n"] == len(expected) < len(clinical)
    assert card["cv_metrics"]["auc"] > 0.68, card["cv_metrics"]  # measured 0.73
    _, y, kind = assemble(features, clinical, "response")
    assert kind == "binary" and np.array_equal(y, clinical.response.isin(["CR", "PR"]).astype(int).to_numpy())
    card = _card(train(features, clinical, "response", tmp_path / "resp", ModelSpec(seed=0), cv=3))
    assert card["cv_metrics"]["auc"] > 0.7, card["cv_metrics"]
    with pytest.raises(InputError, match="CR, PR, SD or PD"):
        assemble(features, clinical.assign(response="better"), "response")


def test_ordinal_logistic_recovers_planted_model():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(3000, 3))
    beta, theta = np.array([1.0, -0.5, 0.0]), np.array([-1.0, 0.5, 2.0])
    latent = X @ beta + rng.logistic(size=len(X))
    y = np.searchsorted(theta, latent) + 1  # grades 1..4
    model = OrdinalLogistic(C=np.inf).fit(X, y)
    assert np.allclose(model.coef_, beta, atol=0.1) and np.allclose(model.thresholds_, theta, atol=0.12)
    P = model.predict_proba(X)
    assert P.shape == (3000, 4) and np.allclose(P.sum(axis=1), 1) and (P >= 0).all()
    assert list(model.classes_) == [1, 2, 3, 4]
    strong = OrdinalLogistic(C=1e-4).fit(X, y)  # heavy ridge shrinks the slopes
    assert np.abs(strong.coef_).max() < 0.3 * np.abs(model.coef_).max()


def test_grade_endpoint_trains_an_ordinal_model(tables, tmp_path):
    features, clinical = tables
    assert ordinal_grade(pd.Series(["I", "G2", "3", "IV", 2.0])).tolist() == [1, 2, 3, 4, 2]
    with pytest.raises(InputError, match="I-IV"):
        ordinal_grade(pd.Series(["V"]))
    path = train(features, clinical, "grade", tmp_path / "grade", ModelSpec(seed=0), cv=3)
    card = _card(path)
    assert card["kind"] == "ordinal" and card["classes"] == ["1", "2", "3", "4"]
    assert card["cv_metrics"]["c_index_grade"] > 0.75 and card["cv_metrics"]["mae_grade"] < 0.8, card["cv_metrics"]
    from HCCFusionLib.fusion.workflow import predict

    out = predict(features.iloc[:5], clinical.iloc[:5], path, tmp_path / "pred")
    assert {"p_1", "p_4", "predicted"} <= set(out["prediction"].columns)
    assert np.allclose(out["prediction"][[f"p_{k}" for k in range(1, 5)]].sum(axis=1), 1)


def test_train_uses_only_stable_features(tables, tmp_path):
    features, clinical = tables
    icc = pd.DataFrame({"feature": ["original_firstorder_Mean", "original_glcm_Contrast", "original_shape_Sphericity",
                                    "original_firstorder_Entropy"], "icc": [0.92, 0.80, 0.60, 0.74]})
    icc.to_csv(tmp_path / "icc.csv", index=False)
    X, record = stable_columns(features, tmp_path / "icc.csv", 0.75)
    expected = [c for c in features.columns if c.endswith(("__original_firstorder_Mean", "__original_glcm_Contrast"))]
    assert list(X.columns) == expected and record["kept"] == len(expected)
    card = _card(train(features, clinical, "early_recurrence", tmp_path / "m", ModelSpec(seed=0, selection=None),
                       cv=3, time_col="rfs_months", event_col="rfs_event", stable_features=tmp_path / "icc.csv"))
    imaging = [f for f in card["features"] if "__" in f]
    assert sorted(imaging) == sorted(expected)
    from HCCFusionLib.files import sha256_file

    assert card["stable_features"]["sha256"] == sha256_file(tmp_path / "icc.csv")
    assert card["stable_features"]["threshold"] == 0.75
    with pytest.raises(InputError, match="No imaging feature"):
        stable_columns(features, icc.assign(icc=0.1))


def test_train_verb_takes_the_new_options(tables, tmp_path):
    from HCCFusionLib import cli

    features, clinical = tables
    features.to_csv(tmp_path / "features.csv")
    clinical.assign(age=np.linspace(40, 80, len(clinical))).to_csv(tmp_path / "clinical.csv")
    pd.DataFrame({"feature": ["original_firstorder_Mean"], "icc": [0.9]}).to_csv(tmp_path / "icc.csv", index=False)
    code = cli.main(["--progress", "none", "train", str(tmp_path / "features.csv"), str(tmp_path / "clinical.csv"),
                     "--endpoint", "survival", "--time-col", "rfs_months", "--event-col", "rfs_event",
                     "--stable-features", str(tmp_path / "icc.csv"), "--harmonize-covariates", "age",
                     "--reference-center", "C1", "--cv", "2", "--out", str(tmp_path / "m")])
    card = _card(tmp_path / "m")
    assert code == 0 and card["outcome_columns"] == {"time": "rfs_months", "event": "rfs_event"}
    assert card["options"]["harmonize"] == {"covariates": ["age"], "reference_batch": "C1"}
    stable = sum(c.endswith("__original_firstorder_Mean") for c in features.columns)
    assert card["stable_features"]["kept"] == stable + 4  # plus afp, tumour_size_mm, center, age
