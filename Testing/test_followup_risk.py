"""followup_risk: a landmark Cox bundle trained on a phantom follow-up cohort's delta features, and one patient's
dynamic risk curve from it (monotone, starting at the landmark, higher with the planted growth)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from HCCFusionLib.errors import InputError

pytest.importorskip("sksurv")
LANDMARK = 3.0


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from HCCFusionLib.fusion.workflow import ModelSpec, train
    from HCCFusionLib.phantom import followup_cohort

    features, clinical = followup_cohort(60, 0, landmark_months=LANDMARK)
    return train(features, clinical, "survival", tmp_path_factory.mktemp("risk") / "bundle",
                 ModelSpec(survival_model="coxph"), cv=2, landmark=LANDMARK, sample="phantom follow-up cohort")


def matches(growth: float = 1.0, necrosis: bool = False, new: int = 0) -> pd.DataFrame:
    """A follow-up's lesion table: the index lesion (30 mm) changed, the second (15 mm) stable."""
    rows = [{"prior_lesion": 1, "lesion": 1, "status": "matched", "prior_diameter_mm": 30.0,
             "diameter_mm": 30.0 * growth, "prior_viable_mm": 30.0, "viable_mm": 0.0 if necrosis else 30.0 * growth},
            {"prior_lesion": 2, "lesion": 2, "status": "matched", "prior_diameter_mm": 15.0, "diameter_mm": 15.0,
             "prior_viable_mm": 15.0, "viable_mm": 15.0}]
    rows += [{"prior_lesion": np.nan, "lesion": 3 + k, "status": "new"} for k in range(new)]
    return pd.DataFrame(rows)


def test_landmark_bundle_records_landmark_sample_and_at_risk_patients(bundle):
    from HCCFusionLib.fusion.bundle import verify_bundle
    from HCCFusionLib.phantom import followup_cohort

    card = json.loads((bundle / "model_card.json").read_text())
    _, clinical = followup_cohort(60, 0, landmark_months=LANDMARK)
    assert card["landmark_months"] == LANDMARK and card["sample"] == "phantom follow-up cohort"
    assert card["training"]["n"] == int((clinical.survival_months > LANDMARK).sum()) < 60  # at risk at the landmark
    assert card["features"] == ["delta__diameter", "delta__viable", "delta__new_lesions"]
    assert card["cv_metrics"]["harrell_c"] > 0.6  # the planted delta effect is learnt
    assert "checksums.sha256" in {p.name for p in bundle.iterdir()} and verify_bundle(bundle)


def test_risk_curve_is_monotone_starts_at_the_landmark_and_follows_the_planted_delta(bundle):
    from HCCFusionLib.followup_risk import patient_risk

    curves = {name: patient_risk(bundle, m, None)[0] for name, m in
              (("necrotic", matches(necrosis=True)), ("stable", matches()), ("growing", matches(1.6, new=1)))}
    for curve in curves.values():
        assert curve.months_after_landmark.iloc[0] == 0 and curve.risk.iloc[0] == 0
        assert curve.months_since_baseline.iloc[0] == LANDMARK
        assert (np.diff(curve.risk) >= 0).all() and 0 < curve.risk.iloc[-1] <= 1
    necrotic, stable, growing = (curves[k].risk.to_numpy() for k in ("necrotic", "stable", "growing"))
    assert (growing >= stable).all() and (stable >= necrotic).all()
    assert growing[len(growing) // 4] > stable[len(stable) // 4] + 0.05 > necrotic[len(necrotic) // 4] + 0.05
    _, inputs = patient_risk(bundle, matches(1.6, new=1), None)
    values = inputs.set_index("input")["value"]
    assert float(values["delta__diameter"]) == pytest.approx((48 + 15) / 45 - 1)
    assert float(values["delta__new_lesions"]) == 1 and values["sample"] == "phantom follow-up cohort"


def test_risk_curve_refuses_what_it_cannot_compute(bundle):
    from HCCFusionLib.followup_risk import at_landmark, patient_risk
    from HCCFusionLib.pipeline import default_model_path

    vanished = matches().assign(status="vanished", lesion=np.nan)
    with pytest.raises(InputError, match="lacks the delta feature"):
        patient_risk(bundle, vanished, None)
    demo = default_model_path()
    if demo is not None:  # a binary (MVI) bundle has no landmark
        with pytest.raises(InputError, match="not a landmark survival bundle"):
            patient_risk(demo, matches(), None)
    from sksurv.util import Surv

    y = Surv.from_arrays([True, True, False], [1.0, 2.0, 9.0])
    with pytest.raises(InputError, match="Fewer than 2 events after the landmark"):
        at_landmark(pd.DataFrame({"x": [1, 2, 3]}), y, 2.5)


def test_delta_features_take_the_index_lesions_radiomics():
    from HCCFusionLib.followup_risk import delta_features

    delta = pd.DataFrame({"prior_lesion": [1, 2], "lesion": [1, 2], "phase": ["AP", "AP"],
                          "image_type": ["original", "original"], "feature_class": ["firstorder"] * 2,
                          "feature": ["Mean", "Mean"], "before": [100.0, 50.0], "after": [80.0, 50.0],
                          "delta": [-0.2, 0.0]})
    row = delta_features(matches(necrosis=True), delta).iloc[0]
    assert row["delta__AP_original_firstorder_Mean"] == pytest.approx(-0.2)  # lesion 1 is the larger
    assert row["delta__viable"] == pytest.approx(15 / 45 - 1) and row["delta__diameter"] == 0


def test_report_draws_the_curve_with_inputs_and_sample_label(bundle, tmp_path):
    from HCCFusionLib.followup_risk import patient_risk
    from HCCFusionLib.report import ReportData, render_html

    risk = patient_risk(bundle, matches(1.6), None)
    html = render_html(ReportData("fu", followup=(matches(1.6), None), risk=risk), tmp_path)
    assert "Dynamic risk curve" in html and "Sample model:" in html and "phantom follow-up cohort" in html
    assert "delta__diameter" in html and "landmark_months" in html and "not drawn" not in html
    assert any(p.name.startswith("risk_curve") for p in (tmp_path / "images").iterdir())
    plain = render_html(ReportData("fu", followup=(matches(1.6), None)), tmp_path / "plain")
    assert "not drawn" in plain
