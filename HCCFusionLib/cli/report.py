"""Output verbs on an existing run folder: report, export-dicom."""
from __future__ import annotations

import logging
from pathlib import Path

from ..errors import InputError
from .common import verb

log = logging.getLogger(__name__)


def run_folder_arg(p):
    """OUT, the run folder (dest `out`, so the audit log goes to OUT/audit.jsonl)."""
    p.add_argument("out", type=Path, metavar="OUT", help="run folder (the --out of `hccfusion run`, or the folder "
                                                        "the stage verbs wrote into)")


def existing_run_folder(out: Path) -> Path:
    if not out.is_dir():
        raise InputError(f"Run folder '{out}' does not exist: give the --out folder of `hccfusion run`.")
    return out


# ---------------------------------------------------------------- report
@verb("report", "(re)build the HTML (+ PDF) report of a run folder from its files alone -> OUT/report/")
def cmd_report(args, progress):
    from ..layout import RunFolder
    from ..report import from_folder, write_report

    progress(0.1, "reading the run folder")
    data = from_folder(existing_run_folder(args.out), model=args.model)
    progress(0.3, "rendering")
    path = write_report(data, args.to or RunFolder(args.out).report, embed_images=args.embed_images, pdf=args.pdf)
    progress(1.0, "report written")
    print(path)
    return 0


def _report_args(p):
    run_folder_arg(p)
    p.add_argument("--to", type=Path, help="report folder (default OUT/report; replaced once the new one is complete)")
    p.add_argument("--model", type=Path, help="prediction bundle for the model card (default: the one OUT/run.json "
                                              "records)")
    p.add_argument("--embed-images", action="store_true", help="images inside the HTML (data URIs), no images/")
    p.add_argument("--pdf", action="store_true", help="also report.pdf (needs the 'report' extra: WeasyPrint)")


cmd_report.configure = _report_args


# ---------------------------------------------------------------- export-dicom
@verb("export-dicom", "DICOM SEG + TID 1500 SR of a run folder's segmentation, lesions and LI-RADS -> OUT/dicom/")
def cmd_export_dicom(args, progress):
    import pandas as pd

    from ..dicom import export_dicom
    from ..io import load_study, read_image
    from ..layout import RunFolder
    from ..lesions import LesionTable
    from ..report import read_csv_table

    paths = RunFolder(existing_run_folder(args.out))
    manifest = next((m for m in (paths.registered_study, paths.study_manifest) if m.is_file()), None)
    if manifest is None or not paths.labels.is_file():
        missing = paths.labels if manifest is not None else paths.registered_study
        raise InputError(f"'{missing}' is missing: run `hccfusion run` (or `register` and `segment`) into "
                         f"'{args.out}' first.")
    progress(0.05, "reading the run folder")
    study = load_study(manifest.parent)
    series = _reference(study, paths, args.reference)
    _attach_source(series, args.study)
    labels = read_image(paths.labels)
    if paths.lesions.is_file() and paths.lesion_map.is_file():  # the segmentation stage's lesion model
        table, lesion_map = LesionTable.from_csv(paths.lesions), read_image(paths.lesion_map)
    else:
        lesion_map, table = LesionTable.from_labels(labels)
    lirads = read_csv_table(paths.lirads_table, index=True)
    prediction = read_csv_table(paths.prediction_table, index=True)
    probabilities = ({str(r["endpoint"]): float(r["probability"]) for _, r in prediction.iterrows()
                      if not pd.isna(r["probability"])}
                     if prediction is not None and {"endpoint", "probability"} <= set(prediction.columns) else None)
    progress(0.2, "writing SEG and SR")
    written = export_dicom(series, labels, table, args.to or paths.dicom, study_id=study.study_id, lirads=lirads,
                           lesion_labels=lesion_map, predictions=probabilities,
                           keep_identifiers=args.keep_identifiers, replace=args.overwrite)
    progress(1.0, "DICOM written")
    print(f"SEG {written['seg']}\nSR  {written['sr']}\nsource series: {len(written['source'])} file(s)")
    return 0


def _reference(study, paths, reference: str | None):
    """The series the SEG references: --reference, else the registration's reference (channels.json)."""
    import json

    name = reference or (json.loads(paths.channels.read_text(encoding="utf-8")).get("reference")
                         if paths.channels.is_file() else None)
    if name is None:
        return next(iter(study))
    series = study.get(name)
    if series is None:
        raise InputError(f"The registered study has no series or phase '{name}': choose --reference from "
                         f"{', '.join(study.series)}.")
    return series


def _attach_source(series, study_folder: Path | None) -> None:
    """Point the reference series at its source DICOM files: --study, else those the registration recorded.

    A study that was never DICOM (NIfTI) gets its series written as DICOM, as `run` does; recorded DICOM files
    that are gone are an error (new UIDs would not match the PACS's originals)."""
    from ..io import load_study

    if study_folder is not None:
        source = load_study(study_folder).get(series.phase)
        files = (source.meta.get("files") if source is not None else None) or []
        if not files:
            raise InputError(f"'{study_folder}' has no DICOM series of phase {series.phase.value}: give the DICOM "
                             "folder the run started from (or leave --study out to write the series as DICOM).")
        series.meta["files"] = files
        return
    files = series.meta.get("files") or []
    gone = [f for f in files if not Path(f).is_file()]
    if gone:
        raise InputError(f"The source DICOM files of series '{series.name}' are gone (e.g. '{gone[0]}'): pass "
                         "--study with the DICOM folder the run started from.")


def _export_dicom_args(p):
    run_folder_arg(p)
    p.add_argument("--study", type=Path, help="the source DICOM study folder (default: the DICOM files the "
                                             "registration recorded; a NIfTI study is written as DICOM)")
    p.add_argument("--reference", help="series/phase the SEG references (default: the registration's reference)")
    p.add_argument("--to", type=Path, help="DICOM folder (default OUT/dicom)")
    p.add_argument("--keep-identifiers", action="store_true",
                   help="SEG + SR reference the input's own DICOM files and keep its patient and study attributes "
                        "(to file them with the source study in a PACS). Default: de-identified, as in `run`")
    p.add_argument("--overwrite", action="store_true", help="replace an existing DICOM folder (once the new one is "
                                                            "complete)")


cmd_export_dicom.configure = _export_dicom_args
