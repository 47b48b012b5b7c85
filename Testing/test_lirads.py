"""LI-RADS v2018: diagnostic table case by case, features on designed phantoms, findings, overrides."""
from __future__ import annotations

import datetime

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from HCCFusionLib import lirads
from HCCFusionLib.errors import GeometryError, InputError
from HCCFusionLib.phantom import LesionSpec, make_patient


# ---------------------------------------------------------------- diagnostic table
@pytest.mark.parametrize("aphe, diameter, washout, capsule, growth, expected", [
    # no APHE, < 20 mm: 0, 1, 2 additional features
    (False, 15, False, False, False, "LR-3"), (False, 15, True, False, False, "LR-3"),
    (False, 15, False, False, True, "LR-3"), (False, 15, True, True, False, "LR-4"),
    (False, 8, False, True, True, "LR-4"),
    # no APHE, >= 20 mm
    (False, 20, False, False, False, "LR-3"), (False, 25, False, True, False, "LR-4"),
    (False, 25, True, True, True, "LR-4"),
    # nonrim APHE, < 10 mm
    (True, 9.9, False, False, False, "LR-3"), (True, 9, True, False, False, "LR-4"),
    (True, 9, False, True, True, "LR-4"),
    # nonrim APHE, 10-19 mm: the split cell
    (True, 10, False, False, False, "LR-3"), (True, 15, False, True, False, "LR-4"),
    (True, 15, True, False, False, "LR-5"), (True, 19.9, False, False, True, "LR-5"),
    (True, 12, True, True, False, "LR-5"), (True, 12, False, True, True, "LR-5"),
    # nonrim APHE, >= 20 mm
    (True, 20, False, False, False, "LR-4"), (True, 30, False, True, False, "LR-5"),
    (True, 30, True, False, False, "LR-5"), (True, 30, True, True, True, "LR-5"),
])
def test_diagnostic_table_cell_by_cell(aphe, diameter, washout, capsule, growth, expected):
    assert lirads.category(aphe, diameter, washout, capsule, growth) == expected


@pytest.mark.parametrize("diameter", [0, -3, float("nan"), None])
def test_category_rejects_bad_size(diameter):
    with pytest.raises(InputError, match="mm"):
        lirads.category(True, diameter, True, False)


# ---------------------------------------------------------------- designed phantoms
DESIGNS = [LesionSpec(diameter_mm=d, aphe=a, washout=w, capsule=c)
           for d in (13.0, 24.0) for a in (True, False) for w in (True, False) for c in (True, False)]


@pytest.fixture(scope="module")
def designed():
    """Two full-resolution phantoms (0.7 mm, 2.5 mm slices) with 8 designed HCC lesions each, aligned phases."""
    out = []
    for k in range(0, len(DESIGNS), 8):
        patient = make_patient(200 + k, "full", lesions=DESIGNS[k:k + 8], misalignment="none")
        out.append((patient, lirads.assess_ct(patient.study, patient.labels, lesions=patient.lesion_labels)))
    return out


def test_features_and_category_agree_with_ground_truth(designed):
    features_ok = category_ok = total = 0
    for patient, result in designed:
        for truth in patient.lesions:
            obs = result[truth.index]
            f = obs.features
            features_ok += (f["aphe"].present, f["washout"].present, f["capsule"].present) == (
                truth.aphe, truth.washout, truth.capsule)
            category_ok += obs.category == truth.lirads
            total += 1
            assert abs(obs.diameter_mm - truth.diameter_mm) < 0.15 * truth.diameter_mm
            for name in ("aphe", "washout", "capsule"):
                assert f[name].threshold is not None and 0.5 <= f[name].confidence <= 1.0 and f[name].unit == "HU"
                assert f[name].evidence
    print(f"LI-RADS on designed phantoms: features {features_ok}/{total}, category {category_ok}/{total}")
    assert total == len(DESIGNS)
    assert features_ok / total >= 0.95 and category_ok / total >= 0.95


