"""Integration verb: run (all stages)."""
from __future__ import annotations

from pathlib import Path

from ..errors import HCCFusionError
from .common import add_cluster_args, add_phase_override, cluster_option, format_table, phase_overrides, verb
from .features import radiomics_backend_args
from .segment import engine_arg


# ---------------------------------------------------------------- integration: run (all stages)
@verb("run", "all stages for one study (optionally pulled from / pushed to a PACS) -> OUT/<stage>/ + report")
def cmd_run(args, progress):
    from ..pipeline import run

    if args.study is None and not args.pull:
        raise HCCFusionError("Give a STUDY folder or --pull STUDY_UID (with --pacs-url).")
    options = {"spacing_mm": args.registration_spacing} if args.registration_spacing else None
    result = run(args.study, args.out, model=args.model, seg_model=args.seg_model, engine=args.engine,
                 reference=args.reference,
                 mode=args.mode, segmentation=args.segmentation, image_types=args.image_types.split(","),
                 presets={"*": args.preset} if args.preset else None, workers=args.workers, tta=args.tta,
                 pacs_url=args.pacs_url, pacs_study_uid=args.pull,
                 push=args.push, overwrite=args.overwrite, registration_options=options,
                 phase_overrides=phase_overrides(args), keep_identifiers=args.keep_identifiers, resume=args.resume,
                 prior=args.prior, interval_months=args.interval_months, risk_bundle=args.risk_bundle,
                 deep_model=args.deep_model, radiomics_backend=args.radiomics_backend,
                 radiomics_device=args.radiomics_device, progress=progress)
    args.stage_status = result.stages  # the audit record's per-stage status
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
    engine_arg(p)
    p.add_argument("--seg-model", type=Path, default=None, help="your own segmentation bundle (engine bundle)")
    p.add_argument("--segmentation", type=Path, default=None,
                   help="your own label map (LABELS values) on the reference series' grid: skips segmentation")
    p.add_argument("--reference", default=None,
                   help="reference series or phase (default: the first present of PVP, HBP, MR_PVP, T1, DCE, MR_PRE, T2, DP, AP, NC)")
    p.add_argument("--mode", choices=["rigid", "affine", "deformable"], default="deformable")
    p.add_argument("--registration-spacing", type=float, default=None,
                   help="registration working resolution in mm (default: the registration module's, 2 mm)")
    p.add_argument("--image-types", default="Original", help="radiomics image types, comma list of "
                                                             "Original,LoG,Wavelet (default Original: fast)")
    p.add_argument("--preset", default=None, help="radiomics preset name or YAML file for every series "
                                                  "(default: by modality, e.g. ct)")
    p.add_argument("--workers", type=int, default=2, help="radiomics processes (default 2)")
    radiomics_backend_args(p)
    p.add_argument("--tta", action="store_true", help="segmentation mirroring test-time augmentation (slower)")
    p.add_argument("--pacs-url", help="DICOMweb root for --pull/--push (default: $HCCFUSION_PACS_URL)")
    p.add_argument("--pull", metavar="STUDY_UID", help="retrieve this StudyInstanceUID from the PACS first")
    p.add_argument("--push", action="store_true", help="store the DICOM SEG + SR (and their source series) in the PACS")
    p.add_argument("--keep-identifiers", action="store_true",
                   help="keep the input's patient, physician, institution and accession attributes and study UIDs "
                        "in the DICOM SEG + SR (implied by --push). Default: SEG + SR are de-identified (a "
                        "pseudonymous patient HCCF-<hash>, a new study); no other output holds identifiers (except the "
                        "study pulled with --pull)")
    p.add_argument("--prior", type=Path, default=None, metavar="PRIOR_RUN",
                   help="the same patient's earlier run folder (baseline): register to it, match lesions, report size "
                        "change, threshold growth, delta radiomics, RECIST 1.1 and mRECIST (OUT/followup/)")
    p.add_argument("--interval-months", type=float, default=None,
                   help="months between the prior run's study and this one (default: from the studies' dates)")
    p.add_argument("--risk-bundle", type=Path, default=None, metavar="BUNDLE",
                   help="with --prior: a landmark Cox bundle on delta features (`train --endpoint survival --landmark "
                        "MONTHS`): the patient's dynamic risk curve in OUT/followup/ and the report")
    p.add_argument("--deep-model", type=Path, default=None, metavar="BUNDLE",
                   help="a deep fusion bundle (`train-deep`): after the prediction stage, its per-lesion prediction, "
                        "phase attention and Grad-CAM (as `predict-deep`) in OUT/prediction/deep/ and the report")
    p.add_argument("--overwrite", action="store_true", help="replace stage folders of an earlier run in OUT")
    p.add_argument("--resume", action="store_true",
                   help="continue a run in OUT that was interrupted (killed, SIGTERM, Ctrl-C) with the same inputs and "
                        "settings (else an error): stale temporaries are removed, the completed registration, "
                        "segmentation and radiomics whose files still match OUT/stages.json are read back, the later "
                        "stages rerun; outputs equal those of an uninterrupted run")


cmd_run.configure = _run_args


@verb("cohort-run", "all stages for every study of a cohort CSV as Dask tasks, with resume -> OUT/studies/<id>/, "
                    "OUT/cohort/")
def cmd_cohort_run(args, progress):
    from ..cohort_run import cohort_run

    options = {"spacing_mm": args.registration_spacing} if args.registration_spacing else None
    status = cohort_run(args.cohort, args.out, cluster=cluster_option(args), progress=progress, model=args.model,
                        engine=args.engine, mode=args.mode, image_types=args.image_types.split(","),
                        presets={"*": args.preset} if args.preset else None, workers=args.workers,
                        registration_options=options, radiomics_backend=args.radiomics_backend,
                        radiomics_device=args.radiomics_device)
    print(format_table(status.to_dict("records"), title=f"Cohort -> {args.out / 'cohort'}"))
    return 0 if (status["status"] != "failed").all() else 1


def _cohort_run_args(p):
    p.add_argument("cohort", type=Path, help="CSV with study_id,path[,segmentation][,patient_id,timepoint]; paths "
                                             "relative to the CSV's folder")
    p.add_argument("--out", type=Path, required=True, help="output folder (OUT/studies/<id>/, OUT/cohort/, "
                                                           "OUT/radiomics/); rerun to resume")
    add_cluster_args(p, default_dask=True)
    p.add_argument("--model", default=None, help="prediction bundle folder (default: the shipped demo bundle; "
                                                "'none' skips prediction)")
    engine_arg(p)
    p.add_argument("--mode", choices=["rigid", "affine", "deformable"], default="deformable")
    p.add_argument("--registration-spacing", type=float, default=None, help="registration resolution in mm")
    p.add_argument("--image-types", default="Original", help="radiomics image types (default Original)")
    p.add_argument("--preset", default=None, help="radiomics preset name or YAML file for every series")
    p.add_argument("--workers", type=int, default=2, help="radiomics processes per study without Dask (default 2)")
    radiomics_backend_args(p)


cmd_cohort_run.configure = _cohort_run_args
