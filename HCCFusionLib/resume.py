"""The stage manifest `OUT/stages.json`, the basis of `run --resume`.

After each stage completes, `record_stage` rewrites the manifest atomically with the stage's output files
and their SHA-256, plus a fingerprint of the run's inputs and settings. `completed_stages` returns the stages
of an earlier run that can be kept: same fingerprint (else an InputError), every output present with its
recorded hash; the first stage that fails verification and all later ones are to be rerun. Stages are keyed
by name, so the order of stages in `pipeline.run` may change without breaking the manifest.
`remove_stale_parts` deletes the `.NAME.*.part` temporaries a killed process (SIGKILL) leaves behind.
`pipeline.run` uses the run-level helpers at the end: `resumable_stages`, `manifest_writer`, `prepare_out`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from .errors import InputError
from .files import atomic_write, sha256_file
from .layout import DEEP_STAGE, STAGES, RunFolder

__all__ = ["RESUMABLE", "RESUMED", "completed_stages", "fingerprint", "manifest_writer", "prepare_out",
           "record_stage", "remove_stale_parts", "resumable_stages"]

log = logging.getLogger(__name__)
VERSION = 1


def fingerprint(inputs: dict, settings: dict) -> str:
    """SHA-256 over the input files' hashes (files, or every file under a folder) and the settings (JSON)."""
    digest = hashlib.sha256()
    for name in sorted(inputs):
        path = Path(inputs[name])
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            digest.update(f"{name}:{f.relative_to(path) if path.is_dir() else f.name}:{sha256_file(f)}\n".encode())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _read(out: Path) -> dict:
    path = RunFolder(out).stage_manifest
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"Stage manifest '{path}' is unreadable ({exc}): rerun without --resume, with "
                         "--overwrite or a new --out folder.") from exc
    return data if data.get("version") == VERSION else {}


def record_stage(out: "str | Path", name: str, outputs: "list[Path]", print_: str) -> None:
    """Add (or replace) stage `name` with the SHA-256 of every file under `outputs` (files or folders)."""
    out = Path(out)
    data = _read(out)
    if data.get("fingerprint") != print_:
        data = {"version": VERSION, "fingerprint": print_, "stages": {}}
    files = {}
    for item in map(Path, outputs):
        for f in (sorted(p for p in item.rglob("*") if p.is_file()) if item.is_dir() else [item]):
            files[f.relative_to(out).as_posix()] = sha256_file(f)
    data["stages"][name] = {"order": len(data["stages"]), "files": files}
    with atomic_write(RunFolder(out).stage_manifest) as tmp:
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))


def completed_stages(out: "str | Path", print_: str, plan: "list[str]") -> list[str]:
    """The leading stages of `plan` whose recorded outputs are intact; InputError if inputs/settings changed."""
    out = Path(out)
    data = _read(out)
    if not data:
        return []
    if data["fingerprint"] != print_:
        raise InputError(f"'{out}' was run with other inputs or settings: --resume only continues the same run. "
                         "Use a new --out folder, or --overwrite to start again here.")
    done = []
    for name in plan:
        files = data["stages"].get(name, {}).get("files")
        if files is None:
            break
        bad = [f for f, h in files.items() if not (out / f).is_file() or sha256_file(out / f) != h]
        if bad:
            log.warning("resume: stage %s output changed or missing (%s): rerunning from it", name, bad[0])
            break
        done.append(name)
    return done


def remove_stale_parts(out: "str | Path") -> list[Path]:
    """Delete `.NAME.*.part*` and `.NAME.*.old` temporaries under `out` (left by a killed run)."""
    stale = sorted(p for p in Path(out).rglob(".*") if ".part" in p.name or p.name.endswith(".old"))
    for p in stale:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return stale


# ---------------------------------------------------------------- `run`'s use of the manifest
#: stages `run --resume` reads back from their files (each module's reader beside its writer: RegistrationResult.read,
#: segmentation.predictor.read_segmentation, radiomics.Extraction.read). The later stages are recomputed from these:
#: they are cheap and deterministic (small phantom: LI-RADS 0.2 s, staging 0.01 s, prediction 3 s, deep fusion
#: prediction ~1 s, report 0.6 s, DICOM 1 s, against radiomics 50 s) and run.json, report and DICOM are rewritten by
#: the resumed run anyway.
RESUMABLE = ("registration", "segmentation", "radiomics")
RESUMED = "resumed from stages.json"


def resumable_stages(out: Path, print_: str, plan: "list[str]") -> list[str]:
    """The completed, intact RESUMABLE stages of an earlier run in OUT; removes its stale temporaries."""
    for path in remove_stale_parts(out):
        log.info("resume: removed stale temporary %s", path)
    done = completed_stages(out, print_, [s for s in plan if s != "pacs"])
    return [s for s in done[:len(RESUMABLE)] if s in RESUMABLE]


def _stage_folder(out: Path, name: str) -> "Path | None":
    """The folder of a `run` stage recorded in the manifest (layout.RunFolder.stage), else None (load, pacs, push)."""
    try:
        return RunFolder(out).stage(name)
    except ValueError:
        return None


def manifest_writer(out: Path, print_: str):
    """on_done callback: record each completed stage's folder and hashes in OUT/stages.json."""
    def done(name: str) -> None:
        folder = _stage_folder(Path(out), name)
        record_stage(out, name, [folder] if folder is not None and folder.exists() else [], print_)
    return done


def prepare_out(out: Path, done: "list[str]", overwrite: bool, keep_manifest: bool = False) -> None:
    """Refuse (or, with overwrite or when resuming, remove) every stage folder an earlier run left in OUT except those
    of the stages `done` (kept by a resume), also of stages this run skips, so that no stale output stays beside the
    new ones; drop its run.json (and its stages.json unless `keep_manifest`: resuming)."""
    folders = [RunFolder(out).stage(s) for s in (*STAGES, DEEP_STAGE) if s not in done]
    existing = [f for f in folders if f.exists()]
    if existing and not (overwrite or keep_manifest):
        raise InputError(f"'{out}' already holds results ({', '.join(p.name for p in existing)}): choose a new "
                         "--out folder or pass --overwrite.")
    for path in existing:
        shutil.rmtree(path, ignore_errors=True)  # a nested stage folder may have gone with its parent
    RunFolder(out).run_record.unlink(missing_ok=True)  # written anew before the report stage
    if not keep_manifest:
        RunFolder(out).stage_manifest.unlink(missing_ok=True)  # written anew after each stage
