"""`hccfusion cohort-run`: the whole pipeline (pipeline.run) on every study of a cohort CSV, one task per study.

Each study runs in its own folder OUT/studies/<study_id>/ and, once every stage finished, gets
`cohort_done.json`: a rerun of the cohort (after a killed client, or with more memory) skips those studies and
continues the others from their completed stages (`run --resume`). The combined tables are OUT/cohort/status.csv,
lesions.csv, prediction.csv (when a model predicted) and OUT/radiomics/ (as `cohort-extract`). With a
`cluster.Cluster` the studies are Dask tasks (cluster.run_tasks); without one they run here, one after the other;
the tables are the same.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from .cluster import run_tasks, study_lock
from .errors import HCCFusionError
from .files import atomic_write
from .layout import RunFolder
from .progress import silent

__all__ = ["cohort_run", "run_one"]

log = logging.getLogger(__name__)


def cohort_run(table: "str | Path", out: "str | Path", *, cluster=None, progress=None, **options):
    """Run pipeline.run(study, OUT/studies/<id>, **options) for every study of the cohort CSV (study_id, path
    [, segmentation][, patient_id, timepoint]); returns the status DataFrame (study_id, status, seconds, message).

    A failing study is reported in the status table and the others go on. Under a cluster each study's radiomics
    runs as Dask tasks, one per series (radiomics.parallel.dask_series_tasks): Dask gives the parallelism.
    """
    from .radiomics.cohort import cohort_jobs, combine, status_frame
    from .radiomics.torch_backend import resolve_backend

    resolve_backend(options.get("radiomics_backend", "pyradiomics"), options.get("radiomics_device"))  # before any task
    table, out = Path(table), Path(out)
    cohort, jobs = cohort_jobs(table, out, {**options, "workers": 1} if cluster is not None else options)
    status = status_frame(run_tasks(run_one, jobs, cluster, progress))
    combine(cohort, status, out)
    _combine_tables(cohort, status, out)
    (progress or silent)(1.0, "cohort done")
    return status


def run_one(study_id: str, path: str, segmentation: str, folder: Path, options: dict) -> dict:
    """One cohort study through pipeline.run into `folder` (skipped when done, resumed when begun); its status row.

    Never raises: a study's error becomes its "failed" row. One task at a time per study (cluster.study_lock)."""
    with study_lock(folder):
        return _run_one(study_id, path, segmentation, folder, options)


def _run_one(study_id: str, path: str, segmentation: str, folder: Path, options: dict) -> dict:
    from .pipeline import run
    from .radiomics.parallel import dask_series_tasks

    paths = RunFolder(folder)
    if paths.cohort_done.is_file():
        return {"status": "skipped (already complete)", "seconds": 0.0, "message": ""}
    started = time.perf_counter()
    begun = paths.stage_manifest.is_file()
    try:
        with dask_series_tasks():  # on a Dask worker: the radiomics stage as one task per series
            result = run(Path(path), folder, segmentation=segmentation or None, resume=begun, overwrite=not begun,
                         **options)
        seconds = round(time.perf_counter() - started, 2)
        with atomic_write(paths.cohort_done) as tmp:
            tmp.write_text(json.dumps({"study_id": study_id, "seconds": seconds, "stages": result.stages}, indent=1))
        return {"status": "done", "seconds": seconds, "message": f"{len(result.lesions)} lesions"
                + (" (resumed)" if begun else "")}
    except HCCFusionError as exc:
        log.error("Cohort study %s failed: %s", study_id, exc)
        message = " ".join(str(exc).split())
    except Exception as exc:  # one broken study must not stop the cohort; the message is kept for review
        log.exception("Cohort study %s failed unexpectedly", study_id)
        message = f"{type(exc).__name__}: {exc}"
    return {"status": "failed", "seconds": round(time.perf_counter() - started, 2), "message": message}


def _combine_tables(cohort, status, out: Path) -> None:
    """OUT/cohort/: status.csv, and the lesions and predictions of every finished study (study_id first)."""
    import pandas as pd

    paths = RunFolder(out)
    tables = {paths.cohort_lesions: [], paths.cohort_prediction: []}
    for study_id in cohort["study_id"]:
        study = RunFolder(paths.cohort_study(study_id))
        if not study.cohort_done.is_file():
            continue
        for target, source in ((paths.cohort_lesions, study.lirads_lesions),
                               (paths.cohort_prediction, study.prediction_table)):
            if source.is_file():
                frame = pd.read_csv(source)
                frame.insert(0, "study_id", study_id)
                tables[target].append(frame)
    with atomic_write(paths.cohort_status) as tmp:
        status.to_csv(tmp, index=False)
    for target, frames in tables.items():
        if frames:
            with atomic_write(target) as tmp:
                pd.concat(frames, ignore_index=True).to_csv(tmp, index=False)
        else:
            target.unlink(missing_ok=True)
