"""The catalogue of shipped segmentation models (models as data: HCCFusionLib/models/catalog.json).

Each entry names its engine, modality, phases, labels, spacing, measured CPU seconds, licence and the SHA-256 of
each bundle's checksums.sha256 (that file pins every file of the bundle, so one digest pins the bundle).
`hccfusion models` and the Slicer panel show it; `check()` compares the digests with the bundles on disk.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import IntegrityError
from ..files import sha256_file

MODELS = Path(__file__).resolve().parents[1] / "models"
CATALOG = MODELS / "catalog.json"
COLUMNS = ("name", "engine", "modality", "phases", "labels", "spacing_mm", "seconds_cpu", "licence", "sha256", "status")


def entries() -> list[dict]:
    """The catalogue's entries, as written."""
    return json.loads(CATALOG.read_text())["models"]


def entry(name: str) -> dict:
    found = [e for e in entries() if e["name"] == name]
    if not found:
        raise KeyError(name)
    return found[0]


def bundle_digest(bundle: str) -> str:
    """SHA-256 of a shipped bundle's checksums.sha256 ('' when the bundle is not installed)."""
    sums = MODELS / bundle / "checksums.sha256"
    return sha256_file(sums) if sums.is_file() else ""


def status(item: dict) -> str:
    """'ok', 'not installed: …' or 'modified: …' for one entry."""
    missing = [b for b in item["bundles"] if not bundle_digest(b)]
    if missing:
        return f"not installed: {', '.join(missing)}"
    changed = [b for b, digest in item["bundles"].items() if bundle_digest(b) != digest]
    return f"modified: {', '.join(changed)}" if changed else "ok"


def check(name: str) -> None:
    """IntegrityError unless every bundle of entry `name` is installed and matches the catalogue's digest."""
    state = status(entry(name))
    if state != "ok":
        raise IntegrityError(f"Shipped model '{name}' is {state} (catalogue {CATALOG}): reinstall HCCFusion.")


def rows() -> list[dict]:
    """One display row per entry (COLUMNS), lists joined."""
    out = []
    for item in entries():
        row = {k: item.get(k) for k in COLUMNS[:-2]}
        row.update({k: ", ".join(v) for k, v in row.items() if isinstance(v, list)})
        row["spacing_mm"] = "; ".join(f"{b} {'x'.join(f'{x:g}' for x in v)}" for b, v in item["spacing_mm"].items())
        row["sha256"] = "; ".join(f"{b} {d[:12]}" for b, d in item["bundles"].items())
        row["seconds_cpu"] = "-" if item.get("seconds_cpu") is None else f"{item['seconds_cpu']:g}"
        row["status"] = status(item)
        out.append(row)
    return out
