"""Images in and files out: NIfTI/NRRD/DICOM loading, study manifests, atomic writes."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import SimpleITK as sitk

from .errors import InputError


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


def save_image(image: sitk.Image, path: "str | Path", compress: bool = True) -> Path:
    """Write an image (NIfTI/NRRD/…, by extension) atomically."""
    path = Path(path)
    with atomic_write(path) as tmp:
        sitk.WriteImage(image, str(tmp), compress)
    return path


def read_image(path: "str | Path") -> sitk.Image:
    """Read one image file, turning reader failures into an InputError that names the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Image file '{path}' does not exist: check the path.")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(
            f"Cannot read image '{path}' ({str(exc).strip().splitlines()[-1][:200]}): "
            "the file is truncated or not a NIfTI/NRRD/MHA image; re-export it."
        ) from None
