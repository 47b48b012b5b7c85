"""HTML (and optional PDF) report of one study, rendered from a Jinja2 template.

Every section is optional and takes plain data (DataFrames, dicts, SimpleITK images), so the report does
not depend on other modules' internals: key images per phase with contours and the lesion marked,
LI-RADS table with evidence and overrides, registration QC, radiomics summary, prediction with
contributions and a plot, model card, software version and input hashes. The header shows the study ID
only, unless the caller opts in to patient details.

A run folder's report is assembled in one place: `from_results` (what `pipeline.run` has in memory) and
`from_folder` (the run folder's files alone: the `report` verb and the Slicer panel) give the same ReportData,
hence byte-identical HTML; such a report carries no wall-clock time (the audit log records when it was made).
Its pictures (key images, checkerboards, the contribution plot) are drawn by `report_images`.
"""
from __future__ import annotations

import datetime
import hashlib
import io as _bytes_io
import logging
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .files import atomic_folder, atomic_write, sha256_file
from .layout import RunFolder
from .report_images import (CONTOURS, ImageSink, contribution_plot, gradcam_plot, key_images, key_point,
                            lesion_instances, registration_images, risk_curve_plot)

log = logging.getLogger(__name__)

TEMPLATE = "report.html.j2"


@dataclass
class ReportData:
    """What to report; leave out what you do not have (its section is not rendered)."""

    study_id: str
    images: dict = field(default_factory=dict)  # phase -> sitk.Image, all on the labels' grid
    labels: sitk.Image | None = None  # study.LABELS label map on that grid
    lesions: sitk.Image | None = None  # instance map 1..n (default: tumour components)
    modality: str = "CT"
    lirads: object = None  # DataFrame, one row per observation (lirads.LiradsAssessment.table())
    lirads_evidence: object = None  # DataFrame (LiradsAssessment.evidence())
    lirads_overrides: object = None  # DataFrame (LiradsAssessment.overrides_table())
    registration_qc: object = None  # DataFrame (registration qc.csv)
    registration_images: dict = field(default_factory=dict)  # series -> checkerboard (registration QC)
    radiomics: object = None  # DataFrame (a selection of features)
    pet: object = None  # DataFrame, per-lesion SUV (pet.lesion_suv_table; OUT/pet/lesions.csv)
    ceus: object = None  # DataFrame, CEUS perfusion parameters (OUT/ceus/perfusion.csv: roi, parameter, value, unit)
    ceus_lirads: object = None  # DataFrame, CEUS LI-RADS v2017 evidence and category (OUT/ceus/lirads.csv)
    followup: object = None  # (matches, response) DataFrames against the baseline run (OUT/followup/)
    risk: object = None  # (curve, inputs) DataFrames of followup_risk.patient_risk (OUT/followup/risk_*.csv)
    prediction: object = None  # DataFrame or dict (endpoint -> value / row)
    contributions: object = None  # DataFrame with a feature/name column and a numeric contribution column
    nomogram: Path | None = None  # nomogram PNG of the model bundle (OUT/prediction/nomogram.png)
    deep: tuple | None = None  # (prediction, attention) DataFrames of `predict-deep` (OUT/prediction/deep/)
    deep_gradcam: Path | None = None  # its gradcam.npz
    model_card: dict | None = None
    segmentation: dict | None = None  # engine, why it was chosen, QC warnings / failure (segmentation.json)
    inputs: dict = field(default_factory=dict)  # name -> file or folder whose SHA-256 is listed
    patient: dict | None = None  # shown only with include_patient=True
    max_rows: int = 40  # longer tables are cut, with a note
    dated: bool = True  # show when the HTML was made (False for a run folder's report: same files, same bytes)


