"""Deep fusion bundles: safetensors weights, a model card and SHA-256 sums (the checks of `fusion.bundle`).

    BUNDLE/
      weights.safetensors   the network's tensors + the input normalisation (`input.*` tensors)
      model_card.json       format, estimator parameters, phases, clinical columns, classes, CV metrics, versions
      checksums.sha256      "<sha256>  <file>" for every other file

Loading verifies every checksum first, then builds the network from the card and loads the tensors strictly
(no pickle anywhere).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ..errors import IntegrityError
from ..files import atomic_folder
from ..fusion.bundle import CARD_FILE, _json_default, verify_bundle, versions, write_checksums

log = logging.getLogger(__name__)

WEIGHTS_FILE = "weights.safetensors"
FORMAT = "hccfusion-deep/1"
_INPUT = ("mean_", "std_", "clinical_mean_", "clinical_std_")


def save_deep_bundle(model, folder: "str | Path", card: dict | None = None) -> Path:
    """Write a trained `DeepFusion` as a bundle folder (atomically; an existing bundle is replaced)."""
    import torch
    from safetensors.torch import save_file

    model._checked_fit()
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"net.{k}": v.detach().contiguous() for k, v in model.net_.state_dict().items()}
    tensors.update({f"input.{name}": torch.from_numpy(np.asarray(getattr(model, name), np.float32).copy())
                    for name in _INPUT})
    params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in model.get_params().items()}
    full = {"format": FORMAT, **(card or {}), "params": params, "phases": list(model.phases_),
            "clinical": list(model.clinical_),
            "classes": None if model.classes_ is None else model.classes_.tolist(),
            "cutoffs": getattr(model, "cutoffs_", np.zeros(0)).tolist(), "versions": versions()}
    with atomic_folder(folder, replace=True) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE))
        (tmp / CARD_FILE).write_text(json.dumps(full, indent=2, default=_json_default))
        write_checksums(tmp)
    log.info("deep fusion bundle written to %s", folder)
    return folder


def load_deep_bundle(folder: "str | Path"):
    """(DeepFusion ready to predict, model card) from a verified bundle folder."""
    from safetensors.torch import load_file

    from .model import DeepFusion

    folder = Path(folder)
    verify_bundle(folder, required=(WEIGHTS_FILE, CARD_FILE))
    card = json.loads((folder / CARD_FILE).read_text())
    if card.get("format") != FORMAT:
        raise IntegrityError(f"Bundle '{folder}' has format '{card.get('format')}', expected '{FORMAT}': give a "
                             "bundle written by deepfusion.save_deep_bundle (`hccfusion train-deep`).")
    params = dict(card["params"])
    params["phases"] = tuple(params["phases"])
    model = DeepFusion(**params)
    model.phases_, model.clinical_ = tuple(card["phases"]), list(card["clinical"])
    model.classes_ = None if card["classes"] is None else np.array(card["classes"])
    model.cutoffs_ = np.array(card["cutoffs"])
    tensors = load_file(str(folder / WEIGHTS_FILE))
    for name in _INPUT:
        setattr(model, name, tensors.pop(f"input.{name}").numpy())
    model.net_ = model._network()
    try:
        model.net_.load_state_dict({k[len("net."):]: v for k, v in tensors.items()}, strict=True)
    except RuntimeError as exc:
        raise IntegrityError(f"Bundle '{folder}': the weights do not fit the network its card describes "
                             f"({str(exc)[:200]}).") from None
    model.net_.eval()
    return model, card