def test_tables_and_save(designed, tmp_path):
    _, result = designed[0]
    table = result.table()
    assert list(table.index) == [o.lesion for o in result.observations]
    assert {"diameter_mm", "aphe", "aphe_value", "aphe_threshold", "aphe_confidence", "washout", "capsule",
            "threshold_growth", "category", "reason"} <= set(table.columns)
    evidence = result.evidence()
    assert len(evidence) == 4 * len(result.observations)
    written = result.save(tmp_path / "lirads")
    assert pd.read_csv(written["lirads.csv"], index_col="lesion").shape[0] == len(result.observations)
    assert not [p for p in (tmp_path / "lirads").iterdir() if p.name.startswith(".")]


# ---------------------------------------------------------------- findings, overrides, growth (small phantom)
@pytest.fixture(scope="module")
def small():
    patient = make_patient(5, "small", lesions=[LesionSpec(diameter_mm=30, aphe=True, washout=True)],
                           misalignment="none")
    return patient


def test_reader_overrides_are_recorded(small):
    result = lirads.assess_ct(small.study, small.labels)
    obs = result.observations[0]
    assert obs.category == "LR-5"
    when = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    record = result.override(obs.lesion, "washout", False, reader="dr_a", reason="artefact", when=when)
    assert (record.old, record.new, record.reader, record.when) == (True, False, "dr_a", "2026-01-02T03:04:05+00:00")
    assert obs.features["washout"].source == "reader"
    assert obs.category == "LR-4"  # APHE, >= 20 mm, no additional feature
    measured = obs.diameter_mm
    result.override(obs.lesion, "diameter_mm", 15.0, reader="dr_a")
    assert obs.category == "LR-3"
    result.override(obs.lesion, "tumour_in_vein", True, reader="dr_b")
    assert obs.category == "LR-TIV"
    result.override(obs.lesion, "category", "LR-M", reader="dr_c", reason="targetoid")
    result.override(obs.lesion, "tumour_in_vein", False, reader="dr_b")
    assert obs.category == "LR-M" and "dr_c" in obs.category_reason  # a category override sticks
    log = result.overrides_table()
    assert list(log["what"]) == ["washout", "diameter_mm", "tumour_in_vein", "category", "tumour_in_vein"]
    assert list(log["old"]) == [True, measured, False, "LR-TIV", True]
    assert list(log["new"]) == [False, 15.0, True, "LR-M", False]
    with pytest.raises(InputError, match="reader"):
        result.override(obs.lesion, "aphe", False, reader="")
    with pytest.raises(InputError, match="LR-9"):
        result.override(obs.lesion, "category", "LR-9", reader="x")
    with pytest.raises(InputError, match="Cannot override"):
        result.override(obs.lesion, "colour", "red", reader="x")
    with pytest.raises(InputError, match="No observation 99"):
        result.override(99, "aphe", True, reader="x")


@pytest.mark.parametrize("finding, expected", [
    ("not_evaluable", "LR-NC"), ("tumour_in_vein", "LR-TIV"), ("definitely_benign", "LR-1"),
    ("probably_benign", "LR-2"), ("lr_m_features", "LR-M")])
def test_findings_decide_before_the_table(small, finding, expected):
    result = lirads.assess_ct(small.study, small.labels, findings={1: lirads.Findings(**{finding: True})})
    assert result[1].category == expected


def test_missing_arterial_phase_gives_lr_nc(small):
    images = {"PVP": small.study["PVP"].image, "DP": small.study["DP"].image}
    result = lirads.assess(images, small.labels)
    obs = result.observations[0]
    assert obs.features["aphe"].present is None and obs.category == "LR-NC"
    assert "aphe" in obs.category_reason


def test_threshold_growth_from_prior(small):
    obs = lirads.assess_ct(small.study, small.labels).observations[0]
    prior = [{"centre_mm": obs.centre_mm, "diameter_mm": obs.diameter_mm / 1.6}]
    grown = lirads.assess_ct(small.study, small.labels, prior=prior, interval_months=5)[1]
    assert grown.features["threshold_growth"].present
    assert grown.features["threshold_growth"].value == pytest.approx(0.6, abs=1e-6)
    slow = lirads.assess_ct(small.study, small.labels, prior=prior, interval_months=9)[1]
    assert not slow.features["threshold_growth"].present
    same = lirads.assess_ct(small.study, small.labels)  # a prior assessment: no growth against itself
    assert lirads.assess_ct(small.study, small.labels, prior=same, interval_months=3)[1].features[
        "threshold_growth"].value == pytest.approx(0.0)
    with pytest.raises(InputError, match="positive 'diameter_mm'"):
        lirads.assess_ct(small.study, small.labels, prior=[{"centre_mm": (0, 0, 0), "diameter_mm": 0}])
    far = [{"centre_mm": np.array(obs.centre_mm) + 80, "diameter_mm": 5}]
    assert not lirads.assess_ct(small.study, small.labels, prior=far, interval_months=3)[1].features[
        "threshold_growth"].present


