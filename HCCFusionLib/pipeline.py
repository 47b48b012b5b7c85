"""`hccfusion run`: every stage for one study, each writing into its own OUT/<stage>/ folder.

(pull from PACS) → load → register (to the reference's liver, found first by the engine's cheap locate pass)
→ segment (seeded with that pass; or the user's segmentation) → radiomics + kinetics → (with a prior run: follow-up
against it) → LI-RADS (threshold growth against the prior) → clinical staging → prediction (+ contributions/evidence)
→ (deep fusion prediction: attention + Grad-CAM) → report → DICOM SEG + SR → (push to PACS).
This module only wires the stage modules together; each does its own science. A failing stage raises an
HCCFusionError naming the stage; what earlier stages wrote stays as it was.
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import HCCFusionError, InputError
from .layout import DEEP_STAGE, RunFolder
from .progress import ProgressFn, scaled, silent

log = logging.getLogger(__name__)

#: OUT/<folder> written by each stage, in order.
STAGES = ("pacs", "registration", "segmentation", "radiomics", "followup", "lirads", "clinical", "prediction",
          DEEP_STAGE, "report", "dicom")
#: radiomics regions used by `run` (kinetic features need the tumour and the background liver)
RUN_REGIONS = ("tumour", "index", "background_liver")
DEMO_MODEL = "hcc_demo_mvi"
#: clinical predictors derived from the labs by clinical.py, added beside the Clinical fields
DERIVED_CLINICAL = ("albi_score", "child_pugh_score")


def default_model_path() -> Path | None:
    """The shipped demo prediction bundle (phantom-trained), or None when it is not installed."""
    path = Path(__file__).resolve().parent / "models" / DEMO_MODEL
    return path if (path / "model_card.json").is_file() else None


@dataclass
class RunResult:
    """What one `run` produced; `written` maps stage -> its output folder or main file."""

    study_id: str
    out: Path
    reference: str
    phases: list[str]
    registration_qc: "object"  # DataFrame, one row per moving series
    lesions: "object"  # DataFrame indexed by lesion: segmentation measurements + LI-RADS features/category
    staging: dict  # child_pugh / albi / bclc results (clinical.stage_clinical)
    prediction: "object | None" = None  # DataFrame (fusion.workflow.predict) or None without a model
    report: Path | None = None
    dicom: dict = field(default_factory=dict)  # {"seg", "sr", "source"}
    pushed: "object | None" = None  # pacs.PushResult
    seconds: dict = field(default_factory=dict)  # stage -> wall seconds
    written: dict = field(default_factory=dict)
    segmentation: dict = field(default_factory=dict)  # engine, engine_reason, qc_warnings (segmentation.json)
    stages: dict = field(default_factory=dict)  # stage -> "ok" / "failed: reason" / "skipped: reason" (audit log)
    followup: "object | None" = None  # followup.FollowupResult (run with a prior run)
    deep_prediction: "object | None" = None  # DataFrame of deepfusion.workflow.predict_deep (run --deep-model)

    def describe(self) -> str:
        """Plain-text summary: study, phases, registration QC, lesions with LI-RADS, staging, prediction."""
        lines = [f"Study {self.study_id}: phases {', '.join(self.phases)}; reference {self.reference}"]
        for row in self.registration_qc.to_dict("records"):
            tre = f", TRE {row['tre_mm']:.1f} mm" if "tre_mm" in row else ""
            lines.append(f"  registration {row['series']} ({row.get('status', 'ok')}): metric "
                         f"{row['metric_before']:.3f} -> {row['metric_after']:.3f}{tre}; "
                         f"warnings: {row['warnings'] or 'none'}")
        if self.segmentation:
            lines.append(f"  segmentation: engine {self.segmentation['engine']} "
                         f"({self.segmentation.get('engine_reason', '')})")
            lines += [f"  QC warning: {w}" for w in self.segmentation.get("qc_warnings") or []]
        if len(self.lesions):
            for lesion, row in self.lesions.iterrows():
                lines.append(f"  lesion {lesion}: {row['diameter_mm']:.1f} mm, {row['volume_ml']:.2f} mL, "
                             f"{row['category']} (APHE {_yes(row['aphe'])}, washout {_yes(row['washout'])}, "
                             f"capsule {_yes(row['capsule'])})")
        else:
            lines.append("  no lesion found")
        if self.followup is not None:
            lines += [f"  follow-up against {self.followup.registration.get('reference', 'the baseline')}:",
                      *self.followup.describe()]
        lines.append("  staging: " + "; ".join(f"{k}: {v}" for k, v in self.staging.items()))
        if self.prediction is not None and len(self.prediction):
            row = self.prediction.iloc[0]
            if "probability" in row:
                interval = (f" (95% interval {row['low']:.2f}-{row['high']:.2f})" if row["low"] == row["low"]
                            else " (no interval)")
                lines.append(f"  prediction {row['endpoint']}: probability {row['probability']:.2f}{interval}")
        if self.deep_prediction is not None:
            lines.append(f"  deep fusion prediction of {len(self.deep_prediction)} lesion(s): "
                         f"{RunFolder(self.out).deep_prediction}")
        if self.report:
            lines.append(f"  report: {self.report}")
        lines.append("  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in self.seconds.items()))
        return "\n".join(lines)


def _yes(value) -> str:
    """yes / no, or n/a for a feature that could not be judged (None or NaN: its phase is missing)."""
    if value is None or value != value:
        return "n/a"
    return "yes" if bool(value) else "no"


class _Stages:
    """Runs stages in order, timing each and turning any failure into an HCCFusionError naming the stage.

    `status` maps every stage to "ok", "failed: <reason>" or "skipped: <reason>" (the audit log's per-stage
    status); the error raised for a failed stage carries it as `.stages`."""

    def __init__(self, progress: ProgressFn, plan: list[str]):
        self.progress, self.plan, self.seconds, self.status = progress, plan, {}, {}
        self.on_done = None  # called with the name of each completed stage (run: the stage manifest)

    def skip(self, name: str, reason: str) -> None:
        if name in self.plan:
            self.plan.remove(name)
        self.status[name] = f"skipped: {reason}"

    @contextlib.contextmanager
    def stage(self, name: str):
        k = self.plan.index(name)
        self.progress(k / len(self.plan), name)
        started = time.perf_counter()
        try:
            yield scaled(self.progress, k / len(self.plan), (k + 1) / len(self.plan))
        except HCCFusionError as exc:
            error = type(exc)(f"Stage '{name}' failed: {exc} (outputs of earlier stages are kept)")
            raise self._failed(name, error, str(exc)) from exc
        except Exception as exc:  # a bug or a library failure: still name the stage
            error = HCCFusionError(f"Stage '{name}' failed ({type(exc).__name__}: {exc}); outputs of earlier stages "
                                   "are kept.")
            raise self._failed(name, error, f"{type(exc).__name__}: {exc}") from exc
        self.seconds[name] = round(time.perf_counter() - started, 2)
        self.status[name] = "ok"
        log.info("stage %s done in %.1f s", name, self.seconds[name])
        if self.on_done:
            self.on_done(name)

    def _failed(self, name: str, error: HCCFusionError, reason: str) -> HCCFusionError:
        self.status[name] = "failed: " + " ".join(reason.split())
        for later in self.plan[self.plan.index(name) + 1:]:
            self.status[later] = f"skipped: stage '{name}' failed"
        error.stages = dict(self.status)
        return error


def run(study_or_path, out: "str | Path", *, model: "str | Path | None" = None,
        seg_model: "str | Path | None" = None, engine: str = "auto", reference: str | None = None,
        mode: str = "deformable",
        segmentation: "str | Path | None" = None, image_types=("Original",), regions=RUN_REGIONS,
        presets: dict | None = None, registration_options: dict | None = None, workers: int = 2,
        tta: bool = False, pacs_url: str | None = None, pacs_study_uid: str | None = None,
        push: bool = False, overwrite: bool = False, seed: int = 0, phase_overrides: dict | None = None,
        keep_identifiers: bool = False, resume: bool = False, prior: "str | Path | None" = None,
        interval_months: float | None = None, risk_bundle: "str | Path | None" = None,
        deep_model: "str | Path | None" = None, radiomics_backend: str = "pyradiomics",
        radiomics_device: str | None = None, progress: ProgressFn | None = None) -> RunResult:
    """Run every stage on one study (a Study, a study/DICOM folder, or `pacs_study_uid` pulled from `pacs_url`).

    model: prediction bundle folder (default: the shipped demo bundle, when installed; "none" skips prediction).
    engine: segmentation engine (segmentation.engines: "auto" picks by the study's phases); seg_model: your own
    segmentation bundle (engine "bundle"); segmentation: the user's label map (LABELS values, on the reference
    series' grid) instead. push: send SEG + SR (and their source series) to `pacs_url`.
    image_types / regions / presets / workers / radiomics_backend ("pyradiomics" or "torch") / radiomics_device
    (torch device; backend and device used are recorded in run.json) go to radiomics.extract_study;
    registration_options (e.g. {"spacing_mm": 4.0}) to registration.register_study.
    overwrite: replace the stage folders of an earlier run in OUT (otherwise they must not exist).
    phase_overrides: series name/UID/file -> phase, as in io.load_study (also applied to a given Study).
    keep_identifiers: the DICOM SEG + SR keep the input's patient/study attributes and UIDs (implied by push,
    which files them with the source study); otherwise they are de-identified (dicom.export_dicom).
    resume: continue an interrupted run in OUT (same inputs and settings, else an InputError): stale temporaries
    are removed and the intact completed RESUMABLE stages (OUT/stages.json) are read back instead of recomputed.
    prior: the same patient's earlier run folder (the baseline): this study is registered to it and compared
    (followup.compare; per-lesion radiomics are added); interval_months: months since it (default: the dates);
    risk_bundle: a landmark Cox bundle (`train --landmark`): the patient's risk curve (followup_risk.patient_risk).
    deep_model: a deep fusion bundle (`train-deep`): its prediction, attention and Grad-CAM per lesion
    (deepfusion.workflow.predict_deep) in OUT/prediction/deep/ and the report, after the prediction stage.
    """
    from .radiomics.torch_backend import resolve_backend
    from .resume import RESUMED, manifest_writer, prepare_out, resumable_stages
    from .study import Study

    out = Path(out)
    paths = RunFolder(out)
    progress = progress or silent
    if pacs_study_uid and study_or_path is not None:
        raise InputError("Give either a study (folder or Study) or a PACS StudyInstanceUID to pull, not both.")
    if not pacs_study_uid and study_or_path is None:
        raise InputError("Give a study folder, a Study, or a PACS StudyInstanceUID to pull (--pull UID).")
    if model is None:
        model = default_model_path()
    model = None if str(model).lower() == "none" else Path(model)
    plan = [s for s in STAGES if (s != "pacs" or pacs_study_uid) and (s != "prediction" or model)
            and (s != "followup" or prior) and (s != DEEP_STAGE or deep_model)]
    backend = resolve_backend(radiomics_backend, radiomics_device)  # before the long stages, as the bundles
    if deep_model:
        from .deepfusion.workflow import check_deep_bundle, deep_stage_skip, predict_deep

        deep_phases = check_deep_bundle(deep_model)
    if risk_bundle:
        from .fusion.bundle import verify_bundle

        if not prior:
            raise InputError("--risk-bundle needs --prior PRIOR_RUN: the risk curve comes from the follow-up's deltas.")
        verify_bundle(risk_bundle)  # before the long stages
    if prior and "lesions" not in regions:
        regions = (*regions, "lesions")  # per-lesion features for delta radiomics
    settings = dict(
        model=model and str(model), seg_model=seg_model and str(seg_model), engine=engine, reference=reference,
        mode=mode, segmentation=segmentation and str(segmentation), image_types=list(image_types),
        regions=list(regions), presets=presets, registration_options=registration_options, tta=tta, seed=seed,
        phase_overrides=phase_overrides, keep_identifiers=keep_identifiers, push=push,
        prior=prior and str(prior), interval_months=interval_months, risk_bundle=risk_bundle and str(risk_bundle))
    settings.update({"deep_model": str(deep_model)} if deep_model else {})  # only when given: the fingerprints of
    settings.update({"radiomics": backend} if backend["backend"] != "pyradiomics" else {})  # earlier runs still hold
    print_, done = _fingerprint(study_or_path, pacs_study_uid, settings), []
    resuming = resume and not overwrite and paths.stage_manifest.is_file()
    if resuming:
        done = resumable_stages(out, print_, plan)
    prepare_out(out, done, overwrite, keep_manifest=resuming)
    plan.insert(plan.index("registration"), "load")
    plan += ["push"] if push else []
    stages = _Stages(progress, plan)
    stages.on_done = manifest_writer(out, print_)
    stages.status.update({"pacs": "skipped: no --pull"} if not pacs_study_uid else {})
    stages.status.update({"prediction": "skipped: no model"} if not model else {})
    stages.status.update({"followup": "skipped: no --prior"} if not prior else {})
    stages.status.update({DEEP_STAGE: "skipped: no --deep-model"} if not deep_model else {})
    written, inputs = {}, {}

    if pacs_study_uid:
        with stages.stage("pacs") as step:
            from .pacs import Pacs

            folder = paths.pacs(pacs_study_uid)
            Pacs(pacs_url).pull(pacs_study_uid, folder, progress=step)
            study_or_path, written["pacs"] = folder, folder
    with stages.stage("load"):
        from .io import apply_phase_overrides, load_study

        if isinstance(study_or_path, Study):
            study = study_or_path
            apply_phase_overrides(study, phase_overrides or {})
        else:
            inputs["study"] = Path(study_or_path)
            study = load_study(study_or_path, phase_overrides=phase_overrides)

    located = None  # the coarse liver pass before registration, reused by the segmentation
    if "registration" in done:
        from .registration import RegistrationResult

        stages.skip("registration", RESUMED)
        registration, written["registration"] = RegistrationResult.read(paths.registration), paths.registration
    else:
        with stages.stage("registration") as step:
            from .registration import register_study

            options, first = dict(registration_options or {}), None
            if "mask" not in options:  # mask=None: whole volumes, as before the liver came first
                options["fixed_mask"], first, located = _registration_mask(
                    study, reference, segmentation, engine, seg_model, scaled(step, 0.0, 0.1))
            start = 0.0 if options.get("fixed_mask") is None else 0.1
            registration = register_study(study, reference=reference, mode=mode, seed=seed,
                                           progress=scaled(step, start, 1.0), **options)
            if first:
                registration.study.meta["registration"]["liver_first"] = first
            written["registration"] = registration.save(paths.registration)
    registered, ref = registration.study, registration.reference

    if "segmentation" in done:
        from .segmentation.predictor import read_segmentation

        stages.skip("segmentation", RESUMED)
        (seg, info), written["segmentation"] = read_segmentation(paths.segmentation), paths.segmentation
    else:
        with stages.stage("segmentation") as step:
            seg, info = _segment(registered, ref, segmentation, engine, seg_model, tta, step, located)
            from .segmentation.predictor import save_segmentation

            written["segmentation"] = save_segmentation(seg, paths.segmentation, info)
            if info.get("qc_failure"):
                from .errors import QualityError

                raise QualityError(f"QC: {info['qc_failure']} (engine {info['engine']}); the label map is kept in "
                                   f"{written['segmentation']} for review: try another --engine or give your own "
                                   "--segmentation")
    seg_summary = {k: info.get(k) for k in ("engine", "engine_reason", "qc_warnings")}
    if segmentation:
        inputs["segmentation"] = Path(segmentation)
    else:
        inputs.update({f"segmentation model {Path(m).name}": Path(m) / "checksums.sha256"
                       for m in info.get("models", [info.get("model")]) if m})

    if "radiomics" in done:
        from .radiomics import Extraction

        stages.skip("radiomics", RESUMED)
        extraction, written["radiomics"] = Extraction.read(out, registered), paths.radiomics
    else:
        with stages.stage("radiomics") as step:
            from .radiomics import extract_study

            extraction = extract_study(registered, seg.labels, regions=regions, image_types=list(image_types),
                                       presets=presets, workers=workers, lesions=seg.lesion_map, progress=step,
                                       **backend)
            written["radiomics"] = extraction.save(out)

    followup = None
    if prior:
        with stages.stage("followup"):
            followup = _followup(prior, registered, ref, seg, extraction, seed, interval_months,
                                 registration_options, dict(image_types=list(image_types), presets=presets,
                                                            workers=workers, **backend))
            if risk_bundle:
                from .followup_risk import patient_risk

                followup.risk = patient_risk(risk_bundle, followup.matches, followup.delta)
                inputs["risk bundle"] = Path(risk_bundle) / "checksums.sha256"
            written["followup"] = followup.save(paths.followup)
            inputs["prior run"] = RunFolder(prior).labels

    with stages.stage("lirads"):
        from .io import save_image
        from .lirads_mri import assess_study, subtraction_images  # CT or MRI

        growth = {}
        if followup is not None and RunFolder(prior).lirads_table.is_file():  # the baseline's observations, carried
            from .followup import read_prior

            growth = dict(prior=followup.carried(read_prior(RunFolder(prior).lirads_table)),
                          interval_months=followup.interval_months)
        assessment = assess_study(registered, seg.labels, lesions=seg.lesion_map, **growth)
        written["lirads"] = assessment.save(paths.lirads)["lirads.csv"].parent
        for name, image in subtraction_images({s.phase.value: s.image for s in registered}).items():
            save_image(image, paths.subtraction(name))  # MR dynamic: post minus pre, also key images
        lesions = lesion_table(seg.lesions, assessment)
        _write_csv(lesions, paths.lirads_lesions, index=True)

    with stages.stage("clinical"):
        from .clinical import stage_with_lesions, staging_frame

        clinical, staging = stage_with_lesions(study.clinical.to_dict() if study.clinical is not None else {},
                                               lesions)
        written["clinical"] = _write_csv(staging_frame(staging), paths.staging).parent

    prediction = contributions = not_made = None
    if model:
        from .report import model_card_summary

        from .prediction_inputs import conform, prediction_inputs

        features, clinical_table = prediction_inputs(extraction, study.study_id, clinical, staging)
        features, clinical_table, missing = conform(features, clinical_table, model)
        needed = model_card_summary(model)["features"]
        if not len(lesions):
            not_made = "no lesion found"
        elif len(missing) == needed:
            not_made = f"none of the model's {needed} inputs is available for this study ({', '.join(study_phases(study))})"
    if not_made:
        log.warning("prediction not made: %s", not_made)
        stages.skip("prediction", not_made)
    elif model:
        with stages.stage("prediction") as step:
            from .fusion.workflow import predict

            result = predict(features, clinical_table, model, out, progress=step)
            prediction, contributions = result["prediction"], result["contributions"]
            prediction["missing_inputs"] = ";".join(missing)
            _write_csv(prediction, paths.prediction_table, index=True)
            written["prediction"] = paths.prediction
            inputs["prediction model"] = Path(model) / "checksums.sha256"

    deep, deep_not_made = None, deep_model and deep_stage_skip(deep_phases, registered, len(lesions))
    if deep_not_made:
        stages.skip(DEEP_STAGE, deep_not_made)
    elif deep_model:
        with stages.stage(DEEP_STAGE):
            deep = predict_deep(out, deep_model)
            written[DEEP_STAGE] = paths.deep_prediction
            inputs["deep fusion model"] = Path(deep_model) / "checksums.sha256"

    with stages.stage("report"):
        from .report import from_results, write_report, write_run_record

        write_run_record(out, inputs=inputs, model=model if prediction is not None else None,
                         prediction_not_made=not_made, radiomics=backend)
        data = from_results(
            study_id=study.study_id, images={s.phase.value: s.image for s in registered}, labels=seg.labels,
            lesions=seg.lesion_map, modality=registered[ref].modality.value, assessment=assessment,
            registration_qc=registration.qc, registration_images=registration.checkerboards,
            kinetics=extraction.kinetics, diagnostics=extraction.diagnostics, staging=staging, prediction=prediction,
            contributions=contributions, prediction_not_made=not_made, model=model if prediction is not None else None,
            inputs=inputs, segmentation=seg_summary, followup=followup, deep=out,
            nomogram=paths.nomogram_figure if prediction is not None and paths.nomogram_figure.is_file() else None)
        written["report"] = write_report(data, paths.report)

    dicom = {}
    if not _labelled(seg.labels):  # dicom.export_dicom needs a segment for the SEG
        log.warning("empty segmentation: no DICOM SEG/SR written, nothing pushed")
        stages.skip("dicom", "empty segmentation")
        if push:
            stages.skip("push", "empty segmentation")
            push = False
    else:
        with stages.stage("dicom"):
            from .dicom import export_dicom
            from .lesions import LesionTable

            probabilities = ({str(r["endpoint"]): float(r["probability"]) for _, r in prediction.iterrows()}
                             if prediction is not None and "probability" in prediction else None)
            dicom = export_dicom(registered[ref], seg.labels, LesionTable(seg.lesions), paths.dicom,
                                 study_id=study.study_id, lirads=assessment.table(), lesion_labels=seg.lesion_map,
                                 predictions=probabilities, keep_identifiers=keep_identifiers or push)
            written["dicom"] = paths.dicom

    pushed = None
    if push:
        with stages.stage("push") as step:
            from .pacs import Pacs

            pushed = Pacs(pacs_url).push([dicom["seg"], dicom["sr"], *dicom["source"]], progress=step)
    progress(1.0, "done")
    stages.status.setdefault("push", "skipped: no --push")
    result = RunResult(study.study_id, out, ref, study_phases(registered), registration.qc, lesions,
                       {k: str(v) for k, v in staging.items()}, prediction, written["report"], dicom, pushed,
                       stages.seconds, written, seg_summary, stages.status, followup, deep)
    log.debug("%s", result.describe())
    return result


# ---------------------------------------------------------------- stage helpers (wiring, no science)
def _followup(prior, registered, ref: str, seg, extraction, seed: int, interval_months, registration_options,
              radiomics: dict):
    """followup.compare of this study with the baseline run `prior` (its per-lesion features extracted if missing);
    between time points the registration is always deformable (breathing differs), whatever `mode` is."""
    from .followup import Timepoint, compare

    baseline = Timepoint.from_run(prior)
    if baseline.features is None or not baseline.features.region.str.startswith("lesion").any():
        from .radiomics import extract_study
        from .registration import RegistrationResult

        study = RegistrationResult.read(RunFolder(prior).registration).study
        baseline.features = extract_study(study, baseline.labels, regions=("lesions",), lesions=baseline.lesions,
                                          **radiomics).long
    current = Timepoint.from_study(registered, ref, seg.labels, seg.lesion_map, extraction.long)
    return compare(baseline, current, seed=seed, interval_months=interval_months,
                   **(registration_options or {}))


def _fingerprint(study_or_path, pacs_study_uid, settings: dict) -> str:
    """resume.fingerprint of the run's input files (study, models, label map) and settings."""
    from .resume import fingerprint

    inputs = {"study": Path(study_or_path)} if isinstance(study_or_path, (str, Path)) else {}
    for key in ("model", "seg_model", "segmentation", "prior", "risk_bundle", "deep_model"):
        if settings.get(key) and Path(settings[key]).exists():
            inputs[key] = Path(settings[key])
    return fingerprint(inputs, {**settings, "pacs_study_uid": pacs_study_uid})


