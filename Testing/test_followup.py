"""Follow-up and treatment response (followup.py) on rule tables, synthetic maps and phantom pairs with known truth."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from HCCFusionLib import followup as fu
from HCCFusionLib.errors import InputError


# ---------------------------------------------------------------- rules (fast)
@pytest.mark.parametrize("before, after, new, absolute, expected", [
    (80.0, 0.0, 0, 0.0, "CR"),
    (80.0, 56.0, 0, 0.0, "PR"),  # -30 % exactly
    (80.0, 57.0, 0, 0.0, "SD"),
    (80.0, 96.0, 0, 5.0, "PD"),  # +20 % and +16 mm
    (20.0, 24.0, 0, 5.0, "SD"),  # RECIST 1.1: +20 % but only +4 mm
    (20.0, 24.0, 0, 0.0, "PD"),  # mRECIST: no absolute minimum
    (80.0, 40.0, 1, 5.0, "PD"),  # a new lesion is progression whatever the sum
])
def test_response_category_rules(before, after, new, absolute, expected):
    assert fu.category(before, after, new, absolute_mm=absolute) == expected


def test_targets_are_the_two_largest_measurable_lesions():
    assert fu.targets(pd.Series({1: 12.0, 2: 35.0, 3: 9.0, 4: 20.0})) == [2, 4]
    assert fu.targets(pd.Series({1: 8.0, 2: 9.9})) == []


def test_threshold_growth_needs_50_percent_within_6_months():
    assert fu.threshold_growth(20.0, 30.0, 5.0) is True
    assert fu.threshold_growth(20.0, 29.0, 5.0) is False
    assert fu.threshold_growth(20.0, 40.0, 7.0) is False  # too slow to count
    assert fu.threshold_growth(20.0, 40.0, None) is None
    assert fu.months_between("2026-01-05", "2026-07-06") == pytest.approx(6.0, abs=0.05)
    assert fu.months_between(None, "2026-01-05") is None
    with pytest.raises(InputError, match="ISO dates"):
        fu.months_between("5 Jan 2026", "2026-07-06")


def _spheres(centres_mm, radii_mm, size=40, spacing=2.0):
    grid = np.indices((size,) * 3).transpose(1, 2, 3, 0)[..., ::-1] * spacing  # x, y, z mm
    lesions = np.zeros((size,) * 3, np.uint32)
    for k, (c, r) in enumerate(zip(centres_mm, radii_mm), 1):
        lesions[((grid - np.asarray(c)) ** 2).sum(-1) <= r * r] = k
    image = sitk.GetImageFromArray(lesions)
    image.SetSpacing((spacing,) * 3)
    labels = sitk.Cast(image > 0, sitk.sitkUInt8) + 1  # liver 1, tumour 2
    return labels, image


def test_assignment_beats_nearest_centroid_and_reports_new_and_vanished():
    # baseline A at x=20, B at x=32; follow-up (both moved ~-9 mm): B' at x=24, A' at x=10. B' is nearest to A,
    # so nearest-centroid matching pairs A-B'; the assignment keeps both within the gate: A-A', B-B'.
    labels, before = _spheres([(20, 40, 40), (32, 40, 40), (60, 60, 60)], [4, 4, 4])
    _, after = _spheres([(24, 40, 40), (10, 40, 40), (40, 66, 12)], [4, 4, 4])
    pairs = fu.match_lesions(labels, before, after, gate_mm=12.0)
    matched = pairs[pairs.status == "matched"].set_index("prior_lesion").lesion.to_dict()
    assert matched == {1: 2, 2: 1}
    assert pairs[pairs.status == "vanished"].prior_lesion.tolist() == [3]
    assert pairs[pairs.status == "new"].lesion.tolist() == [3]


def test_delta_radiomics_is_the_relative_change_of_matched_lesions():
    def long(region, value):
        return pd.DataFrame({"region": [region] * 2, "phase": ["AP", "AP"], "image_type": ["original"] * 2,
                             "feature_class": ["firstorder"] * 2, "feature": ["Mean", "Energy"],
                             "value": [value, 0.0]})
    before = pd.concat([long("lesion1", 100.0), long("lesion2", 50.0)])
    after = long("lesion1", 80.0)
    matches = pd.DataFrame({"prior_lesion": [2, 1], "lesion": [1, np.nan], "status": ["matched", "vanished"]})
    delta = fu.delta_radiomics(before, after, matches)
    mean = delta[delta.feature == "Mean"].iloc[0]
    assert (mean.prior_lesion, mean.lesion, mean.before, mean.after) == (2, 1, 50.0, 80.0)
    assert mean.delta == pytest.approx(0.6)
    assert np.isnan(delta[delta.feature == "Energy"].delta.iloc[0])  # no relative change from zero
    assert fu.delta_radiomics(None, after, matches).empty


def test_landmark_cox_recovers_a_planted_delta_effect():
    pytest.importorskip("sksurv")
    rng = np.random.default_rng(0)
    n = 300
    growth = rng.normal(0, 1, n)
    time = 3.0 + rng.exponential(24.0 * np.exp(-1.0 * growth))  # everyone reaches the 3-month landmark
    censor = rng.uniform(6, 60, n)
    table = pd.DataFrame({"diameter_change": growth, "time": np.minimum(time, censor),
                          "event": time <= censor})
    model = fu.landmark_cox(table, ["diameter_change"], landmark=3.0)
    assert model.coef_[0] == pytest.approx(1.0, abs=0.25)
    low, high = (fu.risk_curve(model, {"diameter_change": x}, [6.0, 12.0, 24.0]) for x in (-1.0, 1.0))
    assert (np.diff(high.risk) >= 0).all() and (high.risk > low.risk).all()
    with pytest.raises(InputError, match="lacks column"):
        fu.landmark_cox(table, ["volume_change"])


# ---------------------------------------------------------------- phantom pairs (known truth)
def test_phantom_followup_has_the_designed_changes_and_motion():
    from HCCFusionLib.phantom import LesionChange, LesionSpec, make_followup
    from HCCFusionLib.lesions import LesionTable
    from HCCFusionLib.study import LABELS

    pair = make_followup(5, [LesionSpec(None, 30.0), LesionSpec(None, 15.0)],
                         [LesionChange(necrosis=1.0), LesionChange(vanished=True)], [LesionSpec(None, 12.0)],
                         months=2.0, phases=("NC", "AP"))
    assert pair.matches == {1: 1, 2: None} and pair.new == [2]
    assert (pair.baseline.study.meta["study_date"], pair.followup.study.meta["study_date"]) == ("2026-01-05",
                                                                                               "2026-03-07")
    before, after = (LesionTable.from_map(p.labels, p.lesion_labels).frame.set_index("lesion")
                     for p in (pair.baseline, pair.followup))
    centre = ["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]
    moved = pair.to_followup(before.loc[[1], centre].to_numpy())[0]
    assert np.linalg.norm(after.loc[1, centre].to_numpy(float) - moved) < 2.5  # the lesion moved with the motion
    assert np.linalg.norm(moved - before.loc[1, centre].to_numpy(float)) > 1.0  # ... and the motion is not nil
    ap, nc = (sitk.GetArrayFromImage(pair.followup.study[s].image) for s in ("AP", "NC"))
    lesion = sitk.GetArrayFromImage(pair.followup.lesion_labels) == 1
    core = sitk.GetArrayFromImage(sitk.BinaryErode(pair.followup.lesion_labels == 1, [1, 1, 1])) > 0
    assert np.median((ap - nc)[core]) < 10 and lesion.sum() > core.sum() > 0  # necrotic after TACE: no enhancement
    assert (sitk.GetArrayFromImage(pair.followup.labels) == LABELS["tumour"]).any()



SCENARIOS = {  # name: (baseline lesions, changes, new lesions, months, RECIST 1.1, mRECIST)
    "tace": ([(45.0,), (30.0,), (15.0,)], [dict(necrosis=1.0), {}, dict(vanished=True)], [], 3.0, "SD", "PR"),
    "progression": ([(20.0,), (15.0,)], [dict(growth=1.6), {}], [(15.0,)], 4.0, "PD", "PD"),
    "complete": ([(40.0,), (25.0,)], [dict(necrosis=1.0), dict(necrosis=1.0)], [], 3.0, "SD", "CR"),
}


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def scenario(request):
    from HCCFusionLib.phantom import LesionChange, LesionSpec, make_followup

    lesions, changes, new, months, recist, mrecist = SCENARIOS[request.param]
    pair = make_followup(5, [LesionSpec(None, *s) for s in lesions], [LesionChange(**c) for c in changes],
                         [LesionSpec(None, *s) for s in new], months=months, phases=("NC", "AP", "PVP"))
    points = [fu.Timepoint.from_study(p.study, p.reference, p.labels, p.lesion_labels)
              for p in (pair.baseline, pair.followup)]
    result = fu.compare(*points, spacing_mm=4.0)
    return request.param, pair, result, recist, mrecist


@pytest.mark.slow  # ~30 s per scenario on 2 busy cores (render 5-10 s, registration 20-30 s)
def test_phantom_pairs_match_all_lesions_and_give_the_true_response(scenario):
    name, pair, result, recist, mrecist = scenario
    m = result.matches
    matched = m[m.status == "matched"].set_index("prior_lesion").lesion.astype(int).to_dict()
    assert matched == {k: v for k, v in pair.matches.items() if v is not None}, name
    assert sorted(m[m.status == "vanished"].prior_lesion) == [k for k, v in pair.matches.items() if v is None]
    assert sorted(m[m.status == "new"].lesion) == pair.new
    categories = result.response.set_index("criteria").category
    assert (categories["RECIST 1.1"], categories["mRECIST"]) == (recist, mrecist), name
    # the registration recovers the known inter-study motion
    points = pair.baseline.landmarks[pair.baseline.reference]
    found = np.array([result.transform.TransformPoint(tuple(p)) for p in points])
    assert np.linalg.norm(found - pair.to_followup(points), axis=1).max() < 3.0
    assert result.interval_months == pytest.approx(pair.months, abs=0.05)
    growth = m[m.status == "matched"].set_index("prior_lesion").threshold_growth.to_dict()
    if name == "progression":  # 20 -> 32 mm in 4 months: threshold growth; the stable lesion: none
        assert growth == {1: True, 2: False}
    else:
        assert not any(growth.values())


# ---------------------------------------------------------------- `hccfusion run --prior` end to end
@pytest.mark.slow  # two small runs with a first-order preset + the follow-up stage (+ a 10 s landmark Cox bundle)
def test_cli_run_with_prior_reports_matches_and_response(tmp_path, capsys):
    import yaml

    from HCCFusionLib import cli
    from HCCFusionLib.layout import RunFolder
    from HCCFusionLib.followup_risk import patient_risk
    from HCCFusionLib.phantom import LesionChange, LesionSpec, followup_cohort, make_followup, save_patient
    from HCCFusionLib.radiomics import PRESET_DIR

    preset = yaml.safe_load((PRESET_DIR / "ct_v1.yaml").read_text())
    preset.update(name="ct_fast", featureClass={"firstorder": []}, imageType={"Original": {}})
    preset["preprocess"]["resample_mm"] = None
    (tmp_path / "ct_fast_v1.yaml").write_text(yaml.safe_dump(preset))
    pair = make_followup(5, [LesionSpec(None, 45.0), LesionSpec(None, 30.0)],
                         [LesionChange(necrosis=1.0), LesionChange()], months=3.0, phases=("NC", "AP", "PVP"))
    # a landmark Cox bundle (3 months: the follow-up) trained on a phantom follow-up cohort's delta features
    features, clinical = followup_cohort(60, 0, landmark_months=3.0)
    features.to_csv(tmp_path / "deltas.csv")
    clinical.to_csv(tmp_path / "outcomes.csv")
    assert cli.main(["--progress", "none", "train", str(tmp_path / "deltas.csv"), str(tmp_path / "outcomes.csv"),
                     "--endpoint", "survival", "--survival-model", "coxph", "--landmark", "3", "--cv", "2",
                     "--sample", "phantom follow-up cohort", "--out", str(tmp_path / "risk")]) == 0
    runs = {}
    for name, patient in (("baseline", pair.baseline), ("followup", pair.followup)):
        save_patient(patient, tmp_path / name)
        runs[name] = tmp_path / f"{name}_run"
        args = ["--progress", "none", "run", str(tmp_path / name), "--out", str(runs[name]), "--segmentation",
                str(tmp_path / name / "truth" / "labels.nii.gz"), "--model", "none", "--mode", "rigid",
                "--registration-spacing", "4", "--workers", "1", "--preset", str(tmp_path / "ct_fast_v1.yaml")]
        follow = ["--prior", str(runs["baseline"]), "--risk-bundle", str(tmp_path / "risk")]
        assert cli.main(args + (follow if name == "followup" else [])) == 0
    printed = capsys.readouterr().out
    assert "RECIST 1.1: SD" in printed and "mRECIST: PR" in printed
    paths = RunFolder(runs["followup"])
    matches = pd.read_csv(paths.followup_matches)
    assert matches.status.tolist() == ["matched", "matched"]
    assert dict(zip(matches.prior_lesion, matches.lesion)) == {1: 1, 2: 2}
    assert matches.set_index("lesion").viable_mm[1] == 0  # the TACE-necrotic lesion has no viable tumour left
    assert matches.interval_months.iloc[0] == pytest.approx(3.0, abs=0.05)  # from the studies' dates
    growth = pd.read_csv(paths.lirads_evidence).query("feature == 'threshold_growth'")
    assert len(growth) == 2 and growth.evidence.str.contains(" -> ").all()  # LI-RADS paired with the baseline
    assert not growth.present.any()
    delta = pd.read_csv(paths.followup_delta)
    assert {"AP", "PVP"} <= set(delta.phase) and delta.delta.notna().any()  # per-lesion radiomics of both runs
    html = paths.report_html.read_text()
    assert "Follow-up against the baseline run" in html and "mRECIST" in html and "Dynamic risk curve" in html
    assert "Sample model:" in html and "delta__viable" in html  # the curve's inputs, labelled a sample
    curve = pd.read_csv(paths.followup_risk_curve)
    assert curve.months_since_baseline.iloc[0] == 3.0 and curve.risk.iloc[0] == 0 and (curve.risk.diff()[1:] >= 0).all()
    # the planted delta moves it: had the TACE-necrotic lesion grown by half instead, the risk would be higher
    tace = matches.lesion == 1
    grown = matches.assign(diameter_mm=np.where(tace, 1.5 * matches.prior_diameter_mm, matches.diameter_mm),
                           viable_mm=np.where(tace, 1.5 * matches.prior_diameter_mm, matches.viable_mm))
    worse, _ = patient_risk(tmp_path / "risk", grown, None)
    assert (worse.risk.to_numpy() >= curve.risk.to_numpy() - 1e-9).all() and worse.risk.iloc[-5] > curve.risk.iloc[-5]
    assert "followup" in json.dumps(json.loads(paths.stage_manifest.read_text()))  # recorded like the other stages