def test_images_must_share_the_label_grid(small):
    moved = sitk.Image(small.study["AP"].image)
    moved.SetOrigin([o + 5 for o in moved.GetOrigin()])
    with pytest.raises(GeometryError, match="AP"):
        lirads.assess({"AP": moved, "PVP": small.study["PVP"].image}, small.labels)


def test_mr_units_are_percent_of_liver(small):
    images = {p: sitk.Cast(small.study[p].image, sitk.sitkFloat32) * 3.0 + 500.0 for p in ("AP", "PVP", "DP")}
    result = lirads.assess(images, small.labels, modality="MR")
    feature = result[1].features["aphe"]
    assert feature.unit == "% of liver" and feature.present


def test_lirads_cli(small, tmp_path, capsys):
    from HCCFusionLib.cli import main
    from HCCFusionLib.io import save_study

    study = save_study(small.study, tmp_path / "study")
    assert main(["--progress", "none", "lirads", str(study), "--out", str(tmp_path / "out")]) == 0
    table = pd.read_csv(tmp_path / "out" / "lirads" / "lirads.csv", index_col="lesion")
    assert list(table["category"]) == ["LR-5"] and "LR-5" in capsys.readouterr().out
    prior = tmp_path / "out" / "lirads" / "lirads.csv"
    assert main(["--progress", "none", "lirads", str(study), "--prior", str(prior), "--interval-months", "3",
                 "--out", str(tmp_path / "again")]) == 0
    again = pd.read_csv(tmp_path / "again" / "lirads" / "lirads.csv", index_col="lesion")
    assert again["threshold_growth_value"].iloc[0] == pytest.approx(0.0, abs=1e-6)
    assert main(["--progress", "none", "lirads", str(study), "--reference", "NC", "--segmentation",
                 str(tmp_path / "missing.nii.gz"), "--out", str(tmp_path / "bad")]) == 2
    assert "missing.nii.gz" in capsys.readouterr().err


def test_reader_table_edits_become_recorded_overrides(small):
    result = lirads.assess_ct(small.study, small.labels)
    before = lirads.reader_table(result)
    lesion = int(before["lesion"].iloc[0])
    edited = before.astype({f: object for f in lirads.FEATURES})
    edited.loc[0, "washout"] = "no" if lirads.yes_no(before.loc[0, "washout"]) else "yes"
    edited.loc[0, "diameter_mm"] = float(before.loc[0, "diameter_mm"]) + 0.04  # rounding noise: no edit
    edited.loc[0, "aphe"] = ""  # emptied: not an edit
    assert lirads.table_edits(before, edited) == [(lesion, "washout", not lirads.yes_no(before.loc[0, "washout"]))]
    edited.loc[0, "category"] = " LR-M "
    made = lirads.apply_table_edits(result, edited, reader="dr_a")
    assert [(o.lesion, o.what, o.new, o.reader) for o in made] == [
        (lesion, "washout", not lirads.yes_no(before.loc[0, "washout"]), "dr_a"), (lesion, "category", "LR-M", "dr_a")]
    assert lirads.reader_table(result).loc[0, "category"] == "LR-M"
    assert lirads.apply_table_edits(result, lirads.reader_table(result), reader="dr_a") == []
    with pytest.raises(InputError, match="'maybe' for lesion .* capsule is not yes/no"):
        lirads.table_edits(before, before.astype({"capsule": object}).assign(capsule="maybe"))
    assert [lirads.yes_no(v) for v in (True, "0", "Yes", float("nan"), " ")] == [True, False, True, None, None]
