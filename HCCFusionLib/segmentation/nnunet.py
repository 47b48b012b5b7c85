"""nnU-Net v2 interop: run a trained nnU-Net v2 model folder (the user's own or a public one) on a study.

The folder is what nnU-Net v2 writes under nnUNet_results: `<Trainer>__<Plans>__<Configuration>/` with
dataset.json, plans.json and fold_<k>/checkpoint_final.pth. Study phases are mapped to the model's
channels by name (dataset.json "channel_names", e.g. "AP"/"arterial", "PVP"/"portal venous"), or
explicitly (`channel_map`); the model's labels are mapped to study.LABELS by name. Checkpoints are
checked with torch's restricted (weights-only) unpickler before nnunetv2 reads them. Needs the optional
`nnunet` extra (`pip install 'hccfusion[nnunet]'`), which is not part of `all`.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import IntegrityError, InputError, ModelError, require
from ..progress import silent
from ..study import LABELS, Phase

log = logging.getLogger(__name__)

CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_best.pth")
GENERIC_CHANNELS = {"CT", "MR", "MRI", "PET", "PT", "NONORM", "ZSCORE", "RESCALE_TO_0_1", "RGB_TO_0_1", "IMAGE"}
LABEL_SYNONYMS = {
    "liver": "liver", "tumour": "tumour", "tumor": "tumour", "lesion": "tumour", "cancer": "tumour",
    "hcc": "tumour", "neoplasm": "tumour", "liver_tumor": "tumour", "liver_tumour": "tumour",
    "spleen": "spleen", "portal_vein": "portal_vein", "portal_vein_and_splenic_vein": "portal_vein",
}


@dataclass
class NnUNetModel:
    path: Path
    dataset: dict
    plans: dict
    folds: list[str]
    checkpoint: str

    @property
    def channel_names(self) -> list[str]:
        names = self.dataset.get("channel_names") or self.dataset.get("modality") or {}
        return [str(names[k]) for k in sorted(names, key=int)]

    @property
    def labels(self) -> dict:
        return dict(self.dataset["labels"])


def open_model(folder: "str | Path", folds=None) -> NnUNetModel:
    """Validate an nnU-Net v2 trained model folder (dataset.json, plans.json, fold checkpoints)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"nnU-Net model folder '{folder}' does not exist: give the "
                         "<Trainer>__<Plans>__<Configuration> folder under nnUNet_results.")
    docs = {}
    for name in ("dataset.json", "plans.json"):
        try:
            docs[name] = json.loads((folder / name).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"nnU-Net model folder '{folder}' has no readable {name} ({exc}): point to the "
                             "trained model folder (it holds dataset.json, plans.json and fold_* folders).") from None
    dataset = docs["dataset.json"]
    if not (dataset.get("channel_names") or dataset.get("modality")) or "labels" not in dataset:
        raise InputError(f"'{folder / 'dataset.json'}' lacks \"channel_names\" or \"labels\": not an nnU-Net v2 "
                         "dataset.json.")
    present = sorted(p.name[5:] for p in folder.glob("fold_*") if p.is_dir())
    wanted = [str(f) for f in folds] if folds else present
    checkpoint = None
    for name in CHECKPOINTS:
        if wanted and all((folder / f"fold_{f}" / name).is_file() for f in wanted):
            checkpoint = name
            break
    if checkpoint is None:
        raise InputError(f"nnU-Net model folder '{folder}' has no {' or '.join(CHECKPOINTS)} for fold(s) "
                         f"{wanted or '(none found)'} (folds present: {present or 'none'}).")
    return NnUNetModel(folder, dataset, docs["plans.json"], wanted, checkpoint)


def _phase_of(name: str) -> Phase | None:
    for text in [name] + [t for t in re.split(r"[^A-Za-z0-9]+", name) if t]:
        try:
            return Phase.parse(text)
        except InputError:
            continue
    return None


def map_channels(model: NnUNetModel, study, channel_map: dict | None = None, reference: str | None = None) -> list[str]:
    """Study series name for each model channel, in channel order.

    `channel_map` keys are channel indices ("0") or names ("AP"), values series names or phases.
    Otherwise a channel named after a phase takes that phase's series; a single generic channel ("CT",
    "MRI", ...) takes the reference series (default PVP).
    """
    channel_map = {str(k): v for k, v in (channel_map or {}).items()}
    names = model.channel_names
    unknown = sorted(set(channel_map) - set(names) - {str(i) for i in range(len(names))})
    if unknown:
        raise ModelError(f"--channel names {unknown} are not channels of nnU-Net model '{model.path}' "
                         f"(channels: {dict(enumerate(names))}).")
    series = []
    for i, name in enumerate(names):
        key = channel_map.get(str(i), channel_map.get(name))
        if key is None:
            phase = _phase_of(name)
            if phase is not None and name.upper() not in GENERIC_CHANNELS:
                key = phase.value
            elif len(names) == 1:
                key = reference or ("PVP" if study.get("PVP") is not None else next(iter(study.series), None))
        found = study.get(key) if key is not None else None
        if found is None:
            raise ModelError(
                f"nnU-Net model '{model.path}' channel {i} ('{name}') has no matching series in study "
                f"'{study.study_id}' (series: {list(study.series)}): map it with --channel {i} SERIES "
                f"(Slicer: Channel map \"{i}=PHASE\").")
        series.append(found.name)
    if len(set(series)) < len(series):
        log.warning("Several nnU-Net channels read the same series: %s", series)
    return series


