"""Registration reliability: bit-identical transforms whatever SimpleITK's global thread setting (or an earlier
call) left, no result worse than its input (QC status), and multimodal rigid recovery on real CT/MR/PET that
holds for every pair, seed and thread setting."""
from __future__ import annotations

import hashlib
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from HCCFusionLib import phantom
from HCCFusionLib.registration import liver_mask, register, register_study
from HCCFusionLib.registration.pair import FAILED, OK
from HCCFusionLib.study import Series, Study

from test_registration import KEEPS_INPUT, _inside, _known_transform


def digest(transform: sitk.Transform) -> str:
    """SHA-256 of every parameter and fixed parameter of a (composite) transform."""
    composite = sitk.CompositeTransform(transform)
    sha = hashlib.sha256()
    for i in range(composite.GetNumberOfTransforms()):
        part = composite.GetNthTransform(i)
        sha.update(np.asarray(part.GetParameters(), np.float64).tobytes())
        sha.update(np.asarray(part.GetFixedParameters(), np.float64).tobytes())
    return sha.hexdigest()


@contextmanager
def global_threads(count: int | None):
    """SimpleITK's global default thread count set to `count` (None: unchanged) inside the block."""
    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    if count is not None:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(count)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


@pytest.fixture(scope="module")
def patient():
    return phantom.make_patient(1, "small", misalignment="deformable")


def test_bit_identical_whatever_the_global_thread_setting(patient):
    """Twice in a row, with 1, 2 and 3 global ITK threads (radiomics workers set it and leave it set), the
    same call gives the same transform bit for bit, and leaves the global setting as it found it."""
    ref, moving = patient.study["PVP"], patient.study["AP"]
    mask = liver_mask(ref)
    digests = {}
    for label, threads in (("first", None), ("again", None), ("1 thread", 1), ("2 threads", 2), ("3 threads", 3)):
        with global_threads(threads):
            before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
            result = register(ref, moving, mode="affine", fixed_mask=mask, seed=0)
            assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == before
        digests[label] = digest(result.transform)
        assert result.qc["status"] == OK and result.qc["stages"] == "rigid+affine"
    print({k: v[:12] for k, v in digests.items()})
    assert len(set(digests.values())) == 1
    other_seed = register(ref, moving, mode="affine", fixed_mask=mask, seed=1)
    assert digest(other_seed.transform) != digests["first"]  # the seed (samples) is what the result depends on


def test_no_improvement_keeps_the_input_alignment(tmp_path, patient):
    """A series identical to the reference: any move makes the metric worse, so the input alignment (identity)
    is returned with status FAILED and a warning, in the pair QC and in the study's qc.csv."""
    ref = patient.study["PVP"]
    study = Study("same", clinical=patient.study.clinical)
    study.add(Series("PVP", "PVP", ref.image, masks={"labels": ref.masks["labels"]}))
    study.add(Series("AP", "AP", sitk.Image(ref.image), masks={"labels": ref.masks["labels"]}))
    result = register_study(study, mode="deformable", mask="liver")
    row = result.qc.set_index("series").loc["AP"]
    assert row["status"] == FAILED and row["stages"] == "none"
    assert row["metric_after"] == row["metric_before"]
    assert any(w.startswith(FAILED) for w in row["warnings"])
    point = ref.image.TransformIndexToPhysicalPoint([5, 7, 3])
    assert result.transforms["AP"].TransformPoint(point) == point
    same = sitk.GetArrayViewFromImage(result.study["AP"].image).astype(float) - sitk.GetArrayViewFromImage(ref.image)
    assert np.abs(same).max() <= 1  # resampled through the identity (int16 rounding)
    table = pd.read_csv(result.save(tmp_path / "registration") / "qc.csv")
    assert list(table["status"]) == [FAILED] and table["warnings"][0].startswith(FAILED)


# ---------------------------------------------------------------- real CT / MR / PET: rigid recovery
PAIRS = [(case, modality) for case in ("STS_001", "STS_002", "STS_003") for modality in ("MR_T1", "PET")]


