"""Which segmentation engine serves a study, and running it.

Engines (`--engine` on `segment` and `run`, the panel's engine choice, `segment(study, engine=...)`):
- `liverlesion`: the real-data liver and lesion engine (ported from pyliverlesionseg; one CT series of any
  phase, or one MR series);
- `phantom`: the shipped phantom-trained sample model (CT AP + PVP), a sample for synthetic studies only;
- `bundle` (a model bundle folder) and `nnunet` (an nnU-Net v2 results folder), given by the user.

`auto` picks `phantom` only for a synthetic (phantom) study that has its AP and PVP phases, and `liverlesion`
for everything else: a model trained on phantoms is never the answer for a patient.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..study import Modality, Phase

log = logging.getLogger(__name__)

ENGINES = ("auto", "liverlesion", "phantom", "bundle", "nnunet")
PHANTOM_CHANNELS = (Phase.AP, Phase.PVP)
#: options each engine takes besides tta / postprocess / reference
OPTIONS = {"phantom": ("overlap", "max_memory_mb"), "bundle": ("overlap", "max_memory_mb"),
           "nnunet": ("folds", "channel_map"), "liverlesion": ()}


@dataclass(frozen=True)
class EngineChoice:
    engine: str  # one of ENGINES except "auto"
    reason: str  # why this engine, in one line (printed by the CLI, shown in the panel and the report)


def choose_engine(study, engine: str = "auto", *, model: "str | Path | None" = None,
                  nnunet: "str | Path | None" = None) -> EngineChoice:
    """The engine that serves `study` (`engine` "auto" decides from its phases), or InputError saying what
    the study lacks."""
    engine = (engine or "auto").lower()
    if engine not in ENGINES:
        raise InputError(f"Unknown segmentation engine '{engine}': use one of {', '.join(ENGINES)}.")
    if model and nnunet:
        raise InputError("Give either a model bundle (--model) or an nnU-Net folder (--nnunet), not both.")
    if engine == "auto" and (model or nnunet):
        engine = "nnunet" if nnunet else "bundle"
    if engine in ("bundle", "nnunet"):
        if not (nnunet if engine == "nnunet" else model):
            raise InputError(f"Engine '{engine}' needs its folder: give --{'nnunet' if engine == 'nnunet' else 'model'}"
                             " FOLDER.")
        return EngineChoice(engine, f"{'nnU-Net v2 folder' if engine == 'nnunet' else 'model bundle'} given by the user")
    has_phantom_phases = all(_ct(study, p) for p in PHANTOM_CHANNELS)
    synthetic = len(study) > 0 and all(s.meta.get("phantom") for s in study)
    if engine == "phantom":
        if not has_phantom_phases:
            raise InputError(f"The phantom sample model needs CT AP and PVP; study '{study.study_id}' has "
                             f"{_phases(study)}: use --engine liverlesion (one CT or MR series is enough).")
        return EngineChoice("phantom", "requested (phantom-trained sample model: not for patients)")
    imaging = [s for s in study if s.phase.modality in (Modality.CT, Modality.MR)]
    if not imaging:
        raise InputError(f"Study '{study.study_id}' has {_phases(study)}: segmentation needs a CT series (any "
                         "phase) or an MR series. Add one, or give your own label map (--segmentation).")
    if engine == "auto" and synthetic and has_phantom_phases:
        return EngineChoice("phantom", "synthetic phantom study with CT AP and PVP: the phantom sample model")
    why = "requested" if engine == "liverlesion" else (
        "real study" if has_phantom_phases else f"study has {_phases(study)} (the phantom sample model needs "
                                                "synthetic CT AP + PVP)")
    return EngineChoice("liverlesion", f"{why}: real-data liver and lesion engine on one series")


def locate_liver(study, engine: str = "auto", *, model=None, nnunet=None, reference: str | None = None,
                 progress=None):
    """(mask, info, located): a cheap, coarse liver of the reference series of an unregistered study, for the
    registration's fixed mask; `info` names the engine, its seconds and, when `mask` is None, the reason.
    phantom/bundle: the predictor's locate pass only (`predictor.locate_study`), returned as `located` to seed
    `segment`; liverlesion: its own liver stage (no lesion network), returned as `located` too (`segment` reuses
    it); nnunet: none (no cheap pass)."""
    import time

    import SimpleITK as sitk

    from .domain import check_output

    t0 = time.time()
    choice = choose_engine(study, engine, model=model, nnunet=nnunet)
    info, located = {"engine": choice.engine}, None
    if choice.engine == "nnunet":
        return None, {**info, "reason": "engine nnunet has no cheap liver pass"}, None
    if choice.engine == "liverlesion":
        from .bundle import load_bundle
        from .liverlesion import choose_series, liver_stage, segment_image_liverlesion
        from .liverlesion_models import bundle_path

        series, _ = choose_series(study, reference)
        located = liver_stage(series.image, series.modality, progress=progress)
        labels = segment_image_liverlesion(series.image, series.modality, lesions=False, liver=located).labels
        domain = load_bundle(bundle_path("liver")).card.get("domain")
        info["pass"] = "liver stage"
    else:
        from .bundle import default_bundle_path, load_bundle
        from .predictor import locate_study

        bundle = load_bundle(model if choice.engine == "bundle" else default_bundle_path())
        located = locate_study(study, bundle, reference=reference, progress=progress)
        labels, domain = located.mask, bundle.card.get("domain")
        info.update({"pass": "locate", "scale": located.meta["scale"], "overlap": located.meta["overlap"]})
    info["seconds"] = round(time.time() - t0, 2)
    failure = check_output(labels, domain)
    if failure:
        return None, {**info, "reason": failure}, None
    return sitk.Cast(labels > 0, sitk.sitkUInt8), info, located


def segment(study, engine: str = "auto", *, model=None, nnunet=None, reference: str | None = None,
            tta: bool = True, postprocess: bool = True, located=None, progress=None, **options):
    """(Segmentation, info) of a (registered) study by the chosen engine; `info` says which engine and why, and
    holds the domain QC (segmentation.domain): "qc_warnings" (study outside the model's domain, checked before it
    runs) and "qc_failure" (no liver, or far too small; None when fine). Neither changes the label map.
    `located`: `locate_liver`'s seed (phantom/bundle: their first pass is skipped; liverlesion: its liver stage).

    `options` go to the engine that takes them (OPTIONS); a set option the chosen engine does not take is refused."""
    from .domain import check_input, check_output

    choice = choose_engine(study, engine, model=model, nnunet=nnunet)
    options = {k: v for k, v in options.items() if v not in (None, {}, [])}
    unused = sorted(set(options) - set(OPTIONS[choice.engine]))
    if unused:
        raise InputError(f"Option(s) {', '.join(unused)} do not apply to segmentation engine '{choice.engine}' "
                         f"({choice.reason}); leave them out.")
    log.info("segmentation engine %s: %s", choice.engine, choice.reason)
    if choice.engine in ("phantom", "liverlesion"):
        from .catalog import check

        check(choice.engine)
    info = {"engine": choice.engine, "engine_reason": choice.reason}
    if choice.engine == "nnunet":
        from .nnunet import segment_study_nnunet

        run = lambda: segment_study_nnunet(study, nnunet, tta=tta, reference=reference,  # noqa: E731
                                           postprocess=postprocess, progress=progress, **options)
        domain, read = None, []
        info["model"] = str(nnunet)
    elif choice.engine == "liverlesion":
        from .liverlesion import LiverStage, choose_series, segment_study_liverlesion
        from .bundle import load_bundle
        from .liverlesion_models import bundle_path

        series, _ = choose_series(study, reference)
        liver = located if isinstance(located, LiverStage) else None
        run = lambda: segment_study_liverlesion(study, reference=series.name, progress=progress,  # noqa: E731
                                                liver=liver)
        domain, read = load_bundle(bundle_path("liver")).card.get("domain"), [series.name]
    else:
        from .bundle import default_bundle_path, load_bundle
        from .predictor import segment_study

        bundle = load_bundle(model if choice.engine == "bundle" else default_bundle_path())
        run = lambda: segment_study(study, bundle, reference=reference, tta=tta,  # noqa: E731
                                    postprocess=postprocess, located=located, progress=progress, **options)
        domain, read = bundle.card.get("domain"), [study[c].name for c in bundle.channels if study.get(c)]
        info.update(model=str(bundle.path), channels=bundle.channels)
    info["qc_warnings"] = check_input(study, read, domain)
    for warning in info["qc_warnings"]:
        log.warning("segmentation QC: %s", warning)
    seg = run()
    info.update({k: seg.meta[k] for k in ("series", "series_choice", "crop") if k in seg.meta})
    if choice.engine == "liverlesion":
        from .liverlesion_models import bundle_path

        info["models"] = [str(bundle_path(kind)) for kind in seg.meta["models"]]
    info["qc_failure"] = check_output(seg.labels, domain)
    if info["qc_failure"]:
        log.error("segmentation QC failed: %s", info["qc_failure"])
    return seg, info


def _ct(study, phase: Phase) -> bool:
    series = study.get(phase)
    return series is not None and series.phase.modality is Modality.CT


def _phases(study) -> str:
    return ", ".join(s.phase.value for s in study) or "no series"
