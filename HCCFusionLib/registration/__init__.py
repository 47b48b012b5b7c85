"""Data-level fusion: register every series to a reference, resample onto its grid, normalise, stack.

`register(fixed, moving, ...)` aligns one pair; `register_study(study, ...)` a whole study; `stack(study)`
turns co-registered series into one multi-channel image. Transforms map reference (fixed) points into
the moving series (ITK's resampling convention), so `sitk.Resample(moving, reference, transform)` works.
"""
from .intensity import normalise, stack
from .pair import ENGINES, MODES, PairResult, register
from .study_registration import RegistrationResult, choose_reference, liver_mask, register_study

__all__ = ["ENGINES", "MODES", "PairResult", "RegistrationResult", "choose_reference", "liver_mask", "normalise",
           "register", "register_study", "stack"]
