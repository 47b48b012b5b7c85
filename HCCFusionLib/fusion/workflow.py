"""What `hccfusion train / evaluate / predict` do, as functions (also used by the Slicer module and `run`).

Inputs: FEATURES (wide table, one row per patient, columns `<PHASE>__<region>__<feature>`) and CLINICAL
(clinical variables named as `study.Clinical` fields, `center`, and the endpoint columns), CSV or Parquet,
indexed by a `patient_id`/`study_id` column (else the first column).

Outputs
  train    BUNDLE/ model.skops, model_card.json, [definitions.csv], checksums.sha256 (see `bundle`)
  evaluate OUT/evaluation/ metrics.csv, predictions.csv (out-of-fold), inner_selection.csv, and per endpoint kind
           binary: roc.csv/png, calibration.csv/png, decision_curve.csv/png, blocks.csv + delong.csv (fused vs
           each single block); survival: td_auc.csv/png, km.csv/png; multiclass: confusion.csv, roc.png
  predict  OUT/prediction/
           prediction.csv    patient_id, endpoint, model, then
                             binary: probability, low, high (95% interval; empty when not available),
                                     [blocks_used, subset_auc, subset_brier for decision fusion], interval
                             survival: risk, risk_group, low, high (empty), survival_<t>m ..., interval
                             multiclass: predicted, p_<class> ..., interval
           contributions.csv patient_id, name, kind (baseline | feature | block | leave-one-block-out), block,
                             value (measured), z (standardised), contribution, units (log-odds | probability |
                             Cox risk score); baseline + features (feature fusion) or baseline + blocks (decision
                             fusion, stack/bayes) add up to the model output; see `explain`
           evidence.csv      patient_id, rank, feature, block, value, definition, contribution, units: the top 20
                             features per patient by |contribution|
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..progress import scaled, silent
from .data import EVENT_COLUMN, ICC_THRESHOLD, TIME_COLUMN, assemble, read_table, stable_columns

log = logging.getLogger(__name__)
SURVIVAL_TIMES = (12.0, 24.0, 36.0)  # months, for predicted survival probabilities
EVIDENCE_TOP = 20


@dataclass
class ModelSpec:
    """Model choice shared by train and evaluate."""

    fusion: str = "feature"  # feature | decision | cca | scca (canonical variates of two views, see fusion.cca)
    combine: str = "stack"  # decision fusion: weighted | vote | majority | stack | bayes
    classifier: str = "logistic"  # logistic | svm | rf | gb
    selection: str | None = "lasso"  # lasso | mrmr | univariate | None
    k: int = 10
    pca: float | None = None
    harmonize: "bool | dict" = False  # True, or ComBat options {"covariates": [...], "reference_batch": "C1"}
    survival_model: str = "coxnet"  # coxnet | coxph
    groups: str = "median"  # survival risk groups: median | tertiles
    seed: int = 0

    def build(self, kind: str, blocks=None):
        from .decision_level import DecisionFusion
        from .feature_level import FeatureFusion
        from .survival import SurvivalFusion

        common = dict(blocks=blocks, pca=self.pca, harmonize=self.harmonize, random_state=self.seed)
        if kind == "survival":
            if self.fusion != "feature":
                raise InputError("Survival models use feature-level fusion: use --fusion feature.")
            return SurvivalFusion(model=self.survival_model, groups=self.groups, **common)
        if kind == "ordinal":  # ordered grades: cumulative-logit model on the fused features
            if self.fusion != "feature":
                raise InputError("Ordinal (grade) endpoints use feature-level fusion: use --fusion feature.")
            return FeatureFusion(classifier="ordinal", selection=self.selection, k=self.k, **common)
        if self.fusion == "feature":
            return FeatureFusion(classifier=self.classifier, selection=self.selection, k=self.k, **common)
        if self.fusion in ("cca", "scca"):
            from .cca import CCAFusion

            return CCAFusion(sparse=self.fusion == "scca", classifier=self.classifier, **common)
        if self.fusion == "decision":
            return DecisionFusion(combine=self.combine, base=self.classifier, selection=self.selection, k=self.k,
                                  **common)
        raise InputError(f"Unknown fusion '{self.fusion}': use feature, decision, cca or scca.")

    def grid(self, kind: str) -> dict | None:
        """Inner-loop grid of nested cross-validation."""
        if kind == "survival":
            return {"alpha": [0.02, 0.1]} if self.survival_model == "coxnet" else {"alpha": [0.1, 1.0]}
        if kind == "ordinal" or self.fusion in ("feature", "cca", "scca") and self.classifier in ("logistic", "svm"):
            return {"C": [0.05, 0.2]}
        return None


def load_inputs(features, clinical, endpoint: str | None, *, time_col: str = TIME_COLUMN,
                event_col: str = EVENT_COLUMN):
    """(X, y, kind) from paths or DataFrames; `time_col`/`event_col` name the survival (or recurrence) columns."""
    features = read_table(features, "feature table") if not isinstance(features, pd.DataFrame) else features
    if clinical is not None and not isinstance(clinical, pd.DataFrame):
        clinical = read_table(clinical, "clinical table")
    return assemble(features, clinical, endpoint, time_column=time_col, event_column=event_col)


# ---------------------------------------------------------------- train
def train(features, clinical, endpoint: str, out: "str | Path", spec: ModelSpec | None = None, *,
          definitions: "str | Path | None" = None, cv: int = 5, time_col: str = TIME_COLUMN,
          event_col: str = EVENT_COLUMN, stable_features=None, icc_threshold: float = ICC_THRESHOLD,
          nomogram: bool = False, landmark: float | None = None, sample: str | None = None, progress=None) -> Path:
    """Fit the model on all rows, estimate its performance by `cv`-fold cross-validation, write a bundle.

    `landmark` (survival, months): a landmark Cox model of the time after it, on the patients still at risk then
    (`followup_risk.at_landmark`; e.g. delta features of a follow-up scan that far after baseline), recorded in the
    card. `sample`: the training data are synthetic (what they are, e.g. "phantom follow-up cohort"): the card says
    so and reports label the bundle a sample.

    `time_col`/`event_col`: the time-to-event columns (survival, and early recurrence derived from them), so OS
    and RFS can come from one clinical table. `stable_features`: an ICC table (icc.csv); only imaging features
    with ICC >= `icc_threshold` enter training (recorded in the model card). `nomogram`: also fit a nomogram
    of the model's out-of-fold score plus the clinical covariates (`fusion.nomogram`) into the bundle.
    """
    from .bundle import save_bundle
    from .evaluation import calibration, nested_cv, roc_auc_ci, survival_metrics

    progress = progress or silent
    spec = spec or ModelSpec()
    X, y, kind = load_inputs(features, clinical, endpoint, time_col=time_col, event_col=event_col)
    if landmark is not None:
        from ..followup_risk import at_landmark

        if kind != "survival":
            raise InputError(f"--landmark needs the survival endpoint (a time-to-event model), not '{endpoint}'.")
        X, y = at_landmark(X, y, float(landmark))
    stability = None
    if stable_features is not None:
        X, stability = stable_columns(X, stable_features, icc_threshold)
    model = spec.build(kind)
    log.info("training a %s %s model for '%s' on %d patients", spec.fusion, kind, endpoint, len(X))
    progress(0.05, f"cross-validating {len(X)} patients")
    result = nested_cv(model, X, y, kind=kind, outer=cv, seed=spec.seed, progress=scaled(progress, 0.05, 0.8))
    if kind == "binary":
        metrics = {**roc_auc_ci(y, result.prediction, seed=spec.seed),
                   **{f"calibration_{k}": v for k, v in calibration(y, result.prediction)[0].items()}}
    elif kind == "survival":
        metrics = survival_metrics(y, result.prediction, result.groups)[0]
        del metrics["n"]
    else:
        from sklearn.metrics import roc_auc_score

        metrics = {"auc_macro_ovr": float(roc_auc_score(y, result.prediction, multi_class="ovr",
                                                        labels=result.classes))}
        if kind == "ordinal":
            from .ordinal import ordinal_metrics

            metrics.update(ordinal_metrics(y, result.prediction, result.classes))
    progress(0.85, "fitting the final model")
    model.fit(X, y)
    card = {
        "endpoint": endpoint, "kind": kind, "fusion": spec.fusion if kind not in ("survival", "ordinal") else "feature",
        "options": {k: v for k, v in vars(spec).items()},
        "blocks": model.blocks_, "features": [c for cols in model.blocks_.values() for c in cols],
        "classes": [str(c) for c in getattr(model, "classes_", [])],
        "training": _cohort_summary(X, y, kind),
        "cv_metrics": {"method": f"{cv}-fold cross-validation, all preprocessing and selection inside each fold",
                       **metrics},
        "interval": _interval_method(model, kind),
        "outcome_columns": ({"time": time_col, "event": event_col}
                            if kind == "survival" or endpoint == "early_recurrence" else None),
        "stable_features": stability,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "intended_use": "Research only; trained on the data named in 'training'. Not for clinical decisions.",
    }
    if landmark is not None:
        card["landmark_months"] = float(landmark)
    if sample:
        card.update(sample=str(sample), intended_use=f"Sample only: trained on {sample}. NOT for clinical use.")
    nomo = None
    if nomogram:
        from .nomogram import fit_for_model

        nomo = fit_for_model(X, y, kind, result.prediction)
        card["nomogram"] = {"kind": nomo.kind, "variables": nomo.variables_, "coefficients": nomo.coef_.tolist(),
                            "score": "out-of-fold model output (log-odds or Cox risk)"}
    defs = _read_definitions(definitions) if definitions else None
    path = save_bundle(model, out, card, defs, nomogram=nomo)
    progress(1.0, "model bundle written")
    return path


def _cohort_summary(X, y, kind) -> dict:
    summary = {"n": int(len(X))}
    if kind == "survival":
        event, time = (y[n] for n in y.dtype.names)
        summary.update(events=int(event.sum()), median_time=float(np.median(time)))
    else:
        values, counts = np.unique(np.asarray(y).astype(str), return_counts=True)
        summary["class_counts"] = dict(zip(values.tolist(), counts.tolist()))
    if "center" in X.columns:
        summary["centers"] = {str(k): int(v) for k, v in X["center"].value_counts().items()}
    return summary


def _interval_method(model, kind) -> str:
    from .decision_level import DecisionFusion

    if kind != "binary":
        return "none"
    if isinstance(model, DecisionFusion):
        return "95% Wald interval of the combiner for the blocks present"
    if hasattr(model, "cov_"):
        return "95% Wald interval of the logistic model given the selected features"
    return "none"


def _read_definitions(path) -> pd.DataFrame:
    """feature -> definition table; accepts radiomics' definitions.csv (column 'name' instead of 'feature')."""
    table = pd.read_csv(path) if not isinstance(path, pd.DataFrame) else path
    if "feature" not in table.columns and "name" in table.columns:
        table = table.rename(columns={"name": "feature"})
    if not {"feature", "definition"} <= set(table.columns):
        raise InputError(f"Definitions table '{path}' needs the columns 'feature' (or 'name') and 'definition' "
                         f"(it has {list(table.columns)[:6]}).")
    return table[["feature", "definition"]].drop_duplicates("feature")


