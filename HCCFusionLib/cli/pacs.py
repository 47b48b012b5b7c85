"""Interoperability verb: pacs query|pull|push."""
from __future__ import annotations

import argparse
from pathlib import Path

from .common import format_table, verb
from ..layout import RunFolder


# ---------------------------------------------------------------- interoperability: pacs query|pull|push
@verb("pacs", "DICOMweb PACS: query studies/series/instances, pull a study into OUT/pacs/, push DICOM files")
def cmd_pacs(args, progress):
    from ..pacs import Pacs

    pacs = Pacs(args.pacs_url, username=args.pacs_user, token=args.pacs_token, timeout=args.timeout,
                retries=args.retries)
    if args.action == "query":
        table = pacs.query(args.level, study_uid=args.study, filters=dict(args.filter or []), limit=args.limit)
        print(format_table(table.astype(object).where(table.notna(), "").to_dict("records"),
                           title=f"{len(table)} {args.level} on {pacs.url}"))
    elif args.action == "pull":
        folder = RunFolder(args.out).pacs(args.study_uid)
        files = pacs.pull(args.study_uid, folder, series_uid=args.series, progress=progress)
        print(f"retrieved {len(files)} instances into {folder}")
    else:
        result = pacs.push(args.paths, progress=progress)
        print(f"stored {len(result.stored)} instances, {len(result.skipped)} already present on {pacs.url}")
    return 0


def _pacs_args(p):
    from ..pacs import ENV_PASSWORD, ENV_TOKEN, ENV_URL, ENV_USER

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--pacs-url", help=f"DICOMweb root, e.g. http://host:8042/dicom-web (default: ${ENV_URL})")
    common.add_argument("--pacs-user", help=f"basic-auth user (default: ${ENV_USER}; password from ${ENV_PASSWORD})")
    common.add_argument("--pacs-token", help=f"bearer token (default: ${ENV_TOKEN})")
    common.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")
    common.add_argument("--retries", type=int, default=3, help="retries with backoff after a failure (default 3)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    query = actions.add_parser("query", parents=[common], help="QIDO-RS search (no patient names are shown)")
    query.add_argument("--level", choices=["studies", "series", "instances"], default="studies")
    query.add_argument("--study", help="StudyInstanceUID (for --level series/instances)")
    query.add_argument("--filter", nargs=2, action="append", metavar=("KEYWORD", "VALUE"),
                       help="QIDO match, e.g. --filter ModalitiesInStudy CT (repeatable)")
    query.add_argument("--limit", type=int)
    pull = actions.add_parser("pull", parents=[common], help="WADO-RS retrieve a study into OUT/pacs/<StudyUID>/")
    pull.add_argument("study_uid", help="StudyInstanceUID")
    pull.add_argument("--series", help="only this SeriesInstanceUID")
    pull.add_argument("--out", type=Path, required=True)
    push = actions.add_parser("push", parents=[common],
                              help="STOW-RS store DICOM files/folders; instances already in the PACS are skipped")
    push.add_argument("paths", nargs="+", type=Path)


cmd_pacs.configure = _pacs_args
