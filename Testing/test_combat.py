"""ComBat with biological covariates preserved (design matrix, as neuroCombat) and the reference-batch mode that
harmonises centers unseen in training. (Distributed ComBat = pooled ComBat: test_federated.py.)"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from HCCFusionLib.errors import InputError, ModelError
from HCCFusionLib.fusion.blocks import ComBat

AGE_EFFECT, SEX_EFFECT = 2.0, 1.0  # planted biological effects (feature units per SD of age; M vs F)


def _cohort(n=600, seed=0, centers=("A", "B", "C")):
    """Features = age and sex effects + a center shift and scale + noise; center C is much older (confounded)."""
    rng = np.random.default_rng(seed)
    center = rng.choice(centers, n)
    age = rng.normal(0, 1, n) + np.where(center == "C", 1.5, 0.0)
    sex = rng.choice(["F", "M"], n)
    shift = {"A": 0.0, "B": 3.0, "C": -2.0, "D": 5.0}
    scale = {"A": 1.0, "B": 2.0, "C": 0.5, "D": 1.5}
    biology = AGE_EFFECT * age + SEX_EFFECT * (sex == "M")
    features = {f"AP__tumour__f{j}": 10 + (j + 1) * biology / 2 + np.array([shift[c] for c in center]) * (j + 1)
                + np.array([scale[c] for c in center]) * rng.normal(0, 1, n) for j in range(4)}
    return pd.DataFrame({**features, "age": age, "sex": sex, "center": center})


def _slopes(values, table):
    design = np.column_stack([np.ones(len(table)), table.age, table.sex == "M"])
    return np.linalg.lstsq(design, values, rcond=None)[0][1:]


def test_covariates_preserve_the_biological_effects():
    table = _cohort()
    features = [c for c in table.columns if c.startswith("AP")]
    kept = ComBat(covariates=("age", "sex")).fit_transform(table)
    plain = ComBat().fit_transform(table[features + ["center"]])
    for j in range(4):
        age, sex = _slopes(kept[:, j], table)
        truth = (j + 1) / 2
        assert age == pytest.approx(AGE_EFFECT * truth, rel=0.08) and sex == pytest.approx(SEX_EFFECT * truth, abs=0.2)
        # without the covariates, the old center's age effect is taken for a center effect and partly removed
        assert _slopes(plain[:, j], table)[0] < 0.85 * AGE_EFFECT * truth
    # the center effect is gone: residual means per center agree
    resid = kept - np.column_stack([np.ones(len(table)), table.age, table.sex == "M"]) @ np.linalg.lstsq(
        np.column_stack([np.ones(len(table)), table.age, table.sex == "M"]), kept, rcond=None)[0]
    means = pd.DataFrame(resid).groupby(table.center.to_numpy()).mean()
    assert np.abs(means.to_numpy()).max() < 0.2
    with pytest.raises(ModelError, match="level"):
        ComBat(covariates=("sex",)).fit(table).transform(table.assign(sex="X"))


def test_reference_batch_is_unchanged_and_the_others_move_to_it():
    table = _cohort()
    features = [c for c in table.columns if c.startswith("AP")]
    combat = ComBat(reference_batch="A", empirical_bayes=False).fit(table[features + ["center"]])
    out = pd.DataFrame(combat.transform(table[features + ["center"]]), columns=features)
    a = (table.center == "A").to_numpy()
    np.testing.assert_allclose(out[a].to_numpy(), table.loc[a, features].to_numpy(), atol=1e-9)
    for c in ("B", "C"):  # moments equal to the reference center's (no EB shrinkage: exact for the means)
        rows = (table.center == c).to_numpy()
        np.testing.assert_allclose(out[rows].mean(), table.loc[a, features].mean(), atol=1e-9)
        np.testing.assert_allclose(out[rows].std(ddof=0), table.loc[a, features].std(ddof=0), rtol=0.01)
    with pytest.raises(InputError, match="reference batch 'Z'"):
        ComBat(reference_batch="Z").fit(table[features + ["center"]])


def test_unseen_center_with_a_reference_batch():
    train, new = _cohort(seed=1), _cohort(n=80, seed=2, centers=("D",))
    columns = [c for c in train.columns if c.startswith("AP")] + ["age", "sex", "center"]
    combat = ComBat(covariates=("age", "sex"), reference_batch="A").fit(train[columns])
    harmonised = combat.transform(new[columns])
    # D (shift 5j, scale 1.5) lands on A's location: the same covariate-adjusted mean as A's own rows
    design = lambda t: np.column_stack([np.ones(len(t)), t.age, t.sex == "M"])  # noqa: E731
    a = train[train.center == "A"]
    fit_a = np.linalg.lstsq(design(a), a[columns[:4]].to_numpy(), rcond=None)[0]
    offset = (harmonised - design(new) @ fit_a).mean(axis=0)
    assert np.abs(offset).max() < 0.3, offset
    raw_offset = (new[columns[:4]].to_numpy() - design(new) @ fit_a).mean(axis=0)
    assert np.abs(raw_offset).min() > 4  # it was 5, 10, 15, 20 before harmonisation
    with pytest.raises(ModelError, match="at least 2 rows"):
        combat.transform(new[columns].iloc[:1])
    with pytest.raises(ModelError, match="--reference-center"):
        ComBat().fit(train[columns[:4] + ["center"]]).transform(new[columns[:4] + ["center"]])


def test_model_with_covariate_combat_and_reference_center_predicts_a_new_center():
    from HCCFusionLib.fusion.feature_level import FeatureFusion

    train, new = _cohort(seed=3), _cohort(n=40, seed=4, centers=("D",))
    y = (train.age + np.random.default_rng(0).normal(0, 1, len(train)) > 0).astype(int)
    model = FeatureFusion(selection=None, harmonize={"covariates": ["age", "sex"], "reference_batch": "A"}).fit(
        train, y)
    p = model.predict_proba(new)[:, 1]
    assert p.shape == (40,) and np.corrcoef(p, new.age)[0, 1] > 0.5
    combat = model.pipeline_.named_steps["blocks"].named_transformers_["AP"].named_steps["prep"].named_steps["combat"]
    assert combat.covariates == ("age", "sex") and combat.reference_batch == "A"
