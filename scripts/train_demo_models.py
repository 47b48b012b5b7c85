"""Train the shipped demo prediction bundle HCCFusionLib/models/hcc_demo_mvi (endpoint: MVI).

Phantom-trained, not for clinical use. A phantom cohort (phantom.make_cohort) is rendered patient by patient
(small CT phantoms, NC/AP/PVP/DP, phases aligned so no registration is needed), the features are extracted by the
same functions `hccfusion run` uses (radiomics.extract_study -> prediction_inputs.prediction_inputs, with the clinical
stages of clinical.stage_clinical), and a decision-level fusion model (one calibrated logistic model per block,
weighted out of fold; it still predicts when a block such as the clinical data is missing) is trained with
fusion.workflow.train on resolution-robust, reviewable features only: tumour/liver ratios per phase, arterial
enhancement, washout, plus AFP, ALBI score and tumour size. The bundle is written with fusion.bundle.save_bundle
(SHA-256 sums) and its model card says it is phantom-trained.

    .venv/bin/python scripts/train_demo_models.py --n 60
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from HCCFusionLib import pipeline, prediction_inputs
from HCCFusionLib.clinical import stage_clinical
from HCCFusionLib.fusion.bundle import load_bundle, save_bundle
from HCCFusionLib.fusion.workflow import ModelSpec, train
from HCCFusionLib.phantom import make_cohort
from HCCFusionLib.radiomics import extract_study, load_preset

log = logging.getLogger("train_demo_models")
FEATURES = ["AP__tumour__kinetic_ratio_to_liver", "PVP__tumour__kinetic_ratio_to_liver",
            "DP__tumour__kinetic_ratio_to_liver", "AP-NC__tumour__kinetic_arterial_enhancement_vs_liver",
            "AP-PVP__tumour__kinetic_washout_index", "PVP__tumour__kinetic_washout_vs_liver",
            "DP__tumour__kinetic_washout_vs_liver"]
CLINICAL = ["afp", "albi_score", "tumour_size_mm"]
ENDPOINT = "mvi"


def patient_features(cohort, i: int):
    """(features row, clinical row) of cohort patient i, through the functions `run` uses."""
    patient = cohort.patient(i, size="small", mri=False, misalignment="none")
    study = patient.study
    # kinetic features come from the original series whatever the preset; first-order only keeps this fast
    base = load_preset("ct")
    preset = replace(base, preprocess={**base.preprocess, "resample_mm": None}, feature_classes={"firstorder": []})
    extraction = extract_study(study, patient.labels, regions=pipeline.RUN_REGIONS, image_types=["Original"],
                               presets={"*": preset}, workers=1)
    clinical = study.clinical.to_dict()
    features, table = prediction_inputs.prediction_inputs(extraction, study.study_id, clinical, stage_clinical(clinical))
    return features, table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=60, help="phantom patients (default 60)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--cache", type=Path, default=None,
                        help="CSV of extracted training rows: read when present, else written (re-train quickly)")
    parser.add_argument("--out", type=Path, default=pipeline.default_model_path() or
                        Path(pipeline.__file__).parent / "models" / pipeline.DEMO_MODEL)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("radiomics", "HCCFusionLib.radiomics", "HCCFusionLib.phantom"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    started = time.time()
    cohort = make_cohort(args.n, args.seed)
    if args.cache and args.cache.is_file():
        data = pd.read_csv(args.cache, index_col=0)
    else:
        rows = []
        for i in range(args.n):
            try:
                features, table = patient_features(cohort, i)
            except ValueError as exc:  # a phantom the generator cannot render at this size
                log.warning("patient %d skipped: phantom not rendered (%s)", i, exc)
                continue
            rows.append(features.join(table))
            log.info("patient %d/%d (%.0f s)", i + 1, args.n, time.time() - started)
        data = pd.concat(rows)[FEATURES + CLINICAL]
        if args.cache:
            data.to_csv(args.cache)
    features, clinical = data[FEATURES], data[CLINICAL].copy()
    endpoint = cohort.table[ENDPOINT].astype(int)
    clinical[ENDPOINT] = endpoint.set_axis(endpoint.index.astype(str)).loc[clinical.index.astype(str)].to_numpy()
    spec = ModelSpec(fusion="decision", combine="weighted", classifier="logistic", selection=None, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        trained = load_bundle(train(features, clinical, ENDPOINT, Path(tmp) / "bundle", spec, cv=5))
    card = {k: v for k, v in trained.card.items() if k not in ("format", "versions")}
    card.update(
        name=pipeline.DEMO_MODEL,
        intended_use="Demonstration only: trained on synthetic phantoms (HCCFusionLib.phantom). NOT for clinical "
                     "use; its probabilities say nothing about real patients.",
        training_data=f"phantom.make_cohort(n={args.n}, seed={args.seed}); small CT phantoms (NC/AP/PVP/DP); "
                      "features by radiomics.extract_study + pipeline.prediction_inputs (same as `hccfusion run`)",
        training_script="scripts/train_demo_models.py", training_seconds=round(time.time() - started, 1))
    definitions = pd.DataFrame({"feature": FEATURES + CLINICAL, "definition": [
        "AP tumour mean / background-liver mean", "PVP tumour mean / background-liver mean",
        "DP tumour mean / background-liver mean",
        "(AP - NC) of the tumour / (AP - NC) of the background liver (means)",
        "(AP - PVP) / (AP - NC) of the tumour mean: share of arterial enhancement lost by PVP",
        "(liver - tumour) / liver mean in PVP (> 0: tumour darker)",
        "(liver - tumour) / liver mean in DP (> 0: tumour darker)",
        "alpha-fetoprotein (ng/mL)", "ALBI score from bilirubin and albumin (clinical.albi)",
        "largest tumour diameter (mm)"]})
    save_bundle(trained.model, args.out, card, definitions)
    load_bundle(args.out)  # checksums and trusted types verified
    log.info("demo bundle written to %s in %.0f s; CV metrics %s", args.out, time.time() - started,
             card.get("cv_metrics"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
