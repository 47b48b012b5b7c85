"""PET standardised uptake values from DICOM (DICOM PS3.17 SUV annex, QIBA vendor-neutral rule) and per-lesion SUV.

SUVbw = activity concentration (Bq/mL) x body weight (g) / injected dose decayed to the scan start (Bq), in g/mL.
SUL (SUVlbm) replaces the body weight by the lean body mass of Janmahasatian et al. (2005):
LBM = 9270 W / (6680 + 216 BMI) for men, 9270 W / (8780 + 244 BMI) for women (W in kg, BMI in kg/m^2).

Units BQML: the factor above. CNTS: Philips' private SUV scale factor (7053,1000) gives SUVbw. GML: already SUVbw.
Scan start (QIBA): SeriesDate/Time, unless an AcquisitionDate/Time of the series is earlier (series time rewritten
by post-processing), then the earliest acquisition. DecayCorrection START: the dose is decayed from injection to
the scan start; ADMIN: the image is corrected to the injection time, no decay; NONE: the dose is decayed to the
scan start (assumes the series' frames were acquired at once; multi-bed acquisitions then carry up to one bed
time of error).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import SimpleITK as sitk

from .errors import InputError
from .study import check_same_grid

PHILIPS_SUV_FACTOR = (0x7053, 0x1000)
SUV_PEAK_ML = 1.0  # SUVpeak: mean in a 1 cm^3 sphere
#: per-lesion PET column -> unit (join on "lesion" with lesions.LesionTable)
PET_COLUMNS = {"lesion": "id (value in the instance map)", "suv_max": "g/mL (SUVbw)",
               "suv_peak": "g/mL (SUVbw, mean in a 1 mL sphere)", "suv_mean": "g/mL (SUVbw)",
               "sul_max": "g/mL (SUL)", "sul_peak": "g/mL (SUL)", "mtv_ml": "mL", "tlg_g": "g (SUVmean x MTV)",
               "tlr": "ratio (SUVmax / background-liver SUVmean)"}


class PetTagError(InputError):
    """A PET series lacks (or has an unusable) DICOM tag that SUV needs."""


@dataclass(frozen=True)
class SuvFactors:
    """Multiply the stored PET image by `bw` to get SUVbw, by `lbm` to get SUL (None: height/sex unknown)."""

    bw: float
    lbm: float | None
    units: str
    how: str


def lean_body_mass(weight_kg: float, height_m: float, sex: str) -> float:
    """Janmahasatian lean body mass (kg) for sex "M" or "F"."""
    bmi = weight_kg / height_m ** 2
    if sex == "M":
        return 9270.0 * weight_kg / (6680.0 + 216.0 * bmi)
    if sex == "F":
        return 9270.0 * weight_kg / (8780.0 + 244.0 * bmi)
    raise ValueError(f"sex must be 'M' or 'F', got {sex!r}")


def _label(ds) -> str:
    return str(ds.get("SeriesDescription") or ds.get("SeriesNumber") or ds.get("SeriesInstanceUID") or "PET")


def _missing(ds, tag: str, fix: str) -> PetTagError:
    return PetTagError(f"PET series '{_label(ds)}' lacks a usable DICOM tag {tag}, needed for SUV: {fix}")


def _positive(ds, value, tag: str, fix: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _missing(ds, tag, fix) from None
    if not math.isfinite(number) or number <= 0:
        raise _missing(ds, tag, fix)
    return number


def _datetime(date, time) -> datetime | None:
    """DICOM DA + TM (or a DT in `time` when date is None) as a datetime; None when unreadable."""
    text = f"{str(date or '').strip()}{str(time or '').strip()}"
    main, _, frac = text.partition(".")
    main = main.split("+")[0].split("-")[0]
    for fmt in ("%Y%m%d%H%M%S", "%Y%m%d%H%M", "%Y%m%d%H"):
        try:
            value = datetime.strptime(main, fmt)
        except ValueError:
            continue
        return value + timedelta(seconds=float(f"0.{frac[:6]}") if frac.isdigit() else 0.0)
    return None


def scan_start(datasets) -> datetime:
    """QIBA scan reference time: series date/time, or the earliest acquisition date/time if that is earlier."""
    ds = datasets[0]
    series = _datetime(ds.get("SeriesDate"), ds.get("SeriesTime"))
    acquisitions = [t for t in (_datetime(d.get("AcquisitionDate") or d.get("SeriesDate"), d.get("AcquisitionTime"))
                                for d in datasets) if t is not None]
    earliest = min(acquisitions) if acquisitions else None
    if series is None and earliest is None:
        raise _missing(ds, "SeriesDate/SeriesTime (0008,0021/0031)",
                       "re-export the PET series with its series (or acquisition) date and time.")
    if series is None or (earliest is not None and earliest < series):
        return earliest
    return series


def _injection(ds, drug, start: datetime) -> datetime:
    when = _datetime(None, drug.get("RadiopharmaceuticalStartDateTime"))
    if when is None and drug.get("RadiopharmaceuticalStartTime"):
        when = _datetime(start.strftime("%Y%m%d"), drug.get("RadiopharmaceuticalStartTime"))  # scan day
        if when is not None and when > start:  # injected the day before a scan that started after midnight
            when -= timedelta(days=1)
    if when is None:
        raise _missing(ds, "RadiopharmaceuticalStartDateTime (0018,1078) or RadiopharmaceuticalStartTime (0018,1072)",
                       "enter the injection time in the PET series (the scanner console's dose record).")
    return when


def suv_factors(datasets) -> SuvFactors:
    """SUVbw and SUL factors of one PET series from its headers (first = representative; all for the scan start)."""
    ds = datasets[0]
    units = str(ds.get("Units") or "").strip().upper()
    weight = _positive(ds, ds.get("PatientWeight"), "PatientWeight (0010,1030)",
                       "enter the patient's weight in kg in the PET series.")
    lbm_ratio = _lbm_ratio(ds, weight)
    if units == "GML":
        return SuvFactors(1.0, lbm_ratio, units, "Units GML: stored values are SUVbw")
    if units == "CNTS":
        private = ds.get(PHILIPS_SUV_FACTOR)
        factor = _positive(ds, private.value if private is not None else None, "Philips SUV Scale Factor (7053,1000)",
                           "Units CNTS need the Philips SUV scale factor; export the series as BQML instead.")
        return SuvFactors(factor, None if lbm_ratio is None else factor * lbm_ratio, units,
                          "Units CNTS: Philips SUV scale factor (7053,1000)")
    if units != "BQML":
        raise _missing(ds, "Units (0054,1001)", f"it is '{units or 'empty'}'; SUV needs BQML, CNTS (Philips) or GML. "
                       "Re-export the PET series as activity concentration (BQML).")
    drugs = ds.get("RadiopharmaceuticalInformationSequence") or []
    if not drugs:
        raise _missing(ds, "RadiopharmaceuticalInformationSequence (0054,0016)",
                       "re-export the PET series with its radiopharmaceutical (dose, half-life, injection time).")
    drug = drugs[0]
    dose = _positive(ds, drug.get("RadionuclideTotalDose"), "RadionuclideTotalDose (0018,1074)",
                     "enter the injected activity in Bq in the PET series.")
    half_life = _positive(ds, drug.get("RadionuclideHalfLife"), "RadionuclideHalfLife (0018,1075)",
                          "enter the radionuclide half-life in s (F-18: 6586.2 s).")
    correction = str(ds.get("DecayCorrection") or "").strip().upper()
    if correction == "ADMIN":
        decayed, how = dose, "DecayCorrection ADMIN: image decay-corrected to injection"
    elif correction in ("START", "NONE"):
        start = scan_start(datasets)
        elapsed = (start - _injection(ds, drug, start)).total_seconds()
        if elapsed < 0:
            raise _missing(ds, "RadiopharmaceuticalStartDateTime (0018,1078)",
                           f"the injection is {-elapsed:.0f} s after the scan start; correct the injection time.")
        decayed = dose * 2.0 ** (-elapsed / half_life)
        how = f"DecayCorrection {correction}: dose decayed over {elapsed:.0f} s to the scan start"
    else:
        raise _missing(ds, "DecayCorrection (0054,1102)", f"it is '{correction or 'empty'}'; "
                       "it must be START, ADMIN or NONE. Re-export the PET series.")
    bw = weight * 1000.0 / decayed
    return SuvFactors(bw, None if lbm_ratio is None else bw * lbm_ratio, units, how)


def _lbm_ratio(ds, weight: float) -> float | None:
    """LBM / body weight, or None when PatientSize or PatientSex is missing (SUL then not computed)."""
    sex = str(ds.get("PatientSex") or "").strip().upper()
    try:
        height = float(ds.get("PatientSize"))
    except (TypeError, ValueError):
        return None
    if sex not in ("M", "F") or not math.isfinite(height) or height <= 0:
        return None
    if height > 3.0:
        raise _missing(ds, "PatientSize (0010,1020)", f"it is {height:g}, which is not in metres; correct it.")
    return lean_body_mass(weight, height, sex) / weight


def require_sul(factors: SuvFactors, label: str = "PET") -> float:
    """The SUL factor, or a PetTagError naming PatientSize/PatientSex."""
    if factors.lbm is None:
        raise PetTagError(f"PET series '{label}' lacks PatientSize (0010,1020) or PatientSex (0010,0040) (M/F), "
                          "needed for SUL (lean body mass): enter the height in m and the sex in the PET series.")
    return factors.lbm


def scale(image: sitk.Image, factor: float) -> sitk.Image:
    """image x factor as Float32 (geometry kept)."""
    return sitk.Cast(image, sitk.sitkFloat32) * float(factor)


def _sphere_mean(values: np.ndarray, spacing_zyx, ml: float) -> np.ndarray:
    """Mean of `values` over a sphere of `ml` millilitres centred on each voxel (voxel centres inside the sphere)."""
    from scipy import ndimage

    radius = (3.0 * ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    half = [int(radius // s) for s in spacing_zyx]
    grid = np.meshgrid(*[np.arange(-h, h + 1) * s for h, s in zip(half, spacing_zyx)], indexing="ij")
    kernel = (sum(g ** 2 for g in grid) <= radius ** 2).astype(np.float64)
    return ndimage.correlate(values, kernel / kernel.sum(), mode="nearest")


def lesion_suv_table(suv: sitk.Image, lesion_map: sitk.Image, liver: sitk.Image | None = None,
                     sul_factor_over_bw: float | None = None) -> pd.DataFrame:
    """Per-lesion SUVmax, SUVpeak, SUVmean, MTV, TLG, TLR (and SUL max/peak), one row per lesion id.

    `suv`: SUVbw image; `lesion_map`: lesion instances on its grid (lesions.label_lesions); `liver`: liver mask
    (tumours excluded from it here) for the tumour-to-liver ratio; `sul_factor_over_bw`: LBM / weight.
    MTV is the lesion's segmented volume; TLG = SUVmean x MTV.
    """
    check_same_grid(suv, lesion_map, "lesion instance map")
    values = sitk.GetArrayFromImage(suv).astype(np.float64)
    lesions = sitk.GetArrayFromImage(lesion_map)
    voxel_ml = float(np.prod(suv.GetSpacing())) / 1000.0
    liver_mean = math.nan
    if liver is not None:
        check_same_grid(suv, liver, "liver mask")
        background = (sitk.GetArrayFromImage(liver) > 0) & (lesions == 0)
        liver_mean = float(values[background].mean()) if background.any() else math.nan
    peak = _sphere_mean(values, suv.GetSpacing()[::-1], SUV_PEAK_ML) if lesions.any() else values
    rows = []
    for lesion in np.unique(lesions[lesions > 0]):
        inside = lesions == lesion
        v = values[inside]
        row = {"lesion": int(lesion), "suv_max": float(v.max()), "suv_peak": float(peak[inside].max()),
               "suv_mean": float(v.mean()), "mtv_ml": float(v.size * voxel_ml)}
        row["tlg_g"] = row["suv_mean"] * row["mtv_ml"]
        row["tlr"] = row["suv_max"] / liver_mean if liver_mean and math.isfinite(liver_mean) else math.nan
        ratio = math.nan if sul_factor_over_bw is None else sul_factor_over_bw
        row["sul_max"], row["sul_peak"] = row["suv_max"] * ratio, row["suv_peak"] * ratio
        rows.append(row)
    return pd.DataFrame(rows, columns=list(PET_COLUMNS))
