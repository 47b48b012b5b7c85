"""What the `train-deep` and `predict-deep` verbs do: cohort of run folders -> nested CV + bundle; run -> evidence.

COHORT.csv: one row per patient, a `run` column (a completed `hccfusion run` folder; relative paths are read
from the CSV's folder), the endpoint column(s) and optional clinical columns. Each patient enters with its
largest lesion (the index lesion); its patches come from `patches.patches_from_run`.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .. import ddp
from ..errors import InputError, require
from .model import PATCHES, DeepFusion, stack_patches

log = logging.getLogger(__name__)

RUN_COLUMN = "run"


def read_cohort(cohort_csv, phases=("AP", "PVP", "DP")) -> pd.DataFrame:
    """The cohort table with `patches` of each patient's index lesion (the largest) in place of `run`."""
    from .patches import patches_from_run

    cohort_csv = Path(cohort_csv)
    try:
        table = pd.read_csv(cohort_csv)
    except (OSError, ValueError) as exc:
        raise InputError(f"Cannot read the cohort table '{cohort_csv}' ({exc}).") from exc
    if RUN_COLUMN not in table.columns:
        raise InputError(f"The cohort table '{cohort_csv}' has no '{RUN_COLUMN}' column: give one run folder "
                         "(written by `hccfusion run`) per patient.")
    patches = []
    for run in table[RUN_COLUMN]:
        folder = Path(run) if Path(run).is_absolute() else cohort_csv.parent / run
        lesions = patches_from_run(folder, phases)
        if lesions.empty:
            raise InputError(f"Run folder '{folder}' has no segmented lesion: it cannot enter deep fusion.")
        patches.append(lesions.loc[lesions["volume_ml"].idxmax(), PATCHES])
    return table.drop(columns=[RUN_COLUMN]).assign(**{PATCHES: patches})


def _target(table, kind, endpoint, time_col, event_col):
    if kind == "survival":
        from sksurv.util import Surv

        missing = [c for c in (time_col, event_col) if c not in table.columns]
        if missing:
            raise InputError(f"Survival needs --time-col and --event-col columns in the cohort table; missing "
                             f"{missing}.")
        return Surv.from_arrays(table[event_col].astype(bool), table[time_col].astype(float)), [time_col, event_col]
    if endpoint not in table.columns:
        raise InputError(f"The endpoint '{endpoint}' is not a column of the cohort table: {list(table.columns)}.")
    return table[endpoint].to_numpy(), [endpoint]


def cv_metrics(result) -> dict:
    """The card's metrics of a NestedCV: AUC with bootstrap CI, macro one-vs-rest AUC, or Harrell's C."""
    from ..fusion.evaluation import roc_auc_ci

    if result.kind == "binary":
        return roc_auc_ci(result.y == result.classes[1], result.prediction)
    if result.kind == "multiclass":
        from sklearn.metrics import roc_auc_score

        return {"auc_macro_ovr": float(roc_auc_score(result.y, result.prediction, multi_class="ovr",
                                                     labels=result.classes))}
    from sksurv.metrics import concordance_index_censored

    event_name, time_name = result.y.dtype.names
    return {"harrell_c": float(concordance_index_censored(result.y[event_name].astype(bool), result.y[time_name],
                                                          result.prediction)[0])}


def train_deep(cohort_csv, out, *, endpoint: str | None = None, kind: str = "binary",
               fusion: str = "intermediate", phases=("AP", "PVP", "DP"), clinical=(), epochs: int = 30,
               cv: int = 5, seed: int = 0, time_col: str | None = None, event_col: str | None = None,
               checkpoint_dir=None, device: str = "cpu", progress=None) -> Path:
    """Nested-CV metrics (cv >= 2 outer folds, fixed hyper-parameters) and a model fitted on every patient,
    written as a deep fusion bundle at `out`. Under `torchrun --nproc_per_node N` every fit is data-parallel
    over the N processes and rank 0 writes the bundle; `checkpoint_dir`: the final fit checkpoints each epoch
    there and resumes from it (the nested CV is rerun: its fits are not checkpointed)."""
    require("torch", "seg")
    with ddp.session(device) as (ranks, _):  # one process group for every fit
        return _train_deep(cohort_csv, out, endpoint, kind, fusion, phases, clinical, epochs, cv, seed, time_col,
                           event_col, checkpoint_dir, device, progress, ranks.main)


