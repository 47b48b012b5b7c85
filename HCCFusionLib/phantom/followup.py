"""Phantom follow-up pairs: a baseline patient and a later study of it with known changes and a known motion.

`make_followup(seed, lesions, changes, new=...)` renders the baseline (`make_patient`, every series on one grid)
and a follow-up of the same anatomy in which each baseline lesion grew by `LesionChange.growth`, turned
necrotic in its core after TACE (`necrosis`, a radius fraction of non-enhancing tissue) or vanished, plus new
lesions. The follow-up is then moved as a whole by a known rigid + smooth (B-spline breathing) transform:
`motion` maps follow-up points to baseline points (follow-up image(q) = unmoved image(motion(q))) and
`to_followup` maps baseline points to follow-up points. Study dates sit in `study.meta["study_date"]` (ISO).
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field, replace

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..study import LABELS, Series, Study
from .motion import InverseMap, breathing_bspline, random_rigid
from .patient import PhantomPatient, make_patient
from .tissue import CT_PHASES

DAYS_PER_MONTH = 365.25 / 12


@dataclass
class LesionChange:
    """What happened to one baseline lesion by the follow-up."""

    growth: float = 1.0  # longest-diameter factor
    necrosis: float = 0.0  # radius fraction of the non-enhancing (necrotic) core; 1 = completely necrotic
    vanished: bool = False


@dataclass
class FollowupPair:
    """A baseline and a follow-up phantom with the truth linking them.

    matches: baseline lesion index -> follow-up lesion index (None: vanished); new: follow-up indices of new
    lesions. Lesion indices are the values in each patient's `lesion_labels`."""

    baseline: PhantomPatient
    followup: PhantomPatient
    months: float
    motion: sitk.Transform  # follow-up point -> baseline point
    to_followup: InverseMap  # baseline point(s) (N, 3) -> follow-up point(s)
    matches: dict = field(default_factory=dict)
    new: list = field(default_factory=list)


def make_followup(seed: int, lesions: list, changes: list, new: list = (), *, size: str = "small",
                  months: float = 3.0, phases=CT_PHASES, motion_seed: int | None = None,
                  baseline_date: str = "2026-01-05") -> FollowupPair:
    """Baseline patient `seed` with designed `lesions` (LesionSpec) and its follow-up `months` later.

    changes: one LesionChange per baseline lesion; new: LesionSpecs that appear by the follow-up (centre_mm None:
    placed at random in the liver, clear of the others).
    motion_seed: seed of the inter-study motion (default `seed`)."""
    if len(changes) != len(lesions):
        raise InputError(f"Give one LesionChange per baseline lesion ({len(lesions)}), not {len(changes)}.")
    if not months > 0:
        raise InputError(f"The follow-up interval must be positive (got {months} months).")
    baseline = make_patient(seed, size, lesions=list(lesions), phases=phases, misalignment="none",
                            study_id=f"phantom-{seed}-baseline")
    kept, matches = [], {}
    for truth, spec, change in zip(baseline.lesions, lesions, changes):
        if change.vanished:
            matches[truth.index] = None
            continue
        kept.append(replace(spec, centre_mm=truth.centre_mm, diameter_mm=truth.diameter_mm * change.growth,
                            necrosis=change.necrosis))
        matches[truth.index] = len(kept)
    specs = kept + list(new)
    unmoved = make_patient(seed, size, lesions=specs, phases=phases, misalignment="none",
                           study_id=f"phantom-{seed}-followup", clinical=baseline.study.clinical)
    rng = np.random.default_rng([seed if motion_seed is None else motion_seed, 16])
    rigid = random_rigid(rng)
    liver = sitk.LabelShapeStatisticsImageFilter()
    liver.Execute(sitk.Cast(baseline.labels == LABELS["liver"], sitk.sitkUInt8))
    bspline, _ = breathing_bspline(rng, np.asarray(liver.GetCentroid(1)))
    motion = sitk.CompositeTransform([rigid, bspline])
    to_followup = InverseMap(rigid, bspline)
    followup = _moved(unmoved, motion, to_followup)
    start = datetime.date.fromisoformat(baseline_date)
    baseline.study.meta["study_date"] = start.isoformat()
    followup.study.meta["study_date"] = (start + datetime.timedelta(days=round(months * DAYS_PER_MONTH))).isoformat()
    return FollowupPair(baseline, followup, months, motion, to_followup, matches,
                        list(range(len(kept) + 1, len(specs) + 1)))


