"""Phantom patients and cohorts: determinism, geometry, ground truth, transforms, intensities, planted signal."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest
import SimpleITK as sitk

from HCCFusionLib import phantom as P
from HCCFusionLib.errors import InputError
from HCCFusionLib.study import LABELS

FACTS_CT = {  # HCC_IMAGING_FACTS.md, typical mean HU (NC, AP, PVP, DP)
    "liver": [(55, 65), (70, 85), (100, 120), (85, 100)],
    "cirrhotic_liver": [(45, 60), (65, 80), (90, 110), (80, 95)],
    "hcc": [(35, 50), (100, 140), (80, 100), (60, 80)],
    "portal_vein": [(35, 45), (100, 150), (170, 200), (120, 140)],
    "spleen": [(45, 55), (100, 140), (110, 130), (95, 110)],
}


def arr(image):
    return sitk.GetArrayFromImage(image)


def _radius(voxels, spacing):
    """Kernel radius per axis: `voxels` in-plane, the same physical size (at least 1 voxel) across slices."""
    if spacing is None:
        return [voxels] * 3
    return [voxels, voxels, max(1, int(round(voxels * spacing[0] / spacing[2])))] if voxels else [0, 0, 0]


def erode(mask, voxels=1, spacing=None):
    img = sitk.GetImageFromArray(mask.astype(np.uint8))
    return arr(sitk.BinaryErode(img, _radius(voxels, spacing))).astype(bool)


def dilate(mask, voxels, spacing=None):
    img = sitk.GetImageFromArray(mask.astype(np.uint8))
    return arr(sitk.BinaryDilate(img, _radius(voxels, spacing))).astype(bool)


def physical_points(image, mask):
    idx = np.argwhere(mask)[:, ::-1].astype(float)  # (x, y, z) indices
    return np.asarray(image.GetOrigin()) + idx * np.asarray(image.GetSpacing())


@pytest.fixture(scope="module")
def small():
    return P.make_patient(7, "small", mri=True, n_tumours=2, cirrhotic=True)


@pytest.fixture(scope="module")
def designed():
    lesions = [P.LesionSpec(None, 30.0, "hcc", aphe=True, washout=True, capsule=True),
               P.LesionSpec(None, 24.0, "hcc", aphe=False, washout=False, capsule=False),
               P.LesionSpec(None, 14.0, "hcc", aphe=True, washout=False, capsule=True)]
    return P.make_patient(11, "medium", mri=True, misalignment="none", cirrhotic=False, lesions=lesions)


# ---------------------------------------------------------------- determinism and geometry
def test_same_seed_gives_identical_patient():
    a = P.make_patient(3, "small", phases=("AP", "PVP"))
    b = P.make_patient(3, "small", phases=("AP", "PVP"))
    c = P.make_patient(4, "small", phases=("AP", "PVP"))
    for name in ("AP", "PVP"):
        assert np.array_equal(arr(a.study[name].image), arr(b.study[name].image))
        assert np.array_equal(arr(a.study[name].masks["labels"]), arr(b.study[name].masks["labels"]))
        assert a.transforms[name].GetParameters() == b.transforms[name].GetParameters()
        assert np.array_equal(a.landmarks[name], b.landmarks[name])
    assert a.lesions == b.lesions and a.study.clinical == b.study.clinical
    assert not np.array_equal(arr(a.study["PVP"].image), arr(c.study["PVP"].image))


def test_sizes_show_the_same_patient(small):
    medium = P.make_patient(7, "medium", phases=("PVP",), n_tumours=2, cirrhotic=True)
    assert [t.centre_mm for t in medium.lesions] == [t.centre_mm for t in small.lesions]
    assert np.allclose(medium.landmarks["PVP"], small.landmarks["PVP"])


def test_series_grids_and_labels(small):
    assert list(small.study.series) == list(P.CT_PHASES + P.MR_SEQUENCES)
    assert small.reference == "PVP"
    ref = small.study["PVP"].image
    assert ref.GetSize() == (96, 96, 40) and np.allclose(ref.GetSpacing(), (3.7, 3.7, 5.0))
    assert np.allclose(ref.GetDirection(), np.eye(3).ravel())
    assert small.labels.GetSize() == ref.GetSize() and small.lesion_labels.GetSize() == ref.GetSize()
    for series in small.study:
        image = series.image
        assert image.GetDimension() == 3
        if series.name in P.CT_PHASES:
            assert image.GetPixelID() == sitk.sitkInt16
        else:
            assert all(s >= m for s, m in zip(image.GetSpacing(), P.MR_MIN_SPACING))
        values = set(np.unique(arr(series.masks["labels"])).tolist())
        assert values == set(LABELS.values()), (series.name, values)
    assert np.array_equal(arr(small.labels), arr(small.study["PVP"].masks["labels"]))
    lesion = arr(small.lesion_labels)
    assert set(np.unique(lesion)) == {0, 1, 2}
    assert np.array_equal(lesion > 0, arr(small.labels) == LABELS["tumour"])
    clinical = small.study.clinical
    assert clinical.tumour_number == sum(t.pattern != "hemangioma" for t in small.lesions)
    assert clinical.etiology and clinical.center and clinical.age and clinical.afp is not None


def test_designed_lesions_match_truth(designed):
    lesion = arr(designed.lesion_labels)
    image = designed.study["PVP"].image
    voxel = max(image.GetSpacing()[:2])
    dirs = P.lesions._unit_directions(256)
    assert set(np.unique(lesion)) == {0, 1, 2, 3}
    for truth in designed.lesions:
        pts = physical_points(image, lesion == truth.index)
        width = max(float(np.ptp(pts @ d)) for d in dirs) + voxel  # longest extent + one voxel
        assert abs(width - truth.diameter_mm) <= 2 * voxel, (truth.index, width, truth.diameter_mm)
        assert np.linalg.norm(pts.mean(0) - truth.centre_mm) < voxel
    assert [t.lirads for t in designed.lesions] == ["LR-5", "LR-3", "LR-4"]
    assert (designed.lesions[0].aphe, designed.lesions[0].washout, designed.lesions[0].capsule) == (True,) * 3


def test_lesions_inside_liver_and_apart():
    specs = [P.LesionSpec(None, 22.0), P.LesionSpec(None, 18.0, "metastasis"), P.LesionSpec(None, 16.0, "hemangioma")]
    patient = P.make_patient(21, "small", phases=("PVP",), misalignment="none", lesions=specs)
    labels = arr(patient.labels)
    lesions = arr(patient.lesion_labels)
    around = dilate(lesions > 0, 1) & ~(lesions > 0)
    assert np.isin(labels[around], [LABELS["liver"], LABELS["portal_vein"], LABELS["tumour"]]).mean() > 0.97
    centres = np.array([t.centre_mm for t in patient.lesions])
    for i in range(3):
        for j in range(i):
            d = np.linalg.norm(centres[i] - centres[j])
            assert d > 0.5 * (patient.lesions[i].diameter_mm + patient.lesions[j].diameter_mm)
    assert [t.lirads for t in patient.lesions] == ["LR-5", None, None]


# ---------------------------------------------------------------- transforms and landmarks
def test_landmarks_are_the_true_transforms(small):
    ref = small.landmarks["PVP"]
    assert len(small.landmark_names) == len(ref) >= 18
    for name, transform in small.transforms.items():
        mapped = np.array([transform.TransformPoint(tuple(p)) for p in ref])
        assert np.allclose(small.landmarks[name], mapped, atol=1e-9)
    assert np.allclose(small.landmarks["PVP"], ref)


def test_images_are_rendered_through_the_transforms(small):
    """Lesion centroids seen in each series' labels sit where the true transform maps them."""
    for name, series in small.study.series.items():
        labels = arr(series.masks["labels"])
        image = series.image
        for truth in small.lesions:
            expected = np.asarray(small.transforms[name].TransformPoint(truth.centre_mm))
            pts = physical_points(image, labels == LABELS["tumour"])
            near = pts[np.linalg.norm(pts - expected, axis=1) < truth.diameter_mm * 0.6 + 4]
            assert len(near) and np.linalg.norm(near.mean(0) - expected) < 0.6 * max(image.GetSpacing()), name


