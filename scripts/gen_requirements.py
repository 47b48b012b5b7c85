"""Generate HCCFusion/Resources/requirements.txt from pyproject.toml (the one source of version pins).

The Slicer glue (HCCFusion/HCCFusionSlicer/install.py) reads the generated file: one `# [stage]` header per
install stage, named after the pyproject extra it comes from ("core" is `project.dependencies`).
Run `python scripts/gen_requirements.py` after changing a pin; Testing/test_ui.py checks the file is current.
"""
from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"
OUTPUT = ROOT / "HCCFusion" / "Resources" / "requirements.txt"
#: Extras installed into Slicer's Python, in this order (elastix: SlicerElastix; report: PDF only, optional).
SLICER_EXTRAS = ("seg", "radiomics", "fusion", "dicom", "nnunet")
#: Installed on demand only, when the panel picks that engine.
ON_DEMAND = ("nnunet",)
#: Slicer ships these; torch comes from the PyTorch extension: never listed, so pip can never replace them.
SLICER_OWNS = {"numpy", "simpleitk", "torch"}
#: Packages the glue itself needs (process tree kill), taken with their pin from another extra.
CORE_FROM_EXTRAS = {"psutil": "dev"}


def _name(requirement: str) -> str:
    return re.split(r"[=<>\[;\s]", requirement, maxsplit=1)[0].strip().lower()


def _expand(extras: dict, extra: str) -> list[str]:
    """Requirement lines of an extra, with `hccfusion[a,b]` self-references replaced by those extras' lines."""
    lines = []
    for requirement in extras[extra]:
        if requirement.startswith("hccfusion["):
            for inner in requirement[len("hccfusion["):-1].split(","):
                lines += [r for r in _expand(extras, inner.strip()) if r not in lines]
        elif requirement not in lines:
            lines.append(requirement)
    return lines


def stages(pyproject: Path = PYPROJECT) -> dict[str, tuple[list[str], bool]]:
    """Install stage (pyproject extra name, plus "core") → (pinned lines for Slicer, whether it needs torch)."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    core = [r for r in project["dependencies"] if _name(r) not in SLICER_OWNS]
    core += [r for name, extra in CORE_FROM_EXTRAS.items() for r in extras[extra] if _name(r) == name]
    result = {"core": (core, False)}
    for extra in SLICER_EXTRAS:
        lines = _expand(extras, extra)
        result[extra] = ([r for r in lines if _name(r) not in SLICER_OWNS], any(_name(r) == "torch" for r in lines))
    return result


def render(pyproject: Path = PYPROJECT) -> str:
    out = ["# GENERATED from pyproject.toml by scripts/gen_requirements.py: do not edit by hand.",
           "# Python packages HCCFusion installs into Slicer's Python on first use (after asking the user),",
           "# one section per install stage (named after the pyproject extra). Not listed on purpose: SimpleITK and",
           "# numpy (Slicer ships them) and torch (installed by the PyTorch extension, PyTorchUtils).",
           f"# on demand only: {', '.join(ON_DEMAND)}"]
    for stage, (lines, torch) in stages(pyproject).items():
        out.append(f"# [{stage}]" + (" needs torch" if torch else ""))
        out.extend(lines)
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in argv:
        return 0 if OUTPUT.read_text(encoding="utf-8") == text else 1
    OUTPUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
