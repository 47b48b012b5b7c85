"""The verb registry (`VERBS`, `@verb`) and helpers shared by the verb modules."""
from __future__ import annotations




VERBS = {}


def verb(name: str, help: str):
    """Register `func(args, progress)` as a verb; `func.configure(parser)` adds its arguments."""

    def wrap(func):
        VERBS[name] = (func, help)
        return func

    return wrap


def add_phase_override(p):
    """`--phase SERIES PHASE` (repeatable) for a verb that loads a study; read back with `phase_overrides`."""
    p.add_argument("--phase", nargs=2, action="append", metavar=("SERIES", "PHASE"),
                   help="override the detected phase of a series (name, SeriesInstanceUID or file; repeatable)")


def phase_overrides(args) -> dict:
    """The `--phase` pairs as the `phase_overrides` of io.load_study."""
    return dict(getattr(args, "phase", None) or [])


def add_cluster_args(p, default_dask: bool):
    """Where a cohort verb's per-study tasks run (read back with `cluster_option`)."""
    if default_dask:
        p.add_argument("--sequential", action="store_true", help="run the studies here one after the other (no Dask)")
    else:
        p.add_argument("--dask", action="store_true", help="one Dask task per study on a LocalCluster sized to the "
                                                           "machine (or on --scheduler)")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="an existing Dask cluster's scheduler (dask-jobqueue, Kubernetes) instead of a LocalCluster")
    p.add_argument("--dask-workers", type=int, help="LocalCluster worker processes, one thread each (default: one "
                                                    "per core)")
    p.add_argument("--memory-limit", default="auto", help="LocalCluster memory per worker, e.g. 4GB (default auto: "
                                                          "the machine's memory shared out; a study past it is "
                                                          "reported as failed)")


def cluster_option(args):
    """The cluster.Cluster of `add_cluster_args`' options, or None to run the studies here."""
    from ..cluster import Cluster

    if getattr(args, "sequential", False) or not (getattr(args, "dask", True) or args.scheduler):
        return None
    return Cluster(args.scheduler, args.dask_workers, None if args.memory_limit == "none" else args.memory_limit)


# ---------------------------------------------------------------- helpers
def format_table(rows: list[dict], title: str = "") -> str:
    """Plain-text table of dict rows (same keys), for terminal summaries."""
    if not rows:
        return f"{title}\n(empty)"
    keys = list(rows[0])
    cells = [[str(r.get(k, "")) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    line = "  ".join(k.ljust(w) for k, w in zip(keys, widths))
    body = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(([title] if title else []) + [line, "-" * len(line)] + body)