def test_inverse_used_for_rendering_is_accurate(small):
    transform = small.transforms["AP"]
    inverse = P.InverseMap(transform.GetNthTransform(0), transform.GetNthTransform(1))
    pts = np.random.default_rng(0).uniform(-150, 150, (200, 3))
    back = np.array([transform.TransformPoint(tuple(p)) for p in inverse(pts)])
    assert np.abs(back - pts).max() < 0.1


def test_misalignment_magnitudes(small):
    names = small.landmark_names
    liver = small.landmarks["PVP"][names.index("right_lobe_centre")]
    spine = small.landmarks["PVP"][names.index("vertebra_z0")]
    for name, transform in small.transforms.items():
        if name == "PVP":
            assert transform.GetParameters() == (0.0,) * 6
            continue
        rigid, breathing = transform.GetNthTransform(0), transform.GetNthTransform(1)
        matrix = np.asarray(rigid.GetMatrix()).reshape(3, 3)
        angle = math.degrees(math.acos(np.clip((np.trace(matrix) - 1) / 2, -1, 1)))
        assert angle <= P.MAX_ROTATION_DEG + 1e-6
        assert np.linalg.norm(rigid.GetTranslation()) <= P.MAX_TRANSLATION_MM + 1e-6
        liver_move = np.asarray(breathing.TransformPoint(tuple(liver))) - liver
        spine_move = np.asarray(breathing.TransformPoint(tuple(spine))) - spine
        assert 5.0 - 1e-6 <= abs(liver_move[2]) <= 15.0 + 1e-6, name
        assert np.linalg.norm(spine_move) < 0.6 * np.linalg.norm(liver_move), name
        jmin, jmax = P.jacobian_range(breathing)
        assert 0.5 < jmin <= 1.0 <= jmax < 1.5


