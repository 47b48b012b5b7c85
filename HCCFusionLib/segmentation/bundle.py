"""Model bundle: a folder with plans.json, dataset.json, weights.safetensors, model_card.json/.md and
checksums.sha256 (`sha256sum` format). Every file is checked on load; anything tampered, missing or
unexpected (e.g. a pickle) is refused with an IntegrityError. Weights are safetensors only.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from ..files import atomic_folder
from ..files import sha256_file as sha256
from ..errors import IntegrityError, InputError, ModelError

log = logging.getLogger(__name__)

FILES = ("plans.json", "dataset.json", "weights.safetensors", "model_card.json", "model_card.md")
CHECKSUMS = "checksums.sha256"
NOT_FOR_CLINICAL_USE = "Phantom-trained research model: not for clinical use."


def default_bundle_path() -> Path:
    """The shipped sample model (two-phase CT AP+PVP, trained on phantoms)."""
    return Path(__file__).resolve().parents[1] / "models" / "hcc_phantom_ct"


@dataclass
class Bundle:
    path: Path
    plans: dict
    dataset: dict
    card: dict

    @property
    def channels(self) -> list[str]:
        return [c["name"] for c in self.dataset["channels"]]

    @property
    def labels(self) -> dict:
        return dict(self.dataset["labels"])

    def build_network(self):
        """The network of the plans with the bundle's weights, in eval mode: plans "architecture"
        "unet_generalized" (ported pyliverlesionseg U-Net, config in plans "network"), else the DynUNet."""
        from safetensors.torch import load_model

        if self.plans.get("architecture") == "unet_generalized":
            from .unet_generalized import build_unet

            net = build_unet(self.plans["network"])
        else:
            from .network import build_network

            net = build_network(self.plans)
        try:
            load_model(net, str(self.path / "weights.safetensors"), strict=True)
        except (RuntimeError, KeyError) as exc:
            raise ModelError(f"Weights in '{self.path}' do not fit the network of its plans.json ({str(exc)[:200]})."
                             ) from None
        return net.eval()


def verify(folder: "str | Path") -> None:
    """Check every file of a bundle against checksums.sha256; raise IntegrityError on any mismatch."""
    folder = Path(folder)
    sums_path = folder / CHECKSUMS
    if not sums_path.is_file():
        raise IntegrityError(f"Model bundle '{folder}' has no {CHECKSUMS}: it cannot be verified; re-export it.")
    sums = {}
    for line in sums_path.read_text().splitlines():
        if line.strip():
            digest, _, name = line.strip().partition("  ")
            sums[name.lstrip("*")] = digest
    missing = [f for f in FILES if f not in sums or not (folder / f).is_file()]
    if missing:
        raise IntegrityError(f"Model bundle '{folder}' lacks {missing} (or their checksums): re-export the bundle.")
    extra = sorted(p.name for p in folder.iterdir() if p.name not in sums and p.name != CHECKSUMS
                   and not p.name.startswith("."))
    if extra:
        raise IntegrityError(f"Model bundle '{folder}' holds unexpected file(s) {extra} not covered by {CHECKSUMS} "
                             "(bundles hold safetensors weights and JSON only): remove them.")
    for name, digest in sums.items():
        if name not in FILES:
            raise IntegrityError(f"Model bundle '{folder}' lists unexpected file '{name}' in {CHECKSUMS}.")
        if sha256(folder / name) != digest:
            raise IntegrityError(f"File '{folder / name}' does not match its SHA-256 in {CHECKSUMS}: the bundle was "
                                 "modified or corrupted; do not use it, re-download or retrain it.")


def load_bundle(folder: "str | Path | None" = None) -> Bundle:
    """Verify and open a bundle (default: the shipped sample model)."""
    folder = Path(folder) if folder is not None else default_bundle_path()
    if not folder.is_dir():
        raise InputError(f"Model bundle folder '{folder}' does not exist: give a folder written by "
                         "`hccfusion train-seg` (or omit --model for the shipped sample).")
    verify(folder)
    plans, dataset, card = (json.loads((folder / f).read_text()) for f in ("plans.json", "dataset.json",
                                                                            "model_card.json"))
    if [c["name"] for c in dataset["channels"]] != plans["channels"]:
        raise IntegrityError(f"Bundle '{folder}': dataset.json channels disagree with plans.json.")
    unknown = sorted(set(plans.get("tta_labels", [])) - set(plans["labels"]))
    if unknown:
        raise IntegrityError(f"Bundle '{folder}': plans.json names TTA labels {unknown} that are not among its "
                             f"labels {list(plans['labels'])}: re-export the bundle.")
    return Bundle(folder, plans, dataset, card)


def dataset_description(plans: dict, num_training: int, reference: str = "PVP") -> dict:
    channels = [{"name": c, "phase": c, "modality": m} for c, m in zip(plans["channels"], plans["modalities"])]
    return {"channels": channels,
            "labels": plans["labels"], "reference": reference, "num_training": num_training,
            "axes": "xyz"}


def card_markdown(card: dict, notice: str = "") -> str:
    """The card as Markdown; `notice` (e.g. a licence NOTICE) is appended verbatim."""
    lines = [f"# {card.get('name', 'Segmentation model')}", "", f"**{card.get('intended_use', NOT_FOR_CLINICAL_USE)}**",
             ""]
    for key, value in card.items():
        if key != "name":
            lines.append(f"- **{key}**: {json.dumps(value) if isinstance(value, (dict, list)) else value}")
    return "\n".join(lines) + "\n" + (f"\n{notice.strip()}\n" if notice else "")


def save_bundle(folder: "str | Path", plans: dict, dataset: dict, network, card: dict, *,
                intended_use: str = NOT_FOR_CLINICAL_USE, notice: str = "") -> Path:
    """Write a bundle (network: the trained torch module) atomically (temporary sibling folder, then rename).
    `notice` is appended to model_card.md (bundles hold no other files)."""
    from safetensors.torch import save_model

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    card = {**card, "intended_use": intended_use}
    with atomic_folder(folder, replace=True) as tmp:
        (tmp / "plans.json").write_text(json.dumps(plans, indent=2))
        (tmp / "dataset.json").write_text(json.dumps(dataset, indent=2))
        save_model(network.cpu(), str(tmp / "weights.safetensors"))
        (tmp / "model_card.json").write_text(json.dumps(card, indent=2))
        (tmp / "model_card.md").write_text(card_markdown(card, notice))
        (tmp / CHECKSUMS).write_text("".join(f"{sha256(tmp / f)}  {f}\n" for f in FILES))
        for path in [tmp, *tmp.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    log.info("Model bundle written to %s", folder)
    return folder
