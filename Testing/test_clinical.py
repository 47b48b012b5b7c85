"""Child-Pugh, ALBI and BCLC 2022 on worked examples computed by hand from the published definitions."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from HCCFusionLib.clinical import albi, bclc, child_pugh, stage_clinical, staging_table
from HCCFusionLib.errors import InputError
from HCCFusionLib.study import Clinical


# ---------------------------------------------------------------- Child-Pugh (Pugh 1973)
@pytest.mark.parametrize("labs, points, score, klass", [
    # bilirubin 1.0 < 2 -> 1; albumin 3.8 > 3.5 -> 1; INR 1.1 < 1.7 -> 1; no ascites 1; no HE 1 = 5 -> A
    ((1.0, 3.8, 1.1, "none", "none"), (1, 1, 1, 1, 1), 5, "A"),
    # 1.9 -> 1; 3.6 -> 1; 1.69 -> 1; mild ascites 2; none 1 = 6 -> A (upper edge of A)
    ((1.9, 3.6, 1.69, "mild", "none"), (1, 1, 1, 2, 1), 6, "A"),
    # edges belong to the middle band: 2.0 -> 2; 3.5 -> 2; 1.7 -> 2; none 1; grade 1-2 -> 2 = 9 -> B
    ((2.0, 3.5, 1.7, "none", "grade1-2"), (2, 2, 2, 1, 2), 9, "B"),
    # 3.0 -> 2; 2.8 -> 2; 2.3 -> 2; none 1; none 1 = 8 -> B
    ((3.0, 2.8, 2.3, "none", "none"), (2, 2, 2, 1, 1), 8, "B"),
    # 2.5 -> 2; 3.0 -> 2; 1.8 -> 2; mild 2; grade 1-2 -> 2 = 10 -> C (lower edge of C)
    ((2.5, 3.0, 1.8, "mild", "grade1-2"), (2, 2, 2, 2, 2), 10, "C"),
    # 3.5 > 3 -> 3; 2.5 < 2.8 -> 3; 2.5 > 2.3 -> 3; moderate-severe 3; grade 3-4 -> 3 = 15 -> C
    ((3.5, 2.5, 2.5, "moderate-severe", "grade3-4"), (3, 3, 3, 3, 3), 15, "C"),
    # 1.2 -> 1; 3.2 -> 2; 1.0 -> 1; none 1; none 1 = 6 -> A; one more point (7) would be B
    ((1.2, 3.2, 1.0, "none", "none"), (1, 2, 1, 1, 1), 6, "A"),
    ((1.2, 3.2, 1.0, "mild", "none"), (1, 2, 1, 2, 1), 7, "B"),
])
def test_child_pugh_worked_examples(labs, points, score, klass):
    result = child_pugh(*labs)
    assert result.ok
    assert tuple(result.points.values()) == points
    assert (result.score, result.klass) == (score, klass)


def test_child_pugh_missing_inputs_cannot_be_scored():
    result = child_pugh(1.0, None, 1.1, "none", None)
    assert not result.ok and result.score is None and result.klass is None
    assert result.missing == ("albumin", "encephalopathy")
    assert "cannot stage" in str(result) and "albumin" in str(result)


def test_child_pugh_rejects_unknown_levels_and_impossible_values():
    with pytest.raises(InputError, match="ascites"):
        child_pugh(1.0, 3.8, 1.1, "severe", "none")
    with pytest.raises(InputError, match="positive"):
        child_pugh(-1.0, 3.8, 1.1, "none", "none")


# ---------------------------------------------------------------- ALBI (Johnson 2015)
@pytest.mark.parametrize("bilirubin, albumin, expected, grade", [
    # 1.0 mg/dL = 17.1 umol/L, log10 = 1.23300 -> 0.66 x = 0.81378; 4.0 g/dL = 40 g/L -> 0.085 x = 3.400
    # ALBI = 0.81378 - 3.400 = -2.58622 > -2.60 -> grade 2 (just)
    (1.0, 4.0, -2.58622, 2),
    # 0.5 mg/dL = 8.55 umol/L, log10 = 0.93197 -> 0.61510; 45 g/L -> 3.825; ALBI = -3.20990 -> grade 1
    (0.5, 4.5, -3.20990, 1),
    # 2.0 mg/dL = 34.2 umol/L, log10 = 1.53403 -> 1.01246; 30 g/L -> 2.550; ALBI = -1.53754 -> grade 2
    (2.0, 3.0, -1.53754, 2),
    # 2.0 mg/dL -> 1.01246; 28 g/L -> 2.380; ALBI = -1.36754 > -1.39 -> grade 3
    (2.0, 2.8, -1.36754, 3),
    # 3.0 mg/dL = 51.3 umol/L, log10 = 1.71012 -> 1.12868; 25 g/L -> 2.125; ALBI = -0.99632 -> grade 3
    (3.0, 2.5, -0.99632, 3),
    # 0.8 mg/dL = 13.68 umol/L, log10 = 1.13609 -> 0.74982; 42 g/L -> 3.570; ALBI = -2.82018 -> grade 1
    (0.8, 4.2, -2.82018, 1),
])
def test_albi_worked_examples(bilirubin, albumin, expected, grade):
    result = albi(bilirubin, albumin)
    assert result.score == pytest.approx(expected, abs=5e-5)
    assert result.grade == grade


def test_albi_grade_cut_offs_are_inclusive_on_the_lower_grade():
    # choose bilirubin so that ALBI is exactly -2.60 with albumin 4.0 g/dL (40 g/L):
    # 0.66 log10(b) = -2.60 + 3.40 = 0.80 -> b = 10 ** (0.8 / 0.66) umol/L; the published rule puts <= -2.60 in grade 1
    bili_mgdl = 10 ** (0.80 / 0.66) / 17.1
    assert albi(bili_mgdl * (1 - 1e-9), 4.0).grade == 1
    assert albi(bili_mgdl * (1 + 1e-6), 4.0).grade == 2


def test_albi_missing_inputs():
    result = albi(None, 4.0)
    assert not result.ok and result.missing == ("bilirubin",)
    assert not albi(float("nan"), 4.0).ok


# ---------------------------------------------------------------- BCLC 2022 (Reig 2022)
@pytest.mark.parametrize("inputs, stage", [
    # very early: single 18 mm <= 2 cm, PS 0, Child-Pugh A
    (dict(performance_status=0, child_pugh_class="A", tumour_number=1, tumour_size_mm=18), "0"),
    (dict(performance_status=0, child_pugh_class="A", tumour_number=1, tumour_size_mm=20), "0"),
    # early: single nodule of any size (45 mm), or 2-3 nodules each <= 3 cm (largest 28 mm)
    (dict(performance_status=0, child_pugh_class="A", tumour_number=1, tumour_size_mm=45), "A"),
    (dict(performance_status=0, child_pugh_class="B", tumour_number=3, tumour_size_mm=28), "A"),
    (dict(performance_status=0, child_pugh_class="A", tumour_number=2, tumour_size_mm=30), "A"),
    # intermediate: 2 nodules with one > 3 cm, or more than 3 nodules
    (dict(performance_status=0, child_pugh_class="A", tumour_number=2, tumour_size_mm=35), "B"),
    (dict(performance_status=0, child_pugh_class="A", tumour_number=4, tumour_size_mm=20), "B"),
    # advanced: PS 1-2, or portal invasion / extrahepatic spread
    (dict(performance_status=1, child_pugh_class="A", tumour_number=1, tumour_size_mm=30), "C"),
    (dict(performance_status=2, child_pugh_class="B", tumour_number=1, tumour_size_mm=15), "C"),
    (dict(performance_status=0, child_pugh_class="A", tumour_number=1, tumour_size_mm=30, vascular_invasion=True), "C"),
    (dict(performance_status=0, child_pugh_class="A", tumour_number=1, tumour_size_mm=15, extrahepatic_spread=True), "C"),
    # terminal: end-stage liver function (Child-Pugh C) or PS 3-4, whatever the tumour burden
    (dict(performance_status=0, child_pugh_class="C", tumour_number=1, tumour_size_mm=15), "D"),
    (dict(performance_status=3, child_pugh_class="A", tumour_number=1, tumour_size_mm=15), "D"),
])
def test_bclc_worked_examples(inputs, stage):
    full = dict(vascular_invasion=False, extrahepatic_spread=False)
    full.update(inputs)
    result = bclc(**full)
    assert result.ok and result.stage == stage, result


def test_bclc_never_guesses_with_missing_inputs():
    # PS unknown: could be 0 (stage 0) or 1 (stage C) -> cannot stage
    result = bclc(child_pugh_class="A", tumour_number=1, tumour_size_mm=15, vascular_invasion=False,
                  extrahepatic_spread=False)
    assert not result.ok and result.stage is None and result.missing == ("performance_status",)
    # vascular invasion unknown with PS 0: stage 0 or C -> cannot stage
    result = bclc(performance_status=0, child_pugh_class="A", tumour_number=1, tumour_size_mm=15,
                  extrahepatic_spread=False)
    assert not result.ok and result.missing == ("vascular_invasion",)
    assert "cannot stage" in str(result) and "vascular_invasion" in str(result)
    # but a decision that needs no missing input is made: PS 3 is D whatever else is unknown
    assert bclc(performance_status=3).stage == "D"
    assert bclc(child_pugh_class="C").stage == "D"
    # and PS 1 is C whatever the (unknown) invasion status, because D is excluded by PS and Child-Pugh A
    assert bclc(performance_status=1, child_pugh_class="A").stage == "C"


def test_bclc_rejects_impossible_inputs():
    with pytest.raises(InputError, match="performance status"):
        bclc(performance_status=7, child_pugh_class="A")
    with pytest.raises(InputError, match="Child-Pugh"):
        bclc(performance_status=0, child_pugh_class="X")


def test_stage_clinical_from_raw_labs():
    # labs: 2.5 -> 2, 3.0 -> 2, 1.8 -> 2, none 1, none 1 = 8 -> Child-Pugh B; PS 0, single 25 mm -> BCLC A
    clinical = Clinical(bilirubin=2.5, albumin=3.0, inr=1.8, ascites="none", encephalopathy="none",
                        performance_status=0, tumour_number=1, tumour_size_mm=25.0, vascular_invasion=False,
                        extrahepatic_spread=False)
    result = stage_clinical(clinical)
    assert (result["child_pugh"].score, result["child_pugh"].klass) == (8, "B")
    assert result["albi"].grade == 2  # 0.66 log10(42.75) - 0.085 * 30 = 1.07642 - 2.55 = -1.47358
    assert result["albi"].score == pytest.approx(-1.47358, abs=5e-5)
    assert result["bclc"].stage == "A"
    # without INR, Child-Pugh cannot be scored and BCLC says which lab is missing
    result = stage_clinical(Clinical(bilirubin=1.0, albumin=4.0, ascites="none", encephalopathy="none",
                                     performance_status=0, tumour_number=1, tumour_size_mm=15.0,
                                     vascular_invasion=False, extrahepatic_spread=False))
    assert not result["bclc"].ok and "child_pugh:inr" in result["bclc"].missing


def test_staging_table_on_a_clinical_table():
    table = pd.DataFrame({"bilirubin": [1.0, 2.5, None], "albumin": [4.0, 3.0, 4.0], "inr": [1.1, 1.8, 1.0],
                          "ascites": ["none", "none", "none"], "encephalopathy": ["none", "none", "none"],
                          "performance_status": [0, 1, 0], "tumour_number": [1, 2, 1],
                          "tumour_size_mm": [18.0, 40.0, 25.0], "vascular_invasion": [False, False, "no"],
                          "extrahepatic_spread": [False, False, "no"]}, index=["p1", "p2", "p3"])
    staged = staging_table(table)
    assert staged.child_pugh_class.tolist() == ["A", "B", ""]
    assert staged.bclc_stage.tolist() == ["0", "C", ""]
    assert "child_pugh:bilirubin" in staged.loc["p3", "bclc_missing"]
    assert math.isnan(staged.loc["p3", "albi_score"])


def test_tumour_burden_from_a_lesion_table():
    from HCCFusionLib.clinical import tumour_burden

    lesions = pd.DataFrame({"lesion": [1, 2], "volume_mm3": [900.0, 50.0], "max_diameter_mm": [18.0, 31.5]})
    assert tumour_burden(lesions) == {"tumour_number": 2, "tumour_size_mm": 31.5}
    assert tumour_burden(lesions.iloc[:0]) == {"tumour_number": 0}
    assert tumour_burden(lesions[["lesion"]]) == {"tumour_number": 2}
    staged = stage_clinical({"bilirubin": 1.0, "albumin": 4.0, "inr": 1.0, "ascites": "none", "encephalopathy": "none",
                             "performance_status": 0, "vascular_invasion": False, "extrahepatic_spread": False,
                             **tumour_burden(lesions)})
    assert staged["bclc"].stage == "B"  # two nodules, the largest over 3 cm
