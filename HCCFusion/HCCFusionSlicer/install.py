"""First-use check and installation of the Python packages a stage needs, inside Slicer.

Nothing is installed at import or build time. Before a stage runs, `ensure(stage)` lists what is missing,
asks the user, then installs the pinned versions of Resources/requirements.txt (`slicer.packaging.pip_ensure`
where Slicer has it, else `slicer.util.pip_install`). PyTorch comes only from the PyTorch extension
(PyTorchUtils). Slicer's SimpleITK and numpy (and an installed torch) are pinned by a constraints file, so
pip can never replace them.
"""
import importlib.metadata
import logging
import sys
import tempfile
from pathlib import Path

import slicer

from HCCFusionLib.errors import DependencyError

from .i18n import _

REQUIREMENTS_FILE = Path(__file__).resolve().parents[1] / "Resources" / "requirements.txt"
PROTECTED = ("SimpleITK", "numpy", "torch")


def _readStages(path: Path = REQUIREMENTS_FILE) -> "tuple[dict, set, tuple]":
    """(stage → pinned lines, stages needing torch, on-demand stages) from the generated requirements.txt.

    Stage names are the pyproject extras' names ("core": the base dependencies); scripts/gen_requirements.py
    writes the file from pyproject.toml, the one source of pins.
    """
    stages, torch, onDemand, current = {}, set(), (), None
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line.startswith("# on demand only:"):
            onDemand = tuple(s.strip() for s in line.split(":", 1)[1].split(",") if s.strip())
        elif line.startswith("# ["):
            current = line[3:line.index("]")]
            stages[current] = []
            if line.endswith("needs torch"):
                torch.add(current)
        elif line and not line.startswith("#") and current is not None:
            stages[current].append(line)
    return stages, torch, onDemand


_PINS, _TORCH, ON_DEMAND = _readStages()
#: Pinned requirement lines each install stage needs beyond "core" (stages: pyproject extra names).
STAGES = {stage: ([] if stage == "core" else lines) for stage, lines in _PINS.items()}
CORE = _PINS["core"]


def pinnedRequirements() -> dict:
    """Distribution name (lower case) → pinned requirement line, from Resources/requirements.txt."""
    return {line.split("==")[0].strip().lower(): line for lines in _PINS.values() for line in lines}


def installedVersion(distribution: str) -> "str | None":
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def missingRequirements(stage: str) -> list:
    """Pinned requirements of `stage` whose package is absent or at another version (torch excluded)."""
    missing = []
    for wanted in CORE + STAGES.get(stage, []):
        if wanted not in missing and installedVersion(wanted.split("==")[0]) != wanted.split("==")[1]:
            missing.append(wanted)
    return missing


def torchMissing(stage: str) -> bool:
    return stage in _TORCH and installedVersion("torch") is None


def constraintsFile() -> Path:
    """A pip constraints file pinning Slicer's own SimpleITK/numpy (and torch, once installed)."""
    lines = [f"{name}=={version}" for name in PROTECTED if (version := installedVersion(name))]
    path = Path(tempfile.gettempdir()) / "HCCFusion-constraints.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def ensure(stage: str, ask: bool = True) -> bool:
    """Make sure the packages of `stage` are installed; False if the user declined."""
    missing, needTorch = missingRequirements(stage), torchMissing(stage)
    if not missing and not needTorch:
        return True
    listed = missing + (["torch (through the PyTorch extension)"] if needTorch else [])
    text = _("HCCFusion needs these Python packages for this step:") + "\n\n" + "\n".join(listed) + "\n\n" + _(
        "Install them now into Slicer's Python? This can take several minutes; SimpleITK and numpy of Slicer "
        "are kept as they are.")
    if ask and not slicer.util.confirmOkCancelDisplay(text, windowTitle=_("HCCFusion: install Python packages")):
        return False
    if needTorch:
        installTorch()
    if missing:
        installPinned(missing)
    return True


def installTorch() -> None:
    try:
        import PyTorchUtils
    except ImportError:
        raise DependencyError(_("PyTorch is installed through the 'PyTorch' extension: install it from the "
                                "Extensions Manager, restart Slicer, and try again.")) from None
    torchLogic = PyTorchUtils.PyTorchUtilsLogic()
    if not torchLogic.torchInstalled() and torchLogic.installTorch(askConfirmation=False) is None:
        raise DependencyError(_("PyTorch could not be installed: see the Python console for pip's message."))


def installPinned(requirements: list) -> None:
    """Install pinned requirements with the protected packages constrained; offer a restart when needed."""
    constraints = constraintsFile()
    packaging = getattr(slicer, "packaging", None)
    if packaging is not None and hasattr(packaging, "pip_ensure"):
        packaging.pip_ensure(requirements, constraints=str(constraints), prompt_install=False,
                             requester="HCCFusion")  # prompts for a restart itself when one is needed
        return
    alreadyImported = [r for r in requirements if IMPORT_NAMES.get(r.split("==")[0], r.split("==")[0]) in sys.modules]
    slicer.util.pip_install(requirements + ["-c", str(constraints)])
    logging.info("HCCFusion installed: %s", ", ".join(requirements))
    if alreadyImported and slicer.util.confirmYesNoDisplay(
            _("Packages that were already loaded were updated ({names}). Restart Slicer now so the new versions "
              "are used?").format(names=", ".join(alreadyImported))):
        slicer.util.restart()


def report() -> str:
    """Installed / missing state of every optional package, for the Setup section."""
    lines = []
    for stage in STAGES:
        missing = missingRequirements(stage) + (["torch"] if torchMissing(stage) else [])
        lines.append(f"{stage}: " + (_("ready") if not missing else _("missing") + " " + ", ".join(missing)))
    return "\n".join(lines)


class SlicerInstaller:
    """The real `interfaces.Installer`: this module's pinned, ask-first installation inside Slicer."""

    def stages(self) -> tuple:
        return tuple(STAGES)

    def onDemand(self) -> tuple:
        return ON_DEMAND

    def ensure(self, stage: str, ask: bool = True) -> bool:
        return ensure(stage, ask)

    def report(self) -> str:
        return report()
