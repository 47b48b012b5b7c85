"""Study model: phases, series geometry checks, clinical variables, look-ups with missing phases."""
import numpy as np
import pytest
import SimpleITK as sitk

from HCCFusionLib.errors import GeometryError, InputError
from HCCFusionLib.study import Clinical, Modality, Phase, Series, Study, same_grid


def image(size=(8, 8, 4), spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0)):
    img = sitk.Image(list(size), sitk.sitkInt16)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    return img


@pytest.mark.parametrize("text, phase", [
    ("PVP", Phase.PVP), ("portal venous", Phase.PVP), ("late-arterial", Phase.AP), ("Hepatobiliary", Phase.HBP),
    ("non_contrast", Phase.NC), ("equilibrium", Phase.DP), (Phase.ADC, Phase.ADC), ("fdg", Phase.PET),
])
def test_phase_parse_accepts_codes_and_common_names(text, phase):
    assert Phase.parse(text) is phase


def test_unknown_phase_names_the_choices():
    with pytest.raises(InputError, match="Unknown phase/sequence 'venogram'.*PVP"):
        Phase.parse("venogram")


def test_modality_follows_phase_unless_given():
    assert [p.modality for p in (Phase.AP, Phase.HBP, Phase.PET, Phase.CEUS)] == \
        [Modality.CT, Modality.MR, Modality.PET, Modality.US]
    assert Series("x", "T1", image(), modality="PT").modality is Modality.PET


def test_series_rejects_2d_images_and_masks_on_another_grid():
    with pytest.raises(GeometryError, match="2D"):
        Series("slice", Phase.AP, sitk.Image([8, 8], sitk.sitkInt16))
    with pytest.raises(GeometryError, match="mask 'labels' of series 'AP'.*resample the mask"):
        Series("AP", Phase.AP, image(), masks={"labels": image(spacing=(1.0, 1.0, 2.5))})
    series = Series("AP", Phase.AP, image())
    series.add_mask("labels", image())
    assert list(series.masks) == ["labels"]


def test_study_lookup_by_name_or_phase_and_missing_phases_are_normal():
    study = Study("P1")
    study.add(Series("arterial", Phase.AP, image()))
    study.add(Series("PVP", "portal", image()))
    assert study.get("AP").name == "arterial" and study["PVP"].phase is Phase.PVP
    assert study.get(Phase.HBP) is None and study.get("no such thing") is None
    assert study.phases == [Phase.AP, Phase.PVP] and len(study) == 2
    with pytest.raises(InputError, match="no series 'DP'.*arterial, PVP"):
        study[Phase.DP]
    with pytest.raises(InputError, match="already has a series named 'PVP'"):
        study.add(Series("PVP", Phase.PVP, image()))
    rows = study.summary()
    assert rows[0]["phase"] == "AP" and rows[0]["size"] == "8x8x4" and rows[0]["spacing_mm"] == "1x1x2"


def test_clinical_from_dict_validates_names_and_etiology():
    clinical = Clinical.from_dict({"afp": 420.0, "etiology": "HBV", "tumour_number": 2})
    assert clinical.to_dict()["afp"] == 420.0 and clinical.bilirubin is None
    with pytest.raises(InputError, match=r"Unknown clinical variable\(s\) \['alfa'\]"):
        Clinical.from_dict({"alfa": 1})
    with pytest.raises(InputError, match="Unknown etiology 'HDV'"):
        Clinical(etiology="HDV")


def test_same_grid_tolerates_rounding_only():
    a = image()
    b = image(origin=(1e-6, 0.0, 0.0))
    c = image(origin=(0.5, 0.0, 0.0))
    assert same_grid(a, b) and not same_grid(a, c)
    assert np.allclose(a.GetSpacing(), (1.0, 1.0, 2.0))
