"""`make_patient` -> `PhantomPatient` (a study with ground truth), `save_patient`, and `phantom_case`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..files import atomic_folder
from ..io import save_study
from ..progress import silent
from ..segmentation.data import Case, case_from_study
from ..study import ETIOLOGIES, Clinical, Series, Study
from .tissue import (ALL_SERIES, COLUMN, CT_NOISE_SD, CT_PHASES, DEFAULT_TRAITS, LABEL_OF_CLASS, LESION_OF_CLASS,
                     LIVER, LIVER_VALUES, MAX_LESIONS, MISALIGNMENTS, MR_DYNAMIC, MR_SEQUENCES, NODULE, NODULE_DELTA, PATTERNS,
                     PERI, SIZES, TISSUE, VEIN_THROMBI, tumour_values)
from .anatomy import Anatomy, Grid, GridCanvas

#: Random streams of the series (an appended name leaves the earlier streams, hence old phantoms, unchanged).
STREAMS = ALL_SERIES + MR_DYNAMIC + ("DWI", "coil")
from .lesions import LesionTruth, Tumour, lesion_truth, place_lesions, random_lesions, thrombus_painter
from .motion import InverseMap, breathing_bspline, random_rigid
from .mri import (MR_ACQUISITIONS, T1_SERIES, T2_LEVELS, check_agent, dicom_meta, fill_mr_dynamic, hcc_mr_values,
                  metastasis_mr_values, render_dwi)
from .render import render_series, sample_classes, series_grid


@dataclass
class PhantomPatient:
    """A rendered phantom: the study (one misaligned frame per series) and its ground truth.

    `labels`/`lesion_labels` lie on the reference series' grid; every series also carries its own ground-truth
    label map in `series.masks["labels"]`. `landmark_names[i]` names the point `landmarks[s][i]`.
    """

    study: Study
    reference: str
    labels: sitk.Image  # LABELS values on the reference grid
    lesion_labels: sitk.Image  # lesion instances 1..n on the reference grid
    lesions: list
    transforms: dict  # series name -> sitk.Transform, reference point -> series point
    landmarks: dict  # series name -> (N, 3) LPS points in that series' frame
    landmark_names: list = field(default_factory=list)
    traits: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)


# ---------------------------------------------------------------- clinical data
def _random_clinical(rng, cirrhotic: bool, lesions: list) -> Clinical:
    malignant = [t for t in lesions if t.pattern != "hemangioma"]
    ascites = rng.choice(["none", "mild", "moderate-severe"], p=[0.75, 0.2, 0.05] if cirrhotic else [0.95, 0.05, 0])
    return Clinical(
        afp=float(np.round(max(np.exp(rng.normal(3.0 if malignant else 1.5, 1.5)), 0.5), 1)),
        bilirubin=float(np.round(np.exp(rng.normal(np.log(1.3 if cirrhotic else 0.8), 0.4)), 2)),
        albumin=float(np.round(np.clip(rng.normal(3.5 if cirrhotic else 4.1, 0.4), 2.0, 5.2), 2)),
        inr=float(np.round(np.clip(rng.normal(1.2 if cirrhotic else 1.02, 0.1), 0.85, 2.5), 2)),
        ascites=str(ascites),
        encephalopathy=str(rng.choice(["none", "grade1-2", "grade3-4"], p=[0.9, 0.08, 0.02])),
        tumour_number=len(malignant),
        tumour_size_mm=float(round(max((t.diameter_mm for t in malignant), default=0.0), 1)) or None,
        etiology=str(rng.choice(ETIOLOGIES, p=[0.35, 0.25, 0.15, 0.15, 0.10])),
        center="C1",
        performance_status=int(rng.choice([0, 1, 2], p=[0.6, 0.3, 0.1])),
        vascular_invasion=any(t.lirads == "LR-TIV" for t in lesions),  # tumour in vein; never extrahepatic disease
        extrahepatic_spread=False,
        age=float(np.round(np.clip(rng.normal(63, 10), 30, 90), 0)),
        sex=str(rng.choice(["M", "F"], p=[0.78, 0.22])),
    )


# ---------------------------------------------------------------- make_patient
def make_patient(seed: int, size: str = "small", *, phases=CT_PHASES, mri: bool = False, mr_agent: str | None = None,
                 cirrhotic=None,
                 n_tumours=None, lesions=None, misalignment: str = "deformable", traits=None,
                 clinical: Clinical | None = None, noise_sd: float = CT_NOISE_SD, hu_offset: float = 0.0,
                 study_id: str | None = None, progress=None) -> PhantomPatient:
    """One synthetic patient with CT phases (+ T1/T2/ADC/HBP if `mri`), ground truth and true transforms.

    `mr_agent` ("extracellular" or "gadoxetate") adds an MRI study instead (`phantom.mri`): MR_PRE, MR_AP,
    MR_PVP, TP (+ HBP with gadoxetate), T2, DWI_b50/400/800 and the ADC fitted from them; `phases` may then be
    () for an MRI-only study (reference MR_PVP). Each lesion's `LesionTruth.lirads_mri` is its expected category.

    `lesions` (list of LesionSpec) designs the tumours; otherwise `n_tumours` (default: 0-3 at random) random
    ones are drawn. `traits` (keys of DEFAULT_TRAITS, plus "size_mm") shape the index (first) tumour.
    `clinical`, `noise_sd` (CT HU, 0 = noise-free) and `hu_offset` (CT calibration shift) let a cohort set
    center effects. With misalignment "none" every CT series (and MR at size "small") shares the reference grid
    exactly. `progress(fraction, message)` is called while rendering.
    """
    if size not in SIZES:
        raise InputError(f"Unknown phantom size '{size}': use one of {', '.join(SIZES)}.")
    if not noise_sd >= 0:
        raise InputError(f"noise_sd must be >= 0 HU (got {noise_sd}).")
    if misalignment not in MISALIGNMENTS:
        raise InputError(f"Unknown misalignment '{misalignment}': use one of {', '.join(MISALIGNMENTS)}.")
    if mr_agent is not None:
        check_agent(mr_agent, phases)
        if mri:
            raise InputError("Give mri=True (T1/T2/ADC/HBP) or mr_agent (the MRI study), not both.")
    names = [str(p) for p in phases] + (list(MR_SEQUENCES) if mri else []) + list(MR_ACQUISITIONS.get(mr_agent, ()))
    bad = [n for n in names if n not in ALL_SERIES + MR_ACQUISITIONS.get(mr_agent, ())]
    if bad or not names or len(set(names)) != len(names):
        raise InputError(f"Phases {list(phases)} are not valid: give distinct codes from {', '.join(CT_PHASES)} "
                         "(MRI sequences come with mri=True).")
    if not any(n in CT_PHASES for n in names) and mr_agent is None:
        raise InputError("A phantom needs at least one CT phase (the reference frame is a CT grid).")
    unknown = sorted(set(traits or {}) - set(DEFAULT_TRAITS) - {"size_mm"})
    if unknown:
        raise InputError(f"Unknown phantom traits {unknown}: known ones are {sorted(DEFAULT_TRAITS)} and size_mm.")
    t = {**DEFAULT_TRAITS, **(traits or {})}

    root = np.random.default_rng(seed)
    rng_anat, rng_lesion, rng_clin, *rng_series = root.spawn(3 + len(STREAMS))
    drawn = bool(rng_anat.random() < 0.6)  # always drawn, so a given `cirrhotic` leaves the stream unchanged
    cirrhotic = drawn if cirrhotic is None else bool(cirrhotic)
    anatomy = Anatomy(rng_anat, bool(cirrhotic))

    if lesions is None:
        n = int(rng_lesion.integers(0, 4)) if n_tumours is None else int(n_tumours)
        if not 0 <= n <= MAX_LESIONS:
            raise InputError(f"n_tumours={n} is out of range 0..{MAX_LESIONS}.")
        specs, random_sizes = random_lesions(rng_lesion, n, t), True
    else:
        specs, random_sizes = list(lesions), False
        if len(specs) > MAX_LESIONS:
            raise InputError(f"{len(specs)} lesions designed: at most {MAX_LESIONS} are supported.")
        for k, s in enumerate(specs):
            if s.pattern not in PATTERNS or not 3.0 <= float(s.diameter_mm) <= 120.0:
                raise InputError(f"Lesion {k + 1}: pattern must be one of {PATTERNS} and diameter 3-120 mm "
                                 f"(got '{s.pattern}', {s.diameter_mm} mm).")
            if s.vein not in VEIN_THROMBI:
                raise InputError(f"Lesion {k + 1}: vein must be one of {', '.join(VEIN_THROMBI)} (got {s.vein!r}).")
            if s.t2 not in T2_LEVELS:
                raise InputError(f"Lesion {k + 1}: t2 must be one of {', '.join(T2_LEVELS)} (got {s.t2!r}).")
            if s.centre_mm is not None and (np.shape(s.centre_mm) != (3,) or not np.all(np.isfinite(s.centre_mm))):
                raise InputError(f"Lesion {k + 1}: centre_mm must be three finite LPS coordinates in mm "
                                 f"(got {s.centre_mm!r}).")
    specs = place_lesions(rng_lesion, anatomy, specs, random_sizes)

    grid_size, spacing = SIZES[size]
    ref_grid = Grid.centred(grid_size, spacing)
    reference = "PVP" if "PVP" in names else next((n for n in names if n in CT_PHASES), "MR_PVP")
    if reference == "MR_PVP":  # an MRI-only study: the reference frame is the MR grid
        ref_grid = series_grid(reference, ref_grid, None, False)
    capsule_mm = min(max(2.0, 1.5 * spacing[0]), 4.0)  # visible (>= 1.5 voxels) where the grid allows
    tumours = [Tumour(rng_lesion, s, k + 1, 0.06 + 0.2 * t["margin_irregularity"] if k == 0 else 0.06,
                       capsule_mm) for k, s in enumerate(specs)]
    truths = [lesion_truth(s, k + 1, s.diameter_mm, mr_agent) for k, s in enumerate(specs)]

    # value table: one row per tissue class, one column per series kind
    liver = np.asarray(LIVER_VALUES[bool(cirrhotic)], float)
    table, ct_mr = np.zeros((256, len(COLUMN))), slice(0, len(ALL_SERIES))
    for cls, values in TISSUE.items():
        table[cls, ct_mr] = values
    table[LIVER, ct_mr] = liver
    table[NODULE, ct_mr] = liver + NODULE_DELTA
    table[PERI, ct_mr] = liver
    table[PERI, COLUMN["AP"]] += 35 * t["peritumoral_enhancement"]
    for k, tumour in enumerate(tumours):
        tumour_traits = t if k == 0 else DEFAULT_TRAITS
        for cls, values in zip(tumour.classes, tumour_values(tumour.spec.pattern, tumour.spec.aphe,
                                                              tumour.spec.washout, liver, tumour_traits)):
            table[cls, ct_mr] = values
    if mr_agent is not None:
        fill_mr_dynamic(table, mr_agent)
        for k, tumour in enumerate(tumours):
            rows = tuple(table[c] for c in tumour.classes)
            if tumour.spec.pattern == "hcc":
                hcc_mr_values(tumour.spec, table[LIVER], rows, mr_agent, t if k == 0 else DEFAULT_TRAITS)
            elif tumour.spec.pattern == "metastasis":
                metastasis_mr_values(table[LIVER], rows)

    # tissue model in the reference frame (2x finer than coarse reference grids)
    factor = 2 if ref_grid.spacing[0] > 3.0 else 1
    model_grid = Grid(tuple(n * factor for n in ref_grid.size), tuple(s / factor for s in ref_grid.spacing),
                       ref_grid.origin)
    canvas = GridCanvas(model_grid)
    anatomy.paint(canvas)
    for k, tumour in enumerate(tumours):
        canvas.paint(tumour.bbox(6.0), tumour.painter(peritumoral=k == 0 and t["peritumoral_enhancement"] > 0))
    for tumour in tumours:
        if tumour.spec.vein != "none":
            canvas.paint(*thrombus_painter(anatomy, tumour.centre, VEIN_THROMBI[tumour.spec.vein]))

    # transforms: reference -> series; rendering samples the model through the inverse
    transforms, inverses, grids, meta = {}, {}, {}, {"breathing_mm": {}}
    for name in names:
        rng_s = rng_series[STREAMS.index(name)]
        moved = name != reference and misalignment != "none"
        grids[name] = ref_grid if name == reference else series_grid(name, ref_grid, rng_s, moved)
        if not moved:
            transforms[name], inverses[name] = sitk.Euler3DTransform(), None
            continue
        rigid = random_rigid(rng_s)
        if misalignment == "rigid":
            transforms[name], inverses[name] = rigid, InverseMap(rigid)
            continue
        bspline, amplitude = breathing_bspline(rng_s, anatomy.lobes[0][0])
        meta["breathing_mm"][name] = amplitude
        transforms[name] = sitk.CompositeTransform([rigid, bspline])  # applies bspline first, then rigid
        inverses[name] = InverseMap(rigid, bspline)

    progress = progress or silent
    progress(0.2, "anatomy drawn")
    study = Study(study_id or f"phantom-{seed}")
    coil = rng_series[STREAMS.index("coil")].normal(0, 0.12, 4)  # one receive coil for the T1 dynamic series
    for k, name in enumerate(names):
        progress(0.2 + 0.8 * k / len(names), f"rendering {name}")
        same = grids[name] == model_grid and inverses[name] is None
        classes = canvas.cls if same else sample_classes(canvas.cls, model_grid, grids[name], inverses[name])
        rng_s = rng_series[STREAMS.index(name)].spawn(1)[0]
        if name == "DWI":
            images = render_dwi(classes, grids[name], table, rng_s, render_series)
        else:
            images = {name: render_series(name, classes, grids[name], table, rng_s, noise_sd, hu_offset,
                                          coil=coil if mr_agent and name in T1_SERIES else None)}
        mask = grids[name].image(LABEL_OF_CLASS.take(classes))
        for series_name in images if name == "DWI" else ():  # one acquisition, one transform per series
            transforms[series_name] = transforms["DWI"]
        for series_name, image in images.items():
            meta = {"phantom": True, **(dicom_meta(series_name, mr_agent) if mr_agent and name not in phases else {})}
            series = Series(series_name, series_name.split("_b")[0], image, meta=meta)
            series.add_mask("labels", mask)
            study.add(series)

    ref_classes = canvas.cls if ref_grid == model_grid else sample_classes(canvas.cls, model_grid, ref_grid, None)
    labels = ref_grid.image(LABEL_OF_CLASS.take(ref_classes))
    lesion_map = LESION_OF_CLASS.take(ref_classes)
    missing = [k for k, n in enumerate(np.bincount(lesion_map.ravel(), minlength=len(tumours) + 1)) if k and not n]
    if missing:
        raise InputError(f"Lesion(s) {missing} are too small for the '{size}' grid ({spacing[0]} mm voxels): use a "
                         "larger diameter or size 'medium'/'full'.")
    lesion_labels = ref_grid.image(lesion_map)
    study.clinical = clinical if clinical is not None else _random_clinical(rng_clin, bool(cirrhotic), truths)

    names_lm, points = _landmarks(anatomy, tumours)
    transforms.pop("DWI", None)
    landmarks = {name: np.array([transforms[name].TransformPoint(tuple(p)) for p in points]) for name in study.series}
    meta.update(cirrhotic=bool(cirrhotic), size=size, seed=seed, misalignment=misalignment, mr_agent=mr_agent)
    progress(1.0, "phantom ready")
    return PhantomPatient(study, reference, labels, lesion_labels, truths, transforms, landmarks, names_lm,
                          dict(t), meta)


def _landmarks(anatomy: Anatomy, tumours: list) -> tuple:
    """~20 named reference-frame points on distinctive structures in and around the liver."""
    a = anatomy
    pts = {f"lesion_{tm.index}_centre": tm.centre for tm in tumours}
    pts.update(a.points)
    right_centre, axes, rot = a.lobes[0]
    left_centre = a.lobes[1][0]
    pts["liver_dome"] = np.array([-65.0, 10.0, a.diaphragm(np.array(-65.0), np.array(10.0)) - 12.0])
    pts["right_lobe_centre"] = right_centre
    pts["right_lobe_tip"] = right_centre + rot @ np.array([0, 0, -0.75 * axes[2]])
    pts["left_lobe_centre"] = left_centre
    spleen_c, spleen_axes, spleen_rot = a.spleen
    pts["spleen_centre"] = spleen_c
    pts["spleen_tip"] = spleen_c + spleen_rot @ np.array([0, 0, -0.7 * spleen_axes[2]])
    for side, (c, ax, r) in zip(("right", "left"), a.kidneys):
        pts[f"{side}_kidney_upper_pole"] = c + r @ np.array([0, 0, 0.7 * ax[2]])
    pts["gallbladder"] = a.gallbladder[0]
    for z in (-60.0, 0.0, 60.0):
        level = z - np.mod(z - a.disc_phase, 32.0) + 19.0  # centre of a vertebral body
        pts[f"vertebra_z{int(z)}"] = np.array([a.spine[0], a.spine[1], level])
    pts["aorta_z-40"] = np.array([a.aorta[0][0], a.aorta[0][1], -40.0])
    pts["ivc_z20"] = np.array([a.ivc[0][0], a.ivc[0][1], 20.0])
    return list(pts), np.array([np.asarray(p, float) for p in pts.values()])


# ---------------------------------------------------------------- writing a phantom with its ground truth
def save_patient(patient: PhantomPatient, folder) -> "Path":
    """Write the study (io.save_study layout) plus `truth/`: labels, lesion instances, lesions.csv,
    landmarks.csv (one row per series and landmark), `<series>_transform.h5` (reference -> series) and
    truth.json. Atomic: the folder appears complete or not at all."""
    import json

    import pandas as pd

    with atomic_folder(folder) as tmp:
        save_study(patient.study, tmp)
        truth = tmp / "truth"
        truth.mkdir()
        sitk.WriteImage(patient.labels, str(truth / "labels.nii.gz"), True)
        sitk.WriteImage(patient.lesion_labels, str(truth / "lesion_labels.nii.gz"), True)
        lesions = pd.DataFrame([dataclasses.asdict(t) for t in patient.lesions],
                               columns=[f.name for f in dataclasses.fields(LesionTruth)])
        centres = np.array([t.centre_mm for t in patient.lesions]).reshape(-1, 3)
        lesions = lesions.drop(columns="centre_mm").assign(x_mm=centres[:, 0], y_mm=centres[:, 1],
                                                           z_mm=centres[:, 2])
        lesions.to_csv(truth / "lesions.csv", index=False)
        rows = [(name, label, *point) for name, points in patient.landmarks.items()
                for label, point in zip(patient.landmark_names, points)]
        pd.DataFrame(rows, columns=["series", "landmark", "x_mm", "y_mm", "z_mm"]).to_csv(
            truth / "landmarks.csv", index=False)
        for name, transform in patient.transforms.items():
            sitk.WriteTransform(transform, str(truth / f"{name}_transform.h5"))
        info = {"reference": patient.reference, "traits": patient.traits,
                "meta": patient.meta,
                "frames": "LPS mm; <series>_transform.h5 maps reference points to series points"}
        (truth / "truth.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return Path(folder)


def phantom_case(seed: int, channels, size: str = "small") -> Case:
    """One phantom patient (CT phases among `channels`, PVP always) as a segmentation case on its reference grid."""
    phases = tuple(c for c in CT_PHASES if c in channels or c == "PVP")
    patient = make_patient(seed, size, phases=phases, misalignment="none")
    case = case_from_study(patient.study, channels, patient.reference, case_id=f"phantom-{seed}")
    case.labels = patient.labels
    return case
