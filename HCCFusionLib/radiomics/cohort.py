"""Cohort extraction: every study of a cohort CSV, with resume, per-study failures kept apart, combined tables and
time-point deltas."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from ..errors import HCCFusionError, InputError
from ..layout import RunFolder
from ..progress import silent
from .extraction import LONG_COLUMNS, extract_study, outputs_complete, write_outputs
from .kinetics import timepoint_deltas
from .presets import versions

log = logging.getLogger(__name__)

def cohort_extract(table: "str | Path", out: "str | Path", *, progress=None, cluster=None, **options) -> "object":
    """Extract every study of a cohort CSV (study_id, path[, segmentation][, patient_id, timepoint]).

    Each study goes to OUT/studies/<study_id>/radiomics/ (skipped when already complete: resume); a failing
    study is recorded in the status table and the others go on. Combined tables go to OUT/radiomics/
    (features_long/wide, kinetics, definitions, diagnostics.json, cohort_status.csv, and timepoint_deltas.csv
    when patient_id and timepoint are given). `cluster` (a cluster.Cluster) runs one Dask task per study, whose
    radiomics runs as Dask tasks too, one per series and per shape mask; the tables equal the sequential ones.
    Returns the status DataFrame.
    """
    from ..cluster import run_tasks

    table, out = Path(table), Path(out)
    cohort, jobs = cohort_jobs(table, out, {**options, "workers": 1} if cluster is not None else options)
    status = status_frame(run_tasks(extract_one, jobs, cluster, progress))
    combine(cohort, status, out)
    (progress or silent)(1.0, "cohort done")
    return status


STATUS_COLUMNS = ["study_id", "status", "seconds", "message"]


def read_cohort(table: Path):
    """The cohort CSV as a DataFrame of strings; InputError without rows, study_id and path, or with repeated ids."""
    import pandas as pd

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
    return cohort


def cohort_jobs(table: Path, out: Path, options: dict):
    """(cohort DataFrame, {study_id: keyword arguments of a per-study task}): paths resolved against the CSV's
    folder, each study's folder OUT/studies/<id>."""
    def resolve(path: str) -> str:
        return "" if not path else str(Path(path) if Path(path).is_absolute() else table.parent / path)

    cohort = read_cohort(table)
    jobs = {str(row.study_id): {"study_id": str(row.study_id), "path": resolve(row.path),
                                "segmentation": resolve(getattr(row, "segmentation", "") or ""),
                                "folder": RunFolder(out).cohort_study(row.study_id), "options": options}
            for row in cohort.itertuples(index=False)}
    return cohort, jobs


def status_frame(results: dict):
    """The cohort status table (STATUS_COLUMNS) from {study_id: task result}."""
    import pandas as pd

    return pd.DataFrame([{"study_id": k, **{c: r.get(c, "") for c in STATUS_COLUMNS[1:]}} for k, r in results.items()],
                        columns=STATUS_COLUMNS)


def extract_one(study_id: str, path: str, segmentation: str, folder: Path, options: dict) -> dict:
    """One cohort study's radiomics into `folder`/radiomics (skipped when complete); its status row (no raise).
    One task at a time per study (cluster.study_lock)."""
    from ..cluster import study_lock

    with study_lock(folder):
        return _extract_one(study_id, path, segmentation, Path(folder), options)


def _extract_one(study_id: str, path: str, segmentation: str, folder: Path, options: dict) -> dict:
    from ..io import load_study, read_image
    from .parallel import dask_series_tasks

    if outputs_complete(folder / "radiomics"):
        return {"status": "skipped (already complete)", "seconds": 0.0, "message": ""}
    started = time.perf_counter()
    try:
        study = load_study(Path(path), study_id=study_id)
        labels = read_image(segmentation) if segmentation else None
        with dask_series_tasks():  # on a Dask worker: one task per series
            result = extract_study(study, labels, **options)
        result.save(folder)
        return {"status": "done", "seconds": round(time.perf_counter() - started, 2),
                "message": f"{result.diagnostics['failures']} feature values with a reason"}
    except HCCFusionError as exc:
        log.error("Cohort study %s failed: %s", study_id, exc)
        message = str(exc)
    except Exception as exc:  # one broken study must not stop the cohort; the message is kept for review
        log.exception("Cohort study %s failed unexpectedly", study_id)
        message = f"{type(exc).__name__}: {exc}"
    return {"status": "failed", "seconds": round(time.perf_counter() - started, 2), "message": message}


def combine(cohort, status, out: Path) -> None:
    """OUT/radiomics/: the combined tables of every study with complete radiomics under OUT/studies/, the status
    table as cohort_status.csv, time-point deltas when the cohort has patient_id and timepoint."""
    import pandas as pd

    longs, wides, kins = [], [], []
    for study_id in cohort["study_id"]:
        folder = RunFolder(out).cohort_study(study_id) / "radiomics"
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