def test_rigid_and_none_modes():
    rigid = P.make_patient(5, "small", phases=("AP", "PVP"), misalignment="rigid")
    assert isinstance(rigid.transforms["AP"], sitk.Euler3DTransform)
    assert 0 < np.linalg.norm(rigid.landmarks["AP"] - rigid.landmarks["PVP"], axis=1).max() < 8 + 3 * 0.06 * 200
    none = P.make_patient(5, "small", phases=("AP", "PVP"), misalignment="none")
    assert np.allclose(none.landmarks["AP"], none.landmarks["PVP"])
    assert np.array_equal(arr(none.study["AP"].masks["labels"]), arr(none.labels))


# ---------------------------------------------------------------- intensities
def _mean(series, mask):
    return float(arr(series.image)[mask].mean())


def test_ct_values_match_facts(designed):
    labels = arr(designed.labels)
    lesion = arr(designed.lesion_labels)
    masks = {"liver": erode(labels == LABELS["liver"], 2), "portal_vein": erode(labels == LABELS["portal_vein"], 1),
             "spleen": erode(labels == LABELS["spleen"], 2), "hcc": erode(lesion == 1, 3)}
    for k, phase in enumerate(P.CT_PHASES):
        series = designed.study[phase]
        for tissue, mask in masks.items():
            lo, hi = FACTS_CT[tissue][k]
            assert lo <= _mean(series, mask) <= hi, (tissue, phase, _mean(series, mask))
    spleen_nc = arr(designed.study["NC"].image)[masks["spleen"]]
    assert 9.0 <= spleen_nc.std() <= 15.0  # CT noise SD ~12 HU


def test_cirrhotic_liver_values():
    patient = P.make_patient(8, "small", cirrhotic=True, n_tumours=0, misalignment="none")
    liver = erode(arr(patient.labels) == LABELS["liver"], 1)
    for k, phase in enumerate(P.CT_PHASES):
        lo, hi = FACTS_CT["cirrhotic_liver"][k]
        assert lo <= _mean(patient.study[phase], liver) <= hi, phase
    normal = P.make_patient(8, "small", cirrhotic=False, n_tumours=0, misalignment="none")
    normal_liver = erode(arr(normal.labels) == LABELS["liver"], 1)
    assert arr(patient.study["NC"].image)[liver].std() > arr(normal.study["NC"].image)[normal_liver].std()
    assert liver.sum() < normal_liver.sum()  # smaller right lobe


