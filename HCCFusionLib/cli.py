"""`hccfusion` command: one verb per pipeline stage, plus `run` (all stages) and `demo`.

Every verb reads files and writes files (atomically), so each stage can be entered with the user's own
inputs. With `--progress lines` (used by the Slicer module's background process) progress is printed
as `PROGRESS <fraction> <message>` lines on stdout instead of bars.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import __version__
from .errors import HCCFusionError
from .progress import Progress

log = logging.getLogger(__name__)

VERBS = {}


def verb(name: str, help: str):
    """Register `func(args, progress)` as a verb; `func.configure(parser)` adds its arguments."""

    def wrap(func):
        VERBS[name] = (func, help)
        return func

    return wrap


# ---------------------------------------------------------------- foundation: info, demo
@verb("info", "what a study folder (manifest, NIfTI/NRRD or DICOM) contains, with detected phases")
def cmd_info(args, progress):
    from .io import load_study

    study = load_study(args.study, phase_overrides=phase_overrides(args))
    print(format_table(study.summary(), title=f"Study {study.study_id}"))
    return 0


def add_phase_override(p):
    """`--phase SERIES PHASE` (repeatable) for a verb that loads a study; read back with `phase_overrides`."""
    p.add_argument("--phase", nargs=2, action="append", metavar=("SERIES", "PHASE"),
                   help="override the detected phase of a series (name, SeriesInstanceUID or file; repeatable)")


def phase_overrides(args) -> dict:
    """The `--phase` pairs as the `phase_overrides` of io.load_study."""
    return dict(getattr(args, "phase", None) or [])


def _info_args(p):
    p.add_argument("study", type=Path, help="study folder (study.json/yaml manifest) or DICOM folder")
    add_phase_override(p)


cmd_info.configure = _info_args


@verb("models", "the shipped segmentation models (engine, modality, phases, labels, time, licence, SHA-256 check)")
def cmd_models(args, progress):
    from .segmentation import catalog

    rows = catalog.rows()
    print(format_table(rows, title=f"Segmentation models ({catalog.CATALOG})"))
    return 0 if all(r["status"] in ("ok",) or r["status"].startswith("not installed") for r in rows) else 1


cmd_models.configure = lambda p: None


@verb("demo", "generate a phantom study, load it, summarise it and write a Slicer scene (.mrb)")
def cmd_demo(args, progress):
    from .demo import run_demo

    result = run_demo(args.out, seed=args.seed, size=args.size, progress=progress, mode=args.mode,
                      registration_spacing_mm=args.registration_spacing, preset=args.preset,
                      truth_segmentation=args.segmentation == "truth")
    print(format_table(result.summary, title=f"Study {result.study_id}"))
    print(format_table(result.lesions, title="Ground-truth lesions") if result.lesions else "No lesions.")
    print(result.describe())
    print(f"HTML report: {result.written['report']}")
    return 0


def _demo_args(p):
    p.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default: demo_output)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--size", choices=["small", "full"], default="full")
    p.add_argument("--mode", choices=["rigid", "affine", "deformable"], default="deformable",
                   help="registration mode (default deformable)")
    p.add_argument("--registration-spacing", type=float, default=4.0,
                   help="registration working resolution in mm (default 4)")
    p.add_argument("--preset", default=None, help="radiomics preset name or YAML file (default: by modality)")
    p.add_argument("--segmentation", choices=["model", "truth"], default="model",
                   help="segment with a model (default; its Dice against the truth is printed beside the TRE) or "
                        "enter the phantom's ground truth as your own segmentation")


cmd_demo.configure = _demo_args


# ---------------------------------------------------------------- segmentation: plan, train-seg, segment
def _seg_cases(args, progress):
    from .segmentation.data import cases_from_folder, phantom_case

    if args.phantoms:
        cases = []
        for i in range(args.phantoms):
            cases.append(phantom_case(args.seed + i, args.channels, args.phantom_size))
            progress(0.1 * (i + 1) / args.phantoms, f"phantom {i + 1}/{args.phantoms}")
        return cases
    if args.dataset is None:
        from .errors import InputError

        raise InputError("Give a DATASET folder (one study folder per case, with a 'labels' mask) or --phantoms N.")
    return cases_from_folder(args.dataset, args.channels, args.reference)


def _seg_plans(args, cases):
    from .segmentation.planner import fingerprint, load_plans, make_plans

    if getattr(args, "plans", None):
        return load_plans(args.plans)
    return make_plans(fingerprint(cases, seed=args.seed), memory_mb=args.memory_mb, spacing=args.spacing,
                      base_filters=args.base_filters, max_filters=args.max_filters, batch_size=args.batch_size)


@verb("plan", "nnU-Net-style plans (spacing, patch size under a memory budget, normalisation, topology) for a dataset")
def cmd_plan(args, progress):
    from .segmentation.planner import save_plans

    plans = _seg_plans(args, _seg_cases(args, progress))
    save_plans(plans, args.out)
    print(f"plans: spacing {plans['spacing']} mm, patch {plans['patch_size']}, filters {plans['filters']}, "
          f"~{plans['memory_mb_estimate']} MB -> {args.out}")
    progress(1.0, "plans written")
    return 0


def _dataset_args(p):
    p.add_argument("dataset", type=Path, nargs="?", help="folder of study folders, each with a 'labels' mask")
    p.add_argument("--phantoms", type=int, default=0, help="use N phantom patients instead of DATASET")
    p.add_argument("--phantom-size", choices=["small", "full"], default="small")
    p.add_argument("--channels", nargs="+", default=["AP", "PVP"], help="phases used as channels, in order")
    p.add_argument("--reference", default=None, help="series whose grid the labels live on (default PVP)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--memory-mb", type=float, default=2000.0, help="training memory budget for the patch size")
    p.add_argument("--spacing", type=float, nargs=3, default=None, help="override the plan spacing (x y z, mm)")
    p.add_argument("--base-filters", type=int, default=32)
    p.add_argument("--max-filters", type=int, default=320)
    p.add_argument("--batch-size", type=int, default=2)


def _plan_args(p):
    _dataset_args(p)
    p.add_argument("--out", type=Path, required=True, help="plans.json to write")


cmd_plan.configure = _plan_args


@verb("train-seg", "train a segmentation model bundle (DynUNet) on a dataset or on phantoms")
def cmd_train_seg(args, progress):
    import torch

    from .progress import scaled
    from .segmentation.bundle import dataset_description, save_bundle
    from .segmentation.trainer import train

    if args.threads:
        torch.set_num_threads(args.threads)
    cases = _seg_cases(args, scaled(progress, 0.0, 1.0))
    plans = _seg_plans(args, cases)
    result = train(cases, plans, steps=args.steps, seed=args.seed, fold=args.fold, n_folds=args.folds, lr=args.lr,
                   device=args.device, checkpoint_dir=args.checkpoint, elastic=args.elastic,
                   progress=scaled(progress, 0.1, 1.0))
    card = {"name": args.out.name, "training_data": f"{len(result.train_ids)} cases "
            + (f"(phantoms, seeds {args.seed}..{args.seed + args.phantoms - 1}, size {args.phantom_size})"
               if args.phantoms else f"from {args.dataset}"),
            "validation": result.val_ids, "metrics": result.metrics, "steps": args.steps,
            "train_seconds": round(result.seconds, 1), "versions": _versions()}
    save_bundle(args.out, plans, dataset_description(plans, len(result.train_ids), args.reference or "PVP"),
                result.network, card)
    print(f"bundle -> {args.out}; validation Dice {result.metrics.get('dice', 'n/a')}")
    return 0


def _train_seg_args(p):
    _dataset_args(p)
    p.add_argument("--out", type=Path, required=True, help="model bundle folder to write")
    p.add_argument("--plans", type=Path, default=None, help="plans.json from `hccfusion plan` (default: plan now)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--fold", type=int, default=None, help="k-fold fold to hold out for validation (default: none)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--elastic", action="store_true", help="add elastic deformation to the augmentation")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--checkpoint", type=Path, default=None, help="checkpoint folder (resumes when it holds one)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")


cmd_train_seg.configure = _train_seg_args


@verb("segment", "segment liver and tumours of a (registered) study -> OUT/segmentation/")
def cmd_segment(args, progress):
    from .errors import QualityError
    from .io import load_study
    from .segmentation.engines import segment
    from .segmentation.predictor import save_segmentation

    study = load_study(args.study, phase_overrides=phase_overrides(args))
    seg, info = segment(study, args.engine, model=args.model, nnunet=args.nnunet, reference=args.reference,
                        tta=not args.no_tta, postprocess=not args.no_postprocess, progress=progress,
                        folds=args.folds, channel_map=dict(args.channel or []), overlap=args.overlap,
                        max_memory_mb=args.max_memory_mb)
    out = save_segmentation(seg, args.out / "segmentation", info)
    print(f"engine {info['engine']} ({info['engine_reason']})")
    for warning in info["qc_warnings"]:
        print(f"QC warning: {warning}")
    print(f"{len(seg.lesions)} lesion(s); segmentation -> {out / 'segmentation.nii.gz'}")
    if info["qc_failure"]:
        raise QualityError(f"Segmentation QC failed: {info['qc_failure']} (engine {info['engine']}). The label map "
                           f"is kept in {out} for review; try another engine (--engine) or give your own "
                           "segmentation.")
    return 0


def _engine_arg(p):
    from .segmentation.engines import ENGINES

    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="segmentation engine (default auto: the real-data engine 'liverlesion' for real studies, "
                        "the phantom sample model for synthetic AP+PVP studies; see `hccfusion models`)")


def _segment_args(p):
    p.add_argument("study", type=Path, help="study folder (e.g. OUT/registration from `hccfusion register`)")
    add_phase_override(p)
    _engine_arg(p)
    p.add_argument("--model", type=Path, default=None, help="your own model bundle folder (engine bundle)")
    p.add_argument("--nnunet", type=Path, default=None, help="nnU-Net v2 trained model folder (engine nnunet)")
    p.add_argument("--folds", nargs="+", default=None, help="nnU-Net folds to ensemble (default: all present)")
    p.add_argument("--channel", nargs=2, action="append", metavar=("CHANNEL", "SERIES"),
                   help="nnU-Net: map a model channel (index or name) to a study series (repeatable)")
    p.add_argument("--reference", default=None, help="series whose grid the output uses (default: model's, PVP)")
    p.add_argument("--no-tta", action="store_true", help="no mirroring test-time augmentation (faster)")
    p.add_argument("--no-postprocess", action="store_true",
                   help="keep the network's labels as they are (default: largest liver, tumours in the liver, "
                        "no lesion under 0.05 ml)")
    p.add_argument("--overlap", type=float, default=None, help="sliding-window overlap (0-0.9; default: the model's)")
    p.add_argument("--max-memory-mb", type=float, default=None, help="refuse inputs estimated above this")
    p.add_argument("--out", type=Path, required=True)


cmd_segment.configure = _segment_args


def _versions() -> dict:
    import monai
    import torch

    return {"hccfusion": __version__, "torch": torch.__version__, "monai": monai.__version__}


# ---------------------------------------------------------------- interoperability: pacs query|pull|push
@verb("pacs", "DICOMweb PACS: query studies/series/instances, pull a study into OUT/pacs/, push DICOM files")
def cmd_pacs(args, progress):
    from .pacs import Pacs

    pacs = Pacs(args.pacs_url, username=args.pacs_user, token=args.pacs_token, timeout=args.timeout,
                retries=args.retries)
    if args.action == "query":
        table = pacs.query(args.level, study_uid=args.study, filters=dict(args.filter or []), limit=args.limit)
        print(format_table(table.astype(object).where(table.notna(), "").to_dict("records"),
                           title=f"{len(table)} {args.level} on {pacs.url}"))
    elif args.action == "pull":
        folder = args.out / "pacs" / args.study_uid
        files = pacs.pull(args.study_uid, folder, series_uid=args.series, progress=progress)
        print(f"retrieved {len(files)} instances into {folder}")
    else:
        result = pacs.push(args.paths, progress=progress)
        print(f"stored {len(result.stored)} instances, {len(result.skipped)} already present on {pacs.url}")
    return 0


def _pacs_args(p):
    from .pacs import ENV_PASSWORD, ENV_TOKEN, ENV_URL, ENV_USER

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--pacs-url", help=f"DICOMweb root, e.g. http://host:8042/dicom-web (default: ${ENV_URL})")
    common.add_argument("--pacs-user", help=f"basic-auth user (default: ${ENV_USER}; password from ${ENV_PASSWORD})")
    common.add_argument("--pacs-token", help=f"bearer token (default: ${ENV_TOKEN})")
    common.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")
    common.add_argument("--retries", type=int, default=3, help="retries with backoff after a failure (default 3)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    query = actions.add_parser("query", parents=[common], help="QIDO-RS search (no patient names are shown)")
    query.add_argument("--level", choices=["studies", "series", "instances"], default="studies")
    query.add_argument("--study", help="StudyInstanceUID (for --level series/instances)")
    query.add_argument("--filter", nargs=2, action="append", metavar=("KEYWORD", "VALUE"),
                       help="QIDO match, e.g. --filter ModalitiesInStudy CT (repeatable)")
    query.add_argument("--limit", type=int)
    pull = actions.add_parser("pull", parents=[common], help="WADO-RS retrieve a study into OUT/pacs/<StudyUID>/")
    pull.add_argument("study_uid", help="StudyInstanceUID")
    pull.add_argument("--series", help="only this SeriesInstanceUID")
    pull.add_argument("--out", type=Path, required=True)
    push = actions.add_parser("push", parents=[common],
                              help="STOW-RS store DICOM files/folders; instances already in the PACS are skipped")
    push.add_argument("paths", nargs="+", type=Path)


cmd_pacs.configure = _pacs_args


# ---------------------------------------------------------------- radiomics: extract, cohort-extract, stability
def _radiomics_options(args) -> dict:
    """Keyword arguments of radiomics.extract_study from the shared extract/cohort-extract options."""
    from .errors import InputError

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
            "workers": args.workers, "cache_dir": args.cache, "resample_masks": args.resample_masks}


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
    p.add_argument("--resample-masks", action="store_true",
                   help="resample a segmentation on another grid to each series (nearest neighbour) instead of "
                        "reporting a GeometryError; better: extract the registered study")


@verb("extract", "radiomics + kinetic features per series × region -> OUT/radiomics/")
def cmd_extract(args, progress):
    from .io import load_study, read_image
    from .radiomics import LONG_COLUMNS, extract_study, phase_deltas, write_outputs

    study = load_study(args.study, phase_overrides=phase_overrides(args))
    segmentation = read_image(args.segmentation) if args.segmentation else None
    result = extract_study(study, segmentation, progress=progress, **_radiomics_options(args))
    wide = result.wide
    if args.phase_deltas:
        import pandas as pd

        wide = pd.concat([wide, phase_deltas(wide)], axis=1)
    folder = args.out / "radiomics"
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
    from .radiomics import cohort_extract

    status = cohort_extract(args.cohort, args.out, progress=progress, **_radiomics_options(args))
    print(format_table(status.to_dict("records"), title=f"Cohort -> {args.out / 'radiomics'}"))
    return 0 if (status["status"] != "failed").all() else 1


def _cohort_args(p):
    p.add_argument("cohort", type=Path, help="CSV with study_id,path[,segmentation][,patient_id,timepoint]")
    _radiomics_args(p)
    p.add_argument("--out", type=Path, required=True, help="output folder (OUT/studies/<id>/radiomics, OUT/radiomics)")


cmd_cohort_extract.configure = _cohort_args


@verb("stability", "ICC(3,1) of features under mask/noise/rotation/translation perturbations -> OUT/stability/")
def cmd_stability(args, progress):
    from .io import atomic_write, load_study, read_image
    from .radiomics import stability_screen, stability_subjects

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
    from .io import load_study, read_image
    from .lirads import assess_study, read_prior

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
    written = result.save(args.out / "lirads")
    columns = ["lesion", "diameter_mm", "aphe", "washout", "capsule", "threshold_growth", "category"]
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


# ---------------------------------------------------------------- fusion: train, evaluate, predict
def _model_args(p, with_out_help: str):
    p.add_argument("features", type=Path, help="feature table (CSV/Parquet), one row per patient, columns "
                   "'<PHASE>__<region>__<feature>', indexed by a patient_id/study_id column")
    p.add_argument("clinical", type=Path, help="clinical table (CSV/Parquet): Clinical fields, center, endpoints")
    p.add_argument("--endpoint", required=True,
                   help="mvi | early_recurrence | response | survival (survival_months + event) | diagnosis | any "
                        "column of the clinical table")
    p.add_argument("--fusion", choices=["feature", "decision"], default="feature")
    p.add_argument("--combine", choices=["weighted", "vote", "majority", "stack", "bayes"], default="stack",
                   help="decision-level combination (default: stack)")
    p.add_argument("--classifier", choices=["logistic", "svm", "rf", "gb"], default="logistic")
    p.add_argument("--selection", choices=["lasso", "mrmr", "univariate", "none"], default="lasso")
    p.add_argument("--k", type=int, default=10, help="features kept per block by the selection (default 10)")
    p.add_argument("--pca", type=float, default=None, help="per-block PCA keeping this variance fraction (0-1)")
    p.add_argument("--harmonize", action="store_true", help="ComBat by the clinical 'center' column (fitted on "
                   "training folds only)")
    p.add_argument("--survival-model", choices=["coxnet", "coxph"], default="coxnet")
    p.add_argument("--groups", choices=["median", "tertiles"], default="median", help="survival risk groups")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help=with_out_help)


def _model_spec(args):
    from .fusion.workflow import ModelSpec

    return ModelSpec(fusion=args.fusion, combine=args.combine, classifier=args.classifier,
                     selection=None if args.selection == "none" else args.selection, k=args.k, pca=args.pca,
                     harmonize=args.harmonize, survival_model=args.survival_model, groups=args.groups, seed=args.seed)


@verb("train", "train a fused prediction model (feature- or decision-level) -> model bundle folder")
def cmd_train(args, progress):
    from .fusion.workflow import train

    path = train(args.features, args.clinical, args.endpoint, args.out, _model_spec(args),
                 definitions=args.definitions, cv=args.cv, progress=progress)
    log.info("model bundle: %s", path)
    return 0


def _train_args(p):
    _model_args(p, "bundle folder to write (model.skops, model_card.json, checksums.sha256)")
    p.add_argument("--definitions", type=Path, help="CSV feature,definition (e.g. radiomics definitions.csv)")
    p.add_argument("--cv", type=int, default=5, help="folds of the cross-validated metrics in the model card")


cmd_train.configure = _train_args


@verb("evaluate", "nested cross-validation report (AUC CI, DeLong, calibration, DCA, C-index, KM) -> OUT/evaluation/")
def cmd_evaluate(args, progress):
    from .fusion.workflow import evaluate

    metrics = evaluate(args.features, args.clinical, args.endpoint, args.out, _model_spec(args), outer=args.outer,
                       inner=args.inner, tune=not args.no_tune, compare_blocks=not args.no_compare_blocks,
                       progress=progress)
    print(format_table([{k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in metrics.items()}],
                       title=f"Nested CV, endpoint {args.endpoint}"))
    return 0


def _evaluate_args(p):
    _model_args(p, "output folder (writes OUT/evaluation/)")
    p.add_argument("--outer", type=int, default=5)
    p.add_argument("--inner", type=int, default=3, help="inner folds choosing C (or the Cox alpha) per outer fold")
    p.add_argument("--no-tune", action="store_true", help="no inner grid search: default hyper-parameters")
    p.add_argument("--no-compare-blocks", action="store_true", help="skip the single-block models and DeLong tests")


cmd_evaluate.configure = _evaluate_args


@verb("predict", "apply a model bundle -> OUT/prediction/prediction.csv, contributions.csv, evidence.csv")
def cmd_predict(args, progress):
    from .fusion.workflow import predict

    result = predict(args.features, args.clinical, args.model, args.out, definitions=args.definitions,
                     progress=progress)
    log.info("prediction for %d patient(s) written to %s", len(result["prediction"]), args.out / "prediction")
    return 0


def _predict_args(p):
    p.add_argument("features", type=Path, help="feature table (CSV/Parquet) with the model's feature columns")
    p.add_argument("clinical", type=Path, nargs="?", help="clinical table (needed when the model uses clinical data)")
    p.add_argument("--model", type=Path, required=True, help="model bundle folder written by `hccfusion train`")
    p.add_argument("--definitions", type=Path, help="CSV feature,definition (default: the bundle's, if any)")
    p.add_argument("--out", type=Path, required=True, help="output folder (writes OUT/prediction/)")


cmd_predict.configure = _predict_args


# ---------------------------------------------------------------- phantoms: phantom, phantom-cohort
@verb("phantom", "write a synthetic patient (study folder + truth/: labels, lesions, landmarks, transforms)")
def cmd_phantom(args, progress):
    from .phantom import make_patient, save_patient
    from .progress import scaled

    patient = make_patient(args.seed, args.size, mri=args.mri, n_tumours=args.tumours,
                           misalignment=args.misalignment, progress=scaled(progress, 0.0, 0.7))
    progress(0.7, "writing")
    save_patient(patient, args.out)
    progress(1.0, "done")
    print(format_table(patient.study.summary(), title=f"Phantom {patient.study.study_id} -> {args.out}"))
    return 0


def _phantom_args(p):
    p.add_argument("--out", type=Path, required=True, help="new output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", choices=["small", "medium", "full"], default="small")
    p.add_argument("--mri", action="store_true", help="add T1, T2, ADC and HBP series")
    p.add_argument("--tumours", type=int, default=None, help="number of tumours (default: 0-3 at random)")
    p.add_argument("--misalignment", choices=["deformable", "rigid", "none"], default="deformable")


cmd_phantom.configure = _phantom_args


@verb("phantom-cohort", "write a simulated cohort: clinical.csv (with endpoints), features.csv, latent.csv")
def cmd_phantom_cohort(args, progress):
    from .phantom import make_cohort, save_cohort

    save_cohort(make_cohort(args.n, args.seed, centers=args.centers), args.out, feature_seed=args.seed)
    progress(1.0, "done")
    log.info("cohort of %d patients written to %s", args.n, args.out)
    return 0


def _cohort_args(p):
    p.add_argument("--out", type=Path, required=True, help="new output folder")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--centers", type=int, default=3)


cmd_phantom_cohort.configure = _cohort_args


# ---------------------------------------------------------------- registration: register
@verb("register", "register every series to a reference (rigid/affine/deformable), resample, stack -> OUT/registration/")
def cmd_register(args, progress):
    from .io import load_study
    from .registration import register_study

    study = load_study(args.study, phase_overrides=phase_overrides(args))
    result = register_study(study, reference=args.reference, mode=args.mode,
                            mask=None if args.mask == "none" else args.mask, engine=args.engine, seed=args.seed,
                            progress=progress)
    out = result.save(args.out / "registration")
    rows = [{"series": r["series"], "status": r["status"],
             "metric": f"{r['metric_before']:.3f} -> {r['metric_after']:.3f}",
             "max_disp_mm": f"{r['max_displacement_mm']:.1f}", "min_jacobian": f"{r['min_jacobian']:.2f}",
             "warnings": "; ".join(r["warnings"]) or "-"} for r in result.qc.to_dict("records")]
    print(format_table(rows, title=f"Registered to {result.reference} ({args.mode}) -> {out}"))
    return 0


def _register_args(p):
    p.add_argument("study", type=Path, help="study folder (study.json manifest, NIfTI/NRRD files or DICOM)")
    add_phase_override(p)
    p.add_argument("--reference", default=None,
                   help="reference series or phase (default: PVP, else HBP, else T1, else the first series)")
    p.add_argument("--mode", choices=["rigid", "affine", "deformable"], default="deformable",
                   help="rigid (Euler3D), affine (rigid then affine) or deformable (then B-spline; default)")
    p.add_argument("--mask", choices=["liver", "none"], default="none",
                   help="align the reference's liver (its 'liver' mask or 'labels' map, dilated), not the body")
    p.add_argument("--engine", choices=["sitk", "elastix"], default="sitk",
                   help="SimpleITK (default) or itk-elastix with its default parameter maps")
    p.add_argument("--seed", type=int, default=0, help="seed of the metric's random sampling")
    p.add_argument("--out", type=Path, required=True, help="output folder; writes OUT/registration/ (must be new)")


cmd_register.configure = _register_args


# ---------------------------------------------------------------- integration: run (all stages)
@verb("run", "all stages for one study (optionally pulled from / pushed to a PACS) -> OUT/<stage>/ + report")
def cmd_run(args, progress):
    from .pipeline import run

    if args.study is None and not args.pull:
        raise HCCFusionError("Give a STUDY folder or --pull STUDY_UID (with --pacs-url).")
    options = {"spacing_mm": args.registration_spacing} if args.registration_spacing else None
    result = run(args.study, args.out, model=args.model, seg_model=args.seg_model, engine=args.engine,
                 reference=args.reference,
                 mode=args.mode, segmentation=args.segmentation, image_types=args.image_types.split(","),
                 presets={"*": args.preset} if args.preset else None, workers=args.workers, tta=args.tta,
                 pacs_url=args.pacs_url, pacs_study_uid=args.pull,
                 push=args.push, overwrite=args.overwrite, registration_options=options,
                 phase_overrides=phase_overrides(args), progress=progress)
    print(result.describe())
    if result.pushed is not None:
        print(f"pushed SEG + SR: {len(result.pushed.stored)} stored, {len(result.pushed.skipped)} already present")
    return 0


def _run_args(p):
    p.add_argument("study", type=Path, nargs="?", help="study folder (study.json, NIfTI/NRRD or DICOM); "
                                                        "omit with --pull")
    add_phase_override(p)
    p.add_argument("--out", type=Path, required=True, help="output folder (writes OUT/<stage>/)")
    p.add_argument("--model", default=None, help="prediction bundle folder (default: the shipped demo bundle; "
                                                "'none' skips prediction)")
    _engine_arg(p)
    p.add_argument("--seg-model", type=Path, default=None, help="your own segmentation bundle (engine bundle)")
    p.add_argument("--segmentation", type=Path, default=None,
                   help="your own label map (LABELS values) on the reference series' grid: skips segmentation")
    p.add_argument("--reference", default=None,
                   help="reference series or phase (default: the first present of PVP, HBP, T1, DCE, T2, DP, AP, NC)")
    p.add_argument("--mode", choices=["rigid", "affine", "deformable"], default="deformable")
    p.add_argument("--registration-spacing", type=float, default=None,
                   help="registration working resolution in mm (default: the registration module's, 2 mm)")
    p.add_argument("--image-types", default="Original", help="radiomics image types, comma list of "
                                                             "Original,LoG,Wavelet (default Original: fast)")
    p.add_argument("--preset", default=None, help="radiomics preset name or YAML file for every series "
                                                  "(default: by modality, e.g. ct)")
    p.add_argument("--workers", type=int, default=2, help="radiomics processes (default 2)")
    p.add_argument("--tta", action="store_true", help="segmentation mirroring test-time augmentation (slower)")
    p.add_argument("--pacs-url", help="DICOMweb root for --pull/--push (default: $HCCFUSION_PACS_URL)")
    p.add_argument("--pull", metavar="STUDY_UID", help="retrieve this StudyInstanceUID from the PACS first")
    p.add_argument("--push", action="store_true", help="store the DICOM SEG + SR (and their source series) in the PACS")
    p.add_argument("--overwrite", action="store_true", help="replace stage folders of an earlier run in OUT")


cmd_run.configure = _run_args


# ---------------------------------------------------------------- helpers
def format_table(rows: list[dict], title: str = "") -> str:
    """Plain-text table of dict rows (same keys), for terminal summaries."""
    if not rows:
        return f"{title}\n(empty)"
    keys = list(rows[0])
    cells = [[str(r.get(k, "")) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    line = "  ".join(k.ljust(w) for k, w in zip(keys, widths))
    body = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(([title] if title else []) + [line, "-" * len(line)] + body)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hccfusion", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"hccfusion {__version__}")
    parser.add_argument("--progress", choices=["bar", "lines", "none"], default="bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, (func, help_text) in VERBS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        getattr(func, "configure", lambda _p: None)(p)
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args, Progress(args.progress)) or 0)
    except HCCFusionError as exc:
        print(f"hccfusion {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hccfusion {args.verb}: cancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
