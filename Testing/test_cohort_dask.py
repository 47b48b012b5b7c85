"""Cohorts on Dask (HCCFusionLib.cluster, cohort-extract --dask, cohort-run): real worker processes on loopback;
a worker killed mid-run and a killed client, with tables identical to the sequential path."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

from HCCFusionLib.cluster import Cluster, run_tasks
from HCCFusionLib.cohort_run import cohort_run, run_one
from HCCFusionLib.files import exclusive
from HCCFusionLib.io import save_image, save_study
from HCCFusionLib.layout import RunFolder
from HCCFusionLib.radiomics import cohort_extract
from labelmaps import labelmap, two_phase_study

distributed = pytest.importorskip("distributed")

N = 4
PRESET = """name: small
version: 1
modality: CT
preprocess: {resample_mm: null}
setting: {binWidth: 25}
imageType: {Original: {}}
featureClass: {firstorder: [], glcm: [], glszm: []}
"""
EXTRACT = {"regions": ["tumour", "rings", "background_liver"], "workers": 1}
RUN = {"model": "none", "mode": "rigid", "registration_options": {"spacing_mm": 6.0}, "workers": 1}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """N two-phase CT studies (tumours of different size) with their label maps; patient P0 has two time points."""
    root = tmp_path_factory.mktemp("cohort")
    rows = ["study_id,path,segmentation,patient_id,timepoint"]
    for i in range(N):
        labels = labelmap((64, 64, 24), (1.5, 1.5, 3.0), (((6.0 - i, 4.0, 0.0), 8.0 + 1.5 * i),),
                          liver_axes=(40, 36, 30))
        save_study(two_phase_study(f"S{i}", labels, 10 * i, air_columns=6), root / f"s{i}")  # air: Hounsfield units
        save_image(labels, root / f"s{i}_labels.nii.gz")
        rows.append(f"S{i},s{i},s{i}_labels.nii.gz,P{0 if i < 2 else i},{3 * (i == 1)}")
    (root / "cohort.csv").write_text("\n".join(rows) + "\n")
    (root / "small.yaml").write_text(PRESET)
    return root / "cohort.csv", {"*": str(root / "small.yaml")}


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes (nannies restart a killed one), as an existing cluster."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as local, distributed.Client(local) as client:
        yield local, client


def _tables(out, names=("features_wide", "features_long", "kinetics")):
    folder = RunFolder(out).radiomics
    return {n: pd.read_csv(folder / f"{n}.csv") for n in names}


def _assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True, obj=name)


def _kill_busy_worker(client, done, timeout=60.0) -> str:
    """SIGKILL the process of a worker while it runs a task (before every study is done); its address."""
    pids = client.run(os.getpid)
    deadline = time.time() + timeout
    while time.time() < deadline:
        busy = [w for w, tasks in client.processing().items() if tasks]
        if busy:
            assert done() < N, "every study finished before a worker could be killed"
            os.kill(pids[busy[0]], signal.SIGKILL)
            return busy[0]
        time.sleep(0.02)
    raise AssertionError("no task started on the cluster")


def test_killed_worker_cohort_extract_identical(cohort, cluster, tmp_path):
    table, presets = cohort
    sequential = cohort_extract(table, tmp_path / "seq", presets=presets, **EXTRACT)
    assert (sequential["status"] == "done").all()
    local, client = cluster
    out, result = tmp_path / "dask", {}
    runner = threading.Thread(target=lambda: result.update(status=cohort_extract(
        table, out, presets=presets, cluster=Cluster(local.scheduler_address), **EXTRACT)))
    runner.start()
    _kill_busy_worker(client, lambda: len(list(out.glob("studies/*/radiomics/features_long.csv"))))
    runner.join(240)
    assert not runner.is_alive()
    assert (result["status"]["status"] == "done").all(), result["status"]
    _assert_same(_tables(tmp_path / "seq", ("features_wide", "features_long", "kinetics")), _tables(out))
    deltas = [pd.read_csv(RunFolder(o).radiomics / "timepoint_deltas.csv") for o in (tmp_path / "seq", out)]
    pd.testing.assert_frame_equal(*deltas, check_exact=True)
    client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed worker


@pytest.mark.slow  # ~7-15 s: a sequential and a Dask cohort-extract of 4 studies
def test_radiomics_split_per_series_on_dask_equals_sequential(cohort, cluster, tmp_path):
    """On the cluster each study's radiomics runs as one Dask task per series (and per shape mask), gathered into
    tables identical to the sequential path's."""
    table, presets = cohort
    assert (cohort_extract(table, tmp_path / "seq", presets=presets, **EXTRACT)["status"] == "done").all()
    local, client = cluster
    with distributed.get_task_stream(client) as stream:
        status = cohort_extract(table, tmp_path / "dask", presets=presets, cluster=Cluster(local.scheduler_address),
                                **EXTRACT)
    assert (status["status"] == "done").all(), status
    keys = [str(task["key"]) for task in stream.data]
    assert sum(k.startswith("extract_one-") for k in keys) == N
    assert sum(k.startswith("series_task-") for k in keys) == 2 * N  # two phases per study
    assert sum(k.startswith("shape_task-") for k in keys) >= N
    _assert_same(_tables(tmp_path / "seq"), _tables(tmp_path / "dask"))


