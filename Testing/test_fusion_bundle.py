"""Model bundles (skops + model card + SHA-256) and the train / evaluate / predict command-line verbs."""
from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pandas as pd
import pytest

from HCCFusionLib.cli import main
from HCCFusionLib.errors import IntegrityError
from HCCFusionLib.fusion.bundle import CHECKSUM_FILE, MODEL_FILE, load_bundle, save_bundle, sha256
from HCCFusionLib.fusion.data import assemble
from HCCFusionLib.fusion.decision_level import DecisionFusion
from HCCFusionLib.fusion.feature_level import FeatureFusion
from HCCFusionLib.fusion.survival import SurvivalFusion
from HCCFusionLib.phantom import make_cohort


@pytest.fixture(scope="module")
def cohort():
    return make_cohort(160, seed=4)


@pytest.fixture(scope="module")
def tables(cohort, tmp_path_factory):
    folder = tmp_path_factory.mktemp("tables")
    features, clinical = folder / "features.csv", folder / "clinical.parquet"
    cohort.simulated_features().to_csv(features)
    cohort.table.to_parquet(clinical)
    return features, clinical


@pytest.mark.parametrize("make", [
    lambda: FeatureFusion(classifier="logistic", harmonize=True), lambda: FeatureFusion(classifier="rf", pca=0.9),
    lambda: FeatureFusion(classifier="svm", selection="mrmr", k=3), lambda: FeatureFusion(classifier="gb"),
    lambda: DecisionFusion(combine="bayes", cv=3), lambda: SurvivalFusion(model="coxph", groups="tertiles"),
])
def test_bundle_round_trip_gives_identical_predictions(cohort, tmp_path, make):
    model = make()
    endpoint = "survival" if isinstance(model, SurvivalFusion) else "mvi"
    X, y, kind = assemble(cohort.simulated_features(), cohort.table, endpoint)
    model.fit(X.iloc[:120], y[:120])
    folder = save_bundle(model, tmp_path / "bundle", {"endpoint": endpoint, "kind": kind})
    loaded = load_bundle(folder)
    before = model.predict(X.iloc[120:]) if kind == "survival" else model.predict_proba(X.iloc[120:])
    after = loaded.model.predict(X.iloc[120:]) if kind == "survival" else loaded.model.predict_proba(X.iloc[120:])
    assert np.array_equal(before, after)
    assert loaded.card["endpoint"] == endpoint and "scikit-learn" in loaded.card["versions"]
    with zipfile.ZipFile(folder / MODEL_FILE) as archive:  # skops: JSON schema + numpy arrays, no pickle stream
        assert "schema.json" in archive.namelist()
        assert not any(name.endswith((".pkl", ".pickle")) for name in archive.namelist())


def _bundle(cohort, tmp_path):
    X, y, _ = assemble(cohort.simulated_features(), cohort.table, "mvi")
    return save_bundle(FeatureFusion().fit(X, y), tmp_path / "bundle", {"endpoint": "mvi", "kind": "binary"})


def test_tampered_bundle_is_refused(cohort, tmp_path):
    folder = _bundle(cohort, tmp_path)
    original = (folder / MODEL_FILE).read_bytes()
    (folder / MODEL_FILE).write_bytes(original[:-10] + bytes(b ^ 0xFF for b in original[-10:]))
    with pytest.raises(IntegrityError, match="does not match its SHA-256"):
        load_bundle(folder)
    (folder / MODEL_FILE).write_bytes(original)
    card = json.loads((folder / "model_card.json").read_text())
    (folder / "model_card.json").write_text(json.dumps({**card, "endpoint": "survival"}))
    with pytest.raises(IntegrityError, match="model_card.json"):
        load_bundle(folder)
    (folder / "model_card.json").write_text(json.dumps(card, indent=2))
    load_bundle(folder)  # restored byte-identical: accepted again
    (folder / "extra.py").write_text("print('hello')")
    with pytest.raises(IntegrityError, match="not in checksums"):
        load_bundle(folder)
    os.unlink(folder / "extra.py")
    os.unlink(folder / CHECKSUM_FILE)
    with pytest.raises(IntegrityError, match="no checksums"):
        load_bundle(folder)


