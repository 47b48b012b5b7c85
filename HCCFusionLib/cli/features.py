"""Feature verbs: extract, cohort-extract, stability (radiomics) and lirads."""
from __future__ import annotations

from pathlib import Path

from ..errors import HCCFusionError
from .common import add_cluster_args, add_phase_override, cluster_option, format_table, phase_overrides, verb
from ..layout import RunFolder


# ---------------------------------------------------------------- radiomics: extract, cohort-extract, stability
def _radiomics_options(args) -> dict:
    """Keyword arguments of radiomics.extract_study from the shared extract/cohort-extract options."""
    from ..errors import InputError

    presets = {}
    for spec in args.preset or []:
        key, sep, value = spec.partition("=")
        presets[key if sep else "*"] = value if sep else spec
    try:
        rings = [tuple(float(x) for x in r.split("-")) for r in args.rings.split(",") if r.strip()]
    except ValueError:
        raise InputError(f"--rings '{args.rings}': give mm ranges like 0-5,5-10.") from None
    if any(len(r) != 2 for r in rings):
        raise InputError(f"--rings '{args.rings}': give mm ranges like 0-5,5-10.")
    return {"regions": [r.strip() for r in args.regions.split(",") if r.strip()], "rings_mm": rings,
            "margin_mm": args.margin_mm, "clip": args.clip, "presets": presets or None,
            "image_types": [t.strip() for t in args.image_types.split(",")] if args.image_types else None,
            "workers": args.workers, "cache_dir": args.cache, "resample_masks": args.resample_masks,
            "crop_filters": args.crop_filters, "backend": args.radiomics_backend, "device": args.radiomics_device}


def _radiomics_args(p):
    p.add_argument("--regions", default="tumour,index,lesions,rings,background_liver",
                   help="region groups: tumour,index,lesions,rings,background_liver,liver,spleen")
    p.add_argument("--rings", default="0-5,5-10", help="peritumoral rings in mm (default 0-5,5-10)")
    p.add_argument("--margin-mm", type=float, default=10.0,
                   help="background liver excludes tumours dilated by this (default 10)")
    p.add_argument("--clip", choices=["liver", "body", "none"], default="liver", help="clip rings to (default liver)")
    p.add_argument("--preset", action="append", metavar="[KEY=]PRESET",
                   help="preset name (ct, mr, pet, ct_v1, …) or YAML/JSON file; KEY = series name, phase or "
                        "modality (CT, MR, PT) to target some series (repeatable; default: per modality)")
    p.add_argument("--image-types", help="comma list of Original,LoG,Wavelet (default: the preset's)")
    p.add_argument("--workers", type=int, default=2, help="parallel processes (default 2)")
    p.add_argument("--cache", type=Path, help="cache folder for per-(series, region) results (content-hashed)")
    p.add_argument("--crop-filters", action="store_true",
                   help="tolerance mode: filters on each region's crop (LoG features within 1e-4 relative of "
                        "pyradiomics, Original and shape bit-identical; stated in diagnostics.json)")
    radiomics_backend_args(p)
    p.add_argument("--resample-masks", action="store_true",
                   help="resample a segmentation on another grid to each series (nearest neighbour) instead of "
                        "reporting a GeometryError; better: extract the registered study")


def radiomics_backend_args(p):
    """--radiomics-backend / --radiomics-device (extract, cohort-extract, run, cohort-run)."""
    p.add_argument("--radiomics-backend", choices=["pyradiomics", "torch"], default="pyradiomics",
                   help="pyradiomics (default), or torch: filters and texture features in PyTorch, on a GPU when "
                        "present (within 1e-4 relative of pyradiomics; stated in diagnostics.json)")
    p.add_argument("--radiomics-device", help="torch device for --radiomics-backend torch (cpu, cuda, cuda:1; "
                                              "default: the GPU when present, else the CPU)")


@verb("extract", "radiomics + kinetic features per series × region -> OUT/radiomics/")
def cmd_extract(args, progress):
    from ..io import load_study, read_image
    from ..radiomics import LONG_COLUMNS, extract_study, phase_deltas, write_outputs

    study = load_study(args.study, phase_overrides=phase_overrides(args))
    segmentation = read_image(args.segmentation) if args.segmentation else None
    result = extract_study(study, segmentation, progress=progress, **_radiomics_options(args))
    wide = result.wide
    if args.phase_deltas:
        import pandas as pd

        wide = pd.concat([wide, phase_deltas(wide)], axis=1)
    folder = RunFolder(args.out).radiomics
    write_outputs(folder, result.long[LONG_COLUMNS], wide, result.kinetics, result.diagnostics)
    counts = result.long.groupby("series")["region"].nunique()
    print(format_table([{"series": s, "regions": int(counts.get(s, 0)),
                         "values": int((result.long["series"] == s).sum()),
                         "with_reason": int(((result.long["series"] == s) & (result.long["reason"] != "")).sum()),
                         "seconds": result.diagnostics["series"][s].get("seconds", "")} for s in study.series],
                       title=f"Radiomics of {study.study_id} -> {folder}"))
    return 0


def _extract_args(p):
    p.add_argument("study", type=Path, help="study folder (study.json, NIfTI/NRRD or DICOM), best the registered "
                                            "one (OUT/registration)")
    add_phase_override(p)
    p.add_argument("--segmentation", type=Path,
                   help="label map (LABELS values) on the series grid; default: each series' masks['labels']")
    _radiomics_args(p)
    p.add_argument("--phase-deltas", action="store_true", help="add <A>-<B>__… phase-difference columns to the wide")
    p.add_argument("--out", type=Path, required=True, help="output folder (writes OUT/radiomics/)")


