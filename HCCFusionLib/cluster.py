"""Per-study cohort tasks on a Dask cluster (dask.distributed), or in this process.

`run_tasks(func, jobs, cluster)` calls the importable `func(**job)` once per job and returns each job's result
(a dict with at least "status", "seconds", "message"). `cluster` None runs them here, one after the other (the
sequential path); a `Cluster` runs them as dask.distributed tasks: on a LocalCluster sized to the machine (one
single-threaded worker process per core, each with its memory limit) or on an existing scheduler
(`tcp://HOST:PORT`: dask-jobqueue, Kubernetes). A killed worker's tasks are rerun on the others by the
scheduler; a job whose workers die `allowed_failures` times (typically: past the per-worker memory limit, so the
nanny kills it) is reported as failed with the reason, and the other jobs go on. `func` must catch its own
errors and write its outputs atomically, so a killed task leaves nothing half-written and a rerun of the cohort
skips the finished studies (resume after a killed client).
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass

from .errors import DependencyError, InputError
from .files import exclusive
from .layout import RunFolder
from .progress import silent

__all__ = ["Cluster", "run_tasks", "local_workers", "seceded", "study_lock"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cluster:
    """Where cohort tasks run: `scheduler` "tcp://HOST:PORT" of an existing cluster, else a LocalCluster of
    `workers` single-threaded processes (default: one per core) with `memory_limit` each ("4GB", bytes,
    "auto": the machine's memory shared out; None: no limit)."""

    scheduler: str | None = None
    workers: int | None = None
    memory_limit: "str | int | None" = "auto"


def local_workers() -> int:
    """Worker processes of the default LocalCluster: the cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextlib.contextmanager
def seceded():
    """In a Dask task: leave the worker's thread pool for the block (the task waits there for something other tasks
    must do, so they can run in its place), then rejoin. Elsewhere: nothing."""
    try:
        from distributed import get_worker, rejoin, secede

        get_worker()
    except (ImportError, ValueError):
        yield
        return
    secede()
    try:
        yield
    finally:
        rejoin()


def study_lock(folder):
    """Held by the cohort task working on the study folder `folder` (cohort-run, cohort-extract): a second task for
    it (a rerun while a killed client's task still runs on a worker) waits, outside the worker's pool, until the
    first ends or dies."""
    return exclusive(RunFolder(folder).cohort_lock, waiting=seceded)


def _client(cluster: Cluster):
    try:
        from distributed import Client, LocalCluster
    except ImportError as exc:
        raise DependencyError("Dask is not installed: pip install 'hccfusion[dask]' (dask[distributed]), or run "
                              "the cohort without --dask/--scheduler.") from exc
    if cluster.scheduler:
        try:
            return Client(cluster.scheduler, timeout="20s"), None
        except (OSError, TimeoutError) as exc:
            raise InputError(f"Cannot reach the Dask scheduler '{cluster.scheduler}' ({exc}): start it "
                             "(dask scheduler / dask-jobqueue) or give the right tcp://HOST:PORT.") from exc
    if not log.isEnabledFor(logging.DEBUG):  # the in-process scheduler's INFO chatter would drown the verb's log
        logging.getLogger("distributed").setLevel(logging.WARNING)
    n = cluster.workers or local_workers()
    if n < 1:
        raise InputError(f"--dask-workers {n}: give at least one worker.")
    local = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, memory_limit=cluster.memory_limit,
                         dashboard_address=None, silence_logs=logging.WARNING,
                         env={"ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1"})  # one core per worker
    return Client(local), local


def run_tasks(func, jobs: "dict[str, dict]", cluster: Cluster | None = None, progress=None) -> "dict[str, dict]":
    """{job name: func(**job)} for every job, run here (cluster None) or as Dask tasks on `cluster`.

    A job whose task could not finish (its worker died too often, e.g. past the memory limit) gets
    {"status": "failed", "message": <why>}; the other jobs are unaffected. Progress follows the finished tasks.
    """
    progress = progress or silent
    results = {}
    if cluster is None:
        for i, (name, job) in enumerate(jobs.items()):
            results[name] = func(**job)
            progress((i + 1) / len(jobs), f"{name}: {results[name]['status']}")
        return results
    if not jobs:
        return results
    client, local = _client(cluster)
    try:
        from distributed import as_completed

        started = time.perf_counter()
        futures = {client.submit(func, **job, key=f"{func.__name__}-{name}", pure=False): name
                   for name, job in jobs.items()}
        log.info("%d cohort tasks on %d Dask workers (%s)", len(futures), len(client.scheduler_info()["workers"]),
                 cluster.scheduler or "LocalCluster")
        for i, future in enumerate(as_completed(futures)):
            name = futures[future]
            results[name] = _result(future, name, started)
            progress((i + 1) / len(futures), f"{name}: {results[name]['status']}")
    finally:
        client.close()
        if local is not None:
            local.close()
    return {name: results[name] for name in jobs}


def _result(future, name: str, started: float) -> dict:
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker as exc:
        log.error("Cohort task %s lost: its workers died (%s)", name, exc)
        return {"status": "failed", "seconds": round(time.perf_counter() - started, 2),
                "message": "its Dask workers died while running it (past the per-worker memory limit, or killed): "
                           "give workers more memory (--memory-limit) and run the cohort again; finished studies "
                           "are kept"}
    except Exception as exc:  # an error func did not catch must not lose the other studies
        log.error("Cohort task %s failed: %s", name, exc)
        return {"status": "failed", "seconds": round(time.perf_counter() - started, 2),
                "message": f"{type(exc).__name__}: {exc}"}
