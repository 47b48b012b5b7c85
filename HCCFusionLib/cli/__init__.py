"""`hccfusion` command: one verb per pipeline stage, plus `run` (all stages) and `demo`.

Every verb reads files and writes files (atomically), so each stage can be entered with the user's own
inputs. With `--progress lines` (used by the Slicer module's background process) progress is printed
as `PROGRESS <fraction> <message>` lines on stdout instead of bars.

Modules: `common` (the verb registry), then one per stage group, imported here in the order the verbs are
listed: `study`, `segment`, `pacs`, `features`, `predict`, `synthetic`, `register`, `run`, `report` (report,
export-dicom), `clinical` (stage), `modalities` (pet-suv, ceus), `federated` (federated server|client), `deep`
(train-deep, predict-deep).
Verb modules import only `common` and library modules (lazily, inside the verbs, so `--help` stays fast).
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path

from .. import __version__
from ..errors import HCCFusionError
from ..progress import Progress
# verb modules, imported in the order their verbs are listed (importing one registers its verbs)
from . import study  # noqa: F401
from . import segment  # noqa: F401
from . import pacs  # noqa: F401
from . import features  # noqa: F401
from . import predict  # noqa: F401
from . import synthetic  # noqa: F401
from . import register  # noqa: F401
from . import run  # noqa: F401
from . import report  # noqa: F401
from . import clinical  # noqa: F401
from . import modalities  # noqa: F401
from . import federated  # noqa: F401
from . import deep  # noqa: F401
from .common import VERBS, add_phase_override, format_table, phase_overrides, verb

__all__ = ["VERBS", "add_phase_override", "build_parser", "format_table", "main", "phase_overrides", "verb"]

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hccfusion", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"hccfusion {__version__}")
    parser.add_argument("--progress", choices=["bar", "lines", "none"], default="bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, (func, help_text) in VERBS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        getattr(func, "configure", lambda _p: None)(p)
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    started, status, problem = time.time(), 1, ""
    previous = _on_sigterm()
    try:
        status = int(args.func(args, Progress(args.progress)) or 0)
        return status
    except HCCFusionError as exc:
        problem = " ".join(str(exc).split())
        args.stage_status = getattr(exc, "stages", None)  # `run`: the status of each stage
        print(f"hccfusion {args.verb}: error: {problem}", file=sys.stderr)
        status = 2
        return status
    except OSError as exc:  # the OS refused a read or write (disk full, permissions): one line, no traceback
        problem = (f"cannot access '{exc.filename or '?'}' ({exc.strerror or exc}): free disk space, check the "
                   "folder's permissions or choose another --out folder.")
        print(f"hccfusion {args.verb}: error: {problem}", file=sys.stderr)
        status = 3
        return status
    except KeyboardInterrupt:
        problem, status = "cancelled", 130
        print(f"hccfusion {args.verb}: cancelled", file=sys.stderr)
        return status
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        _audit(args, argv, started, status, problem)


def _on_sigterm():
    """SIGTERM cancels like Ctrl-C (the running stage's temporaries are removed, completed stages kept);
    returns the previous handler, or None off the main thread (where no handler can be set)."""
    def cancel(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, cancel)
    except ValueError:
        return None


def _audit(args, argv: list[str], started: float, status: int, problem: str) -> None:
    """Append this run's record to OUT/audit.jsonl (verbs with --out only); never fails the run."""
    out = getattr(args, "out", None)
    if not isinstance(out, Path) or not out.is_dir() or (out / "checksums.sha256").exists():
        return  # no --out folder, or a model bundle (its files are checksummed)
    from .. import audit

    paths = {k: v for k, v in vars(args).items() if isinstance(v, Path) and k != "out"}
    models = [v for k in ("model", "seg_model") if (v := getattr(args, k, None)) and Path(v).exists()]
    outputs = sorted(str(p) for p in out.rglob("*") if p.is_file() and p.name != audit.AUDIT_NAME
                     and p.stat().st_mtime >= started - 1)
    stages = getattr(args, "stage_status", None) or {
        args.verb: "ok" if status == 0 else f"failed: {problem}" if problem else f"exit {status}"}
    try:
        audit.append(out, audit.record(argv, inputs=[v for k, v in paths.items() if k not in ("model", "seg_model")],
                                       models=models, outputs=outputs, stages=stages, exit_status=status,
                                       seconds=round(time.time() - started, 3)))
    except OSError as exc:
        log.warning("Could not append to the audit log in '%s' (%s)", out, exc.strerror or exc)
