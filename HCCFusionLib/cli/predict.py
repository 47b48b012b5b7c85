"""Fusion verbs: train, evaluate, predict."""
from __future__ import annotations

import logging
from pathlib import Path

from .common import format_table, verb
from ..layout import RunFolder

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- fusion: train, evaluate, predict
def _model_args(p, with_out_help: str):
    p.add_argument("features", type=Path, help="feature table (CSV/Parquet), one row per patient, columns "
                   "'<PHASE>__<region>__<feature>', indexed by a patient_id/study_id column")
    p.add_argument("clinical", type=Path, help="clinical table (CSV/Parquet): Clinical fields, center, endpoints")
    p.add_argument("--endpoint", required=True,
                   help="mvi | early_recurrence (column, or derived: recurrence by 24 months from --time-col/"
                        "--event-col; censored earlier = excluded) | response (1/0 or CR/PR/SD/PD) | survival | "
                        "grade (Edmondson-Steiner I-IV, ordinal model) | diagnosis | any column of the clinical table")
    p.add_argument("--time-col", default="survival_months", help="time column (months) of survival or recurrence, "
                   "e.g. os_months or rfs_months (default survival_months)")
    p.add_argument("--event-col", default="event", help="event column (1 = event) matching --time-col, e.g. "
                   "os_event or rfs_event (default event)")
    p.add_argument("--stable-features", type=Path, help="ICC table (icc.csv of `hccfusion stability`): only imaging "
                   "features with ICC >= --icc-threshold enter the model")
    p.add_argument("--icc-threshold", type=float, default=0.75, help="ICC needed with --stable-features (0.75)")
    p.add_argument("--fusion", choices=["feature", "decision", "cca", "scca"], default="feature",
                   help="feature (concatenated blocks), decision (one model per block, combined), cca / scca "
                        "(canonical variates of CT vs MRI blocks, or first block vs the rest; scca = sparse CCA)")
    p.add_argument("--combine", choices=["weighted", "vote", "majority", "stack", "bayes"], default="stack",
                   help="decision-level combination (default: stack)")
    p.add_argument("--classifier", choices=["logistic", "svm", "rf", "gb"], default="logistic")
    p.add_argument("--selection", choices=["lasso", "mrmr", "univariate", "none"], default="lasso")
    p.add_argument("--k", type=int, default=10, help="features kept per block by the selection (default 10)")
    p.add_argument("--pca", type=float, default=None, help="per-block PCA keeping this variance fraction (0-1)")
    p.add_argument("--harmonize", action="store_true", help="ComBat by the clinical 'center' column (fitted on "
                   "training folds only)")
    p.add_argument("--harmonize-covariates", help="comma-separated clinical columns whose effects ComBat preserves "
                   "(e.g. age,sex,etiology; implies --harmonize)")
    p.add_argument("--reference-center", help="harmonise every center to this one (implies --harmonize); centers "
                   "not seen in training are then estimated from their own rows instead of refused")
    p.add_argument("--survival-model", choices=["coxnet", "coxph"], default="coxnet")
    p.add_argument("--groups", choices=["median", "tertiles"], default="median", help="survival risk groups")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help=with_out_help)


def _model_spec(args):
    from ..fusion.workflow import ModelSpec

    return ModelSpec(fusion=args.fusion, combine=args.combine, classifier=args.classifier,
                     selection=None if args.selection == "none" else args.selection, k=args.k, pca=args.pca,
                     harmonize=_harmonize(args), survival_model=args.survival_model, groups=args.groups, seed=args.seed)


def _harmonize(args):
    covariates = [c.strip() for c in (args.harmonize_covariates or "").split(",") if c.strip()]
    if not covariates and not args.reference_center:
        return args.harmonize
    return {"covariates": covariates, "reference_batch": args.reference_center}


def _data_options(args) -> dict:
    return dict(time_col=args.time_col, event_col=args.event_col, stable_features=args.stable_features,
                icc_threshold=args.icc_threshold)


@verb("train", "train a fused prediction model (feature- or decision-level) -> model bundle folder")
def cmd_train(args, progress):
    from ..fusion.workflow import train

    path = train(args.features, args.clinical, args.endpoint, args.out, _model_spec(args),
                 definitions=args.definitions, cv=args.cv, nomogram=args.nomogram, landmark=args.landmark,
                 sample=args.sample, progress=progress, **_data_options(args))
    log.info("model bundle: %s", path)
    return 0


def _train_args(p):
    _model_args(p, "bundle folder to write (model.skops, model_card.json, checksums.sha256)")
    p.add_argument("--definitions", type=Path, help="CSV feature,definition (e.g. radiomics definitions.csv)")
    p.add_argument("--cv", type=int, default=5, help="folds of the cross-validated metrics in the model card")
    p.add_argument("--nomogram", action="store_true", help="also fit a nomogram (the model's out-of-fold score + "
                   "log10 AFP, Child-Pugh, ALBI, tumour size and number) into the bundle (binary or survival)")
    p.add_argument("--landmark", type=float, metavar="MONTHS", help="survival: landmark Cox model of the time after "
                   "MONTHS on the patients at risk then, e.g. on delta features (followup_risk; `run --risk-bundle`)")
    p.add_argument("--sample", metavar="WHAT", help="the training data are synthetic (e.g. 'phantom follow-up "
                   "cohort'): the bundle is labelled a sample wherever it is shown")


cmd_train.configure = _train_args


@verb("evaluate", "nested cross-validation report (AUC CI, DeLong, calibration, DCA, C-index, KM) -> OUT/evaluation/")
def cmd_evaluate(args, progress):
    from ..fusion.workflow import evaluate

    metrics = evaluate(args.features, args.clinical, args.endpoint, args.out, _model_spec(args), outer=args.outer,
                       inner=args.inner, tune=not args.no_tune, compare_blocks=not args.no_compare_blocks,
                       progress=progress, **_data_options(args))
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
    from ..fusion.workflow import predict

    result = predict(args.features, args.clinical, args.model, args.out, definitions=args.definitions,
                     progress=progress)
    log.info("prediction for %d patient(s) written to %s", len(result["prediction"]), RunFolder(args.out).prediction)
    return 0


def _predict_args(p):
    p.add_argument("features", type=Path, help="feature table (CSV/Parquet) with the model's feature columns")
    p.add_argument("clinical", type=Path, nargs="?", help="clinical table (needed when the model uses clinical data)")
    p.add_argument("--model", type=Path, required=True, help="model bundle folder written by `hccfusion train`")
    p.add_argument("--definitions", type=Path, help="CSV feature,definition (default: the bundle's, if any)")
    p.add_argument("--out", type=Path, required=True, help="output folder (writes OUT/prediction/)")


cmd_predict.configure = _predict_args


@verb("nomogram", "nomogram of a bundle trained with --nomogram -> OUT/nomogram/nomogram.png, points.csv")
def cmd_nomogram(args, progress):
    from ..fusion.workflow import nomogram_figure

    path = nomogram_figure(args.bundle, args.out, time=args.time)
    log.info("nomogram: %s (scales as numbers in %s)", path, path.parent / "points.csv")
    return 0


def _nomogram_args(p):
    p.add_argument("bundle", type=Path, help="model bundle folder written by `hccfusion train --nomogram`")
    p.add_argument("--time", type=float, default=24.0, help="months of the survival scale (Cox nomograms; 24)")
    p.add_argument("--out", type=Path, required=True, help="output folder (writes OUT/nomogram/)")


cmd_nomogram.configure = _nomogram_args
