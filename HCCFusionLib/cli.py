"""`hccfusion` command: one verb per pipeline stage, plus `run` (all stages) and `demo`.

Every verb reads files and writes files (atomically), so each stage can be entered with the user's own
inputs. With `--progress lines` (used by the Slicer module's background process) progress is printed
as `PROGRESS <fraction> <message>` lines on stdout instead of bars.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import __version__
from .errors import HCCFusionError
from .progress import Progress

log = logging.getLogger(__name__)

VERBS = {}


def verb(name: str, help: str):
    """Register `func(args, progress)` as a verb; `func.configure(parser)` adds its arguments."""

    def wrap(func):
        VERBS[name] = (func, help)
        return func

    return wrap


# ---------------------------------------------------------------- foundation: info, demo
@verb("info", "what a study folder (manifest, NIfTI/NRRD or DICOM) contains, with detected phases")
def cmd_info(args, progress):
    from .io import load_study

    study = load_study(args.study, phase_overrides=dict(args.phase or []))
    print(format_table(study.summary(), title=f"Study {study.study_id}"))
    return 0


def _info_args(p):
    p.add_argument("study", type=Path, help="study folder (study.json/yaml manifest) or DICOM folder")
    p.add_argument("--phase", nargs=2, action="append", metavar=("SERIES", "PHASE"),
                   help="override the detected phase of a series (repeatable)")


cmd_info.configure = _info_args


@verb("demo", "generate a phantom study, load it, summarise it and write a Slicer scene (.mrb)")
def cmd_demo(args, progress):
    from .demo import run_demo

    return run_demo(args.out, seed=args.seed, size=args.size, progress=progress)


def _demo_args(p):
    p.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default: demo_output)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--size", choices=["small", "full"], default="full")


cmd_demo.configure = _demo_args


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
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args, Progress(args.progress)) or 0)
    except HCCFusionError as exc:
        print(f"hccfusion {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hccfusion {args.verb}: cancelled", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
