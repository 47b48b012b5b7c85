"""Atomic file and folder writes, file checksums and lock files (no HCCFusionLib imports beyond errors)."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from .errors import InputError

__all__ = ["atomic_write", "atomic_folder", "replace_folder", "staging_folder", "sha256_file", "exclusive"]


@contextlib.contextmanager
def atomic_write(path: "str | Path"):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A failure leaves neither a partial file nor the temporary file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=f".part{suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def staging_folder(folder: Path) -> Path:
    """A temporary sibling of `folder`, with the permissions a plain mkdir would give (not mkdtemp's 0700)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".part", dir=folder.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    return tmp


def replace_folder(new: "str | Path", folder: "str | Path") -> Path:
    """Swap the finished folder `new` in at `folder`; an older `folder` is kept until the swap, then removed."""
    new, folder = Path(new), Path(folder)
    if not folder.exists():
        os.replace(new, folder)
        return folder
    if not folder.is_dir():
        raise InputError(f"'{folder}' is a file: give a folder path for the output.")
    old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
    os.replace(folder, old / "previous")
    try:
        os.replace(new, folder)
    except BaseException:
        os.replace(old / "previous", folder)  # put the previous outputs back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
    return folder


@contextlib.contextmanager
def atomic_folder(folder: "str | Path", *, replace: bool = False):
    """The one folder writer every stage uses.

    Policy: the stage writes into a temporary sibling folder (yielded); only when the block completes is
    it swapped in at `folder` (`replace_folder`: the old folder is kept until the swap, then removed). An
    interrupted or failed stage therefore leaves the previous outputs intact and nothing half-written.
    With `replace=False` (outputs a user names once, e.g. DICOM export) an existing non-empty `folder`
    is refused instead of replaced.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"'{folder}' is a file: give a folder path for the output.")
    if not replace and folder.exists() and any(folder.iterdir()):
        raise InputError(f"Output folder '{folder}' already exists and is not empty: choose a new folder or remove it.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_folder(folder)
    try:
        yield tmp
        replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: "str | Path") -> str:
    """SHA-256 hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def exclusive(lock: "str | Path", waiting=contextlib.nullcontext):
    """Hold the lock file `lock` (filelock: flock on POSIX, msvcrt on Windows) for the block: another process, or
    another thread here, entering with the same file waits inside `waiting()` until it is released. The operating
    system releases it when its holder dies."""
    from filelock import FileLock, Timeout

    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    held = FileLock(lock)
    try:
        held.acquire(blocking=False)
    except Timeout:
        with waiting():
            held.acquire()
    try:
        yield
    finally:
        held.release()
