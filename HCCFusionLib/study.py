"""Study / Series / Phase: what was acquired for one patient, with geometry and clinical data.

A `Study` is a dictionary of named `Series`; each series carries one `Phase` (CT phase, MRI sequence,
CEUS or PET), its SimpleITK image with full geometry, optional masks on the same grid, and free metadata
(how the phase was detected, source files, UIDs). Missing phases are normal: code asks
`study.get(Phase.AP)` and handles `None`.
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import SimpleITK as sitk

from .errors import GeometryError, InputError


class Modality(str, enum.Enum):
    CT = "CT"
    MR = "MR"
    PET = "PT"
    US = "US"


class Phase(str, enum.Enum):
    """Contrast phase (CT) or sequence (MRI) of one series."""

    NC = "NC"  # CT non-contrast
    AP = "AP"  # CT late arterial
    PVP = "PVP"  # CT portal venous
    DP = "DP"  # CT delayed
    T1 = "T1"
    T2 = "T2"
    DWI = "DWI"
    ADC = "ADC"
    DCE = "DCE"  # MRI dynamic contrast, timing unknown
    MR_PRE = "MR_PRE"  # MRI T1 pre-contrast (baseline of the dynamic series)
    MR_AP = "MR_AP"  # MRI arterial phase
    MR_PVP = "MR_PVP"  # MRI portal venous phase
    TP = "TP"  # MRI transitional (gadoxetate) or delayed (extracellular agent) phase, 2-5 min
    HBP = "HBP"  # MRI hepatobiliary phase (Gd-EOB-DTPA)
    CEUS = "CEUS"
    PET = "PET"

    @property
    def modality(self) -> Modality:
        if self in (Phase.NC, Phase.AP, Phase.PVP, Phase.DP):
            return Modality.CT
        if self is Phase.CEUS:
            return Modality.US
        if self is Phase.PET:
            return Modality.PET
        return Modality.MR

    @classmethod
    def parse(cls, text: "str | Phase") -> "Phase":
        """Phase from its code or a common name ("arterial", "portal venous", "hepatobiliary", ...)."""
        if isinstance(text, Phase):
            return text
        key = str(text).strip().upper().replace("-", " ").replace("_", " ")
        if key in cls.__members__:
            return cls[key]
        for phase, names in _PHASE_NAMES.items():
            if key in names:
                return phase
        raise InputError(
            f"Unknown phase/sequence '{text}': use one of {', '.join(p.value for p in cls)} "
            "(or a common name such as 'arterial', 'portal venous', 'delayed', 'hepatobiliary')."
        )


_PHASE_NAMES = {
    Phase.NC: {"NON CONTRAST", "NONCONTRAST", "PLAIN", "NATIVE", "UNENHANCED", "PRE", "PRECONTRAST"},
    Phase.AP: {"ARTERIAL", "LATE ARTERIAL", "HAP", "LAP", "ART"},
    Phase.PVP: {"PORTAL", "PORTAL VENOUS", "VENOUS", "PV", "PORTAL VEIN"},
    Phase.DP: {"DELAYED", "EQUILIBRIUM", "TRANSITIONAL", "LATE", "DELAY"},
    Phase.HBP: {"HEPATOBILIARY", "HEPATOBILIARY PHASE", "HB", "EOB"},
    Phase.DWI: {"DIFFUSION", "DIFFUSION WEIGHTED"},
    Phase.PET: {"PT", "FDG", "PET CT", "SUV"},
    Phase.CEUS: {"US", "CONTRAST ULTRASOUND"},
    Phase.MR_PRE: {"MR PRE", "MRI PRE CONTRAST", "T1 PRE"},
    Phase.MR_AP: {"MR AP", "MRI ARTERIAL"},
    Phase.MR_PVP: {"MR PVP", "MRI PORTAL VENOUS"},
    Phase.TP: {"MRI TRANSITIONAL", "MRI DELAYED"},
}
#: MRI dynamic (T1 post-contrast) phases in acquisition order, the pre-contrast baseline first.
MR_DYNAMIC = (Phase.MR_PRE, Phase.MR_AP, Phase.MR_PVP, Phase.TP, Phase.HBP)

#: Label values of a study segmentation (one label map, same grid as the series it belongs to).
#: Abdominal soft-tissue CT window in HU as (width, level): the one source for display, key images and
#: intensity normalisation (`ct_window_range` gives it as (low, high)).
CT_WINDOW = (400.0, 40.0)


def ct_window_range(window: tuple[float, float] = CT_WINDOW) -> tuple[float, float]:
    """A (width, level) window as (low, high) HU."""
    width, level = window
    return level - width / 2, level + width / 2


LABELS = {"background": 0, "liver": 1, "tumour": 2, "spleen": 3, "portal_vein": 4}

ETIOLOGIES = ("HBV", "HCV", "NASH", "alcohol", "other")
ASCITES_LEVELS = ("none", "mild", "moderate-severe")
ENCEPHALOPATHY_LEVELS = ("none", "grade1-2", "grade3-4")
#: Physiologically possible range (inclusive) and unit of each numeric Clinical field; a manifest value outside is
#: refused (usually a unit mix-up, e.g. albumin in g/L or bilirubin in umol/L).
CLINICAL_RANGES = {
    "afp": (0.0, 1e7, "ng/mL"), "bilirubin": (0.05, 60.0, "mg/dL"), "albumin": (0.5, 7.0, "g/dL"),
    "inr": (0.5, 15.0, ""), "tumour_number": (0, 200, ""), "tumour_size_mm": (0.0, 400.0, "mm"),
    "performance_status": (0, 4, "ECOG"), "age": (0.0, 120.0, "years"),
}
_INTEGER_FIELDS = ("tumour_number", "performance_status")
_CHOICES = {"ascites": ASCITES_LEVELS, "encephalopathy": ENCEPHALOPATHY_LEVELS, "etiology": ETIOLOGIES}


@dataclass
class Clinical:
    """Clinical variables of one patient; every field is optional (None = not known)."""

    afp: float | None = None  # ng/mL
    bilirubin: float | None = None  # total, mg/dL
    albumin: float | None = None  # g/dL
    inr: float | None = None
    ascites: str | None = None  # "none" | "mild" | "moderate-severe"
    encephalopathy: str | None = None  # "none" | "grade1-2" | "grade3-4"
    tumour_number: int | None = None
    tumour_size_mm: float | None = None  # largest lesion, longest diameter
    etiology: str | None = None  # one of ETIOLOGIES
    center: str | None = None
    performance_status: int | None = None  # ECOG 0-4
    vascular_invasion: bool | None = None  # macrovascular (portal) invasion on imaging (BCLC)
    extrahepatic_spread: bool | None = None  # nodal or distant metastases (BCLC)
    age: float | None = None
    sex: str | None = None

    def __post_init__(self):
        if self.etiology is not None and self.etiology not in ETIOLOGIES:
            raise InputError(f"Unknown etiology '{self.etiology}': use one of {', '.join(ETIOLOGIES)}.")

    @classmethod
    def from_dict(cls, values: dict | None) -> "Clinical":
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"Unknown clinical variable(s) {unknown}: known ones are {sorted(known)}.")
        for name, value in values.items():
            if value is not None:
                _check_clinical_value(name, value)
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_clinical_value(name: str, value) -> None:
    """Refuse a clinical value of the wrong type or outside its physiological range, naming field, value and range."""
    if name in CLINICAL_RANGES:
        lo, hi, unit = CLINICAL_RANGES[name]
        integral = name in _INTEGER_FIELDS
        kind = "a whole number" if integral else "a number"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                integral and lo <= value <= hi and value != int(value)):
            raise InputError(f"Clinical value {name}={value!r} is not {kind}: fix it (allowed {lo:g}-{hi:g}"
                             f"{' ' + unit if unit else ''}).")
        if not lo <= value <= hi:  # NaN too
            raise InputError(f"Clinical value {name}={value!r} is out of range: allowed {lo:g}-{hi:g}"
                             f"{' ' + unit if unit else ''}; fix the value (check its unit).")
    elif name in _CHOICES:
        choices = _CHOICES[name]
        if not isinstance(value, str) or value.strip().lower() not in [c.lower() for c in choices]:
            raise InputError(f"Clinical value {name}={value!r} is not allowed: use one of {', '.join(choices)}.")
    elif name in ("vascular_invasion", "extrahepatic_spread"):
        if not isinstance(value, bool):
            raise InputError(f"Clinical value {name}={value!r} is not true/false: use true or false (JSON/YAML).")
    elif not isinstance(value, str):  # center, sex
        raise InputError(f"Clinical value {name}={value!r} is not text: give it as a string.")


@dataclass
class Series:
    """One acquired image (a CT phase or MRI sequence) with its own geometry."""

    name: str
    phase: Phase
    image: sitk.Image
    modality: Modality | None = None
    masks: dict[str, sitk.Image] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.phase = Phase.parse(self.phase)
        self.modality = Modality(self.modality) if self.modality is not None else self.phase.modality
        if self.image.GetDimension() != 3:
            raise GeometryError(
                f"Series '{self.name}' is {self.image.GetDimension()}D: HCCFusion needs 3D volumes "
                "(load the whole series, not a single slice)."
            )
        for key, mask in self.masks.items():
            check_same_grid(self.image, mask, f"mask '{key}' of series '{self.name}'")

    def add_mask(self, key: str, mask: sitk.Image) -> None:
        check_same_grid(self.image, mask, f"mask '{key}' of series '{self.name}'")
        self.masks[key] = mask

    def describe(self) -> dict:
        size = self.image.GetSize()
        spacing = self.image.GetSpacing()
        return {
            "series": self.name,
            "phase": self.phase.value,
            "modality": self.modality.value,
            "size": "x".join(str(s) for s in size),
            "spacing_mm": "x".join(f"{s:.3g}" for s in spacing),
            "masks": ",".join(sorted(self.masks)) or "-",
            "detected_by": self.meta.get("phase_reason", "given"),
            "confidence": self.meta.get("phase_confidence", 1.0),
        }


@dataclass
class Study:
    """All series of one patient at one time point, plus clinical data."""

    study_id: str
    series: dict[str, Series] = field(default_factory=dict)
    clinical: Clinical = field(default_factory=Clinical)
    meta: dict = field(default_factory=dict)

    def add(self, series: Series) -> Series:
        if series.name in self.series:
            raise InputError(f"Study '{self.study_id}' already has a series named '{series.name}'.")
        self.series[series.name] = series
        return series

    def __iter__(self) -> Iterator[Series]:
        return iter(self.series.values())

    def __len__(self) -> int:
        return len(self.series)

    def __getitem__(self, key: "str | Phase") -> Series:
        found = self.get(key)
        if found is None:
            raise InputError(
                f"Study '{self.study_id}' has no series '{getattr(key, 'value', key)}'; "
                f"it has: {', '.join(self.series) or 'none'}."
            )
        return found

    def get(self, key: "str | Phase") -> Series | None:
        """Series by name, or the first series of a phase (accepts Phase or its code/name)."""
        if isinstance(key, str) and key in self.series:
            return self.series[key]
        try:
            phase = Phase.parse(key)
        except InputError:
            return None
        return next((s for s in self.series.values() if s.phase is phase), None)

    @property
    def phases(self) -> list[Phase]:
        return [s.phase for s in self.series.values()]

    def summary(self) -> list[dict]:
        return [s.describe() for s in self.series.values()]


def same_grid(a: sitk.Image, b: sitk.Image, tol: float = 1e-4) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=tol)
    )


def check_same_grid(image: sitk.Image, mask: sitk.Image, what: str) -> None:
    """Raise a GeometryError explaining the difference when `mask` is not on `image`'s grid."""
    if same_grid(image, mask):
        return
    raise GeometryError(
        f"The {what} is on a different grid than its image "
        f"(size {mask.GetSize()} vs {image.GetSize()}, spacing {np.round(mask.GetSpacing(), 4).tolist()} vs "
        f"{np.round(image.GetSpacing(), 4).tolist()}, origin {np.round(mask.GetOrigin(), 3).tolist()} vs "
        f"{np.round(image.GetOrigin(), 3).tolist()}): resample the mask onto the image "
        "(nearest neighbour) or export it from the same series."
    )
