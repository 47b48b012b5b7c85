"""Run `hccfusion` verbs out of process, in Slicer's own Python, with progress and cancel.

`SubprocessRunner.run` runs a verb to completion (scripts, tests, `waitForCompletion=True`);
`QtProcessRunner.start` runs it in the background: a thread reads the child's output into a queue that a
`qt.QTimer` drains on the GUI thread, so the panel stays responsive; `cancel()` kills the whole process
tree. Neither imports Qt at module level, so this file also runs outside the Slicer application.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import HCCFusionLib
from HCCFusionLib.errors import HCCFusionError

from .interfaces import FinishedCallback, ProgressCallback

log = logging.getLogger(__name__)

PROGRESS_PREFIX = "PROGRESS "
#: Folder holding the HCCFusionLib package (the source tree, or Slicer's qt-scripted-modules folder).
LIBRARY_PARENT = Path(HCCFusionLib.__file__).resolve().parents[1]


class CliError(HCCFusionError):
    """A `hccfusion` verb failed or was cancelled; the message is the verb's own error line."""


class CancelledError(CliError):
    """The user cancelled the running verb."""


@dataclass
class CliJob:
    """One `hccfusion VERB ARGS...` invocation."""

    verb: str
    args: list[str] = field(default_factory=list)

    def command(self, python: "str | None" = None) -> list[str]:
        return [python or pythonExecutable(), "-m", "HCCFusionLib.cli", "--progress", "lines", self.verb,
                *[str(a) for a in self.args]]


@dataclass
class CliResult:
    returncode: int
    output: list[str]

    def errorMessage(self, verb: str) -> str:
        """The verb's `error:` line (what to fix), else the last lines of its output."""
        errors = [line for line in self.output if line.startswith(f"hccfusion {verb}: ")]
        if errors:
            return errors[-1].split(": ", 1)[1]
        tail = "\n".join(self.output[-15:])
        return f"'hccfusion {verb}' failed with exit code {self.returncode}:\n{tail}"


def parseProgress(line: str) -> "tuple[float, str] | None":
    """(fraction, message) of a `PROGRESS <fraction> <message>` line, else None."""
    if not line.startswith(PROGRESS_PREFIX):
        return None
    parts = line[len(PROGRESS_PREFIX):].split(" ", 1)
    try:
        fraction = float(parts[0])
    except ValueError:
        return None
    return min(max(fraction, 0.0), 1.0), (parts[1].strip() if len(parts) > 1 else "")


def pythonExecutable() -> str:
    """Slicer's `PythonSlicer` inside the application (on PATH there), else this interpreter."""
    try:
        import slicer

        if hasattr(slicer, "app"):
            found = shutil.which("PythonSlicer")
            if found:
                return found
    except ImportError:
        pass
    return sys.executable


def cliEnvironment() -> dict:
    """Environment for the child: HCCFusionLib importable, unbuffered UTF-8 output."""
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(LIBRARY_PARENT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("PYTHONIOENCODING", "utf-8")
    return env


def killProcessTree(proc: subprocess.Popen) -> None:
    """Kill a child and all its descendants (psutil when available, else its process group)."""
    if proc.poll() is not None:
        return
    try:
        import psutil

        parent = psutil.Process(proc.pid)
        for child in parent.children(recursive=True):
            child.kill()
        parent.kill()
    except ImportError:
        if os.name == "posix":
            os.killpg(proc.pid, signal.SIGKILL)  # started with start_new_session=True: its own group
        else:
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)], capture_output=True, check=False)
    except Exception as exc:  # noqa: BLE001 - the process may exit while we walk its tree
        log.debug("killing process tree of %s: %s", proc.pid, exc)
    proc.wait()


class SubprocessRunner:
    """Runs a verb synchronously in a child process, forwarding its PROGRESS lines (an `interfaces.ProcessRunner`)."""

    asynchronous = False

    def __init__(self, python: "str | None" = None, workingDirectory: "str | Path | None" = None):
        self.python = python
        self.workingDirectory = workingDirectory

    def _popen(self, job: CliJob) -> subprocess.Popen:
        command = job.command(self.python)
        log.info("Running: hccfusion %s", " ".join(command[5:]))
        kwargs = {"start_new_session": True} if os.name == "posix" else {
            "creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0) | getattr(subprocess, "CREATE_NO_WINDOW", 0)}
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                text=True, encoding="utf-8", errors="replace", bufsize=1, env=cliEnvironment(),
                                cwd=self.workingDirectory, **kwargs)

    @staticmethod
    def _handleLine(line: str, output: list, progress: "ProgressCallback | None", echo: bool = True) -> None:
        """A PROGRESS line goes to `progress`, any other to `output` (and to this log with `echo`)."""
        line = line.rstrip("\r\n")
        parsed = parseProgress(line)
        if parsed is not None:
            if progress:
                progress(*parsed)
        elif line:
            output.append(line)
            if echo:
                log.info("hccfusion: %s", line)

    def run(self, job: CliJob, progress: "ProgressCallback | None" = None) -> CliResult:
        """Run `job` to completion; raise CliError with the verb's message when it fails."""
        proc = self._popen(job)
        output: list[str] = []
        try:
            for line in proc.stdout:
                self._handleLine(line, output, progress)
            proc.wait()
        except BaseException:
            killProcessTree(proc)
            raise
        finally:
            proc.stdout.close()
        result = CliResult(proc.returncode, output)
        if result.returncode != 0:
            raise CliError(result.errorMessage(job.verb))
        return result

    def start(self, job: CliJob, progress: "ProgressCallback | None", finished: FinishedCallback) -> None:
        """Synchronous `start`: run `job`, then call `finished(result, error)` before returning."""
        try:
            result = self.run(job, progress)
        except CliError as error:
            finished(None, error)
            return
        finished(result, None)

    def cancel(self) -> None:
        """Nothing to cancel: `run` returns only when the verb has ended."""

    def isRunning(self) -> bool:
        return False


