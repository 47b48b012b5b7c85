"""Audit log: one JSON line per CLI run (and per LI-RADS override) appended to `OUT/audit.jsonl`.

A record holds the user, UTC time, the command line (paths and options only: patient identifiers never come
on it), versions, SHA-256 of the input and model files named on the command line, the outputs written, per-stage
status and the exit status. Each record is one `os.write` of one line, then fsync, so concurrent runs never
interleave half lines.
"""
from __future__ import annotations

import datetime
import getpass
import json
import logging
import os
import platform
from pathlib import Path

from .files import sha256_file

log = logging.getLogger(__name__)

AUDIT_NAME = "audit.jsonl"


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for package in ("hccfusion", "torch", "SimpleITK"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


def file_hashes(paths) -> dict:
    """SHA-256 of each existing file (a folder: of each file inside it, up to 200 files)."""
    out = {}
    for path in map(Path, paths):
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())[:200] if path.is_dir() else []
        for f in files:
            try:
                out[str(f)] = sha256_file(f)
            except OSError as exc:
                out[str(f)] = f"unreadable: {exc.strerror}"
    return out


def record(argv: list[str], *, inputs=(), models=(), outputs=(), stages: dict | None = None,
           exit_status: int | None = None, event: str = "run", **extra) -> dict:
    """An audit record (see the module docstring)."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # pragma: no cover - no login name
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return {"event": event, "user": user, "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "argv": [str(a) for a in argv], "versions": versions(), "inputs": file_hashes(inputs),
            "models": file_hashes(models), "outputs": [str(o) for o in outputs], "stages": stages or {},
            "exit_status": exit_status, **extra}


def append(folder: "str | Path", entry: dict) -> Path:
    """Append `entry` as one JSON line to FOLDER/audit.jsonl: a single write, then flush + fsync."""
    path = Path(folder) / AUDIT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(entry, default=str, separators=(",", ":")) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
    return path
