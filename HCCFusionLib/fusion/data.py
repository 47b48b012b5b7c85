"""Feature and clinical tables in, model inputs out: reading, joining, endpoints, input checks."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError, ModelError
from .blocks import block_present, not_predictor, split_blocks

log = logging.getLogger(__name__)
ID_COLUMNS = ("patient_id", "study_id", "PatientID", "StudyID", "id")
#: endpoint name -> kind; any other column of the clinical table can be an endpoint too (kind from its values)
ENDPOINTS = {"mvi": "binary", "early_recurrence": "binary", "response": "binary", "diagnosis": "multiclass",
             "survival": "survival", "grade": "ordinal", "edmondson_grade": "ordinal"}
TIME_COLUMN, EVENT_COLUMN = "survival_months", "event"
EARLY_RECURRENCE_MONTHS = 24.0  # early recurrence: within 2 years of treatment
RESPONDERS, NON_RESPONDERS = ("CR", "PR"), ("SD", "PD")  # mRECIST / RECIST 1.1 objective response
GRADES = {"I": 1, "II": 2, "III": 3, "IV": 4}  # Edmondson-Steiner, roman or 1-4


def read_table(path: "str | Path", what: str = "table") -> pd.DataFrame:
    """CSV or Parquet table indexed by its patient/study id column (patient_id, study_id, ... or the first column)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"The {what} '{path}' does not exist: check the path.")
    try:
        table = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
    except Exception as exc:  # pandas raises many types for unreadable files
        raise InputError(f"Cannot read the {what} '{path}' ({type(exc).__name__}: {str(exc)[:200]}): "
                         "give a CSV or Parquet file with a header row.") from None
    if table.index.name in ID_COLUMNS:
        pass
    else:
        id_column = next((c for c in ID_COLUMNS if c in table.columns), table.columns[0] if len(table.columns) else None)
        if id_column is None:
            raise InputError(f"The {what} '{path}' has no columns.")
        table = table.set_index(id_column)
    table.index = table.index.astype(str)
    if table.index.has_duplicates:
        dup = table.index[table.index.duplicated()].unique()[:5].tolist()
        raise InputError(f"The {what} '{path}' has repeated ids {dup}: give one row per patient.")
    return table


def endpoint_kind(endpoint: str, values: pd.Series | None = None) -> str:
    if endpoint in ENDPOINTS:
        return ENDPOINTS[endpoint]
    if values is None:
        raise InputError(f"Unknown endpoint '{endpoint}'.")
    return "binary" if values.dropna().nunique() <= 2 else "multiclass"


def assemble(features: pd.DataFrame, clinical: pd.DataFrame | None = None, endpoint: str | None = None, *,
             time_column: str = TIME_COLUMN, event_column: str = EVENT_COLUMN):
    """(X, y, kind): predictors = feature columns + clinical predictor columns (+ center); y for `endpoint`.

    Rows are the patients present in FEATURES (and in CLINICAL when given). With an endpoint, rows without
    an outcome are dropped (and counted in the log); y is a numpy array (survival: a scikit-survival array).
    """
    X = features.copy()
    if clinical is not None:
        missing_ids = sorted(set(X.index) - set(clinical.index))
        if missing_ids:
            raise InputError(f"{len(missing_ids)} patient(s) of the feature table are not in the clinical table "
                             f"(e.g. {missing_ids[:3]}): give clinical rows for every patient.")
        extra = [c for c in clinical.columns if c not in X.columns]
        X = X.join(clinical[extra], how="left")
    if endpoint is None:
        return _predictors(X), None, None
    if endpoint == "early_recurrence" and endpoint not in X.columns:
        X = X.assign(early_recurrence=early_recurrence(X, time_column, event_column))
    kind = endpoint_kind(endpoint, X[endpoint] if endpoint in X.columns else None)
    if kind == "survival":
        for column in (time_column, event_column):
            if column not in X.columns:
                raise InputError(f"Survival needs the columns '{time_column}' and '{event_column}' in the clinical "
                                 f"table; '{column}' is missing.")
        keep = X[time_column].notna() & X[event_column].notna()
        X = X[keep]
        from sksurv.util import Surv

        y = Surv.from_arrays(X[event_column].astype(bool).to_numpy(), X[time_column].astype(float).to_numpy())
    else:
        if endpoint not in X.columns:
            raise InputError(f"Endpoint column '{endpoint}' is not in the feature or clinical table.")
        X = X[X[endpoint].notna()]
        if endpoint == "response" and not pd.api.types.is_numeric_dtype(X[endpoint]):
            X = X.assign(response=objective_response(X[endpoint]))
        if kind == "ordinal":
            X = X.assign(**{endpoint: ordinal_grade(X[endpoint])})
        y = X[endpoint].to_numpy()
        if kind in ("binary", "ordinal") and pd.api.types.is_numeric_dtype(X[endpoint]):
            y = y.astype(int)
    return _predictors(X, drop=(endpoint, time_column, event_column)), y, kind


