"""phase_image: a CT's contrast phase from the image (aorta, portal vein, liver HU), combined with tags; --phase."""
import os

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from HCCFusionLib import cli, phase_image
from HCCFusionLib.errors import HCCFusionError
from HCCFusionLib.io import load_study
from HCCFusionLib.phantom import make_patient, save_patient
from HCCFusionLib.phase_image import PhaseMeasurement, classify, measure_phase
from HCCFusionLib.phases import combine_with_image
from HCCFusionLib.study import LABELS, Phase

CONTRAST = (Phase.AP, Phase.PVP, Phase.DP)
#: Phantom seeds for the from-the-image-alone accuracy; HCCFUSION_PHASE_SEEDS=20 for the full check (~15 min).
SEEDS = int(os.environ.get("HCCFUSION_PHASE_SEEDS", "2"))


def strip_tags(src, dst, **tags):
    """Copy a DICOM folder without contrast/phase tags (and with `tags` set)."""
    dst.mkdir()
    for f in sorted(p for p in src.iterdir() if p.is_file()):
        ds = pydicom.dcmread(f)
        for key in ("ContrastBolusAgent", "ContrastBolusStartTime", "ContrastBolusRoute", "ProtocolName"):
            if key in ds:
                delattr(ds, key)
        ds.SeriesDescription = "Abdomen 3.0"
        for key, value in tags.items():
            setattr(ds, key, value)
        ds.save_as(dst / f.name)
    return dst


