"""segmentation.engines and catalog: which engine serves which study (and why), the models catalogue."""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import SimpleITK as sitk

from HCCFusionLib import cli
from HCCFusionLib.errors import InputError
from HCCFusionLib.phantom import make_patient
from HCCFusionLib.segmentation import catalog
from HCCFusionLib.segmentation.engines import choose_engine
from HCCFusionLib.study import Series, Study


def _study(*phases, phantom=False) -> Study:
    study = Study("S1")
    image = sitk.Image([8, 8, 4], sitk.sitkInt16)
    for phase in phases:
        study.add(Series(phase, phase, image, meta={"phantom": True} if phantom else {}))
    return study


@pytest.fixture(scope="module")
def phantom_study():
    return make_patient(11, "small", phases=("AP", "PVP"), misalignment="none").study


def test_phantom_study_gets_the_phantom_sample_and_a_real_one_never(phantom_study):
    choice = choose_engine(phantom_study)
    assert choice.engine == "phantom" and "synthetic" in choice.reason
    real = _study("AP", "PVP")  # the same phases without the phantom flag: a patient
    assert choose_engine(real).engine == "liverlesion"
    assert choose_engine(phantom_study, "liverlesion").engine == "liverlesion"


@pytest.mark.parametrize("phases", [("NC",), ("AP",), ("PVP",), ("DP",), ("T2",), ("T2", "ADC"), ("HBP",),
                                    ("PVP", "PET")])
def test_single_series_and_mr_studies_get_the_real_data_engine(phases):
    choice = choose_engine(_study(*phases))
    assert choice.engine == "liverlesion" and ", ".join(phases) in choice.reason


def test_studies_no_engine_can_serve_are_refused_with_what_is_needed():
    with pytest.raises(InputError, match="needs a CT series .* or an MR series"):
        choose_engine(_study("PET"))
    with pytest.raises(InputError, match="phantom sample model needs CT AP and PVP.*liverlesion"):
        choose_engine(_study("PVP", phantom=True), "phantom")
    with pytest.raises(InputError, match="Unknown segmentation engine 'fast'"):
        choose_engine(_study("PVP"), "fast")
    with pytest.raises(InputError, match="needs its folder"):
        choose_engine(_study("PVP"), "nnunet")


def test_user_folders_pick_their_engine(tmp_path):
    assert choose_engine(_study("PVP"), model=tmp_path).engine == "bundle"
    assert choose_engine(_study("PVP"), nnunet=tmp_path).engine == "nnunet"


def test_options_of_another_engine_are_refused(phantom_study):
    from HCCFusionLib.segmentation.engines import segment

    with pytest.raises(InputError, match="channel_map do not apply to segmentation engine 'phantom'"):
        segment(phantom_study, channel_map={"0": "AP"})


def test_cli_segment_says_which_engine_and_why(phantom_study, tmp_path, capsys):
    from HCCFusionLib.io import save_study

    save_study(phantom_study, tmp_path / "study")
    assert cli.main(["--progress", "none", "segment", str(tmp_path / "study"), "--no-tta", "--out",
                     str(tmp_path / "out")]) == 0
    assert "engine phantom (synthetic phantom study with CT AP and PVP" in capsys.readouterr().out
    info = json.loads((tmp_path / "out" / "segmentation" / "segmentation.json").read_text())
    assert info["engine"] == "phantom" and info["model"].endswith("hcc_phantom_ct")
    assert cli.main(["--progress", "none", "segment", str(tmp_path / "study"), "--engine", "phantom",
                     "--channel", "0", "AP", "--out", str(tmp_path / "out2")]) == 2
    assert "do not apply" in capsys.readouterr().err and not (tmp_path / "out2").exists()