# ---------------------------------------------------------------- evaluate
def evaluate(features, clinical, endpoint: str, out: "str | Path", spec: ModelSpec | None = None, *,
             outer: int = 5, inner: int = 3, tune: bool = True, compare_blocks: bool = True,
             time_col: str = TIME_COLUMN, event_col: str = EVENT_COLUMN, stable_features=None,
             icc_threshold: float = ICC_THRESHOLD, progress=None) -> dict:
    """Nested cross-validation report in OUT/evaluation/ (metrics, plots, CSVs); returns the main metrics.

    Each outer training fold refits everything (blocks, ComBat, selection) and, with `tune`, chooses the
    hyper-parameters of `ModelSpec.grid` by an inner cross-validation of that fold only. With
    `compare_blocks`, every single-block model goes through the same procedure and is compared with the fused
    model (blocks.csv, delong.csv, roc.png).
    """
    from .blocks import split_blocks
    from .evaluation import (_write_csv, delong_test, nested_cv, out_of_fold_predictions, report_binary,
                             report_multiclass, report_survival, roc_auc_ci)

    progress = progress or silent
    spec = spec or ModelSpec()
    X, y, kind = load_inputs(features, clinical, endpoint, time_col=time_col, event_col=event_col)
    if stable_features is not None:
        X, _ = stable_columns(X, stable_features, icc_threshold)
    folder = Path(out) / "evaluation"
    steps = 1 + (len(split_blocks(X.columns)) if compare_blocks and kind == "binary" else 0)
    result = nested_cv(spec.build(kind), X, y, kind=kind, param_grid=spec.grid(kind) if tune else None,
                       outer=outer, inner=inner, seed=spec.seed, progress=scaled(progress, 0.0, 1.0 / steps))
    others = {}
    if compare_blocks and kind == "binary":
        blocks = split_blocks(X.columns)
        for i, (name, columns) in enumerate(blocks.items()):
            single = ModelSpec(**{**vars(spec), "fusion": "feature"})
            others[f"{name} only"] = nested_cv(single.build(kind, {name: columns}), X, y, kind=kind, outer=outer,
                                               inner=inner, param_grid=single.grid(kind) if tune else None,
                                               seed=spec.seed,
                                               progress=scaled(progress, (i + 1) / steps, (i + 2) / steps)).prediction
    if kind == "binary":
        metrics = report_binary(y, result.prediction, folder, others=others, name="fused")
        if others:
            rows = [{"model": n, **roc_auc_ci(y, p), "delong_p_vs_fused": delong_test(y, result.prediction, p)["p_value"]}
                    for n, p in {"fused": result.prediction, **others}.items()]
            _write_csv(pd.DataFrame(rows), folder / "blocks.csv")
    elif kind == "survival":
        metrics = report_survival(y, result.prediction, result.groups, folder)
    else:
        metrics = report_multiclass(y, result.prediction, result.classes, folder)
        if kind == "ordinal":
            from .ordinal import ordinal_metrics

            metrics.update(ordinal_metrics(y, result.prediction, result.classes))
            _write_csv(pd.DataFrame([metrics]), folder / "metrics.csv")
    _write_csv(out_of_fold_predictions(result, X.index), folder / "predictions.csv", index=True)
    _write_csv(pd.DataFrame({"fold": range(len(result.best_params)),
                             "best_params": [str(p) for p in result.best_params]}), folder / "inner_selection.csv")
    progress(1.0, "evaluation written")
    return metrics


