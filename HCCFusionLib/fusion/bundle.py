"""Model bundles: a folder with the fitted model (skops), a model card and SHA-256 sums, checked on load.

    BUNDLE/
      model.skops         the fitted FeatureFusion / DecisionFusion / SurvivalFusion (skops format, no pickle)
      model_card.json     endpoint, kind, fusion, blocks, features, training cohort summary, CV metrics, versions
      definitions.csv     (optional) feature -> definition, shown beside contributions
      nomogram.skops      (optional, `train --nomogram`) the nomogram of the model's score + clinical covariates
      checksums.sha256    "<sha256>  <file>" for every other file

Loading verifies every checksum first (IntegrityError when a file was changed, added or removed), then lists
the types the skops file would construct and refuses any type outside `TRUSTED_TYPES`; only then it loads.
"""
from __future__ import annotations

import json
import logging
import platform
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..files import atomic_folder
from ..files import sha256_file as sha256
from ..errors import IntegrityError, InputError

log = logging.getLogger(__name__)

MODEL_FILE, CARD_FILE, DEFINITIONS_FILE, CHECKSUM_FILE = "model.skops", "model_card.json", "definitions.csv", \
    "checksums.sha256"
NOMOGRAM_FILE = "nomogram.skops"
FORMAT = "hccfusion-model/1"

#: The only non-default types a bundle may contain (skops already trusts numpy arrays, builtins and the
#: common scikit-learn estimators; these are the extra ones our models are built from).
TRUSTED_TYPES = (
    "HCCFusionLib.fusion.blocks.ClinicalEncoder",
    "HCCFusionLib.fusion.blocks.ComBat",
    "HCCFusionLib.fusion.blocks.CorrelationFilter",
    "HCCFusionLib.fusion.blocks.Selector",
    "HCCFusionLib.fusion.blocks.output_name",
    "HCCFusionLib.fusion.cca.CCAFusion",
    "HCCFusionLib.fusion.cca.CanonicalVariates",
    "HCCFusionLib.fusion.decision_level.CalibratedBlock",
    "HCCFusionLib.fusion.decision_level.Combiner",
    "HCCFusionLib.fusion.decision_level.DecisionFusion",
    "HCCFusionLib.fusion.feature_level.FeatureFusion",
    "HCCFusionLib.fusion.nomogram.Nomogram",
    "HCCFusionLib.fusion.ordinal.OrdinalLogistic",
    "HCCFusionLib.fusion.survival.SurvivalFusion",
    "numpy.dtype",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.tree._tree.Tree",
    "sksurv.functions.StepFunction",
    "sksurv.linear_model.coxnet.CoxnetSurvivalAnalysis",
    "sksurv.linear_model.coxph.BreslowEstimator",
    "sksurv.linear_model.coxph.CoxPHSurvivalAnalysis",
)


@dataclass
class Bundle:
    model: object
    card: dict
    definitions: pd.DataFrame | None
    path: Path
    nomogram: object = None  # fusion.nomogram.Nomogram when the bundle has one


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for package in ("hccfusion", "scikit-learn", "scikit-survival", "skops", "numpy", "pandas"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def save_bundle(model, folder: "str | Path", card: dict, definitions: pd.DataFrame | None = None,
                nomogram=None) -> Path:
    """Write the bundle folder atomically (built beside it, then renamed); an existing bundle is replaced."""
    import skops.io as sio

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_folder(folder, replace=True) as tmp:
        sio.dump(model, tmp / MODEL_FILE)
        if nomogram is not None:
            sio.dump(nomogram, tmp / NOMOGRAM_FILE)
        card = {"format": FORMAT, **card, "versions": versions()}
        (tmp / CARD_FILE).write_text(json.dumps(card, indent=2, default=_json_default))
        if definitions is not None:
            definitions.to_csv(tmp / DEFINITIONS_FILE, index=False)
        write_checksums(tmp)
    log.info("model bundle written to %s", folder)
    return folder


def write_checksums(folder: Path) -> None:
    """checksums.sha256 listing every file of the (bundle) folder."""
    files = sorted(p.name for p in folder.iterdir() if p.name != CHECKSUM_FILE)
    (folder / CHECKSUM_FILE).write_text("".join(f"{sha256(folder / name)}  {name}\n" for name in files))


def _json_default(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def verify_bundle(folder: "str | Path", required=(MODEL_FILE, CARD_FILE)) -> dict[str, str]:
    """Check checksums.sha256 against the folder (and that the `required` files are listed); IntegrityError
    naming the first problem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"Model bundle '{folder}' is not a folder: give the folder written by `hccfusion train`.")
    listing = folder / CHECKSUM_FILE
    if not listing.is_file():
        raise IntegrityError(f"Model bundle '{folder}' has no {CHECKSUM_FILE}: it cannot be verified; retrain it.")
    expected = {}
    for line in listing.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if not digest or not name or "/" in name or name.startswith("."):
            raise IntegrityError(f"Malformed line in {listing}: '{line[:80]}'.")
        expected[name] = digest
    present = {p.name for p in folder.iterdir() if p.is_file() and p.name != CHECKSUM_FILE}
    for name in sorted(present | set(expected)):
        if name not in expected:
            raise IntegrityError(f"Model bundle '{folder}' contains '{name}', which is not in {CHECKSUM_FILE}: "
                                 "the bundle was modified; use the original or retrain.")
        if name not in present:
            raise IntegrityError(f"Model bundle '{folder}' is missing '{name}' listed in {CHECKSUM_FILE}.")
        if sha256(folder / name) != expected[name]:
            raise IntegrityError(f"'{folder / name}' does not match its SHA-256 in {CHECKSUM_FILE}: the bundle "
                                 "was modified or damaged; use the original or retrain.")
    for name in required:
        if name not in expected:
            raise IntegrityError(f"Model bundle '{folder}' has no {name}.")
    return expected


def load_bundle(folder: "str | Path") -> Bundle:
    """Verify and load a bundle; never constructs a type outside the trusted list."""
    folder = Path(folder)
    verify_bundle(folder)
    card = json.loads((folder / CARD_FILE).read_text())
    if card.get("format") != FORMAT:
        raise IntegrityError(f"Model bundle '{folder}' has format '{card.get('format')}', expected '{FORMAT}'.")
    model = _load_trusted(folder, MODEL_FILE)
    nomogram = _load_trusted(folder, NOMOGRAM_FILE) if (folder / NOMOGRAM_FILE).is_file() else None
    definitions = pd.read_csv(folder / DEFINITIONS_FILE) if (folder / DEFINITIONS_FILE).is_file() else None
    return Bundle(model, card, definitions, folder, nomogram)


def _load_trusted(folder: Path, name: str):
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=folder / name)
    refused = sorted(set(untrusted) - set(TRUSTED_TYPES))
    if refused:
        raise IntegrityError(f"Model bundle '{folder}' contains types outside the trusted list: {refused[:5]}; "
                             "it was not loaded.")
    return sio.load(folder / name, trusted=list(untrusted))
