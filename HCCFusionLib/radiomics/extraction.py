"""Study extraction: every series × region of a study, in parallel processes, cached by content hash, as a tidy
long table, a wide row, kinetics, definitions and diagnostics (see the package doc)."""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import GeometryError, InputError
from ..progress import scaled, silent
from ..regions import DEFAULT_MARGIN_MM, DEFAULT_REGIONS, DEFAULT_RINGS_MM, body_mask, build_regions
from ..study import LABELS, Modality, Series, Study, check_same_grid, same_grid
from .features import CROP_TOLERANCE, LOG_MARGIN_SIGMAS, image_hash
from .kinetics import definitions_table, kinetic_features, region_statistics
from .parallel import TaskRunner, pack_image, pack_mask
from .presets import Preset, column_name, expected_keys, preset_for, versions
from .torch_backend import TorchRunner, check_backend, settings_note

LONG_COLUMNS = ["study", "series", "phase", "modality", "region", "image_type", "feature_class", "feature",
                "value", "reason"]


@dataclass
class Extraction:
    """Results of one study: tidy long table, wide row, kinetics, definitions and diagnostics."""

    study_id: str
    long: "object"  # pandas DataFrame, LONG_COLUMNS
    kinetics: "object"  # pandas DataFrame
    diagnostics: dict

    @property
    def wide(self):
        """One row (index = study) with radiomic and kinetic columns, names as in the module doc."""
        import pandas as pd

        cols = {column_name(r.phase_key, r.region, r.image_type, r.feature_class, r.feature): r.value
                for r in self.long.assign(phase_key=self.long["wide_phase"]).itertuples()}
        cols.update({f"{r.phase}__{r.region}__kinetic_{r.feature}": r.value for r in self.kinetics.itertuples()})
        return pd.DataFrame([cols], index=pd.Index([self.study_id], name="study"))

    @property
    def feature_card(self) -> dict:
        """{"radiomics <preset>": its preprocessing and discretisation choices} for the report's card."""
        return feature_card(self.diagnostics)

    @property
    def failures(self):
        """Rows of the long table without a value, with their reason."""
        return self.long[self.long["reason"] != ""]

    def save(self, out: "str | Path") -> Path:
        """Write OUT/radiomics/{features_long,features_wide,kinetics,definitions}.csv + diagnostics.json."""
        folder = Path(out) / "radiomics"
        write_outputs(folder, self.long[LONG_COLUMNS], self.wide, self.kinetics, self.diagnostics)
        return folder

    @classmethod
    def read(cls, out: "str | Path", study: Study) -> "Extraction":
        """The Extraction that `save(out)` wrote, for `study` (its series give the wide columns' phase prefixes), for
        `run --resume`: floats come back bit for bit (pandas 3's parser), text as written. An incomplete folder is
        an InputError."""
        import pandas as pd

        folder = Path(out) / "radiomics"
        if not outputs_complete(folder):
            raise InputError(f"'{folder}' holds no complete radiomics extraction: rerun the radiomics stage.")

        def table(name):  # text columns as written, "value" as float64 ("" = NaN)
            text = {c: str for c in pd.read_csv(folder / name, nrows=0).columns if c != "value"}
            return pd.read_csv(folder / name, dtype=text, keep_default_na=False,
                               na_values={"value": [""]}).astype({"value": float})
        long, kinetics = table("features_long.csv"), table("kinetics.csv")
        long["wide_phase"] = long["series"].map(_wide_phase(study))
        diagnostics = json.loads((folder / "diagnostics.json").read_text())
        diagnostics.pop("complete")
        return cls(str(study.study_id), long, kinetics, diagnostics)


def feature_card(diagnostics: dict) -> dict:
    """{"radiomics <preset>": its card's choices} from an extraction's diagnostics (or its diagnostics.json)."""
    return {f"radiomics {key}": "; ".join(f"{k}: {v}" for k, v in p.get("card", {}).items() if k != "preset")
            for key, p in diagnostics.get("presets", {}).items()}