# ---------------------------------------------------------------- predict
def predict(features, clinical, bundle: "str | Path", out: "str | Path", *, definitions=None, progress=None) -> dict:
    """Write OUT/prediction/{prediction,contributions,evidence}.csv for every patient in FEATURES."""
    from .bundle import load_bundle
    from .evaluation import _write_csv
    from .explain import contributions

    progress = progress or silent
    loaded = load_bundle(bundle)
    model, card = loaded.model, loaded.card
    X, _, _ = load_inputs(features, clinical, None)
    progress(0.3, "predicting")
    table = _prediction_table(model, card, X)
    progress(0.6, "explaining")
    contrib = contributions(model, X)
    defs = _read_definitions(definitions) if definitions is not None else loaded.definitions
    evidence = _evidence(contrib, defs)
    folder = Path(out) / "prediction"
    _write_csv(table, folder / "prediction.csv", index=True)
    _write_csv(contrib, folder / "contributions.csv")
    _write_csv(evidence, folder / "evidence.csv")
    if loaded.nomogram is not None:
        _nomogram_outputs(loaded.nomogram, model, X, Path(out))
    else:  # a nomogram of an earlier model must not stay beside this model's prediction
        from ..layout import RunFolder

        for stale in (RunFolder(out).nomogram_figure, RunFolder(out).nomogram_points):
            stale.unlink(missing_ok=True)
    progress(1.0, "prediction written")
    return {"prediction": table, "contributions": contrib, "evidence": evidence}