def _lesion_regions(patient, index):
    """Core, 1-voxel shell and a liver ring 2-5 voxels outside lesion `index` (full-grid masks, computed in a crop)."""
    spacing = patient.labels.GetSpacing()
    lesion = arr(patient.lesion_labels) == index
    liver = arr(patient.labels) == LABELS["liver"]
    lo = np.maximum(np.argwhere(lesion).min(0) - [4, 8, 8], 0)
    hi = np.argwhere(lesion).max(0) + [5, 9, 9]
    crop = tuple(slice(a, b) for a, b in zip(lo, hi))
    regions = []
    small, small_liver = lesion[crop], liver[crop]
    for mask in (erode(small, 2, spacing), small & ~erode(small, 1, spacing),
                 dilate(small, 5, spacing) & ~dilate(small, 2, spacing) & erode(small_liver, 1, spacing)):
        full = np.zeros_like(lesion)
        full[crop] = mask
        regions.append(full)
    core, shell, ring = regions
    assert core.sum() > 5 and ring.sum() > 20
    return core, shell, ring


def test_designed_kinetics_present_only_when_designed(designed):
    study = designed.study
    mean = lambda phase, mask: float(arr(study[phase].image)[mask].mean())  # noqa: E731
    core, shell, ring = _lesion_regions(designed, 1)  # APHE + washout + capsule
    assert mean("AP", core) > mean("AP", ring) + 20
    assert mean("PVP", core) < mean("PVP", ring) - 10 and mean("DP", core) < mean("DP", ring) - 10
    assert mean("PVP", shell) > mean("PVP", ring) + 5 and mean("PVP", shell) > mean("PVP", core) + 15
    assert mean("DP", shell) > mean("DP", ring) + 5
    core, shell, ring = _lesion_regions(designed, 2)  # none of them
    assert mean("AP", core) < mean("AP", ring)
    assert mean("PVP", core) > mean("PVP", ring) - 3 and mean("DP", core) > mean("DP", ring) - 3
    assert mean("PVP", shell) < mean("PVP", ring) + 5
    core, shell, ring = _lesion_regions(designed, 3)  # APHE + capsule, no washout, 14 mm
    assert mean("AP", core) > mean("AP", ring) + 15 and mean("PVP", core) > mean("PVP", ring) - 3


def test_mri_contrasts(designed):
    core, _, ring = _lesion_regions(designed, 1)
    for name in ("ADC", "HBP"):
        series = designed.study[name]
        labels = arr(series.masks["labels"])
        lesion = erode(labels == LABELS["tumour"], 1)
        liver = erode(labels == LABELS["liver"], 2)
        assert arr(series.image)[lesion].mean() < 0.9 * arr(series.image)[liver].mean(), name
    adc_liver = np.median(arr(designed.study["ADC"].image)[erode(arr(designed.study["ADC"].masks["labels"]) == 1, 2)])
    assert 1100 <= adc_liver <= 1500


# ---------------------------------------------------------------- inputs and speed
@pytest.mark.parametrize("kwargs, match", [
    ({"size": "huge"}, "size"), ({"misalignment": "wobbly"}, "misalignment"),
    ({"phases": ("XX",)}, "Phases"), ({"traits": {"bogus": 1}}, "traits"),
    ({"lesions": [P.LesionSpec((150.0, 100.0, -90.0), 20.0)]}, "cannot be placed"),
    ({"lesions": [P.LesionSpec(None, 20.0, "lymphoma")]}, "pattern"),
    ({"lesions": [P.LesionSpec((1.0, 2.0), 10.0)]}, "centre_mm"),
])
def test_bad_inputs(kwargs, match):
    with pytest.raises(InputError, match=match):
        P.make_patient(1, **{"size": "small", **kwargs})


def test_small_is_fast():
    start = time.perf_counter()
    P.make_patient(12, "small")
    assert time.perf_counter() - start < 6.0  # < 1 s on an idle core; generous for a shared CI machine


def test_full_size_patient():
    start = time.perf_counter()
    patient = P.make_patient(2, "full", phases=("AP", "PVP"), n_tumours=1)
    elapsed = time.perf_counter() - start
    image = patient.study["AP"].image
    assert image.GetSize() == (512, 512, 120) and np.allclose(image.GetSpacing(), (0.7, 0.7, 2.5))
    assert elapsed < 60.0
    truth = patient.lesions[0]
    volume = (arr(patient.lesion_labels) == 1).sum() * 0.7 * 0.7 * 2.5
    assert 0.3 * truth.diameter_mm ** 3 < volume < 0.55 * truth.diameter_mm ** 3  # spheroid: pi/6 d^3 at most