def write_outputs(folder: Path, long, wide, kinetics, diagnostics: dict, extra: dict | None = None) -> None:
    """All radiomics outputs (+ `extra` {file name: DataFrame}) into `folder`, replaced only once all are written."""
    import shutil
    import tempfile

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".part", dir=folder.parent))
    try:
        long.to_csv(tmp / "features_long.csv", index=False)
        wide.to_csv(tmp / "features_wide.csv")
        kinetics.to_csv(tmp / "kinetics.csv", index=False)
        definitions_table().to_csv(tmp / "definitions.csv", index=False)
        for name, frame in (extra or {}).items():
            frame.to_csv(tmp / name, index=frame.index.name is not None)
        (tmp / "diagnostics.json").write_text(json.dumps({**diagnostics, "complete": True}, indent=1, default=str))
        old = None
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old.{time.time_ns()}")
            folder.rename(old)
        tmp.rename(folder)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def extraction_settings(crop_filters: bool) -> dict:
    """How the features were computed, for diagnostics.json: exact (bit-identical to pyradiomics' naive loop) or the
    tolerance mode (`crop_filters`), with its stated tolerance."""
    if not crop_filters:
        return {"mode": "exact", "max_rel_diff_vs_pyradiomics": 0.0}
    return {"mode": "crop_filters", "max_rel_diff_vs_pyradiomics": CROP_TOLERANCE,
            "exact": ["Original", "shape", "Wavelet"], "within_tolerance": ["LoG"],
            "log_margin_sigmas": LOG_MARGIN_SIGMAS,
            "note": "LoG per sigma on each region group's box + margin; bin flips are possible (see features.bin_flips)"}


def outputs_complete(folder: "str | Path") -> bool:
    """True when `folder` (OUT/radiomics) holds a finished extraction (used by cohort resume)."""
    folder = Path(folder)
    names = ("features_long.csv", "features_wide.csv", "kinetics.csv", "definitions.csv", "diagnostics.json")
    if not all((folder / n).is_file() for n in names):
        return False
    try:
        return bool(json.loads((folder / "diagnostics.json").read_text()).get("complete"))
    except (OSError, ValueError):
        return False


def label_map(series: Series, segmentation: sitk.Image | None, resample_masks: bool,
               study: Study | None = None) -> tuple:
    """(label map on the series grid or None, how it was obtained or why it is missing).

    Order: the `segmentation` given; the series' own ``masks["labels"]``; the labels of another series of the study
    on the same grid (the reference first: a registered study often carries them once); with `resample_masks`, the
    segmentation or the reference labels resampled to the series (nearest neighbour). Otherwise a GeometryError-
    style reason for the series (its rows get NaN with that reason; the run goes on).
    """
    if segmentation is not None and same_grid(series.image, segmentation):
        return segmentation, "segmentation given"
    if "labels" in series.masks:
        note = " (the segmentation given is on another grid)" if segmentation is not None else ""
        return series.masks["labels"], "series' own labels" + note
    others = [s for s in (study or []) if "labels" in s.masks and s is not series]
    others.sort(key=lambda s: s.name != (study.meta.get("reference") if study else None))
    for other in others:
        if same_grid(series.image, other.masks["labels"]):
            return other.masks["labels"], f"labels of series '{other.name}' (same grid)"
    source = segmentation if segmentation is not None else (others[0].masks["labels"] if others else None)
    if source is None:
        return None, (f"no segmentation for series '{series.name}': pass --segmentation SEG or give the series "
                      'masks {"labels": …} in study.json')
    if resample_masks:
        resampled = sitk.Resample(source, series.image, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                                  source.GetPixelID())
        return resampled, "labels resampled to the series grid (nearest neighbour)"
    what = "segmentation" if segmentation is not None else f"labels of series '{others[0].name}'"
    return None, (f"GeometryError: {_grid_problem(series.image, source, f'{what} used for series {series.name!r}')}"
                  " Better: register the study first (hccfusion register …, then extract OUT/registration), "
                  "or pass --resample-masks.")


def _grid_problem(image: sitk.Image, mask: sitk.Image, what: str) -> str:
    try:
        check_same_grid(image, mask, what)
    except GeometryError as exc:
        return str(exc)
    return ""


def _wide_phase(study: Study) -> dict:
    """Column prefix per series: its phase code, or the series name when two series share a phase."""
    counts = {}
    for s in study:
        counts[s.phase.value] = counts.get(s.phase.value, 0) + 1
    return {s.name: s.phase.value if counts[s.phase.value] == 1 else s.name for s in study}