def _registration_mask(study, reference, segmentation, engine: str, seg_model, progress):
    """(mask, note, located): the reference series' liver before registration, so that the registration aligns
    the liver rather than the whole volume: the user's label map, else the engine's cheap coarse pass
    (segmentation.engines.locate_liver; its `located` seeds the later segmentation). mask None = whole volumes,
    for a single series or when no liver is found (logged). The note (mask, engine, seconds or the reason) goes
    into the registration's study.json."""
    from .registration.study_registration import choose_reference, liver_mask
    from .study import Series

    if len(study) < 2:
        return None, {"mask": None, "reason": "single series: nothing to register"}, None
    ref = choose_reference(study, reference)
    t0, located = time.time(), None
    try:
        if segmentation:
            seg, info = _segment(study, ref.name, segmentation, engine, seg_model, False, progress)
            mask = liver_mask(Series(ref.name, ref.phase, ref.image, ref.modality, {"labels": seg.labels}))
            reason = None if _labelled(mask) else "empty liver mask"
        else:
            from .segmentation.engines import locate_liver

            mask, info, located = locate_liver(study, engine, model=seg_model, reference=ref.name,
                                               progress=progress)
            reason = info.get("reason")
    except HCCFusionError as error:
        info, reason = {"engine": engine}, f"{type(error).__name__}: {error}"
    note = {"series": ref.name, "engine": info.get("engine"), "seconds": round(time.time() - t0, 2),
            **({"pass": info["pass"]} if "pass" in info else {})}
    if reason:
        log.warning("no liver of '%s' before registration (%s): registering whole volumes", ref.name, reason)
        return None, {"mask": None, **note, "reason": f"no liver before registration ({reason})"}, None
    log.info("liver of '%s' for registration (%s) in %.1f s", ref.name, info["engine"], note["seconds"])
    return mask, {"mask": "liver", **note}, located