def write_report(data: ReportData, folder: "str | Path", *, embed_images: bool = False,
                 include_patient: bool = False, pdf: bool = False) -> Path:
    """Render `folder/report.html` (+ `images/*.png`, or images embedded as data URIs) atomically.

    An existing report folder is replaced only after the new one is complete. With `pdf`, also
    `report.pdf` via WeasyPrint (the optional `report` extra). Returns the HTML path.
    """
    folder = Path(folder)
    with atomic_folder(folder, replace=True) as staging:
        html = render_html(data, staging, embed_images=embed_images, include_patient=include_patient)
        (staging / "report.html").write_text(html, encoding="utf-8")
        if pdf:
            weasyprint = _require_weasyprint()
            weasyprint.HTML(filename=str(staging / "report.html")).write_pdf(str(staging / "report.pdf"))
    log.info("Report for study %s written to %s", data.study_id, folder / "report.html")
    return folder / "report.html"


def render_html(data: ReportData, folder: Path, *, embed_images: bool = False, include_patient: bool = False) -> str:
    """The report's HTML; image files (unless embedded) are written under `folder/images`."""
    import jinja2

    from . import __version__

    images = ImageSink(folder / "images", embed_images)
    point, lesion = (key_point(data.labels, lesion_instances(data)) if data.images or data.registration_images
                     else (None, 0))
    context = {
        "study_id": data.study_id,
        "generated": (datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if data.dated
                      else None),
        "version": __version__,
        "python": platform.python_version(),
        "patient": data.patient if include_patient and data.patient else None,
        "key_images": key_images(data, images, point, lesion),
        "key_images_note": "Axial slice through the centre of the largest observation (else the liver's largest "
                           "cross-section), radiological convention (patient right on the image's left, anterior up); "
                           "contours: " + ", ".join(f"{k} ({c})" for k, c in CONTOURS.items()) + ".",
        "lirads": _table(_compact_features(data.lirads), data.max_rows, index=True),
        "lirads_evidence": _table(data.lirads_evidence, data.max_rows),
        "lirads_overrides": _table(data.lirads_overrides, data.max_rows),
        "registration": _table(data.registration_qc, data.max_rows),
        "registration_images": registration_images(data, images, point),
        "radiomics": _table(data.radiomics, data.max_rows, index=True),
        "pet": _table(_with_units(data.pet), data.max_rows),
        "ceus": _table(data.ceus, data.max_rows),
        "ceus_lirads": _table(data.ceus_lirads, data.max_rows),
        "followup": [_table(f, data.max_rows) for f in data.followup] if data.followup else None,
        "risk_plot": risk_curve_plot(data.risk, images),
        "risk_inputs": _table(data.risk[1], data.max_rows) if data.risk is not None else None,
        "risk_sample": _risk_sample(data.risk),
        "prediction": _table(_frame(data.prediction), data.max_rows, index=True),
        "contributions": _table(_top_contributions(data.contributions, 15), 15),
        "contribution_plot": contribution_plot(_top_contributions(data.contributions, 10), images),
        "nomogram": images.add_png(Path(data.nomogram).read_bytes(), "nomogram") if data.nomogram else None,
        "deep": [_table(f, data.max_rows, index=True) for f in data.deep] if data.deep else None,
        "deep_gradcam": gradcam_plot(data.deep_gradcam, images),
        "model_card": {str(k): _fmt(v) for k, v in (data.model_card or {}).items()},
        "segmentation": data.segmentation,
        "input_hashes": {name: sha256_of(path) for name, path in data.inputs.items()},
    }
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    return env.get_template(TEMPLATE).render(**context)


# ---------------------------------------------------------------- tables
@dataclass
class _Cell:
    text: str
    css: str = ""


@dataclass
class _Table:
    columns: list
    rows: list
    note: str = ""


def _risk_sample(risk) -> str | None:
    """What a sample risk bundle was trained on (its card's `sample`), else None."""
    if risk is None:
        return None
    value = risk[1].set_index("input")["value"].get("sample", "no")
    return None if str(value) in ("no", "nan", "") else str(value)


def _frame(value):
    import pandas as pd

    if value is None or isinstance(value, pd.DataFrame):
        return value
    if isinstance(value, dict):
        if all(isinstance(v, dict) for v in value.values()):
            return pd.DataFrame.from_dict(value, orient="index")
        return pd.DataFrame({"value": value})
    raise InputError(f"Report data of type {type(value).__name__} cannot be shown as a table: give a DataFrame or dict.")


