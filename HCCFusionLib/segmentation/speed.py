"""CPU inference settings shared by every engine (the bundled-model predictor and the liverlesion engine).

`inference()` wraps a forward-pass loop:
- `torch.inference_mode()`;
- the intra-op thread count: `threads`, else the environment variable HCCFUSION_THREADS, else torch's default
  (restored afterwards);
- glibc's malloc keeps large blocks in its heap instead of mmap-ing each one (M_MMAP_MAX 0) and does not
  shrink the heap on every free (M_TRIM_THRESHOLD 1 GiB): the U-Nets
  allocate tensors of hundreds of MB per layer, and fresh mmap-ed pages must be faulted in and zeroed by the
  kernel on every allocation (about a quarter of the lesion net's CPU time on a 2-core machine). When the
  outermost block ends, mmap is allowed again above 32 MiB (the value glibc's dynamic threshold converges to
  once large blocks are freed; setting any of these parameters stops that adjustment), the heap is trimmed
  above 64 MiB free, and the freed heap goes back to the system (malloc_trim).
  Without glibc (macOS, Windows, musl) this part is skipped.

Measured and rejected (same label maps required): bf16 autocast, OpenVINO (2026.4.1, f32, 2 threads: one
lesion-net tile 5.3 CPU-s as torch, 83 s to convert and compile, 13 changed labels in the tile), ONNX
Runtime (max probability difference 6e-4, a changed label, no CPU-time gain), torch.compile (80 s cold compile,
no gain per tile), torch.jit.freeze + optimize_for_inference (no gain), batching 2 lesion-net tiles (no gain),
torch.var_mean or a norm of the centred tensor in the instance normalisation (slower than mean + square-mean on
channels-last tensors), skipping lesion-net tiles without liver (none on the real studies: each tile's input
holds dilated liver).
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import threading

log = logging.getLogger(__name__)

THREADS_ENV = "HCCFUSION_THREADS"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4  # mallopt parameters (malloc.h)
_MMAP_MAX_DEFAULT = 65536
_MMAP_AFTER, _TRIM_AFTER = 32 << 20, 64 << 20  # glibc's dynamic maximum and twice it
_TRIM_INFERENCE = 1 << 30
_lock = threading.Lock()
_depth = 0


def _glibc():
    """The C library if it is glibc (has mallopt and malloc_trim), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 (AttributeError where absent)
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _glibc()


def threads_setting(threads: int | None = None) -> int | None:
    """The intra-op thread count to use: `threads`, else $HCCFUSION_THREADS, else None (torch's default)."""
    if threads is None and os.environ.get(THREADS_ENV, "").strip():
        try:
            threads = int(os.environ[THREADS_ENV])
        except ValueError:
            log.warning("%s=%r is not a whole number: using torch's default thread count", THREADS_ENV,
                        os.environ[THREADS_ENV])
    return threads if threads and threads > 0 else None


@contextlib.contextmanager
def inference(threads: int | None = None):
    """Context for CPU inference (see the module docstring); re-entrant."""
    import torch

    global _depth
    threads = threads_setting(threads)
    before = torch.get_num_threads()
    with _lock:
        _depth += 1
        if _depth == 1 and _LIBC is not None:
            _LIBC.mallopt(_M_MMAP_MAX, 0)
            _LIBC.mallopt(_M_TRIM_THRESHOLD, _TRIM_INFERENCE)
    try:
        if threads:
            torch.set_num_threads(threads)
        with torch.inference_mode():
            yield
    finally:
        if threads:
            torch.set_num_threads(before)
        with _lock:
            _depth -= 1
            if _depth == 0 and _LIBC is not None:
                _LIBC.mallopt(_M_MMAP_MAX, _MMAP_MAX_DEFAULT)
                _LIBC.mallopt(_M_MMAP_THRESHOLD, _MMAP_AFTER)
                _LIBC.mallopt(_M_TRIM_THRESHOLD, _TRIM_AFTER)
                _LIBC.malloc_trim(0)