def _moved(patient: PhantomPatient, motion: sitk.Transform, to_followup: InverseMap) -> PhantomPatient:
    """`patient` resampled through `motion` on its own grids (images linear, label maps nearest)."""
    def warp(image, nearest=False):
        default = 0.0 if nearest else float(np.min(sitk.GetArrayViewFromImage(image)))
        return sitk.Resample(image, image, motion, sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear,
                             default, image.GetPixelID())

    study = Study(patient.study.study_id, clinical=patient.study.clinical, meta=dict(patient.study.meta))
    for s in patient.study:
        moved = Series(s.name, s.phase, warp(s.image), s.modality, meta=dict(s.meta))
        for key, mask in s.masks.items():
            moved.add_mask(key, warp(mask, nearest=True))
        study.add(moved)
    landmarks = {name: to_followup(points) for name, points in patient.landmarks.items()}
    lesions = [replace(t, centre_mm=tuple(float(v) for v in to_followup(np.array([t.centre_mm]))[0]))
               for t in patient.lesions]
    return replace(patient, study=study, labels=warp(patient.labels, True),
                   lesion_labels=warp(patient.lesion_labels, True), lesions=lesions, landmarks=landmarks,
                   meta={**patient.meta, "inter_study_motion": "rigid + B-spline breathing"})



def followup_cohort(n: int, seed: int = 0, *, landmark_months: float = 3.0, effect: float = 1.5):
    """(features, clinical) of a phantom follow-up cohort for a landmark Cox model, as tables (no images).

    Each patient's index lesion changes by a `LesionChange` drawn at random by the follow-up scan at
    `landmark_months`: growth (longest-diameter factor, log-normal around 1) and, for a third, complete necrosis
    after TACE (no viable tumour left); some get a new lesion. The delta features are what `followup_risk`
    measures on such a pair (relative change of the diameter and of the viable diameter, new lesions). The hazard
    after the landmark is planted: log hazard = `effect` x (diameter change) + 0.7 x (new lesions) - 0.8 x (complete
    necrosis); some patients have the event before the landmark (they are not at risk there).
    Outcomes: clinical columns survival_months (from baseline) and event."""
    import pandas as pd

    rng = np.random.default_rng([seed, 17])
    growth = np.exp(rng.normal(0.05, 0.3, n))
    necrotic = rng.random(n) < 1 / 3
    new = (rng.random(n) < 0.15 + 0.3 * (growth > 1.3)).astype(float)
    hazard = np.exp(effect * (growth - 1.0) + 0.7 * new - 0.8 * necrotic) / 18.0  # per month
    time = np.where(rng.random(n) < 0.05, rng.uniform(0.5, landmark_months, n),
                    landmark_months + rng.exponential(1.0 / hazard))
    censor = landmark_months + rng.uniform(6.0, 48.0, n)
    ids = pd.Index([f"phantom-fu-{seed}-{k}" for k in range(n)], name="patient_id")
    features = pd.DataFrame({"delta__diameter": growth - 1.0,
                             "delta__viable": np.where(necrotic, -1.0, growth - 1.0),
                             "delta__new_lesions": new}, index=ids)
    clinical = pd.DataFrame({"survival_months": np.round(np.minimum(time, censor), 2),
                             "event": (time <= censor).astype(int)}, index=ids)
    return features, clinical