# ---------------------------------------------------------------- cohorts
def test_cohort_table_and_features():
    cohort = P.make_cohort(500, 5)
    t = cohort.table
    assert t.index.name == "patient_id" and len(t) == 500
    for column in ("mvi", "early_recurrence", "event", "response"):
        assert set(t[column].unique()) == {0, 1} and 0.15 < t[column].mean() < 0.85
    assert (t["survival_months"] > 0).all() and set(t["center"]) == {"C1", "C2", "C3"}
    assert {"afp", "albumin", "bilirubin", "inr", "etiology", "tumour_size_mm"} <= set(t.columns)
    assert any(c.startswith("latent_") for c in t.columns)
    start = time.perf_counter()
    features = cohort.simulated_features(seed=1)
    assert time.perf_counter() - start < 1.0
    assert features.index.equals(t.index) and features.notna().all().all()
    blocks = {c.split("__")[0] for c in features.columns}
    assert blocks == set(P.FEATURE_BLOCKS)
    assert all(c.split("__")[1] in ("tumour", "ring0-5mm", "liver") for c in features.columns)
    assert features.equals(cohort.simulated_features(seed=1))
    assert not features.equals(cohort.simulated_features(seed=2))
    noise = features["AP__tumour__wavelet-HHH_glszm_Noise0"]
    centre_means = noise.groupby(t["center"]).mean()
    assert centre_means.max() - centre_means.min() > 0.2  # per-center batch shift
    assert P.make_cohort(50, 5).table.equals(P.make_cohort(50, 5).table)


def test_planted_signal_needs_fusion():
    """MVI: every block alone is moderate; all blocks together beat the best one by >= 0.05 AUC (5-fold CV)."""
    pytest.importorskip("sklearn")
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    cohort = P.make_cohort(400, 11)
    t = cohort.table
    features = cohort.simulated_features()
    blocks = {b: features.filter(like=f"{b}__").to_numpy() for b in P.FEATURE_BLOCKS}
    blocks["clinical"] = np.log(t[["afp", "tumour_size_mm"]]).assign(age=t["age"]).to_numpy()
    y = t["mvi"].to_numpy()
    folds = StratifiedKFold(5, shuffle=True, random_state=0)

    def auc(X):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        return roc_auc_score(y, cross_val_predict(model, X, y, cv=folds, method="predict_proba")[:, 1])

    single = {b: auc(X) for b, X in blocks.items()}
    fused = auc(np.hstack(list(blocks.values())))
    assert 0.55 < min(single.values()) and max(single.values()) < 0.78, single
    assert fused >= max(single.values()) + 0.05 and fused > 0.8, (fused, single)


def test_survival_has_planted_ordering():
    """The planted log-hazard orders survival, and a Cox model on the fused features recovers it (CV C >= 0.7)."""
    pytest.importorskip("sksurv")
    from sklearn.model_selection import KFold
    from sklearn.preprocessing import StandardScaler
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.metrics import concordance_index_censored

    cohort = P.make_cohort(300, 13)
    t = cohort.table
    event, months = t["event"].astype(bool).to_numpy(), t["survival_months"].to_numpy()
    assert concordance_index_censored(event, months, t["latent_log_hazard"])[0] >= 0.75
    high = t["latent_log_hazard"] > t["latent_log_hazard"].median()
    assert t.loc[high, "survival_months"].median() < t.loc[~high, "survival_months"].median()
    assert t.loc[t["mvi"] == 1, "latent_log_hazard"].mean() > t.loc[t["mvi"] == 0, "latent_log_hazard"].mean()

    X = np.hstack([cohort.simulated_features().to_numpy(), np.log(t[["afp", "tumour_size_mm"]].to_numpy())])
    y = np.array(list(zip(event, months)), dtype=[("event", bool), ("months", float)])
    risk = np.zeros(len(t))
    for train, test in KFold(5, shuffle=True, random_state=0).split(X):
        scaler = StandardScaler().fit(X[train])
        model = CoxPHSurvivalAnalysis(alpha=5.0).fit(scaler.transform(X[train]), y[train])
        risk[test] = model.predict(scaler.transform(X[test]))
    assert concordance_index_censored(event, months, risk)[0] >= 0.7