def _train_deep(cohort_csv, out, endpoint, kind, fusion, phases, clinical, epochs, cv, seed, time_col, event_col,
                checkpoint_dir, device, progress, main) -> Path:
    from ..fusion.evaluation import nested_cv
    from .bundle import save_deep_bundle

    table = read_cohort(cohort_csv, phases)
    y, outcome = _target(table, kind, endpoint, time_col, event_col)
    X = table[[PATCHES, *clinical]]
    estimator = DeepFusion(fusion=fusion, kind=kind, phases=tuple(phases), clinical=list(clinical),
                           epochs=epochs, seed=seed, device=device)
    card = {"endpoint": endpoint if kind != "survival" else f"{time_col}/{event_col}", "kind": kind,
            "fusion": fusion, "cohort": {"csv": str(cohort_csv), "patients": len(table)}}
    if cv >= 2:
        card["cv"] = {"outer_folds": cv, **cv_metrics(nested_cv(estimator, X, y, kind=kind, outer=cv, seed=seed,
                                                                 progress=progress))}
        log.info("deep fusion nested CV: %s", card["cv"])
    model = estimator.fit(X, y, checkpoint_dir=checkpoint_dir)
    card["train_seconds"] = round(model.fit_seconds_, 1)
    return save_deep_bundle(model, out, card) if main else Path(out)


def _check_clinical(model) -> None:
    """InputError when the model needs clinical columns, which a run folder's lesion table does not hold."""
    from ..lesions import LESION_COLUMNS

    missing = [c for c in model.clinical_ if c not in LESION_COLUMNS]
    if missing:
        raise InputError(f"The bundle's model uses clinical column(s) {missing}, which `predict-deep` cannot take "
                         "from a run folder; train without --clinical for per-run prediction.")


def check_deep_bundle(bundle) -> tuple:
    """The phases of a deep fusion bundle that `predict_deep` can apply to a run folder (checksums verified, weights
    loaded, no clinical inputs): `run --deep-model` checks it before its long stages. InputError/IntegrityError."""
    from .bundle import load_deep_bundle

    require("torch", "seg")
    model, _ = load_deep_bundle(bundle)
    _check_clinical(model)
    return tuple(model.phases_)


def deep_stage_skip(phases, study, lesions: int) -> "str | None":
    """Why `run`'s deep fusion stage does not run for this study (None: it runs): no lesion, or none of the
    model's phases (by series name or phase, as `patches_from_run` looks them up)."""
    if not lesions:
        return "no lesion found"
    if all(study.get(phase) is None for phase in phases):  # as patches_from_run finds them
        return f"none of the deep model's phases ({', '.join(phases)}) is in this study ({', '.join(study.series)})"
    return None


def predict_deep(run_folder, bundle, out=None) -> pd.DataFrame:
    """Prediction, per-phase attention and Grad-CAM of every lesion of a run folder, written to
    RunFolder(out or run_folder).deep_prediction; returns the prediction table."""
    from ..layout import RunFolder
    from .bundle import load_deep_bundle
    from .evidence import explain, save_evidence
    from .patches import patches_from_run

    require("torch", "seg")
    model, card = load_deep_bundle(bundle)
    _check_clinical(model)
    lesions = patches_from_run(run_folder, model.phases_).set_index("lesion")
    prediction = lesions.drop(columns=[PATCHES])
    if model.kind == "survival":
        prediction["risk"] = model.predict(lesions)
        prediction["risk_group"] = model.risk_group(risk=prediction["risk"].to_numpy())
    else:
        for k, c in enumerate(model.classes_):
            prediction[f"p_{c}"] = model.predict_proba(lesions)[:, k]
    attention, gradcam = explain(model, lesions)
    save_evidence(RunFolder(out or run_folder).deep_prediction, prediction, attention, gradcam, model.phases_,
                  patches=stack_patches(lesions)[:, :, 0])
    log.info("deep fusion (%s) predicted %d lesion(s)", card.get("endpoint"), len(prediction))
    return prediction
