"""`_` for user-facing strings: Slicer's translator in the application, the text itself elsewhere (slicer-core)."""
try:
    from slicer.i18n import tr as _
except ImportError:  # the slicer-core wheel has no i18n
    def _(text: str) -> str:
        return text

__all__ = ["_"]
