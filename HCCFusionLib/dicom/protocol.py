"""Acquisition-protocol QC from DICOM headers: one row per series, outliers flagged per site.

    table = protocol_table({"site A": [folder, ...], ...})   # or protocol_qc("cohort.csv")
    table[table.outlier]

Columns: site, study, series_uid, modality, manufacturer, model, kvp, slice_thickness_mm, pixel_spacing_mm,
kernel, contrast_agent, contrast_delay_s (AcquisitionTime - ContrastBolusStartTime), tube_current_ma,
field_strength_t, slices, description, then `flags` (why, ';'-separated) and `outlier`.

Flags, per site and modality (a site's own protocol is the reference, so each centre is judged against itself):
- numeric (kVp, slice thickness, pixel spacing, contrast delay, tube current, field strength): robust z =
  0.6745 (x - median) / MAD above `z_limit` (Iglewicz & Hoaglin); when the site's MAD is 0 (one protocol), any
  value other than the site's median is flagged;
- categorical (manufacturer, model, kernel): a value used by fewer than `rare_fraction` of the site's series;
- rules: slice thickness above 5 mm (LI-RADS v2018 technique), CT kVp outside 70-140, a missing kVp, kernel or
  slice thickness on CT, contrast given without a bolus start time (no timing to check).
A site needs at least `min_series` series of a modality for the per-site statistics; the rules always apply.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError

log = logging.getLogger(__name__)

NUMERIC = ("kvp", "slice_thickness_mm", "pixel_spacing_mm", "contrast_delay_s", "tube_current_ma", "field_strength_t")
CATEGORICAL = ("manufacturer", "model", "kernel")
MAX_SLICE_MM = 5.0  # LI-RADS v2018 CT/MRI technique: slices of 5 mm or thinner
CT_KVP_RANGE = (70.0, 140.0)


def _tm_seconds(value) -> float:
    """DICOM TM ('HHMMSS.FFFFFF', 'HHMM', ...) as seconds after midnight; NaN when absent or malformed."""
    text = str(value or "").strip().replace(":", "")
    if not text or not text.split(".")[0].isdigit():
        return np.nan
    whole, _, fraction = text.partition(".")
    whole = whole.ljust(6, "0")
    return int(whole[:2]) * 3600 + int(whole[2:4]) * 60 + int(whole[4:6]) + float(f"0.{fraction or 0}")


def _number(ds, tag):
    value = ds.get(tag)
    try:
        return float(value[0] if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue"
                     else value)
    except (TypeError, ValueError, IndexError):
        return np.nan


def _text(ds, tag) -> str:
    value = ds.get(tag)
    if value is None:
        return ""
    if type(value).__name__ == "MultiValue" or isinstance(value, (list, tuple)):
        return "\\".join(str(v).strip() for v in value)
    return str(value).strip()


def series_row(ds, files: int) -> dict:
    """The protocol parameters of one series from one of its headers (pydicom dataset)."""
    start, acquired = _tm_seconds(ds.get("ContrastBolusStartTime")), _tm_seconds(ds.get("AcquisitionTime"))
    delay = acquired - start if np.isfinite(start) and np.isfinite(acquired) else np.nan
    if delay < 0:  # acquisition after midnight
        delay += 86400.0
    return {"study": _text(ds, "StudyInstanceUID"), "series_uid": _text(ds, "SeriesInstanceUID"),
            "modality": _text(ds, "Modality"), "manufacturer": _text(ds, "Manufacturer"),
            "model": _text(ds, "ManufacturerModelName"), "kvp": _number(ds, "KVP"),
            "slice_thickness_mm": _number(ds, "SliceThickness"), "pixel_spacing_mm": _number(ds, "PixelSpacing"),
            "kernel": _text(ds, "ConvolutionKernel"), "contrast_agent": _text(ds, "ContrastBolusAgent"),
            "contrast_delay_s": delay, "tube_current_ma": _number(ds, "XRayTubeCurrent"),
            "field_strength_t": _number(ds, "MagneticFieldStrength"), "slices": files,
            "description": _text(ds, "SeriesDescription"), "institution": _text(ds, "InstitutionName")}


def protocol_table(sites: dict, *, z_limit: float = 3.5, rare_fraction: float = 0.2, min_series: int = 4):
    """Protocol rows of every DICOM series under the given paths, `sites`: {site: [file or folder, ...]}."""
    from .read import _series_key, scan_dicom

    rows = []
    for site, paths in sites.items():
        files = []
        for path in map(Path, paths):
            if not path.exists():
                raise InputError(f"'{path}' (site {site}) does not exist: check the path.")
            files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        headers, _ = scan_dicom(files)
        if not headers:
            log.warning("protocol QC: no DICOM file under %s (site %s)", [str(p) for p in paths], site)
        groups: dict[str, list] = {}
        for path, ds in headers:
            if _text(ds, "Modality") in ("SEG", "SR", "RTSTRUCT", "PR", "KO"):
                continue
            groups.setdefault(_series_key(path, ds), []).append(ds)
        rows += [{"site": str(site), **series_row(members[0], len(members))} for members in groups.values()]
    if not rows:
        raise InputError("No DICOM image series found for protocol QC: give folders holding DICOM files.")
    return flag_outliers(pd.DataFrame(rows), z_limit=z_limit, rare_fraction=rare_fraction, min_series=min_series)


def flag_outliers(table: pd.DataFrame, *, z_limit: float = 3.5, rare_fraction: float = 0.2,
                  min_series: int = 4) -> pd.DataFrame:
    """Add `flags` and `outlier` to a protocol table (see the module docstring for the rules)."""
    flags = {i: _rule_flags(row) for i, row in table.iterrows()}
    for (_site, _modality), group in table.groupby(["site", "modality"]):
        if len(group) < min_series:
            continue
        for column in NUMERIC:
            values = group[column].astype(float)
            known = values.dropna()
            if len(known) < min_series:
                continue
            median = known.median()
            mad = (known - median).abs().median()
            for i, x in values.dropna().items():
                z = 0.6745 * (x - median) / mad if mad > 0 else (np.inf if x != median else 0.0)
                if abs(z) > z_limit:
                    flags[i].append(f"{column} {x:g} vs site median {median:g}"
                                    + (f" (robust z {z:.1f})" if np.isfinite(z) else ""))
        for column in CATEGORICAL:
            shares = group[column].value_counts(normalize=True)
            for i, value in group[column].items():
                if shares[value] < rare_fraction:
                    flags[i].append(f"{column} '{value}' is rare at this site ({shares[value]:.0%} of series; usual "
                                    f"'{shares.index[0]}')")
    out = table.copy()
    out["flags"] = [";".join(flags[i]) for i in table.index]
    out["outlier"] = out["flags"] != ""
    return out


def _rule_flags(row) -> list[str]:
    found = []
    if row.slice_thickness_mm > MAX_SLICE_MM:
        found.append(f"slice thickness {row.slice_thickness_mm:g} mm > {MAX_SLICE_MM:g} mm")
    if row.modality == "CT":
        if np.isfinite(row.kvp) and not CT_KVP_RANGE[0] <= row.kvp <= CT_KVP_RANGE[1]:
            found.append(f"kVp {row.kvp:g} outside {CT_KVP_RANGE[0]:g}-{CT_KVP_RANGE[1]:g}")
        found += [f"{name} missing" for name, missing in (("kVp", not np.isfinite(row.kvp)),
                                                          ("kernel", not row.kernel),
                                                          ("slice thickness", not np.isfinite(row.slice_thickness_mm)))
                  if missing]
    if row.contrast_agent and not np.isfinite(row.contrast_delay_s):
        found.append("contrast given but no bolus start time (timing cannot be checked)")
    return found


def protocol_qc(cohort: "str | Path", out: "str | Path", **options) -> pd.DataFrame:
    """`hccfusion protocol-qc COHORT.csv --out OUT`: OUT/protocol_qc/protocol.csv from a CSV of DICOM folders
    (columns path and site or center; rows of one site are judged together). Returns the table."""
    from ..files import atomic_write
    from ..layout import RunFolder

    base = Path(cohort).parent
    try:
        cohort = pd.read_csv(cohort, dtype=str, keep_default_na=False)
    except Exception as exc:  # pandas raises many types for unreadable files
        raise InputError(f"Cannot read the cohort table '{cohort}' ({exc}): give a CSV with path and site "
                         "columns.") from None
    site = next((c for c in ("site", "center") if c in cohort.columns), None)
    if "path" not in cohort.columns or site is None:
        raise InputError(f"The protocol QC table needs the columns path and site (or center); it has "
                         f"{list(cohort.columns)}.")
    sites: dict[str, list] = {}
    for row in cohort.itertuples():
        sites.setdefault(getattr(row, site), []).append(base / row.path)  # relative paths: from the CSV's folder
    table = protocol_table(sites, **options)
    path = RunFolder(out).protocol_qc
    with atomic_write(path) as tmp:
        table.to_csv(tmp, index=False)
    log.info("protocol QC: %d series, %d flagged -> %s", len(table), int(table.outlier.sum()), path)
    return table