def _recovery(shared_data, case: str, modality: str, seed: int, threads: int | None) -> dict:
    """The recovery set-up of test_registration.test_real_ct_mr_pet_recovery, rigid only: align the series to
    the CT (baseline), warp it by a known rigid + smooth transform, register it back; median TRE (mm) over
    body / tumour points before and after, tumour Dice, QC and the transform's digest."""
    folder = shared_data / "real" / "sts" / case
    ct = sitk.ReadImage(str(folder / "CT_image.nii.gz"))
    tumour = sitk.ReadImage(str(folder / "CT_mask.nii.gz"))
    original = sitk.ReadImage(str(folder / f"{modality}_image.nii.gz"))
    phase = "T1" if modality == "MR_T1" else "PET"
    fixed = Series("CT", "NC", ct, masks={"labels": tumour * 2})
    with global_threads(threads):
        baseline = register(fixed, Series(modality, phase, original), mode="rigid", spacing_mm=3.0, seed=seed)
        aligned = sitk.Resample(original, original, baseline.transform, sitk.sitkLinear, 0.0)
        known, truth = _known_transform(original, seed=7)
        warped = sitk.Resample(aligned, original, known, sitk.sitkLinear, 0.0)
        warped_mask = sitk.Resample(sitk.Resample(tumour, original, sitk.Transform(), sitk.sitkNearestNeighbor),
                                    original, known, sitk.sitkNearestNeighbor)
        result = register(fixed, Series(modality, phase, warped, masks={"labels": warped_mask * 2}), mode="rigid",
                          spacing_mm=3.0, seed=seed)
    rng = np.random.default_rng(0)
    out = {"qc": result.qc, "digest": digest(result.transform)}
    for region, voxels in (("body", np.argwhere(sitk.GetArrayViewFromImage(ct) > -300)[:, ::-1]),
                           ("tumour", np.argwhere(sitk.GetArrayViewFromImage(tumour) > 0)[:, ::-1])):
        chosen = [ct.TransformIndexToPhysicalPoint([int(v) for v in voxels[i]])
                  for i in rng.choice(len(voxels), min(300, len(voxels)), replace=False)]
        pairs = [(p, truth(p)) for p in chosen if _inside(original, p)]
        out[f"before_{region}"] = float(np.median([np.linalg.norm(np.array(p) - t) for p, t in pairs]))
        out[f"after_{region}"] = float(np.median([np.linalg.norm(np.array(result.transform.TransformPoint(p)) - t)
                                                  for p, t in pairs]))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("case,modality", PAIRS)
def test_multimodal_rigid_recovery_holds(shared_data, case, modality):
    """Rigid MR→CT / PET→CT recovery of a known transform on STS_001-003, with seed 0 under the default and
    1 global thread (bit-identical) and with seed 1 (other samples, so other baselines and starts): every run
    is no worse than its input by the metric and recovers the known transform within the bound, except
    STS_001's MR (test_registration.KEEPS_INPUT: MI prefers the input there), which must either keep the input
    alignment (status FAILED) or end closer to the truth than its input."""
    runs = {}
    for label, seed, threads in (("seed 0", 0, None), ("seed 0, 1 thread", 0, 1), ("seed 1", 1, None)):
        run = runs[label] = _recovery(shared_data, case, modality, seed, threads)
        qc = run["qc"]
        print(f"{case} {modality} {label}: {qc['status']} ({qc['init']}); TRE body {run['before_body']:.1f} -> "
              f"{run['after_body']:.2f} mm, tumour {run['before_tumour']:.1f} -> {run['after_tumour']:.2f} mm; "
              f"tumour Dice {qc['dice_before_tumour']:.3f} -> {qc['dice_after_tumour']:.3f}; metric "
              f"{qc['metric_before']:.4f} -> {qc['metric_after']:.4f}; {run['digest'][:12]}")
    assert runs["seed 0"]["digest"] == runs["seed 0, 1 thread"]["digest"]
    for label, run in runs.items():
        qc = run["qc"]
        assert qc["metric_after"] <= qc["metric_before"], label
        if (case, modality) in KEEPS_INPUT:
            for region in ("body", "tumour"):
                if qc["status"] == FAILED:
                    assert abs(run[f"after_{region}"] - run[f"before_{region}"]) < 1e-6, label
                else:
                    assert run[f"after_{region}"] < run[f"before_{region}"], label
            continue
        assert qc["status"] == OK, label
        limit = 4.5 if modality == "MR_T1" else 5.0  # PET voxels are 4.7-5.5 mm
        for region in ("body", "tumour"):
            assert run[f"after_{region}"] < limit and run[f"after_{region}"] < 0.7 * run[f"before_{region}"], label
        assert qc["dice_after_tumour"] > max(qc["dice_before_tumour"], 0.85), label