def _predictors(X: pd.DataFrame, drop=()) -> pd.DataFrame:
    return X.drop(columns=[c for c in X.columns if c in drop or not_predictor(c)])


def early_recurrence(table: pd.DataFrame, time_column: str = TIME_COLUMN, event_column: str = EVENT_COLUMN,
                     horizon: float = EARLY_RECURRENCE_MONTHS) -> pd.Series:
    """1 = recurrence by `horizon` months, 0 = followed beyond it without one, NaN = censored before it (excluded).

    From a recurrence-free time (months) and event (1 = recurrence) column, e.g. rfs_months / rfs_event.
    """
    for column in (time_column, event_column):
        if column not in table.columns:
            raise InputError(f"Early recurrence needs an 'early_recurrence' column, or the recurrence time and event "
                             f"columns (--time-col/--event-col); '{column}' is not in the tables.")
    time = pd.to_numeric(table[time_column], errors="coerce")
    event = pd.to_numeric(table[event_column], errors="coerce").astype(bool) & table[event_column].notna()
    out = pd.Series(np.nan, index=table.index, name="early_recurrence")
    out[event & (time <= horizon)] = 1.0
    out[time > horizon] = 0.0
    excluded = int((time.notna() & out.isna()).sum())
    if excluded:
        log.info("early recurrence: %d patient(s) censored before %g months are excluded", excluded, horizon)
    return out


def objective_response(values: pd.Series) -> pd.Series:
    """mRECIST / RECIST 1.1 categories -> 1 (CR, PR: objective response) or 0 (SD, PD)."""
    text = values.astype(str).str.strip().str.upper()
    unknown = sorted(set(text) - set(RESPONDERS) - set(NON_RESPONDERS))
    if unknown:
        raise InputError(f"Response values {unknown[:5]} are not CR, PR, SD or PD (or 1/0): recode the 'response' "
                         "column.")
    return text.isin(RESPONDERS).astype(int)


def ordinal_grade(values: pd.Series) -> pd.Series:
    """Edmondson-Steiner grade as 1-4 from 'I'..'IV', 'G1'.., or numbers 1-4."""
    text = values.astype(str).str.strip().str.upper().str.replace(r"^(G|GRADE)\s*", "", regex=True)
    text = text.str.replace(r"\.0$", "", regex=True)
    grade = text.map(lambda v: GRADES.get(v, int(v) if v.isdigit() else None))
    bad = sorted(set(values[grade.isna() | ~grade.isin(list(GRADES.values()))].astype(str)))
    if bad:
        raise InputError(f"Grade values {bad[:5]} are not Edmondson-Steiner grades I-IV (or 1-4): recode them.")
    return grade.astype(int)


def check_training(X, y, blocks: dict, *, kind: str, harmonize: bool, batch_column: str, min_per_class: int = 2):
    """Raise a clear InputError for inputs no model can be trained on."""
    if not isinstance(X, pd.DataFrame):
        raise InputError("Training data must be a pandas DataFrame with named feature columns.")
    if len(X) == 0:
        raise InputError("The training table has no rows (no patient with both features and the endpoint).")
    if y is None or len(y) != len(X):
        raise InputError(f"The outcome has {0 if y is None else len(y)} values for {len(X)} patients.")
    if not blocks:
        raise InputError("No predictor columns found: feature columns are named '<PHASE>__<region>__<feature>'.")
    if kind != "survival":  # classification: binary, multiclass, ordinal
        values, counts = np.unique(np.asarray(y).astype(str), return_counts=True)
        if len(values) < 2:
            raise InputError(f"The outcome has a single class ({values.tolist()}) in the training data: a model "
                             "needs patients of at least two classes.")
        if counts.min() < min_per_class:
            raise InputError(f"Class '{values[counts.argmin()]}' has only {counts.min()} patient(s); at least "
                             f"{min_per_class} per class are needed for cross-validated training.")
    elif np.sum(y[y.dtype.names[0]]) < 2:
        raise InputError("Fewer than 2 events in the survival data: a Cox model cannot be fitted.")
    for name, columns in blocks.items():
        missing = [c for c in columns if c not in X.columns]
        if missing:
            raise InputError(f"Block '{name}' columns {missing[:5]} are not in the training table.")
        if not block_present(X, columns).any():
            raise InputError(f"Block '{name}' is empty (all values missing) in the training data: remove the block "
                             "or provide its values.")
    if harmonize and batch_column not in X.columns:
        raise InputError(f"Harmonisation by center needs a '{batch_column}' column in the clinical table.")