def test_untrusted_types_are_never_loaded_even_with_valid_checksums(cohort, tmp_path):
    import skops.io as sio

    folder = _bundle(cohort, tmp_path)
    model = sio.load(folder / MODEL_FILE, trusted=sio.get_untrusted_types(file=folder / MODEL_FILE))
    model.payload = os.system  # an attacker's gadget: a callable that would run on use
    sio.dump(model, folder / MODEL_FILE)
    # the attacker also rewrites the checksums so that they match
    names = sorted(p.name for p in folder.iterdir() if p.name != CHECKSUM_FILE)
    (folder / CHECKSUM_FILE).write_text("".join(f"{sha256(folder / n)}  {n}\n" for n in names))
    with pytest.raises(IntegrityError, match="outside the trusted list.*system"):
        load_bundle(folder)


def test_cli_train_predict_evaluate(tables, cohort, tmp_path, capsys):
    features, clinical = tables
    bundle = tmp_path / "bundle"
    definitions = tmp_path / "definitions.csv"
    columns = list(cohort.simulated_features().columns)
    pd.DataFrame({"feature": columns, "definition": [f"definition of {c}" for c in columns]}).to_csv(
        definitions, index=False)
    assert main(["--progress", "none", "train", str(features), str(clinical), "--endpoint", "mvi", "--fusion",
                 "decision", "--combine", "stack", "--harmonize", "--definitions", str(definitions), "--cv", "3",
                 "--out", str(bundle)]) == 0
    card = json.loads((bundle / "model_card.json").read_text())
    assert card["fusion"] == "decision" and card["training"]["n"] == 160
    assert 0.6 < card["cv_metrics"]["auc"] <= 1 and card["cv_metrics"]["auc_low"] < card["cv_metrics"]["auc"]
    # new patients: features as Parquet, MRI missing for one of them, clinical without outcomes
    new = make_cohort(4, seed=99)
    new_features = new.simulated_features()
    new_features.loc[new_features.index[0], [c for c in new_features if c.startswith(("ADC", "HBP"))]] = np.nan
    new_features.to_parquet(tmp_path / "new.parquet")
    new.table.drop(columns=["mvi", "event", "survival_months"]).to_csv(tmp_path / "new_clinical.csv")
    out = tmp_path / "out"
    assert main(["--progress", "none", "predict", str(tmp_path / "new.parquet"), str(tmp_path / "new_clinical.csv"),
                 "--model", str(bundle), "--out", str(out)]) == 0
    prediction = pd.read_csv(out / "prediction" / "prediction.csv", index_col="patient_id")
    assert list(prediction.index) == list(new.table.index)
    assert ((prediction.low <= prediction.probability) & (prediction.probability <= prediction.high)).all()
    assert prediction.blocks_used.iloc[0] == "AP+DP+PVP+clinical"
    assert prediction.blocks_used.iloc[1] == "ADC+AP+DP+HBP+PVP+clinical"
    contributions = pd.read_csv(out / "prediction" / "contributions.csv")
    evidence = pd.read_csv(out / "prediction" / "evidence.csv")
    assert {"baseline", "block", "feature"} <= set(contributions.kind)
    fused = contributions[contributions.kind.isin(["baseline", "block"])].groupby("patient_id").contribution.sum()
    logit = np.log(prediction.probability / (1 - prediction.probability))
    assert np.allclose(fused.loc[prediction.index], logit, atol=1e-6)
    assert list(evidence.columns) == ["patient_id", "rank", "feature", "block", "value", "definition",
                                      "contribution", "units"]
    imaging = evidence[evidence.feature.str.contains("__")]
    assert len(imaging) > 0 and (imaging.definition == "definition of " + imaging.feature).all()
    for row in imaging.itertuples():  # the measured value a reader can check against the feature table
        assert float(row.value) == pytest.approx(new_features.loc[row.patient_id, row.feature])
    assert evidence.groupby("patient_id").contribution.apply(lambda c: c.abs().is_monotonic_decreasing).all()
    # evaluation report (nested CV, fused vs single blocks)
    report = tmp_path / "report"
    assert main(["--progress", "none", "evaluate", str(features), str(clinical), "--endpoint", "mvi", "--out",
                 str(report), "--outer", "3", "--no-tune"]) == 0
    folder = report / "evaluation"
    for name in ("metrics.csv", "roc.csv", "roc.png", "calibration.csv", "calibration.png", "decision_curve.csv",
                 "decision_curve.png", "delong.csv", "blocks.csv", "predictions.csv", "inner_selection.csv"):
        assert (folder / name).is_file(), name
    blocks = pd.read_csv(folder / "blocks.csv").set_index("model")
    assert blocks.loc["fused", "auc"] > blocks.drop("fused").auc.max()
    assert "Nested CV" in capsys.readouterr().out


