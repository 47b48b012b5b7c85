"""The inputs of a prediction model from a run's results: the feature and clinical rows `fusion.workflow.predict`
reads (`prediction_inputs`, also used to train the demo models), conformed to a bundle's inputs (`conform`)."""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def prediction_inputs(extraction, study_id: str, clinical: dict, staging: dict):
    """(features, clinical) one-row tables for fusion.workflow.predict; the demo model is trained on the same.

    Features: the extraction's wide row. Clinical: the known Clinical fields plus the ALBI and Child-Pugh
    scores computed from the labs (DERIVED_CLINICAL); None when nothing clinical is known.
    """
    import pandas as pd

    features = extraction.wide
    features.index = pd.Index([study_id], name="study_id")
    values = {k: v for k, v in clinical.items() if v is not None and k != "center"}
    if staging["albi"].ok:
        values["albi_score"] = float(staging["albi"].score)
    if staging["child_pugh"].ok:
        values["child_pugh_score"] = float(staging["child_pugh"].score)
    table = pd.DataFrame([values], index=features.index) if values else None
    return features, table


def conform(features, clinical, model: Path):
    """Add the model's inputs this study lacks as empty (NaN) columns, so the model's own rules apply: a block
    with some values is imputed by the model, a block without any counts as missing (decision-level models
    then predict from the other blocks). Returns (features, clinical, names of the missing inputs)."""
    import json

    import pandas as pd

    needed = json.loads((Path(model) / "model_card.json").read_text()).get("features", [])
    have = set(features.columns) | (set(clinical.columns) if clinical is not None else set())
    missing = [c for c in needed if c not in have]
    if missing:
        log.warning("prediction: %d model input(s) not available for this study: %s", len(missing), missing)
        imaging = [c for c in missing if "__" in c]
        features = features.assign(**{c: float("nan") for c in imaging})
        other = {c: float("nan") for c in missing if "__" not in c}
        if other:
            clinical = (clinical if clinical is not None else pd.DataFrame(index=features.index)).assign(**other)
    return features, clinical, missing
