"""The piece of science the glue still does itself, behind one call in logic.py, until the library has it:
report assembly from a run folder (→ `HCCFusionLib.report.from_folder`, used by `HCCFusionLogic.saveReport`).
Delete this file when that call points at the library. (Lesion labelling now lives in HCCFusionLib.lesions.)
"""
from __future__ import annotations

import json
from pathlib import Path

import SimpleITK as sitk

from HCCFusionLib import scene as mrml
from HCCFusionLib.study import same_grid


def writeReportFromFolder(studyFolder, segmentationNode, outFolder, studyId: str, reportFolder, bundleFolder=None,
                          assessment=None) -> Path:
    """Report assembly from a run folder (the one place; to be replaced by `report.from_folder`)."""
    import pandas as pd

    from HCCFusionLib.io import load_study, read_image
    from HCCFusionLib.report import ReportData, write_report

    study = load_study(studyFolder)
    grid = next(iter(study)).image
    labels = mrml.segmentation_to_labels(segmentationNode, grid) if segmentationNode is not None else None
    out = Path(outFolder)

    def csv(relative):
        return pd.read_csv(out / relative) if (out / relative).is_file() else None

    data = ReportData(study_id=studyId, modality=next(iter(study)).modality.value,
                      images={s.name: s.image for s in study if same_grid(s.image, grid)}, labels=labels,
                      registration_qc=csv("registration/qc.csv"), radiomics=csv("radiomics/kinetics.csv"),
                      registration_images={p.name[:-len("_checkerboard.nii.gz")]: read_image(p) for p in
                                           sorted((out / "registration" / "qc").glob("*_checkerboard.nii.gz"))},
                      prediction=csv("prediction/prediction.csv"),
                      contributions=csv("prediction/contributions.csv"), inputs={"study": Path(studyFolder)})
    if assessment is not None:
        data.lirads, data.lirads_evidence = assessment.table(), assessment.evidence()
        data.lirads_overrides = assessment.overrides_table()
    card = Path(bundleFolder) / "model_card.json" if bundleFolder else None
    if card is not None and card.is_file():
        data.model_card = json.loads(card.read_text(encoding="utf-8"))
    return write_report(data, Path(reportFolder) / "report")