class QtProcessRunner(SubprocessRunner):
    """Runs a verb in the background of the Slicer GUI; one job at a time."""

    POLL_INTERVAL_MS = 100
    asynchronous = True

    def __init__(self, python: "str | None" = None, workingDirectory: "str | Path | None" = None):
        super().__init__(python, workingDirectory)
        self._proc = None
        self._timer = None
        self._lines: queue.Queue = queue.Queue()
        self._cancelled = False

    def isRunning(self) -> bool:
        return self._proc is not None

    def start(self, job: CliJob, progress: "ProgressCallback | None", finished: FinishedCallback) -> None:
        """Start `job`; `finished(result, error)` is called on the GUI thread when it ends."""
        import qt

        if self.isRunning():
            raise CliError("Another HCCFusion step is still running: wait for it or cancel it first.")
        self._cancelled = False
        self._output: list[str] = []
        self._job, self._progress, self._finished = job, progress, finished
        self._proc = self._popen(job)
        threading.Thread(target=self._read, args=(self._proc, self._lines), daemon=True).start()
        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._poll)
        self._timer.start()

    @staticmethod
    def _read(proc, lines: queue.Queue) -> None:
        for line in proc.stdout:
            lines.put(line)
        proc.stdout.close()
        lines.put(None)  # end of output

    def _poll(self) -> None:
        ended = False
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                ended = True
                break
            self._handleLine(line, self._output, self._progress)
        if ended:
            self._complete()

    def _complete(self) -> None:
        self._timer.stop()
        proc, self._proc = self._proc, None
        result = CliResult(proc.wait(), self._output)
        error = None
        if self._cancelled:
            error = CancelledError(f"'hccfusion {self._job.verb}' was cancelled; nothing was loaded into the scene.")
        elif result.returncode != 0:
            error = CliError(result.errorMessage(self._job.verb))
        self._finished(result, error)

    def cancel(self) -> None:
        """Kill the running verb and all its children; `finished` then reports a CancelledError."""
        if self._proc is not None:
            self._cancelled = True
            killProcessTree(self._proc)


class _LineSink(io.TextIOBase):
    """A text stream that hands each complete line to `handle` (stdout/stderr of an in-process verb)."""

    def __init__(self, handle: Callable[[str], None]):
        super().__init__()
        self._handle, self._pending = handle, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        for line in lines:
            self._handle(line)
        return len(text)

    def flush(self) -> None:
        if self._pending:
            line, self._pending = self._pending, ""
            self._handle(line)


class InProcessRunner(SubprocessRunner):
    """Runs a verb in this process by calling `HCCFusionLib.cli.main(argv)` (same protocol, same output parsing):
    fast logic tests and scripts; no process to cancel, and a crash of the verb is a crash of the caller."""

    def run(self, job: CliJob, progress: "ProgressCallback | None" = None) -> CliResult:
        from HCCFusionLib import cli

        argv = job.command("python")[3:]  # drop "python -m HCCFusionLib.cli"
        log.info("Running in-process: hccfusion %s", " ".join(argv[2:]))
        output: list[str] = []
        # no echo: the verb's lines are this process's own log already, and logging them again while its root
        # handler writes into the sink (a script without logging set up) would recurse
        sink = _LineSink(lambda line: self._handleLine(line, output, progress, echo=False))
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                try:
                    returncode = cli.main(argv)
                except SystemExit as exit_:  # argparse usage errors
                    returncode = exit_.code if isinstance(exit_.code, int) else 2
        finally:
            sink.flush()
            for handler in set(root.handlers) - set(handlers):  # cli.main's basicConfig wrote to the sink
                root.removeHandler(handler)
            root.setLevel(level)
        result = CliResult(int(returncode or 0), output)
        if result.returncode != 0:
            raise CliError(result.errorMessage(job.verb))
        return result
