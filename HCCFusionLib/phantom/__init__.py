"""Deterministic synthetic HCC patients and cohorts with ground truth.

`make_patient(seed, size)` builds one abdomen in physical millimetres (LPS, the SimpleITK convention:
x grows to the patient's left, y to posterior, z to superior; the anatomy is centred on (0, 0, 0)):
body with fat and muscle wall, lung bases and heart above the diaphragm, spine, aorta, IVC, kidneys,
gallbladder, spleen, a liver (optionally cirrhotic: nodular surface, regenerative nodules, smaller right
lobe) with portal and hepatic veins, and 0-3 tumours whose per-phase values follow the project's
HCC_IMAGING_FACTS.md (CT in HU with noise SD ~12 HU; MR-like T1/T2/HBP with a bias field; ADC in 1e-6 mm^2/s). The tissue model is drawn once in the reference frame (the "PVP" grid) and
every series is rendered by sampling it through the inverse of that series' true transform, so
`transforms[s]` maps reference points to series points (the fixed->moving transform registration should
recover) and `landmarks[s][i] == transforms[s].TransformPoint(landmarks[reference][i])`.

Every random choice comes from `numpy.random.default_rng(seed)` (spawned child streams per purpose), and the
anatomy is defined in millimetres, so "small" and "full" of one seed show the same patient.

Public API: `make_patient` -> `PhantomPatient` (designed lesions via `LesionSpec`, truth in `LesionTruth`),
`make_followup` -> `FollowupPair` (a baseline and a follow-up with known lesion
changes and motion), `followup_cohort` (delta features + outcomes of a follow-up cohort, for a landmark Cox model), `make_cohort` -> `Cohort` (planted outcome model, `simulated_features`, `patient(i)`), expected LI-RADS categories
from the phantom's own v2018 table (`LesionSpec.expected_lirads`, never `lirads`), `save_patient` / `save_cohort` (files with ground truth), `jacobian_range`.

Modules: `tissue` (classes, values), `anatomy`, `lesions`, `motion`, `render`, `mri` (the MRI study of
`make_patient(mr_agent=...)`: T1 dynamic, T2, DWI and fitted ADC, DICOM tags), `patient` (also `phantom_case`
for segmentation training), `cohort` (tabular simulator). Import direction: only `demo` and tests import
`phantom`; `phantom` imports library modules (study, segmentation.data), never the reverse.
"""
from .anatomy import Anatomy, Grid
from .cohort import ENDPOINTS, FEATURE_BLOCKS, Cohort, make_cohort, save_cohort
from .followup import FollowupPair, LesionChange, followup_cohort, make_followup
from .lesions import EXPECTED_LIRADS, LesionSpec, LesionTruth
from .motion import InverseMap, jacobian_range
from .mri import DWI_B_VALUES, MR_ACQUISITIONS
from .patient import PhantomPatient, make_patient, phantom_case, save_patient
from .tissue import (ALL_SERIES, BREATHING_MM, CT_NOISE_SD, CT_PHASES, MAX_LESIONS, MAX_ROTATION_DEG,
                     MAX_TRANSLATION_MM, MISALIGNMENTS, MR_MIN_SPACING, MR_SEQUENCES, PATTERNS, SIZES)

__all__ = ["Anatomy", "Grid", "ENDPOINTS", "FEATURE_BLOCKS", "Cohort", "make_cohort", "save_cohort", "FollowupPair",
           "LesionChange", "followup_cohort", "make_followup", "EXPECTED_LIRADS", "LesionSpec", "LesionTruth", "InverseMap", "jacobian_range",
           "DWI_B_VALUES", "MR_ACQUISITIONS", "PhantomPatient", "make_patient",
           "phantom_case", "save_patient", "ALL_SERIES", "BREATHING_MM", "CT_NOISE_SD", "CT_PHASES", "MAX_LESIONS",
           "MAX_ROTATION_DEG", "MAX_TRANSLATION_MM", "MISALIGNMENTS", "MR_MIN_SPACING", "MR_SEQUENCES", "PATTERNS",
           "SIZES"]