def map_labels(model: NnUNetModel) -> dict[int, int]:
    """nnU-Net label value -> study.LABELS value (unknown structures become background, with a warning)."""
    mapping = {}
    for name, value in model.labels.items():
        if isinstance(value, (list, tuple)):
            raise ModelError(f"nnU-Net model '{model.path}' is region-based (label '{name}' = {value}): "
                             "only plain label models are supported.")
        key = LABEL_SYNONYMS.get(re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_"))
        if int(value) == 0:
            continue
        if key is None:
            log.warning("nnU-Net label '%s' has no HCCFusion equivalent: written as background.", name)
        mapping[int(value)] = LABELS[key] if key else 0
    if LABELS["liver"] not in mapping.values():
        raise ModelError(f"nnU-Net model '{model.path}' has no liver label (labels: {model.labels}): "
                         "it cannot be used for liver/tumour segmentation.")
    return mapping


def check_checkpoint(path: Path, plans: dict | None = None) -> None:
    """Refuse a checkpoint that holds anything but tensors, plain containers and numpy scalars (read with torch's
    weights-only unpickler) or, given the plans, one whose configuration the plans lack."""
    import torch

    safe = [np.dtype, np._core.multiarray.scalar] + [type(np.dtype(t)) for t in ("float64", "float32", "int64")]
    try:
        with torch.serialization.safe_globals(safe):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError/RuntimeError/... for disallowed content
        raise IntegrityError(f"nnU-Net checkpoint '{path}' holds objects other than weights "
                             f"({str(exc).splitlines()[0][:160]}): refusing to unpickle it.") from None
    configuration = checkpoint.get("init_args", {}).get("configuration") if isinstance(checkpoint, dict) else None
    if plans is not None and (configuration not in plans.get("configurations", {})
                              or "network_weights" not in checkpoint or "trainer_name" not in checkpoint):
        raise ModelError(f"nnU-Net checkpoint '{path}' is not a trained nnU-Net v2 checkpoint for its plans.json "
                         f"(configuration {configuration!r}; plans have {sorted(plans.get('configurations', {}))}).")


def segment_study_nnunet(study, folder, *, folds=None, tta: bool = True, channel_map: dict | None = None,
                         reference: str | None = None, postprocess: bool = True, device: str = "cpu", progress=None):
    """Segment a study with an nnU-Net v2 model folder; labels on the reference series' grid (study.LABELS).

    `postprocess`: the same clean-up as the bundle predictor (largest liver, tumours in the liver, no lesion
    under 0.05 ml), so lesion tables mean the same for both engines; nnU-Net's own postprocessing.pkl is a
    pickle and is not read.
    """
    from .data import case_from_study
    from .predictor import Segmentation, postprocess_in_box

    progress = progress or silent
    model = open_model(folder, folds)
    series = map_channels(model, study, channel_map, reference)
    label_map = map_labels(model)
    predict_mod = require("nnunetv2.inference.predict_from_raw_data", "nnunet")
    import torch

    for fold in model.folds:
        check_checkpoint(model.path / f"fold_{fold}" / model.checkpoint, model.plans)
    ref = reference or ("PVP" if "PVP" in series or study.get("PVP") is not None else series[0])
    case = case_from_study(study, series, ref)
    image = np.stack([sitk.GetArrayFromImage(case.images[s]).astype(np.float32) for s in series])  # (C, z, y, x)
    progress(0.1, "nnU-Net: loading the model and predicting")
    chatter = io.StringIO()  # nnunetv2 prints to stdout, which the CLI keeps for progress lines
    with contextlib.redirect_stdout(chatter):
        predictor = predict_mod.nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=tta,
                                                perform_everything_on_device=device != "cpu",
                                                device=torch.device(device), allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(model.path), use_folds=tuple(
            int(f) if f.isdigit() else f for f in model.folds), checkpoint_name=model.checkpoint)
        raw = predictor.predict_single_npy_array(image, {"spacing": list(case.reference.GetSpacing())[::-1]})
    if chatter.getvalue().strip():
        log.debug("nnunetv2: %s", chatter.getvalue().strip())
    out = np.zeros(raw.shape, np.uint8)
    for value, target in label_map.items():
        out[raw == value] = target
    labels = sitk.GetImageFromArray(out)
    labels.CopyInformation(case.reference)
    labels, lesion_map, table = postprocess_in_box(labels, postprocess)
    progress(1.0, "nnU-Net segmentation done")
    return Segmentation(labels, table, lesion_map,
                        {"tta": tta, "folds": model.folds, "channels": series, "postprocess": postprocess})
