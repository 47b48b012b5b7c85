"""Cohort extraction: every study of a cohort CSV, with resume, per-study failures kept apart, combined tables and
time-point deltas."""
from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from ..errors import HCCFusionError, InputError
from ..progress import scaled, silent
from .extraction import LONG_COLUMNS, extract_study, outputs_complete, write_outputs
from .kinetics import timepoint_deltas
from .presets import versions

log = logging.getLogger(__name__)

def cohort_extract(table: "str | Path", out: "str | Path", *, progress=None, **options) -> "object":
    """Extract every study of a cohort CSV (study_id, path[, segmentation][, patient_id, timepoint]).

    Each study goes to OUT/studies/<study_id>/radiomics/ (skipped when already complete: resume); a failing
    study is recorded in the status table and the others go on. Combined tables go to OUT/radiomics/
    (features_long/wide, kinetics, definitions, diagnostics.json, cohort_status.csv, and timepoint_deltas.csv
    when patient_id and timepoint are given). Returns the status DataFrame.
    """
    import pandas as pd

    from ..io import load_study, read_image

    progress = progress or silent
    table, out = Path(table), Path(out)
    try:
        cohort = pd.read_csv(table, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"Cannot read cohort table '{table}' ({exc}): give a CSV with study_id,path columns.")
    missing = [c for c in ("study_id", "path") if c not in cohort.columns]
    if missing or cohort.empty:
        raise InputError(f"Cohort table '{table}' needs rows and the columns study_id, path (missing: {missing}); "
                         "optional: segmentation, patient_id, timepoint.")
    if cohort["study_id"].duplicated().any():
        dup = cohort["study_id"][cohort["study_id"].duplicated()].tolist()
        raise InputError(f"Cohort table '{table}': study_id values must be unique (repeated: {dup[:5]}).")
    status = []
    for i, row in enumerate(cohort.itertuples(index=False)):
        study_id = str(row.study_id)
        folder = out / "studies" / _safe(study_id)
        step = scaled(progress, i / len(cohort), (i + 1) / len(cohort))
        if outputs_complete(folder / "radiomics"):
            status.append({"study_id": study_id, "status": "skipped (already complete)", "seconds": 0.0,
                           "message": ""})
            step(1.0, f"{study_id}: already done")
            continue
        started = time.perf_counter()
        try:
            path = Path(row.path) if Path(row.path).is_absolute() else table.parent / row.path
            study = load_study(path, study_id=study_id)
            seg_file = getattr(row, "segmentation", "") or ""
            segmentation = read_image(seg_file if Path(seg_file).is_absolute() else table.parent / seg_file) \
                if seg_file else None
            result = extract_study(study, segmentation, progress=step, **options)
            result.save(folder)
            status.append({"study_id": study_id, "status": "done", "seconds": round(time.perf_counter() - started, 2),
                           "message": f"{result.diagnostics['failures']} feature values with a reason"})
        except HCCFusionError as exc:
            log.error("Cohort study %s failed: %s", study_id, exc)
            status.append({"study_id": study_id, "status": "failed", "seconds": round(time.perf_counter() - started,
                                                                                        2), "message": str(exc)})
        except Exception as exc:  # one broken study must not stop the cohort; the message is kept for review
            log.exception("Cohort study %s failed unexpectedly", study_id)
            status.append({"study_id": study_id, "status": "failed", "seconds": round(time.perf_counter() - started,
                                                                                        2),
                           "message": f"{type(exc).__name__}: {exc}"})
    status = pd.DataFrame(status, columns=["study_id", "status", "seconds", "message"])
    _combine(cohort, status, out)
    progress(1.0, "cohort done")
    return status


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text) or "study"


def _combine(cohort, status, out: Path) -> None:
    import pandas as pd

    longs, wides, kins = [], [], []
    for study_id in cohort["study_id"]:
        folder = out / "studies" / _safe(study_id) / "radiomics"
        if outputs_complete(folder):
            longs.append(pd.read_csv(folder / "features_long.csv", dtype={"reason": object}).fillna({"reason": ""}))
            wides.append(pd.read_csv(folder / "features_wide.csv", index_col=0))
            kins.append(pd.read_csv(folder / "kinetics.csv", dtype={"reason": object}).fillna({"reason": ""}))
    long = pd.concat(longs, ignore_index=True) if longs else pd.DataFrame(columns=LONG_COLUMNS)
    wide = pd.concat(wides) if wides else pd.DataFrame(index=pd.Index([], name="study"))
    wide.index = wide.index.astype(str)
    wide.index.name = "study"
    kin = pd.concat(kins, ignore_index=True) if kins else pd.DataFrame()
    status_frame = status.set_index("study_id")
    extra = {"cohort_status.csv": status_frame}
    if {"patient_id", "timepoint"} <= set(cohort.columns) and len(wide):
        keys = cohort.set_index("study_id")
        times = pd.to_numeric(keys["timepoint"], errors="coerce")
        deltas = timepoint_deltas(wide, keys["patient_id"].to_dict(), times.to_dict())
        if len(deltas):
            extra["timepoint_deltas.csv"] = deltas
    diag = {"cohort": str(out), "studies": len(cohort), "done": int(status["status"].isin(["done"]).sum()),
            "skipped": int(status["status"].str.startswith("skipped").sum()),
            "failed": int((status["status"] == "failed").sum()), "versions": versions()}
    write_outputs(out / "radiomics", long, wide, kin, diag, extra)