@pytest.mark.slow  # ~25-40 s: two cohort-runs of 4 studies plus a killed one
def test_cohort_run_killed_client_resumes(cohort, cluster, tmp_path):
    table, presets = cohort
    reference = cohort_run(table, tmp_path / "seq", presets=presets, **RUN)
    assert (reference["status"] == "done").all(), reference
    local, client = cluster
    out = tmp_path / "dask"
    cmd = [sys.executable, "-m", "HCCFusionLib.cli", "--progress", "none", "cohort-run", str(table), "--out",
           str(out), "--scheduler", local.scheduler_address, "--model", "none", "--mode", "rigid",
           "--registration-spacing", "6", "--preset", presets["*"]]
    client_process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not list(out.glob("studies/*/cohort_done.json")) and time.time() < deadline:
            time.sleep(0.05)
        client_process.send_signal(signal.SIGKILL)
    finally:
        client_process.wait(30)
    first = {p.parent.name for p in out.glob("studies/*/cohort_done.json")}
    assert 1 <= len(first) < N, "the client was not killed mid-cohort"
    status = cohort_run(table, out, presets=presets, cluster=Cluster(local.scheduler_address),
                        **RUN).set_index("study_id")["status"]
    assert set(status[status.str.startswith("skipped")].index) >= first  # finished studies did not run again
    assert (status[~status.index.isin(first)] != "failed").all()
    _assert_same(_tables(tmp_path / "seq"), _tables(out))
    lesions = [pd.read_csv(RunFolder(o).cohort_lesions) for o in (tmp_path / "seq", out)]
    pd.testing.assert_frame_equal(*lesions, check_exact=True)
    assert list(lesions[0]["study_id"].unique()) == [f"S{i}" for i in range(N)]


HOLDER = """import sys, time
from HCCFusionLib.files import exclusive
with exclusive(sys.argv[1]):
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
    open(sys.argv[2], "w").write("{}")
"""


def test_rerun_waits_for_the_task_still_working_on_a_study(tmp_path):
    """A killed client's task may still run on a worker: a rerun of its study waits for it, then finds it done,
    instead of working in the same folder at the same time (its path does not even exist: running it would fail)."""
    folder = tmp_path / "studies" / "S0"
    paths = RunFolder(folder)
    with subprocess.Popen([sys.executable, "-c", HOLDER, str(paths.cohort_lock), str(paths.cohort_done), "2"],
                          stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout.readline().strip() == "held"
        row = run_one("S0", str(tmp_path / "absent"), "", folder, {})
    assert holder.returncode == 0 and row["status"] == "skipped (already complete)", row


def test_a_dead_holder_releases_its_study(tmp_path):
    """The lock dies with its holder (a worker killed mid-study): the rerun takes it without waiting."""
    def never_wait():
        raise AssertionError("the killed holder's lock was not released")

    lock = tmp_path / "study.lock"
    with subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), str(tmp_path / "never"), "600"],
                          stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout.readline().strip() == "held"
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    with exclusive(lock, waiting=never_wait):
        pass
    assert not (tmp_path / "never").exists()


def test_threads_of_one_process_take_turns(tmp_path):
    """Two tasks on one multi-threaded worker: the second waits for the first's release."""
    order = []

    def hold():
        with exclusive(tmp_path / "study.lock"):
            order.append("first in")
            time.sleep(0.5)
            order.append("first out")

    first = threading.Thread(target=hold)
    first.start()
    while not order:
        time.sleep(0.01)
    with exclusive(tmp_path / "study.lock"):
        order.append("second in")
    first.join()
    assert order == ["first in", "first out", "second in"]


def _grow(mb: int) -> dict:
    """A task that holds `mb` MB (in 20 MB steps, so the nanny sees it grow)."""
    held = []
    for _ in range(mb // 20):
        held.append(np.ones(20 * 2 ** 20, np.uint8))
        time.sleep(0.05)
    return {"status": "done", "seconds": 0.0, "message": str(len(held))}


def test_study_past_memory_limit_reported_not_lost(tmp_path):
    import dask

    jobs = {"small": {"mb": 20}, "huge": {"mb": 2000}}
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        results = run_tasks(_grow, jobs, Cluster(workers=1, memory_limit="400MB"))
    assert results["small"]["status"] == "done"
    assert results["huge"]["status"] == "failed" and "memory limit" in results["huge"]["message"]
