"""Clinical verb: stage (Child-Pugh, ALBI, BCLC from the lesion table and clinical values)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

from ..errors import InputError
from .common import format_table, verb
from .report import run_folder_arg

log = logging.getLogger(__name__)


@verb("stage", "Child-Pugh, ALBI and BCLC from a run folder's lesion table and clinical values -> "
               "OUT/clinical/staging.csv")
def cmd_stage(args, progress):
    from ..clinical import stage_with_lesions, staging_frame
    from ..files import atomic_write
    from ..layout import RunFolder
    from ..lesions import LesionTable

    paths = RunFolder(args.out)
    clinical = {**_study_clinical(paths), **_clinical_file(args.clinical)}
    if not clinical:
        raise InputError(f"No clinical values: '{args.out}' holds no study with clinical fields; give --clinical "
                         "FILE (JSON object or one-row CSV of Clinical fields).")
    lesions_file = args.lesions or paths.lesions
    if args.lesions is not None or lesions_file.is_file():
        lesions = LesionTable.from_csv(lesions_file)
    else:
        lesions = None
        log.warning("no lesion table (%s): tumour number/size only from the clinical values", lesions_file)
    values, staging = stage_with_lesions(clinical, lesions)
    table = staging_frame(staging)
    with atomic_write(paths.staging) as tmp:
        table.to_csv(tmp, index=False)
    progress(1.0, "staged")
    print(format_table(table[["system", "result", "text"]].to_dict("records"), title=f"Staging -> {paths.staging}"))
    return 0


def _study_clinical(paths) -> dict:
    """The Clinical fields of the run folder's study (registered, else exported) manifest; {} without one."""
    for manifest in (paths.registered_study, paths.study_manifest):
        if manifest.is_file():
            try:
                values = json.loads(manifest.read_text(encoding="utf-8")).get("clinical") or {}
            except ValueError as exc:
                raise InputError(f"'{manifest}' is not valid JSON ({exc}): rerun the stage that wrote it.") from None
            return _known(values, manifest)
    return {}


def _clinical_file(path: Path | None) -> dict:
    """Clinical fields from a JSON object or a one-row CSV (a study_id/patient_id column is ignored)."""
    if path is None:
        return {}
    if not path.is_file():
        raise InputError(f"Clinical file '{path}' does not exist: give a JSON object or a one-row CSV.")
    try:
        if path.suffix.lower() == ".json":
            values = json.loads(path.read_text(encoding="utf-8"))
        else:
            import pandas as pd

            frame = pd.read_csv(path)
            if len(frame) != 1:
                raise InputError(f"Clinical table '{path}' has {len(frame)} rows: give one row (this study's).")
            values = {k: (None if pd.isna(v) else v.item() if hasattr(v, "item") else v)
                      for k, v in frame.iloc[0].items() if k not in ("study_id", "patient_id")}
    except (ValueError, OSError) as exc:
        raise InputError(f"Cannot read clinical file '{path}' ({exc}): give a JSON object or a one-row CSV.") from None
    if not isinstance(values, dict):
        raise InputError(f"Clinical file '{path}' holds no JSON object: write {{\"bilirubin\": 1.0, ...}}.")
    return _known(values, path)


def _known(values: dict, where) -> dict:
    """The given (not None) values, checked against study.Clinical's fields."""
    from ..study import Clinical

    try:
        Clinical.from_dict(values)
    except TypeError as exc:
        raise InputError(f"Clinical values in '{where}' are not valid ({exc}).") from None
    return {k: v for k, v in values.items() if v is not None}


def _stage_args(p):
    run_folder_arg(p)
    p.add_argument("--clinical", type=Path, help="clinical values (JSON object or one-row CSV of Clinical fields); "
                                                 "they override the study's")
    p.add_argument("--lesions", type=Path, help="lesion table (lesions.csv of `hccfusion segment`; default "
                                                "OUT/segmentation/lesions.csv)")


cmd_stage.configure = _stage_args