def _table(frame, max_rows: int, index: bool = False) -> _Table | None:
    frame = _frame(frame)
    if frame is None or frame.empty:
        return None
    if index:
        frame = frame.reset_index()
    shown = frame.head(max_rows)
    rows = [[_cell(column, value) for column, value in zip(shown.columns, row)]
            for row in shown.itertuples(index=False, name=None)]
    note = f"{len(shown)} of {len(frame)} rows shown." if len(frame) > len(shown) else ""
    return _Table([str(c) for c in shown.columns], rows, note)


def _compact_features(frame):
    """Merge each feature's present/value/threshold/confidence columns into one "yes · 45.8 > 10 (conf 1.00)" cell."""
    frame = _frame(frame)
    if frame is None:
        return None
    out = frame.copy()
    for name in [c for c in frame.columns if f"{c}_value" in frame.columns]:
        parts = [frame[f"{name}{suffix}"] if f"{name}{suffix}" in frame.columns else None
                 for suffix in ("_value", "_threshold", "_confidence")]
        cells = []
        for i in range(len(frame)):
            value, threshold, confidence = (None if p is None else p.iloc[i] for p in parts)
            detail = " ".join(x for x in (_fmt(value) if value is not None else "",
                                          f"vs {_fmt(threshold)}" if threshold is not None else "",
                                          f"(conf {confidence:.2f})" if _is_number(confidence) else "") if x)
            cells.append((frame[name].iloc[i], detail))
        out[name] = cells
        out = out.drop(columns=[f"{name}{suffix}" for suffix in ("_value", "_threshold", "_confidence")
                                if f"{name}{suffix}" in out.columns])
    return out


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not math.isnan(float(value))


def _cell(column, value) -> _Cell:
    if isinstance(value, tuple):  # (present, detail) from _compact_features
        present, detail = value
        if present is None or (isinstance(present, float) and math.isnan(present)):
            return _Cell(f"not assessed · {detail}" if detail else "not assessed")
        return _Cell(("yes" if present else "no") + (f" · {detail}" if detail else ""), "yes" if present else "no")
    if isinstance(value, (bool, np.bool_)):
        return _Cell("yes" if value else "no", "yes" if value else "no")
    if str(column) == "category":
        return _Cell(_fmt(value), "cat")
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        return _Cell(_fmt(value), "num")
    return _Cell(_fmt(value))


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


def _top_contributions(frame, n: int):
    """The `n` contributions largest in magnitude: (name, contribution) from the first text and numeric columns."""
    frame = _frame(frame)
    if frame is None or frame.empty:
        return None
    frame = frame.reset_index() if frame.index.name else frame
    numeric = [c for c in frame.columns if frame[c].dtype.kind in "fi"]
    text = [c for c in frame.columns if frame[c].dtype.kind not in "fib"]
    if not numeric or not text:
        raise InputError("Contributions need a name column and a numeric contribution column.")
    value = "contribution" if "contribution" in numeric else numeric[0]
    order = frame[value].abs().sort_values(ascending=False).index[:n]
    return frame.loc[order, [text[0], value]].rename(columns={text[0]: "feature", value: "contribution"})


