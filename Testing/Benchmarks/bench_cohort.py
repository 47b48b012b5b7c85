"""Benchmark: `cohort-extract` as Dask tasks (HCCFusionLib.cluster) on 1 vs 2 single-threaded workers, and the
scheduler's overhead for a simulated 1,000-study cohort.

Part 1: N small two-phase CT studies (112x112x40, one tumour; radiomics of tumour, rings and background liver
with first-order and the five texture classes, ~1.5 CPU seconds a study) run on a LocalCluster of 1 worker,
then of 2 workers (1 thread each); the workers are started and have imported the radiomics stack before the
clock starts, so the times are the cohort's (client, tasks and the combined tables).
efficiency = seconds_1 / (2 * seconds_2); cpu_ratio = the workers' CPU seconds with 1 worker / with 2 (1.0:
the second worker adds no work). On a machine other jobs keep busy the wall-clock efficiency falls below what
cpu_ratio allows: read it with load1. The tables of both runs are checked equal.
Part 2: 1,000 no-op tasks with the cohort's graph shape (one independent task per study with the same arguments,
results gathered by the client as they finish): the graph size and the scheduler's per-task overhead.

Run (under the shared lock): flock /tmp/hcc_heavy.lock .venv/bin/python Testing/Benchmarks/bench_cohort.py [--studies 8]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "Testing")]

PRESET = """name: bench
version: 1
modality: CT
preprocess: {resample_mm: null}
setting: {binWidth: 25}
imageType: {Original: {}}
featureClass: {firstorder: [], glcm: [], glszm: [], glrlm: [], gldm: [], ngtdm: []}
"""
OPTIONS = {"regions": ["tumour", "rings", "background_liver"], "workers": 1}


def write_cohort(root: Path, n: int) -> Path:
    from HCCFusionLib.io import save_image, save_study
    from labelmaps import labelmap, two_phase_study

    rows = ["study_id,path,segmentation"]
    for i in range(n):
        labels = labelmap((112, 112, 40), (1.0, 1.0, 2.0), (((6.0 - i % 4, 4.0, 0.0), 14.0 + i % 5),),
                          liver_axes=(48, 42, 34))
        save_study(two_phase_study(f"S{i:03d}", labels, 10 * i), root / f"s{i}")
        save_image(labels, root / f"s{i}_labels.nii.gz")
        rows.append(f"S{i:03d},s{i},s{i}_labels.nii.gz")
    (root / "cohort.csv").write_text("\n".join(rows) + "\n")
    (root / "bench.yaml").write_text(PRESET)
    return root / "cohort.csv"


def _warm():
    import HCCFusionLib.radiomics  # noqa: F401  (pyradiomics, SimpleITK: imported before the clock starts)
    import radiomics  # noqa: F401
    return os.getpid()


def timed_cohort(table: Path, out: Path, workers: int) -> "tuple[float, float]":
    """(wall seconds, CPU seconds of the workers) of cohort_extract on a warm LocalCluster of `workers`."""
    from distributed import Client, LocalCluster

    from HCCFusionLib.cluster import Cluster
    from HCCFusionLib.radiomics import cohort_extract

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=40, env={"ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1"}) as local, \
            Client(local) as client:
        client.run(_warm)
        cpu = client.run(time.process_time)
        started = time.perf_counter()
        status = cohort_extract(table, out, cluster=Cluster(local.scheduler_address),
                                presets={"*": str(table.parent / "bench.yaml")}, **OPTIONS)
        seconds = time.perf_counter() - started
        cpu = sum(client.run(time.process_time).values()) - sum(cpu.values())
    assert (status["status"] == "done").all(), status
    return seconds, cpu


def noop(study_id, path, segmentation, folder, options):
    return {"status": "done", "seconds": 0.0, "message": ""}


def simulated_scale(n: int, workers: int = 2) -> dict:
    """Wall time of n no-op cohort tasks on a warm LocalCluster (graph: n independent tasks, gathered as done)."""
    from dask.sizeof import sizeof
    from distributed import Client, LocalCluster

    from HCCFusionLib.cluster import Cluster, run_tasks

    jobs = {f"S{i:04d}": {"study_id": f"S{i:04d}", "path": f"/data/s{i}", "segmentation": f"/data/s{i}_labels.nii.gz",
                          "folder": Path(f"/out/studies/S{i:04d}"), "options": dict(OPTIONS, presets={"*": "ct"})}
            for i in range(n)}
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=40) as local, Client(local) as client:
        client.run(os.getpid)
        started = time.perf_counter()
        results = run_tasks(noop, jobs, Cluster(local.scheduler_address))
        seconds = time.perf_counter() - started
    assert len(results) == n and all(r["status"] == "done" for r in results.values())
    started = time.perf_counter()
    run_tasks(noop, jobs, None)
    here = time.perf_counter() - started
    return {"tasks": n, "graph_kb": sizeof(jobs) / 1024, "seconds": seconds, "per_task_ms": 1000 * seconds / n,
            "sequential_noop_seconds": here}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=8)
    parser.add_argument("--simulated", type=int, default=1000)
    args = parser.parse_args()
    import pandas as pd

    with tempfile.TemporaryDirectory(prefix="bench_cohort_") as tmp:
        root = Path(tmp)
        table = write_cohort(root, args.studies)
        print(f"load average before: {os.getloadavg()}", flush=True)
        seconds_1, cpu_1 = timed_cohort(table, root / "out1", 1)
        print(f"1 worker: {seconds_1:.2f} s, workers' CPU {cpu_1:.2f} s", flush=True)
        seconds_2, cpu_2 = timed_cohort(table, root / "out2", 2)
        print(f"2 workers: {seconds_2:.2f} s, workers' CPU {cpu_2:.2f} s", flush=True)
        for name in ("features_wide", "features_long", "kinetics"):
            a, b = (pd.read_csv(root / o / "radiomics" / f"{name}.csv") for o in ("out1", "out2"))
            pd.testing.assert_frame_equal(a, b, check_exact=True)
        print("tables of 1 and 2 workers identical")
    scale = simulated_scale(args.simulated)
    print(f"load average after: {os.getloadavg()}")
    print(f"BENCH cohort_scale tasks={scale['tasks']} graph_kb={scale['graph_kb']:.0f} seconds={scale['seconds']:.2f} "
          f"per_task_ms={scale['per_task_ms']:.2f} sequential_noop_seconds={scale['sequential_noop_seconds']:.3f}")
    print(f"BENCH cohort studies={args.studies} seconds_1={seconds_1:.2f} seconds_2={seconds_2:.2f} "
          f"efficiency={seconds_1 / (2 * seconds_2):.2f} cpu_1={cpu_1:.2f} cpu_2={cpu_2:.2f} "
          f"cpu_ratio={cpu_1 / cpu_2:.2f} load1={os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