def _nomogram_outputs(nomogram, model, X, out: Path) -> None:
    """OUT/prediction/nomogram.png and nomogram_points.csv (each patient's points per variable, total, outcome)."""
    from ..layout import RunFolder
    from .evaluation import _write_csv
    from .nomogram import covariates_for

    paths = RunFolder(out)
    covariates = covariates_for(nomogram, model, X)
    points = nomogram.points(covariates)
    if nomogram.kind == "logistic":
        points["probability"] = nomogram.predict_proba(covariates)
    else:
        points[f"survival_{SURVIVAL_TIMES[1]:g}m"] = nomogram.predict_survival(covariates, SURVIVAL_TIMES[1])
    _write_csv(points, paths.nomogram_points, index=True)
    nomogram.draw(paths.nomogram_figure, time=SURVIVAL_TIMES[1] if nomogram.kind == "cox" else None)


def nomogram_figure(bundle: "str | Path", out: "str | Path", *, time: float = SURVIVAL_TIMES[1]) -> Path:
    """`hccfusion nomogram BUNDLE --out OUT`: OUT/nomogram/nomogram.png and points.csv (the scales as numbers)."""
    from ..errors import ModelError
    from ..layout import RunFolder
    from .bundle import load_bundle
    from .evaluation import _write_csv
    from .nomogram import scale_table

    loaded = load_bundle(bundle)
    if loaded.nomogram is None:
        raise ModelError(f"The model bundle '{bundle}' has no nomogram: train it with `hccfusion train ... "
                         "--nomogram` (binary or survival endpoint).")
    paths = RunFolder(out)
    cox = loaded.nomogram.kind == "cox"
    _write_csv(scale_table(loaded.nomogram, time=time if cox else None), paths.nomogram_scales)
    return loaded.nomogram.draw(paths.nomogram_chart, time=time if cox else None)