# ---------------------------------------------------------------- real CT
def test_real_slab_from_the_image_alone_and_regions_on_the_right_structures(shared_data, tmp_path):
    folder = strip_tags(shared_data / "real/ct_dicom_slab", tmp_path / "slab")
    (series,) = load_study(folder)
    reason = series.meta["phase_reason"]
    assert series.phase in CONTRAST and "image: aorta" in reason and "→ image wins over weak tags" in reason
    hu = series.meta["phase_image"]
    assert 120 < hu["aorta_hu"] < 190 and 80 < hu["liver_hu"] < 120 and hu["portal_vein_hu"] > hu["liver_hu"] + 20
    # the found aorta and liver lie on TotalSegmentator's aorta (52) and liver (5), checked on the working grid
    work, _ = phase_image._working_grid(series.image, None)
    labels = sitk.Resample(sitk.ReadImage(str(shared_data / "real/ct_dicom_slab_labels.nii.gz")), work,
                           sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    truth = sitk.GetArrayFromImage(labels)
    a = sitk.GetArrayFromImage(work).astype(np.float32)
    sx, sy, sz = work.GetSpacing()
    body = phase_image._body(a)
    spine = phase_image._spine(a, body, sx, sy)
    far = phase_image._distance(a > 400, (sx, sy, sz)) > 6
    _, (ax, ay) = phase_image._aorta(a, body, far, spine, sx, sy)
    assert (truth[:, int(round(ay)), int(round(ax))] == 52).mean() > 0.8
    liver = phase_image._liver(a, body, spine, sx, sy, sz)
    assert (truth[liver] == 5).mean() > 0.9 and liver.sum() > 0.5 * (truth == 5).sum()


def test_real_untimed_contrast_ct_and_the_iv_route_case(shared_data, tmp_path):
    (series,) = load_study(shared_data / "real/liver_ct_contrast/CRLM-CT-1004")
    assert series.phase in CONTRAST and "image: aorta" in series.meta["phase_reason"]
    assert "tags: contrast given" in series.meta["phase_reason"]
    # the reported case: "LIVER 2 PHASE (C/A/P)", route "Oral & IV", no agent: contrast (was NC, 0.4)
    folder = strip_tags(shared_data / "real/liver_ct_contrast/CRLM-CT-1004", tmp_path / "crlm",
                        SeriesDescription="LIVER 2 PHASE (C/A/P)", ContrastBolusRoute="Oral & IV")
    (series,) = load_study(folder)
    assert series.phase in CONTRAST and "ContrastBolusRoute 'Oral & IV'" in series.meta["phase_reason"]
    assert series.meta["phase_image"]["liver_hu"] > 95


def test_real_non_contrast_ct_stays_non_contrast(shared_data):
    (series,) = load_study(shared_data / "real/liver_ct_dicom_seg/ct-3slice")
    assert series.phase is Phase.NC and "image: aorta" in series.meta["phase_reason"]


# ---------------------------------------------------------------- phantoms, from the image alone
@pytest.fixture(scope="module")
def phantom_results():
    """Confusion counts {(truth, found): n} over SEEDS medium phantoms (1.85 mm, 2.5 mm), and one PVP series."""
    confusion = {}
    for seed in range(SEEDS):
        patient = make_patient(seed=seed, size="medium")
        for s in patient.study:
            found = measure_phase(s.image).phase
            confusion[(s.phase.value, found.value)] = confusion.get((s.phase.value, found.value), 0) + 1
    return confusion, patient.study["PVP"]


def test_phantom_phases_from_the_image_alone(phantom_results):
    confusion, _ = phantom_results
    total = sum(confusion.values())
    right = sum(n for (truth, found), n in confusion.items() if truth == found)
    print("confusion (truth, found): count", confusion)
    assert total == 4 * SEEDS and right >= 0.95 * total


def test_a_given_liver_mask_is_used(phantom_results):
    _, pvp = phantom_results
    liver = pvp.masks["labels"] == LABELS["liver"]
    result = measure_phase(pvp.image, liver=liver)
    assert result.phase is Phase.PVP and abs(result.liver_hu - 110) < 12  # the phantom's PVP liver
    with pytest.raises(HCCFusionError):
        measure_phase(pvp.image, liver=liver[::2, ::2, ::2])  # not on the image's grid


def test_classify_rule_on_typical_values():
    assert classify(40, 40, 60).phase is Phase.NC
    early = classify(250, 45, 62)
    assert early.phase is Phase.AP and early.sub_label == "early arterial"
    late = classify(300, 125, 78)
    assert late.phase is Phase.AP and late.sub_label == "late arterial" and 25 <= late.seconds < 50
    assert classify(165, 185, 110).phase is Phase.PVP and classify(115, 130, 92).phase is Phase.DP
    assert "aorta 165 HU, portal vein 185 HU, liver 110 HU → portal venous" in classify(165, 185, 110).reason
    assert classify(None, None, 110).phase in CONTRAST
    with pytest.raises(HCCFusionError):
        classify(None, 150, None)


def test_combination_rules():
    pvp_image = classify(165, 185, 110)
    assert combine_with_image((Phase.NC, 0.4, "no tags"), pvp_image)[0] is Phase.PVP  # weak tags give way
    kept = combine_with_image((Phase.AP, 0.9, "description keyword 'ART'"), pvp_image)
    assert kept[0] is Phase.AP and "tags win" in kept[2] and "image:" in kept[2]
    contradicted = combine_with_image((Phase.NC, 0.9, "description keyword 'NATIV'"), classify(250, 180, 110))
    assert contradicted[0] is not Phase.NC and "contradicts" in contradicted[2]
    unsure_but_enhanced = PhaseMeasurement(Phase.PVP, 0.35, 120, 140, 140, 98, reason="image: …",
                                           probabilities={"NC": 0.01, "AP": 0.3, "PVP": 0.35, "DP": 0.34})
    assert combine_with_image((Phase.NC, 0.4, "no tags"), unsure_but_enhanced)[0] is Phase.PVP
    assert combine_with_image((Phase.AP, 0.5, "order"), unsure_but_enhanced)[0] is Phase.AP  # not about contrast


# ---------------------------------------------------------------- robustness
@pytest.mark.parametrize("make", [
    lambda: sitk.Image([64, 64, 20], sitk.sitkInt16) + 40,  # constant
    lambda: sitk.GetImageFromArray(np.full((2, 3, 3), -1000, np.int16)),  # tiny
    lambda: sitk.GetImageFromArray(np.random.default_rng(0).integers(-1000, 1500, (8, 40, 40)).astype(np.int16)),
])
def test_unusable_images_raise_a_clean_error(make):
    with pytest.raises(HCCFusionError):
        measure_phase(make())


def test_mr_image_is_refused_or_measured_cleanly(shared_data):
    mr = sitk.ReadImage(str(shared_data / "real/mr_abdomen/mr_abdomen.nii.gz"))
    try:
        result = measure_phase(mr)
    except HCCFusionError as exc:
        assert "CT" in str(exc)
    else:
        assert result.phase in Phase and 0 <= result.confidence <= 1


# ---------------------------------------------------------------- --phase on every verb
@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    patient = make_patient(seed=3, size="small", phases=("AP", "PVP"))
    return save_patient(patient, tmp_path_factory.mktemp("phantom") / "study")


@pytest.mark.parametrize("verb", ["info", "run", "register", "segment", "extract", "lirads"])
def test_phase_override_reaches_load_study(verb, small_study, monkeypatch, tmp_path):
    seen = {}

    def spy(path, phase_overrides=None, study_id=None):
        seen["overrides"] = phase_overrides
        raise HCCFusionError("stop after loading")

    monkeypatch.setattr("HCCFusionLib.io.load_study", spy)
    out = [] if verb == "info" else ["--out", str(tmp_path / "out")]
    assert cli.main(["--progress", "none", verb, str(small_study), "--phase", "AP", "DP", *out]) == 2
    assert seen["overrides"] == {"AP": "DP"}


def test_phase_override_end_to_end_on_register(small_study, tmp_path, capsys):
    argv = ["register", str(small_study), "--phase", "AP", "DP", "--mode", "rigid", "--out", str(tmp_path / "out")]
    assert cli.main(["--progress", "none", *argv]) == 0
    registered = load_study(tmp_path / "out" / "registration")
    assert Phase.DP in {s.phase for s in registered} and Phase.AP not in {s.phase for s in registered}
