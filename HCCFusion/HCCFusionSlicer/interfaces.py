"""The two seams of the glue, as protocols: how a `hccfusion` verb is run, and how a step's packages are installed.

The logic and the panels take both as constructor arguments (real ones by default), so the logic runs and is
tested without the widget, the Qt event loop or pip: `process.SubprocessRunner` / `QtProcessRunner` /
`InProcessRunner` are runners; `install.SlicerInstaller` is the installer.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .process import CliJob, CliResult

ProgressCallback = Callable[[float, str], None]
FinishedCallback = Callable[["CliResult | None", "Exception | None"], None]


@runtime_checkable
class ProcessRunner(Protocol):
    """Runs `hccfusion` verbs. `asynchronous`: `start` returns at once and calls `finished` later (GUI);
    otherwise `start` blocks and calls `finished` before returning."""

    asynchronous: bool

    def run(self, job: "CliJob", progress: "ProgressCallback | None" = None) -> "CliResult":
        """Run `job` to completion; raise process.CliError with the verb's own message when it fails."""

    def start(self, job: "CliJob", progress: "ProgressCallback | None", finished: FinishedCallback) -> None:
        """Start `job`; `finished(result, error)` is called when it ends (error: CliError/CancelledError)."""

    def cancel(self) -> None:
        """Stop the running job (its whole process tree); no-op when nothing runs."""

    def isRunning(self) -> bool:
        """Whether a started job has not finished yet."""


@runtime_checkable
class Installer(Protocol):
    """Checks and installs the Python packages of a step (install.STAGES names) on first use."""

    def stages(self) -> "tuple[str, ...]":
        """Every stage name it knows."""

    def onDemand(self) -> "tuple[str, ...]":
        """Stages installed only when explicitly needed (not by the Setup button)."""

    def ensure(self, stage: str, ask: bool = True) -> bool:
        """Make sure the packages of `stage` are there; False when the user declined."""

    def report(self) -> str:
        """Installed/missing state of every stage, one line each."""