def _prediction_table(model, card, X) -> pd.DataFrame:
    from .decision_level import DecisionFusion
    from .survival import SurvivalFusion

    kind = card.get("kind", "binary")
    base = pd.DataFrame({"endpoint": card.get("endpoint", ""), "model": card.get("fusion", type(model).__name__)},
                        index=X.index)
    if isinstance(model, SurvivalFusion):
        risk = model.predict(X)
        out = base.assign(risk=risk, risk_group=model.risk_group(risk=risk), low=np.nan, high=np.nan)
        limit = card["training"].get("median_time", max(SURVIVAL_TIMES)) * 2
        times = [t for t in SURVIVAL_TIMES if t <= limit]
        for t, values in zip(times, model.predict_survival(X, times).T):
            out[f"survival_{t:g}m"] = values
        return out.assign(interval="none")
    if kind == "binary":
        if isinstance(model, DecisionFusion) or hasattr(model, "cov_"):
            out = base.join(model.predict_interval(X))
        else:
            out = base.assign(probability=model.predict_proba(X)[:, 1], low=np.nan, high=np.nan)
        return out.assign(interval=card.get("interval", "none"))
    proba = model.predict_proba(X)
    out = base.assign(predicted=model.classes_[proba.argmax(axis=1)])
    for k, c in enumerate(model.classes_):
        out[f"p_{c}"] = proba[:, k]
    return out.assign(interval="none")


def _evidence(contrib: pd.DataFrame, definitions: pd.DataFrame | None) -> pd.DataFrame:
    """Top features per patient by |contribution| with the measured value and its definition."""
    features = contrib[contrib.kind == "feature"].copy()
    features["abs"] = features.contribution.abs()
    features = features.sort_values(["patient_id", "abs"], ascending=[True, False], kind="stable")
    features = features.groupby("patient_id", sort=False).head(EVIDENCE_TOP)
    known = dict(zip(definitions.feature, definitions.definition)) if definitions is not None else {}
    features["definition"] = [known.get(n) or describe_feature(n) for n in features.name]
    features["rank"] = features.groupby("patient_id", sort=False).cumcount() + 1
    return features.rename(columns={"name": "feature"})[
        ["patient_id", "rank", "feature", "block", "value", "definition", "contribution", "units"]]


_CLINICAL_WORDS = {
    "afp": "alpha-fetoprotein (ng/mL)", "bilirubin": "total bilirubin (mg/dL)", "albumin": "albumin (g/dL)",
    "inr": "international normalised ratio", "ascites": "ascites grade", "encephalopathy": "hepatic encephalopathy",
    "tumour_number": "number of tumours", "tumour_size_mm": "largest tumour diameter (mm)",
    "etiology": "liver disease etiology", "performance_status": "ECOG performance status", "age": "age (years)",
    "sex": "sex", "vascular_invasion": "macrovascular invasion", "extrahepatic_spread": "extrahepatic spread",
}


def describe_feature(name: str) -> str:
    """Readable definition from a feature name ('AP__tumour__original_firstorder_Mean', 'afp', ...)."""
    if name in _CLINICAL_WORDS:
        return f"clinical: {_CLINICAL_WORDS[name]}"
    parts = name.split("__")
    if len(parts) != 3:
        return f"clinical: {name}" if "__" not in name else name
    phase, region, feature = parts
    match = re.match(r"(.+?)_(firstorder|shape|glcm|glrlm|glszm|gldm|ngtdm|kinetic)_(.+)$", feature)
    if not match:
        return f"{feature} in {region}, {phase}"
    image, family, stat = match.groups()
    return f"{stat} ({family}) of the {image} image in {region}, {phase}"