def check_prediction(X, blocks: dict, *, harmonize: bool, batch_column: str, allow_missing_blocks: bool):
    """Present-block mask (rows x blocks); ModelError when a needed column is absent or a block is empty."""
    if not isinstance(X, pd.DataFrame):
        raise InputError("Prediction data must be a pandas DataFrame with named feature columns.")
    present = {}
    for name, columns in blocks.items():
        missing = [c for c in columns if c not in X.columns]
        if missing and (len(missing) < len(columns) or not allow_missing_blocks):
            raise ModelError(f"The input lacks {len(missing)} column(s) the model needs for block '{name}' "
                             f"(e.g. {missing[:5]}): extract features with the same settings as the training data.")
        present[name] = block_present(X, columns)
        if not allow_missing_blocks and not present[name].all():
            rows = X.index[~present[name]][:3].tolist()
            raise ModelError(f"Block '{name}' has no values for patient(s) {rows}: this feature-level model needs "
                             "every block; use a decision-level model (--fusion decision) for missing blocks.")
    if harmonize and batch_column not in X.columns:
        raise ModelError(f"The model harmonises by center: give a '{batch_column}' column in the clinical table.")
    return pd.DataFrame(present, index=X.index)


def resolve_blocks(X: pd.DataFrame, blocks: dict | None, batch_column: str) -> dict:
    blocks = split_blocks(X.columns, batch_column=batch_column) if blocks is None else dict(blocks)
    return {name: list(columns) for name, columns in blocks.items() if columns}


class BlockPipeline:
    """Shared by estimators holding a fitted `pipeline_` whose first step is the per-block preprocessing."""

    def _checked(self, X):
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "pipeline_")
        check_prediction(X, self.blocks_, harmonize=self.harmonize, batch_column=self.batch_column,
                         allow_missing_blocks=False)
        return X

    def transform(self, X):
        """The concatenated, preprocessed block features the final model sees."""
        return self.pipeline_.named_steps["blocks"].transform(self._checked(X))

    def get_feature_names_out(self, input_features=None):
        return self.pipeline_.named_steps["blocks"].get_feature_names_out()


ICC_THRESHOLD = 0.75  # "good" reliability (Koo & Li 2016), as radiomics.stability_screen


def stable_columns(X: pd.DataFrame, icc: "pd.DataFrame | str | Path", threshold: float = ICC_THRESHOLD):
    """(X with only stable imaging columns, record): keep an imaging column when its ICC >= `threshold`.

    `icc`: the table of `hccfusion stability` (icc.csv: feature, icc, ...). Its feature is matched to the full
    column name or to the column's feature part ('AP__tumour__original_firstorder_Mean' -> 'original_firstorder_
    Mean'). Imaging columns without an ICC are dropped (not shown stable); clinical columns are kept.
    """
    from ..files import sha256_file
    from .blocks import CLINICAL, block_of

    source = None
    if not isinstance(icc, pd.DataFrame):
        source = Path(icc)
        if not source.is_file():
            raise InputError(f"The ICC table '{source}' does not exist: give the icc.csv written by "
                             "`hccfusion stability`.")
        icc = pd.read_csv(source)
    if not {"feature", "icc"} <= set(icc.columns):
        raise InputError(f"The ICC table needs the columns 'feature' and 'icc' (it has {list(icc.columns)[:6]}): "
                         "give the icc.csv written by `hccfusion stability`.")
    value = dict(zip(icc.feature.astype(str), pd.to_numeric(icc.icc, errors="coerce")))
    kept, dropped = [], []
    for column in X.columns:
        if block_of(str(column)) == CLINICAL or not_predictor(column):
            kept.append(column)
            continue
        found = value.get(str(column), value.get(str(column).rsplit("__", 1)[-1], np.nan))
        (kept if found >= threshold else dropped).append(column)
    if len(kept) == sum(block_of(str(c)) == CLINICAL or not_predictor(c) for c in X.columns):
        raise InputError(f"No imaging feature has ICC >= {threshold} in the ICC table: lower --icc-threshold or "
                         "check that the table was computed with the same features.")
    log.info("stable features: %d imaging column(s) kept, %d dropped (ICC < %g or not in the table)",
             len(kept), len(dropped), threshold)
    record = {"threshold": float(threshold), "kept": len(kept), "dropped": dropped,
              "table": str(source) if source else None, "sha256": sha256_file(source) if source else None}
    return X[kept], record
