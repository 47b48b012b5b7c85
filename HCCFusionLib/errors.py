"""One exception family for everything a user can get wrong.

Every message says what was wrong (naming the file or series) and what to do about it.
"""


class HCCFusionError(Exception):
    """Base class: a user-facing error with a message that says what to fix."""


class InputError(HCCFusionError):
    """An input file, folder, table or argument cannot be used as given."""


class GeometryError(HCCFusionError):
    """Images or masks whose grids, directions or overlap do not fit together."""


class DependencyError(HCCFusionError):
    """An optional package needed for this stage is not installed."""


class IntegrityError(HCCFusionError):
    """A model bundle or cached file failed its SHA-256 check, or holds untrusted content."""


class RegistrationError(HCCFusionError):
    """Registration could not run or produced an unusable result."""


class ModelError(HCCFusionError):
    """A model cannot be applied to this input (channels, phases, features, labels)."""


class QualityError(HCCFusionError):
    """A stage ran but its result failed a quality check (e.g. a segmentation with no liver); its output is kept
    for review."""


class PacsError(HCCFusionError):
    """The configured PACS could not be reached or refused a request."""


def require(module: str, extra: str):
    """Import an optional dependency or raise a DependencyError naming the pip extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise DependencyError(
            f"'{module}' is needed for this step but is not installed: "
            f"run `pip install 'hccfusion[{extra}]'`."
        ) from exc