# ---------------------------------------------------------------- provenance and files
def sha256_of(path: "str | Path") -> str:
    """SHA-256 of a file, or of a folder (over its files' relative paths and contents, in sorted order)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"Report input '{path}' does not exist: check the path.")
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0" + sha256_file(file).encode())
    return digest.hexdigest()


def _require_weasyprint():
    from .errors import require

    return require("weasyprint", "report")


# ---------------------------------------------------------------- a run folder's report: one assembly for `run`, the
# `report` verb and the panel. Both entries give the same ReportData (hence byte-identical HTML) for one run folder:
# from_results passes each in-memory table through its stored CSV form, from_folder reads those files.
def from_results(*, study_id: str, images: dict, labels: sitk.Image | None, lesions: sitk.Image | None,
                 modality: str, assessment=None, registration_qc=None, registration_images: dict | None = None,
                 kinetics=None, diagnostics: dict | None = None, staging: dict | None = None, prediction=None,
                 contributions=None, prediction_not_made: str | None = None, model: "str | Path | None" = None,
                 inputs: dict | None = None, segmentation: dict | None = None, followup=None,
                 nomogram=None, deep: "Path | None" = None) -> ReportData:
    """ReportData of one study's results in memory (what `pipeline.run` has): LiradsAssessment, registration QC
    (`qc` frame, checkerboards), radiomics kinetics + diagnostics, staging (clinical.stage_clinical results),
    prediction/contributions frames of fusion.workflow.predict (or why no prediction was made), the model bundle,
    named input paths, the segmentation summary (engine, engine_reason, qc_warnings), a FollowupResult and, as
    `deep`, the run folder whose deep fusion prediction (RunFolder.deep_prediction) to show, read as `from_folder`
    reads it."""
    import json

    card = _model_card(model, json.loads(json.dumps(diagnostics, default=str)) if diagnostics else None)
    tables = None if assessment is None else (assessment.table(), assessment.evidence(), assessment.overrides_table())
    return ReportData(
        study_id, images=dict(images), labels=labels, lesions=lesions, modality=modality,
        lirads=_stored(tables[0], index=True) if tables else None,
        lirads_evidence=_stored(tables[1]) if tables else None,
        lirads_overrides=_stored(tables[2]) if tables else None,
        registration_qc=_stored(qc_table(registration_qc)) if registration_qc is not None else None,
        registration_images=dict(sorted((registration_images or {}).items())),
        radiomics=radiomics_summary(_stored(kinetics)) if kinetics is not None else None,
        prediction=prediction_with_staging(_stored(prediction, index=True) if prediction is not None else None,
                                           {k: str(v) for k, v in (staging or {}).items()}, prediction_not_made),
        contributions=_named(_stored(contributions) if contributions is not None else None), model_card=card,
        followup=(_stored(followup.matches), _stored(followup.response)) if followup is not None else None,
        risk=followup.risk if followup is not None else None,
        inputs={k: Path(v) for k, v in (inputs or {}).items()}, segmentation=segmentation, dated=False,
        nomogram=nomogram, **_deep_outputs(deep))


def _deep_outputs(out: "Path | None") -> dict:
    """ReportData's deep fusion fields from `predict-deep`'s folder in run folder OUT (RunFolder.deep_prediction):
    its prediction and attention tables when the folder exists, and its Grad-CAM file."""
    if out is None:
        return {}
    paths = RunFolder(out)
    return {"deep": (read_csv_table(paths.deep_prediction_table, index=True),
                     read_csv_table(paths.deep_attention, index=True)) if paths.deep_prediction.is_dir() else None,
            "deep_gradcam": paths.deep_gradcam}


def from_folder(out: "str | Path", *, model: "str | Path | None" = None) -> ReportData:
    """ReportData of run folder OUT from its files alone (layout.RunFolder): the registered study (else the exported
    one), segmentation, LI-RADS, registration QC, radiomics, PET SUV, CEUS, staging, prediction and OUT/run.json (inputs, model;
    `model` names the bundle for the card when run.json does not)."""
    import json

    paths = RunFolder(out)
    record = read_run_record(out)
    manifest = next((p for p in (paths.registered_study, paths.study_manifest) if p.is_file()), None)
    if manifest is None:
        raise InputError(f"'{out}' is not a run folder: it has neither {paths.registered_study.relative_to(paths.root)}"
                         f" nor {paths.study_manifest.relative_to(paths.root)}. Give the --out folder of "
                         "`hccfusion run` (or of `hccfusion register`).")
    from .io import load_study, read_image
    from .study import same_grid

    study = load_study(manifest.parent)
    labels = read_image(paths.labels) if paths.labels.is_file() else None
    lesions = read_image(paths.lesion_map) if paths.lesion_map.is_file() and labels is not None else None
    reference = _reference_series(study, paths)
    grid = labels if labels is not None else reference.image
    segmentation = None
    if paths.segmentation_info.is_file():
        info = json.loads(paths.segmentation_info.read_text(encoding="utf-8"))
        segmentation = {k: info.get(k) for k in ("engine", "engine_reason", "qc_warnings")}
    staging = None
    if paths.staging.is_file():
        rows = read_csv_table(paths.staging)
        staging = dict(zip(rows["system"], rows["text"])) if rows is not None else None
    diagnostics = (json.loads(paths.radiomics_diagnostics.read_text(encoding="utf-8"))
                   if paths.radiomics_diagnostics.is_file() else None)
    prediction = read_csv_table(paths.prediction_table, index=True)
    model = model or record.get("model")
    inputs = record.get("inputs") or ({"study": paths.study} if paths.study_manifest.is_file() else {})
    kinetics = read_csv_table(paths.kinetics)
    return ReportData(
        study.study_id, images={s.phase.value: s.image for s in study if same_grid(s.image, grid)}, labels=labels,
        lesions=lesions, modality=reference.modality.value, lirads=read_csv_table(paths.lirads_table, index=True),
        lirads_evidence=read_csv_table(paths.lirads_evidence), lirads_overrides=read_csv_table(paths.lirads_overrides),
        registration_qc=read_csv_table(paths.registration_qc),
        registration_images={p.name[:-len("_checkerboard.nii.gz")]: read_image(p) for p in
                             sorted(paths.checkerboard("*").parent.glob(paths.checkerboard("*").name))},
        radiomics=radiomics_summary(kinetics) if kinetics is not None else None,
        pet=read_csv_table(paths.pet_lesions), ceus=read_csv_table(paths.ceus_perfusion),
        ceus_lirads=read_csv_table(paths.ceus_lirads), followup=(read_csv_table(paths.followup_matches),
                                                                 read_csv_table(paths.followup_response))
        if paths.followup_response.is_file() else None,
        risk=(read_csv_table(paths.followup_risk_curve), read_csv_table(paths.followup_risk_inputs))
        if paths.followup_risk_curve.is_file() else None,
        prediction=prediction_with_staging(prediction, staging or {}, record.get("prediction_not_made")),
        contributions=_named(read_csv_table(paths.contributions)),
        model_card=_model_card(model if prediction is not None else None, diagnostics),
        inputs={k: Path(v) for k, v in inputs.items()}, segmentation=segmentation, dated=False,
        nomogram=paths.nomogram_figure if prediction is not None and paths.nomogram_figure.is_file() else None,
        **_deep_outputs(out))


def write_run_record(out: "str | Path", *, inputs: dict, model: "str | Path | None" = None,
                     prediction_not_made: str | None = None, radiomics: dict | None = None) -> Path:
    """OUT/run.json: the named inputs (their hashes go in the report), the prediction bundle, and why no
    prediction was made (if so): what `from_folder` needs beyond the stage folders; `radiomics`: the backend and
    device the features came from (`run --radiomics-backend/--radiomics-device`)."""
    import json

    path = RunFolder(out).run_record
    doc = {"inputs": {k: str(v) for k, v in inputs.items()}, "model": str(model) if model else None,
           "prediction_not_made": prediction_not_made, **({"radiomics": radiomics} if radiomics else {})}
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


def read_run_record(out: "str | Path") -> dict:
    """OUT/run.json as written by `write_run_record` ({} when absent)."""
    import json

    path = RunFolder(out).run_record
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise InputError(f"'{path}' is not valid JSON ({exc}): delete it (the report then lists no inputs) or "
                         "rerun `hccfusion run`.") from None


def _reference_series(study, paths: RunFolder):
    """The registration's reference series (registration/channels.json), else the study's first series."""
    import json

    if paths.channels.is_file():
        name = json.loads(paths.channels.read_text(encoding="utf-8")).get("reference")
        if name in study.series:
            return study[name]
    return next(iter(study))


def _stored(frame, index: bool = False):
    """`frame` as its CSV file reads back (the form `from_folder` sees), or None."""
    if frame is None:
        return None
    buffer = _bytes_io.StringIO()
    frame.to_csv(buffer, index=index)
    buffer.seek(0)
    return read_csv_table(buffer, index=index)


def read_csv_table(path, index: bool = False):
    """A stage's CSV table (first column as index with `index`), or None when absent or empty."""
    import pandas as pd

    if isinstance(path, Path) and not path.is_file():
        return None
    try:
        return pd.read_csv(path, index_col=0 if index else None)
    except pd.errors.EmptyDataError:
        return None
    except (OSError, ValueError) as exc:
        raise InputError(f"Cannot read '{path}' ({exc}): rerun the stage that wrote it.") from None


