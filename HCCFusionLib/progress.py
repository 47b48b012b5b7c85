"""Progress reporting shared by library stages and the CLI; the library never prints by itself.

Stages accept an optional `progress` callable `progress(fraction, message)`. The CLI passes a
`Progress`, which draws a tqdm bar, prints `PROGRESS <fraction> <message>` lines (read by the Slicer
module's background process), or stays silent.
"""
from __future__ import annotations

import sys
from typing import Callable

ProgressFn = Callable[[float, str], None]


def silent(fraction: float, message: str = "") -> None:
    """Default progress callback: does nothing."""


def scaled(progress: ProgressFn | None, start: float, stop: float) -> ProgressFn:
    """Map a sub-stage's 0..1 progress into [start, stop] of the caller's progress."""
    progress = progress or silent
    return lambda fraction, message="": progress(start + (stop - start) * min(max(fraction, 0.0), 1.0), message)


class Progress:
    def __init__(self, mode: str = "bar"):
        self.mode = mode
        self._bar = None

    def __call__(self, fraction: float, message: str = "") -> None:
        fraction = min(max(float(fraction), 0.0), 1.0)
        if self.mode == "lines":
            print(f"PROGRESS {fraction:.3f} {message}", flush=True)
        elif self.mode == "bar":
            from tqdm import tqdm

            if self._bar is None:
                self._bar = tqdm(total=1000, file=sys.stderr, leave=False, bar_format="{l_bar}{bar}| {elapsed}")
            self._bar.set_description_str(message[:40])
            self._bar.update(int(fraction * 1000) - self._bar.n)
            if fraction >= 1.0:
                self._bar.close()
                self._bar = None