def extract_study(study: Study, segmentation: sitk.Image | None = None, *, regions=DEFAULT_REGIONS,
                  rings_mm=DEFAULT_RINGS_MM, margin_mm: float = DEFAULT_MARGIN_MM, clip: str = "liver",
                  presets: dict | None = None, image_types=None, workers: int = 2, cache_dir=None,
                  resample_masks: bool = False, label_values: dict | None = None, lesions: sitk.Image | None = None,
                  progress=None, crop_filters: bool = False, backend: str = "pyradiomics",
                  device: str | None = None) -> Extraction:
    """Radiomics, kinetics and diagnostics of every series × region of a study (see the package doc).

    `presets`: {series name | phase code | modality code | "*": preset name/file/Preset}; default per modality.
    `image_types`: subset of ("Original", "LoG", "Wavelet") overriding the presets'. `workers`: processes
    (1 = in this process). `cache_dir`: folder of cached per-(series, region) results. `lesions`: the
    segmentation's lesion instance map (`lesions.label_lesions`), used for the per-lesion regions of series on
    its grid. `crop_filters`: the tolerance mode: every filter on its regions' crops (LoG per sigma on the box + 10
    sigma; LoG features within `features.CROP_TOLERANCE` relative of the naive loop, Original, shape and wavelet
    unchanged; see `features.bin_flips`) and the B-spline resampling on the box plus the filters' margin
    (bit-identical; `cropped`); diagnostics["extraction"] states the mode and tolerance, and the preprocessed grid
    is then the crop's. `backend`: "pyradiomics", or "torch" (`torch_backend`: filters, first-order and texture
    features in torch on `device`, CPU or CUDA; within `torch_backend.TOLERANCE` of pyradiomics).
    """
    import pandas as pd

    check_backend(backend, crop_filters)
    progress = progress or silent
    started = time.perf_counter()
    wide_phase = _wide_phase(study)
    diag = {"study": study.study_id, "versions": versions(), "presets": {}, "series": {},
            "regions": {"groups": list(regions), "rings_mm": [list(r) for r in rings_mm], "margin_mm": margin_mm,
                        "clip": clip},
            "extraction": {**extraction_settings(crop_filters), **settings_note(backend, device)}}
    shape_groups, kinetic_stats, series_info, series_cache_keys = {}, {}, {}, {}
    long_rows, cache_hits = [], {}
    region_cache = {}
    runner = (TorchRunner(workers, scaled(progress, 0.05, 0.95), device) if backend == "torch"
              else TaskRunner(workers, scaled(progress, 0.05, 0.95)))
    with runner:  # series start while the next is prepared
        for i, series in enumerate(study):
            progress(0.05 * i / max(len(study), 1), f"regions of {series.name}")
            preset = preset_for(series, presets)
            if image_types:
                preset = preset.with_image_types(image_types)
            diag["presets"][preset.key] = {**preset.as_dict(), "sha256": preset.sha256(), "card": preset.card()}
            expected = expected_keys(preset)
            info = {"phase": series.phase.value, "modality": series.modality.value, "preset": preset.key,
                    "image_sha256": image_hash(series.image), "regions": {}}
            series_info[series.name] = (preset, expected)
            diag["series"][series.name] = info
            labels, how = label_map(series, segmentation, resample_masks, study)
            info["labels"] = how
            if labels is None:
                long_rows += _failed_rows(study.study_id, series, wide_phase, "all", expected, how)
                continue
            body = None
            liver_value = {**LABELS, **(label_values or {})}["liver"]
            has_liver = bool((sitk.GetArrayViewFromImage(labels) == liver_value).any())
            if series.modality is Modality.CT and (clip == "body" or (clip == "liver" and not has_liver)):
                body = body_mask(series.image)
            instances = lesions if lesions is not None and same_grid(labels, lesions) else None
            key = (image_hash(labels), clip, image_hash(body) if body is not None else None,
                   image_hash(instances) if instances is not None else None)
            if key not in region_cache:
                region_cache[key] = build_regions(labels, names=regions, rings_mm=rings_mm, margin_mm=margin_mm,
                                                  clip=clip, body=body, label_values=label_values,
                                                  lesions=instances)
            found = region_cache[key]
            arr = sitk.GetArrayViewFromImage(series.image)
            nan_voxels = int((~np.isfinite(arr)).sum()) if np.issubdtype(arr.dtype, np.floating) else 0
            masks = {}
            for name, region in found.items():
                info["regions"][name] = {**region.describe(), "mask_sha256": image_hash(region.mask)}
                if nan_voxels:
                    reason = (f"image of series '{series.name}' has {nan_voxels} NaN/inf voxels, which every filter "
                              "and the resampling would spread: replace them (e.g. by the background value) and re-run")
                    long_rows += _failed_rows(study.study_id, series, wide_phase, name, expected, reason)
                    continue
                masks[name] = region
            cache_keys = {n: _cache_key(info["image_sha256"], info["regions"][n]["mask_sha256"], preset, crop_filters,
                                        backend) for n in masks}
            todo = {}
            for name in masks:
                cached = _cache_get(cache_dir, cache_keys[name])
                if cached is not None:
                    cache_hits[(series.name, name)] = cached
                    info["regions"][name]["cache"] = "hit"
                else:
                    todo[name] = masks[name]
                    info["regions"][name]["cache"] = "miss"
            if todo:
                packed = {n: pack_mask(r.mask) for n, r in todo.items()}
                runner.add_series(series.name, {"series": series.name, "preset": preset.as_dict(),
                                                "threads": runner.threads, "image": pack_image(series.image),
                                                "crop_filters": crop_filters,
                                                "masks": packed})
                series_cache_keys[series.name] = cache_keys
                grid = {"size": series.image.GetSize(), "spacing": series.image.GetSpacing(),
                        "origin": series.image.GetOrigin(), "direction": series.image.GetDirection()}
                group = (key, json.dumps(grid, default=str), preset.key, json.dumps(preset.preprocess, sort_keys=True))
                shape_groups.setdefault(group, {"preset": preset.as_dict(), "grid": grid, "masks": {}})["masks"].update(
                    {info["regions"][n]["mask_sha256"]: p for n, p in packed.items()})  # equal masks: once
            # after the series task started: a worker computes its features meanwhile
            kinetic_stats[series.name] = {n: region_statistics(series.image, r.mask) for n, r in found.items()}
        for group in shape_groups.values():
            runner.add_shapes(group)
        results = runner.results()
    for (series_name, region), cached in cache_hits.items():
        results.setdefault(series_name, {"values": {}, "reasons": {}}).setdefault("cached", {})[region] = cached
    for series in study:
        if series.name not in results:
            continue
        preset, expected = series_info[series.name]
        res = results[series.name]
        for region in list(res["values"]) + list(res.get("cached", {})):
            if region in res.get("cached", {}):
                values, reasons = res["cached"][region]["values"], res["cached"][region]["reasons"]
            else:
                values, reasons = res["values"][region], res["reasons"][region]
                _cache_put(cache_dir, series_cache_keys[series.name][region],
                           {"values": values, "reasons": reasons})
            long_rows += _rows(study.study_id, series, wide_phase, region, expected, values, reasons)
        if "seconds" in res:
            diag["series"][series.name]["seconds"] = round(res["seconds"], 3)
            diag["series"][series.name]["preprocessed_sha256"] = res.get("preprocessed_sha256")
            diag["series"][series.name]["preprocessed_grid"] = res.get("grid")
            diag["series"][series.name]["cropped"] = bool(res.get("cropped"))
    long = pd.DataFrame(long_rows, columns=LONG_COLUMNS + ["wide_phase"])
    order = {f"{s}\0{r}": i for i, (s, r) in enumerate(
        (s, r) for s, info in diag["series"].items() for r in list(info["regions"]) + ["all"])}
    rank = (long["series"] + "\0" + long["region"]).map(order).fillna(-1).to_numpy()
    long = long.iloc[np.argsort(rank, kind="stable")].reset_index(drop=True)
    phases = {s.name: (wide_phase[s.name], s.modality.value) for s in study if s.name in kinetic_stats}
    kin = pd.DataFrame(kinetic_features(kinetic_stats, phases), columns=["phase", "region", "feature", "value",
                                                                        "reason"])
    kin.insert(0, "study", study.study_id)
    diag["seconds"] = round(time.perf_counter() - started, 3)
    diag["failures"] = int((long["reason"] != "").sum())
    progress(1.0, "radiomics done")
    return Extraction(study.study_id, long, kin, diag)