def _segment(registered, ref: str, segmentation, engine: str, seg_model, tta: bool, progress, located=None):
    """(Segmentation, info): the user's label map on the reference grid, or the chosen engine's output."""
    from .segmentation.predictor import Segmentation, lesion_table as measure_lesions

    if segmentation:
        from .io import read_image
        from .study import check_same_grid

        labels = read_image(segmentation)
        check_same_grid(registered[ref].image, labels,
                        f"segmentation '{segmentation}' (it must lie on the grid of the reference series '{ref}'; "
                        "resample it there or segment with the model instead)")
        import SimpleITK as sitk

        labels = sitk.Cast(labels, sitk.sitkUInt8)
        labels.CopyInformation(registered[ref].image)
        lesion_map, table = measure_lesions(labels)
        info = {"engine": "user", "engine_reason": f"your label map {Path(segmentation).name}",
                "file": str(segmentation)}
        return Segmentation(labels, table, lesion_map, {"source": "user"}), info
    from .segmentation.engines import segment

    return segment(registered, engine, model=seg_model, reference=ref, tta=tta, located=located, progress=progress)


def lesion_table(measured, assessment):
    """Segmentation measurements (volume, max diameter, centroid) joined with the LI-RADS row of each lesion.

    `diameter_mm` is LI-RADS' longest diameter (what the SR reports); `max_diameter_mm` the segmentation's. MRI adds
    the ADC's restricted diffusion; a study with a portal vein label the measured tumour in vein (lirads_tiv)."""
    import pandas as pd

    table = measured.set_index("lesion")
    lirads = assessment.table()
    columns = ["diameter_mm", "aphe", "washout", "capsule", "threshold_growth", "category"]
    columns += [c for c in ("restricted_diffusion", "restricted_diffusion_value", "tumour_in_vein") if c in lirads]
    if lirads.empty:
        return table.assign(**{c: pd.Series(dtype=object) for c in columns})
    return table.join(lirads[columns], how="left")


def _labelled(image) -> bool:
    import SimpleITK as sitk

    return bool(sitk.GetArrayViewFromImage(image).any())


def study_phases(study) -> list[str]:
    return [s.phase.value for s in study]


def _write_csv(frame, path: Path, index: bool = False) -> Path:
    from .files import atomic_write

    with atomic_write(path) as tmp:
        frame.to_csv(tmp, index=index)
    return path