def test_cli_survival_train_and_predict(tables, tmp_path):
    features, clinical = tables
    bundle, out = tmp_path / "surv", tmp_path / "out"
    assert main(["--progress", "none", "train", str(features), str(clinical), "--endpoint", "survival",
                 "--out", str(bundle)]) == 0
    assert load_bundle(bundle).card["cv_metrics"]["harrell_c"] > 0.65
    assert main(["--progress", "none", "predict", str(features), str(clinical), "--model", str(bundle), "--out",
                 str(out)]) == 0
    prediction = pd.read_csv(out / "prediction" / "prediction.csv")
    assert {"risk", "risk_group", "survival_12m", "survival_24m"} <= set(prediction.columns)
    assert set(prediction.risk_group) == {"low", "high"}
    report = tmp_path / "report"
    assert main(["--progress", "none", "evaluate", str(features), str(clinical), "--endpoint", "survival",
                 "--outer", "3", "--inner", "2", "--out", str(report)]) == 0
    for name in ("metrics.csv", "td_auc.csv", "td_auc.png", "km.csv", "km.png"):
        assert (report / "evaluation" / name).is_file(), name


def test_cli_errors_are_clear_and_write_nothing(tables, cohort, tmp_path, capsys):
    features, clinical = tables
    bundle = _bundle(cohort, tmp_path)
    broken = cohort.simulated_features().drop(columns=["PVP__tumour__original_firstorder_Mean"])
    broken.to_csv(tmp_path / "broken.csv")
    out = tmp_path / "out"
    assert main(["--progress", "none", "predict", str(tmp_path / "broken.csv"), str(clinical), "--model",
                 str(bundle), "--out", str(out)]) == 2
    assert "PVP__tumour__original_firstorder_Mean" in capsys.readouterr().err
    assert not (out / "prediction").exists()
    assert main(["--progress", "none", "predict", str(features), "--model", str(bundle), "--out", str(out)]) == 2
    assert "block 'clinical'" in capsys.readouterr().err  # the model needs clinical data: say so
    single = cohort.table.assign(mvi=1)
    single.to_csv(tmp_path / "single.csv")
    assert main(["--progress", "none", "train", str(features), str(tmp_path / "single.csv"), "--endpoint", "mvi",
                 "--out", str(tmp_path / "b2")]) == 2
    assert "single class" in capsys.readouterr().err and not (tmp_path / "b2").exists()
    assert main(["--progress", "none", "train", str(tmp_path / "missing.csv"), str(clinical), "--endpoint", "mvi",
                 "--out", str(tmp_path / "b3")]) == 2
    assert "does not exist" in capsys.readouterr().err
