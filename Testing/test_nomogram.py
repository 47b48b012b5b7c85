"""`train --nomogram`, `hccfusion nomogram BUNDLE` (figure + points table), the nomogram in predict and the report."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from HCCFusionLib import cli, report
from HCCFusionLib.errors import ModelError
from HCCFusionLib.fusion.bundle import load_bundle
from HCCFusionLib.fusion.logistic import expit
from HCCFusionLib.fusion.workflow import ModelSpec, nomogram_figure, predict, train
from HCCFusionLib.layout import RunFolder
from HCCFusionLib.phantom import make_cohort


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    cohort = make_cohort(150, seed=8)
    features, clinical = cohort.simulated_features(), cohort.table.drop(columns=[c for c in cohort.table.columns
                                                                                if c.startswith("latent_")])
    folder = tmp_path_factory.mktemp("nomo")
    path = train(features, clinical, "mvi", folder / "bundle", ModelSpec(seed=0), cv=3, nomogram=True)
    return path, features, clinical


def test_train_nomogram_goes_into_the_bundle(bundle):
    path, _, _ = bundle
    loaded = load_bundle(path)
    card = json.loads((path / "model_card.json").read_text())
    assert (path / "nomogram.skops").is_file() and loaded.nomogram is not None
    assert card["nomogram"]["variables"][0] == "radiomics_score" and "log10_afp" in card["nomogram"]["variables"]
    beta = dict(zip(loaded.nomogram.variables_, loaded.nomogram.coef_[1:]))
    assert beta["radiomics_score"] > 0 and beta["log10_afp"] > 0  # both planted in the phantom's MVI


def test_nomogram_verb_writes_figure_and_points_table(bundle, tmp_path):
    path, _, _ = bundle
    assert cli.main(["--progress", "none", "nomogram", str(path), "--out", str(tmp_path)]) == 0
    folder = RunFolder(tmp_path).nomogram
    assert (folder / "nomogram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pd.read_csv(folder / "points.csv")
    nomo = load_bundle(path).nomogram
    scales = table[table.variable.isin(nomo.variables_)]
    spans = scales.groupby("variable").points.agg(lambda p: p.max() - p.min())
    assert spans.max() == pytest.approx(100.0) and scales.points.min() >= -1e-9  # widest variable spans 0-100
    outcome = table[table.variable == "probability"]
    assert np.allclose(outcome.value, expit(nomo._lp_of_total(outcome.points)))  # total points -> probability
    assert outcome.value.is_monotonic_increasing


def test_predict_writes_patient_points_and_the_report_shows_the_nomogram(bundle, tmp_path):
    path, features, clinical = bundle
    predict(features.iloc[:6], clinical.iloc[:6], path, tmp_path)
    paths = RunFolder(tmp_path)
    points = pd.read_csv(paths.nomogram_points, index_col=0)
    nomo = load_bundle(path).nomogram
    assert np.allclose(points.probability, expit(nomo._lp_of_total(points.total_points)))
    assert np.allclose(points.drop(columns=["total_points", "probability"]).sum(axis=1), points.total_points)
    html = report.render_html(report.ReportData("S-1", prediction=pd.read_csv(paths.prediction_table),
                                                nomogram=paths.nomogram_figure), tmp_path / "report")
    assert 'src="images/nomogram.png"' in html and (tmp_path / "report" / "images" / "nomogram.png").is_file()
    assert "nomogram" not in report.render_html(report.ReportData("S-1", prediction=pd.read_csv(
        paths.prediction_table)), tmp_path / "report2")


def test_nomogram_verb_needs_a_nomogram_bundle(bundle, tmp_path):
    path, features, clinical = bundle
    plain = train(features, clinical, "mvi", tmp_path / "plain", ModelSpec(seed=0, selection=None), cv=2)
    with pytest.raises(ModelError, match="--nomogram"):
        nomogram_figure(plain, tmp_path / "out")
    predict(features.iloc[:3], clinical.iloc[:3], path, tmp_path / "run")  # with a nomogram, then without
    assert RunFolder(tmp_path / "run").nomogram_figure.is_file()
    predict(features.iloc[:3], clinical.iloc[:3], plain, tmp_path / "run")
    assert not RunFolder(tmp_path / "run").nomogram_figure.exists()
    assert not RunFolder(tmp_path / "run").nomogram_points.exists()


def test_cox_nomogram_reads_survival_off_the_total_points(bundle, tmp_path):
    _, features, clinical = bundle
    path = train(features, clinical, "survival", tmp_path / "cox", ModelSpec(seed=0), cv=2, nomogram=True)
    nomogram_figure(path, tmp_path, time=24)
    table = pd.read_csv(RunFolder(tmp_path).nomogram / "points.csv")
    survival = table[table.variable == "survival_24m"]
    nomo = load_bundle(path).nomogram
    expected = nomo.cox_.baseline_survival_(24) ** np.exp(nomo._lp_of_total(survival.points))
    assert np.allclose(survival.value, expected) and survival.value.is_monotonic_decreasing