# ---------------------------------------------------------------- section formatters (used by both entries)
def _with_units(frame):
    """The per-lesion PET table with each column's unit in its header (pet.PET_COLUMNS)."""
    from .pet import PET_COLUMNS

    return None if frame is None else frame.rename(columns={k: f"{k} [{v}]" for k, v in PET_COLUMNS.items()
                                                            if k != "lesion"})


def qc_table(qc):
    """Registration QC with each series' warnings as one text cell (as registration/qc.csv stores them)."""
    table = qc.copy()
    table["warnings"] = ["; ".join(w) if not isinstance(w, str) else w for w in table["warnings"]]
    return table


def radiomics_summary(kinetics):
    """Reviewable kinetic features of the tumour regions (one row per feature, one column per region)."""
    keep = ("ratio_to_liver", "contrast_to_liver", "mean", "arterial_enhancement_vs_liver", "washout_index",
            "washout_vs_liver", "volume_ml", "adc_mean")
    rows = kinetics[kinetics["feature"].isin(keep) & (kinetics["region"] != "background_liver")]
    table = rows.assign(feature=rows["phase"] + " " + rows["feature"]).pivot_table(
        index="feature", columns="region", values="value", aggfunc="first")
    return table.round(3)


def prediction_with_staging(prediction, staging: dict, not_made: str | None = None):
    """The prediction rows (or why none was made) plus the clinical stages {system: text} (the Prediction section)."""
    import pandas as pd

    stages = pd.DataFrame({"result": [str(v) for v in staging.values()]},
                          index=pd.Index([k.replace("_", "-").upper() if k != "child_pugh" else "Child-Pugh"
                                          for k in staging], name="item"))
    if prediction is None:
        return stages if not not_made else pd.concat([pd.DataFrame(
            {"result": [f"not made: {not_made}"]}, index=pd.Index(["prediction"], name="item")), stages])
    rows = prediction.reset_index(drop=True)
    main = [c for c in ("endpoint", "probability", "low", "high", "interval", "risk", "risk_group") if c in rows]
    pred = pd.DataFrame({"result": ["; ".join(f"{c}={_short(r[c])}" for c in main) for _, r in rows.iterrows()]},
                        index=pd.Index([f"prediction {r['endpoint']}" for _, r in rows.iterrows()], name="item"))
    return pd.concat([pred, stages])


def _named(contributions):
    """Contributions as (feature name, contribution) rows for the report (first text column = the name)."""
    if contributions is None:
        return None
    return contributions.drop(columns=["patient_id"], errors="ignore")


def _short(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def model_card_summary(model: "str | Path") -> dict:
    """The report's summary of a prediction bundle's model_card.json."""
    import json

    path = Path(model) / "model_card.json"
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"Cannot read the model card '{path}' ({exc}): give a bundle written by `hccfusion train`.") \
            from None
    keep = ("endpoint", "kind", "fusion", "training", "cv_metrics", "interval", "intended_use", "created")
    summary = {k: card[k] for k in keep if k in card}
    summary["features"] = len(card.get("features", []))
    summary["bundle"] = Path(model).name
    return summary


def _model_card(model, diagnostics: dict | None) -> dict:
    """The model card section: the bundle's summary (when a prediction was made) and the radiomics feature card."""
    from .radiomics.extraction import feature_card

    return {**(model_card_summary(model) if model else {}), **(feature_card(diagnostics) if diagnostics else {})}
