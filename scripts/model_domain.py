"""Measure the training domain of the shipped phantom sample model (hcc_phantom_ct) and record it in its card.

The domain (segmentation.domain) is measured on a sample of the model's own training phantoms: medium seeds
0, 5, .., 35 and full-size seeds 40, 48, .., 80 (AP and PVP of each), as `scripts/train_sample_model.py` made
them. Rewrites the card and prints the new SHA-256 of its checksums.sha256 for
HCCFusionLib/models/catalog.json. Only the card files and checksums.sha256 change.

    .venv/bin/python scripts/model_domain.py
"""
from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk

from HCCFusionLib.phantom import make_patient
from HCCFusionLib.files import atomic_write, sha256_file
from HCCFusionLib.segmentation.bundle import CHECKSUMS, FILES, card_markdown, default_bundle_path, load_bundle
from HCCFusionLib.segmentation.catalog import bundle_digest
from HCCFusionLib.segmentation.domain import describe, domain_of

SAMPLE = {"medium": range(0, 40, 5), "full": range(40, 88, 8)}


def main() -> None:
    bundle = load_bundle(default_bundle_path())
    cases = []
    for size, seeds in SAMPLE.items():
        for seed in seeds:
            patient = make_patient(seed, size, phases=tuple(bundle.channels), misalignment="none")
            labels = sitk.GetArrayViewFromImage(patient.labels)
            liver_ml = float(np.isin(labels, (1, 2)).sum() * np.prod(patient.labels.GetSpacing())) / 1e3
            cases += [{**describe(patient.study[c].image), "liver_ml": liver_ml} for c in bundle.channels]
    sample = "; ".join(f"{size} seeds {list(seeds)}" for size, seeds in SAMPLE.items())
    card = {**bundle.card, "domain": domain_of(cases, modality=["CT"], phases=bundle.channels, synthetic=True,
                                               cases=f"{len(cases) // 2} training phantoms ({sample})")}
    texts = {"model_card.json": json.dumps(card, indent=2), "model_card.md": card_markdown(card)}
    for name, text in texts.items():
        with atomic_write(bundle.path / name) as tmp:
            tmp.write_text(text)
    with atomic_write(bundle.path / CHECKSUMS) as tmp:
        tmp.write_text("".join(f"{sha256_file(bundle.path / f)}  {f}\n" for f in FILES))
    load_bundle(bundle.path)  # verifies
    print(card["domain"])
    print(f"checksums.sha256 of {bundle.path.name}: {bundle_digest(bundle.path.name)}")


if __name__ == "__main__":
    main()