def test_cohort_patient_renders_its_traits():
    cohort = P.make_cohort(40, 17)
    t = cohort.table
    hi, lo = t["latent_adc_restriction"].idxmax(), t["latent_adc_restriction"].idxmin()
    adc = {}
    for pid in (hi, lo):
        patient = cohort.patient(pid, phases=("PVP",), misalignment="none")
        assert patient.study.study_id == pid
        assert abs(patient.lesions[0].diameter_mm - t.loc[pid, "tumour_size_mm"]) < 0.01
        assert patient.study.clinical.afp == t.loc[pid, "afp"]
        assert len(patient.lesions) == t.loc[pid, "tumour_number"]
        assert patient.traits["adc_restriction"] == pytest.approx(t.loc[pid, "latent_adc_restriction"])
        core = erode(arr(patient.lesion_labels) == 1, 1)
        adc[pid] = float(arr(patient.study["ADC"].image)[core].mean())
    assert adc[hi] < adc[lo] - 100


# ---------------------------------------------------------------- files and CLI
def test_save_patient_round_trip(tmp_path):
    import pandas as pd

    from HCCFusionLib.io import load_study

    patient = P.make_patient(6, "small", phases=("AP", "PVP"), n_tumours=1)
    folder = P.save_patient(patient, tmp_path / "case")
    study = load_study(folder)
    for name in ("AP", "PVP"):
        assert np.array_equal(arr(study[name].image), arr(patient.study[name].image))
        assert np.array_equal(arr(study[name].masks["labels"]), arr(patient.study[name].masks["labels"]))
    landmarks = pd.read_csv(folder / "truth" / "landmarks.csv")
    reference = landmarks[landmarks.series == "PVP"][["x_mm", "y_mm", "z_mm"]].to_numpy()
    moved = landmarks[landmarks.series == "AP"][["x_mm", "y_mm", "z_mm"]].to_numpy()
    transform = sitk.ReadTransform(str(folder / "truth" / "AP_transform.h5"))
    assert np.allclose([transform.TransformPoint(tuple(p)) for p in reference], moved, atol=1e-6)
    lesions = pd.read_csv(folder / "truth" / "lesions.csv")
    assert lesions["diameter_mm"].tolist() == [t.diameter_mm for t in patient.lesions]
    assert np.array_equal(arr(sitk.ReadImage(str(folder / "truth" / "lesion_labels.nii.gz"))),
                          arr(patient.lesion_labels))
    with pytest.raises(InputError, match="not empty"):
        P.save_patient(patient, folder)


def test_cli_writes_phantom_and_cohort(tmp_path):
    import pandas as pd

    from HCCFusionLib.cli import main

    assert main(["--progress", "none", "phantom", "--out", str(tmp_path / "p"), "--seed", "2", "--tumours", "1",
                 "--misalignment", "rigid"]) == 0
    assert (tmp_path / "p" / "study.json").is_file() and (tmp_path / "p" / "truth" / "lesions.csv").is_file()
    assert main(["--progress", "none", "phantom-cohort", "--out", str(tmp_path / "c"), "--n", "40"]) == 0
    clinical = pd.read_csv(tmp_path / "c" / "clinical.csv", index_col="patient_id")
    features = pd.read_csv(tmp_path / "c" / "features.csv", index_col="patient_id")
    assert len(clinical) == len(features) == 40 and {"afp", "mvi", "event"} <= set(clinical.columns)
    assert not any(c.startswith("latent_") for c in clinical.columns)


def test_cohort_patient_renders_peritumoral_enhancement():
    cohort = P.make_cohort(40, 17)
    t = cohort.table
    ring_minus_liver = []
    for pid in (t["latent_peritumoral_enhancement"].idxmax(), t["latent_peritumoral_enhancement"].idxmin()):
        patient = cohort.patient(pid, phases=("AP",), mri=False, misalignment="none")
        lesion = arr(patient.lesion_labels) == 1
        liver = arr(patient.labels) == LABELS["liver"]
        ring = dilate(lesion, 1) & ~lesion & liver
        far = dilate(lesion, 5) & ~dilate(lesion, 3) & liver
        image = arr(patient.study["AP"].image)
        ring_minus_liver.append(image[ring].mean() - image[far].mean())
    assert ring_minus_liver[0] > ring_minus_liver[1] + 15