def _cache_key(image_sha: str, mask_sha: str, preset: Preset, crop_filters: bool = False,
               backend: str = "pyradiomics") -> str:
    text = json.dumps([image_sha, mask_sha, preset.sha256(), versions()] + (["crop_filters"] if crop_filters else [])
                      + ([backend] if backend != "pyradiomics" else []), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _cache_get(cache_dir, key: str):
    if not cache_dir:
        return None
    path = Path(cache_dir) / key[:2] / f"{key}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _cache_put(cache_dir, key: str, payload: dict) -> None:
    if not cache_dir:
        return
    from ..files import atomic_write

    path = Path(cache_dir) / key[:2] / f"{key}.json"
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(payload, allow_nan=True))



def _rows(study_id, series, wide_phase, region, expected, values, reasons) -> list[dict]:
    rows = []
    for image_type, cls, feature in expected:
        key = f"{image_type}_{cls}_{feature}"
        value = values.get(key)
        reason = reasons.get(cls, "")
        if value is None:
            value = math.nan
            reason = reason or f"not produced by pyradiomics for {image_type} (e.g. filter skipped: image too small)"
        elif math.isnan(value) and not reason:
            reason = "undefined for this region (pyradiomics returned NaN, e.g. zero variance or a single grey level)"
        rows.append({"study": study_id, "series": series.name, "phase": series.phase.value,
                     "modality": series.modality.value, "region": region, "image_type": image_type,
                     "feature_class": cls, "feature": feature, "value": value, "reason": reason,
                     "wide_phase": wide_phase[series.name]})
    return rows


def _failed_rows(study_id, series, wide_phase, region, expected, reason) -> list[dict]:
    return _rows(study_id, series, wide_phase, region, expected, {},
                 {cls: reason for cls in {c for _, c, _ in expected}})