def test_catalogue_lists_every_shipped_model_with_checked_digests():
    names = [e["name"] for e in catalog.entries()]
    assert names == ["liverlesion", "phantom"]
    for item in catalog.entries():
        for key in ("engine", "modality", "phases", "labels", "spacing_mm", "seconds_cpu", "licence", "bundles"):
            assert item.get(key) not in (None, "", []), (item["name"], key)
        assert catalog.status(item) == "ok", item["name"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli.main(["models"]) == 0
    table = printed.getvalue()
    assert "liverlesion" in table and "phantom" in table and "Apache-2.0" in table
    assert catalog.bundle_digest("hcc_phantom_ct")[:12] in table


def test_a_modified_shipped_bundle_is_caught(monkeypatch, tmp_path):
    import shutil

    models = tmp_path / "models"
    shutil.copytree(catalog.MODELS / "hcc_phantom_ct", models / "hcc_phantom_ct")
    (models / "catalog.json").write_text(catalog.CATALOG.read_text())
    monkeypatch.setattr(catalog, "MODELS", models)
    monkeypatch.setattr(catalog, "CATALOG", models / "catalog.json")
    assert catalog.status(catalog.entry("phantom")) == "ok"
    sums = models / "hcc_phantom_ct" / "checksums.sha256"
    sums.write_text(sums.read_text() + "\n")
    assert catalog.status(catalog.entry("phantom")) == "modified: hcc_phantom_ct"
    with pytest.raises(Exception, match="modified"):
        catalog.check("phantom")


# ------------------------------------------------------------------ domain QC (model cards state their domain)
@pytest.fixture(scope="module")
def real_ct_as_two_phases(shared_data):
    """The real contrast CT slab with its PVP copied as AP: what a new user tried with the phantom model."""
    from HCCFusionLib.io import load_study

    study = load_study(shared_data / "real" / "ct_dicom_slab")
    pvp = study["PVP"]
    study.add(Series("AP", "AP", pvp.image, meta=dict(pvp.meta)))
    return study


def test_real_ct_given_to_the_phantom_model_is_warned_about_and_fails_qc(real_ct_as_two_phases):
    from HCCFusionLib.segmentation.bundle import load_bundle
    from HCCFusionLib.segmentation.engines import segment
    from HCCFusionLib.segmentation.predictor import segment_study

    seg, info = segment(real_ct_as_two_phases, "phantom", tta=False)
    assert any("trained on synthetic phantoms only" in w for w in info["qc_warnings"]), info["qc_warnings"]
    assert info["qc_failure"] == "no liver found"  # never a silent empty result
    plain = segment_study(real_ct_as_two_phases, load_bundle(), tta=False)  # the checks change no label
    assert np.array_equal(sitk.GetArrayFromImage(seg.labels), sitk.GetArrayFromImage(plain.labels))


def test_inside_the_domain_no_warning_and_a_small_liver_fails(phantom_study):
    from HCCFusionLib.segmentation.bundle import load_bundle
    from HCCFusionLib.segmentation.domain import check_input, check_output

    domain = load_bundle().card["domain"]
    assert domain["synthetic"] and domain["modality"] == ["CT"] and len(domain["liver_ml"]) == 2
    medium = make_patient(123, "medium", phases=("AP", "PVP"), misalignment="none").study  # as the model was trained
    assert check_input(medium, ["AP", "PVP"], domain) == []
    # the small test phantoms (3.7 mm voxels) blur air into the body: outside the training intensities, and said
    assert any("p5" in w for w in check_input(phantom_study, ["AP", "PVP"], domain))
    labels = sitk.Image([100, 100, 10], sitk.sitkUInt8)
    labels.SetSpacing((1.0, 1.0, 2.0))
    assert check_output(labels, domain) == "no liver found"
    labels[10:60, 10:60, 0:5] = 1  # 25 ml
    assert "far smaller than any training case" in check_output(labels, domain)
    assert check_output(labels, None) is None  # a model without a stated domain: only "no liver" fails
    coarse = Study("coarse")
    image = sitk.Image([40, 40, 10], sitk.sitkInt16) + 500
    image.SetSpacing((8.0, 8.0, 8.0))
    coarse.add(Series("PVP", "PVP", image))
    warnings = check_input(coarse, ["PVP"], domain)
    assert any("spacing 8x8x8 mm is far from the training range" in w for w in warnings)
    assert any("body intensity p50 500 HU is outside the training range" in w for w in warnings)


def test_run_stops_at_a_failed_segmentation_qc_and_keeps_the_label_map(real_ct_as_two_phases, tmp_path, capsys):
    from HCCFusionLib.errors import QualityError
    from HCCFusionLib.pipeline import run

    with pytest.raises(QualityError, match="Stage 'segmentation' failed: QC: no liver found \\(engine phantom\\)"):
        run(real_ct_as_two_phases, tmp_path / "out", engine="phantom", mode="rigid", model="none")
    info = json.loads((tmp_path / "out" / "segmentation" / "segmentation.json").read_text())
    assert info["qc_failure"] == "no liver found" and info["qc_warnings"]
    assert not (tmp_path / "out" / "radiomics").exists()