cmd_extract.configure = _extract_args


@verb("cohort-extract", "radiomics of every study in a cohort CSV (study_id,path[,segmentation]) with resume")
def cmd_cohort_extract(args, progress):
    from ..radiomics import cohort_extract

    status = cohort_extract(args.cohort, args.out, progress=progress, cluster=cluster_option(args),
                            **_radiomics_options(args))
    print(format_table(status.to_dict("records"), title=f"Cohort -> {args.out / 'radiomics'}"))
    return 0 if (status["status"] != "failed").all() else 1


def _cohort_extract_args(p):
    p.add_argument("cohort", type=Path, help="CSV with study_id,path[,segmentation][,patient_id,timepoint]")
    _radiomics_args(p)
    add_cluster_args(p, default_dask=False)
    p.add_argument("--out", type=Path, required=True, help="output folder (OUT/studies/<id>/radiomics, OUT/radiomics)")


cmd_cohort_extract.configure = _cohort_extract_args


@verb("stability", "ICC(3,1) of features under mask/noise/rotation/translation perturbations -> OUT/stability/")
def cmd_stability(args, progress):
    from ..io import load_study, read_image
    from ..files import atomic_write
    from ..radiomics import stability_screen, stability_subjects

    studies = [load_study(s) for s in args.studies]
    segmentation = read_image(args.segmentation) if args.segmentation else None
    subjects = stability_subjects(studies, args.series, [r.strip() for r in args.regions.split(",")], segmentation)
    preset = args.preset or {"CT": "ct", "MR": "mr", "PT": "pet"}[studies[0][args.series].modality.value]
    icc = stability_screen(subjects, preset, perturbations=[p.strip() for p in args.perturbations.split(",")],
                           repeats=args.repeats, seed=args.seed, threshold=args.threshold,
                           image_types=[t.strip() for t in args.image_types.split(",")], progress=progress)
    path = args.out / "stability" / "icc.csv"
    with atomic_write(path) as tmp:
        icc.to_csv(tmp, index=False)
    print(f"{int(icc['keep'].sum())} of {len(icc)} features with ICC(3,1) >= {args.threshold} "
          f"({len(subjects)} subjects) -> {path}")
    return 0


def _stability_args(p):
    p.add_argument("studies", type=Path, nargs="+", help="study folders (subjects = their regions)")
    p.add_argument("--segmentation", type=Path, help="label map on the series grid (default: masks['labels'])")
    p.add_argument("--series", default="PVP", help="series name or phase to screen (default PVP)")
    p.add_argument("--regions", default="lesions", help="regions/groups giving the subjects (default lesions)")
    p.add_argument("--preset", help="preset name or file (default: by modality)")
    p.add_argument("--perturbations", default="erode,dilate,noise,rotate,translate")
    p.add_argument("--repeats", type=int, default=1, help="seeded repeats per perturbation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold", type=float, default=0.75, help="keep features with ICC >= this (default 0.75)")
    p.add_argument("--image-types", default="Original", help="image types (default Original)")
    p.add_argument("--out", type=Path, required=True, help="output folder (writes OUT/stability/icc.csv)")


cmd_stability.configure = _stability_args


# ---------------------------------------------------------------- clinical decision support: lirads
@verb("lirads", "LI-RADS v2018 features and category per observation of a registered study -> OUT/lirads/")
def cmd_lirads(args, progress):
    from ..io import load_study, read_image
    from ..followup import read_prior
    from ..lirads_mri import assess_study

    study = load_study(args.study, phase_overrides=phase_overrides(args))
    if args.segmentation:
        labels = read_image(args.segmentation)
    else:
        reference = study[args.reference]
        if "labels" not in reference.masks:
            raise HCCFusionError(f"Series '{reference.name}' of '{args.study}' has no 'labels' mask: "
                                 "pass --segmentation (e.g. OUT/segmentation/segmentation.nii.gz).")
        labels = reference.masks["labels"]
    prior = read_prior(args.prior) if args.prior else None
    result = assess_study(study, labels, prior=prior, interval_months=args.interval_months)
    written = result.save(RunFolder(args.out).lirads)
    columns = ["lesion", "diameter_mm", "aphe", "washout", "capsule", "threshold_growth", "tumour_in_vein", "category"]
    rows = result.table().reset_index()[columns].to_dict("records") if result.observations else []
    print(format_table(rows, title=f"LI-RADS v2018, study {study.study_id}") if rows else "No observations.")
    print(f"-> {written['lirads.csv']}")
    return 0


def _lirads_args(p):
    p.add_argument("study", type=Path, help="registered study folder (e.g. OUT/registration)")
    add_phase_override(p)
    p.add_argument("--segmentation", type=Path, default=None,
                   help="label map on the study grid (default: the reference series' 'labels' mask)")
    p.add_argument("--reference", default="PVP", help="series whose 'labels' mask is used without --segmentation")
    p.add_argument("--prior", type=Path, default=None, help="lirads.csv of an earlier study (threshold growth)")
    p.add_argument("--interval-months", type=float, default=None, help="months between the prior and this study")
    p.add_argument("--out", type=Path, required=True)


cmd_lirads.configure = _lirads_args
