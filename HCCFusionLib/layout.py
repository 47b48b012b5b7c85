"""The run folder: one typed path for each stage's files, so no caller writes file names out by hand.

    OUT/study/                      exported study (study.json + NIfTI)
    OUT/registration/               <series>_transform.h5, study.json, fused.nii.gz, channels.json, qc.csv, qc/
    OUT/segmentation/               segmentation.nii.gz, segmentation.json, lesions.csv, lesions.nii.gz
    OUT/radiomics/                  features_long.csv, features_wide.csv, kinetics.csv, definitions.csv
    OUT/lirads/, OUT/clinical/      lirads.csv + lesions.csv (+ MR subtraction_*.nii.gz), staging.csv
    OUT/followup/                   matches.csv, response.csv, delta_radiomics.csv, registration.csv (`run --prior`),
                                    risk_curve.csv, risk_inputs.csv (with --risk-bundle)
    OUT/prediction/                 prediction.csv, evidence.csv, contributions.csv, [nomogram.png, nomogram_points.csv]
    OUT/prediction/deep/            prediction.csv, attention.csv, gradcam.npz (`predict-deep`, `run --deep-model`)
    OUT/pet/, OUT/ceus/             suv.nii.gz, sul.nii.gz, lesions.csv (`pet-suv`); perfusion.csv, lirads.csv (`ceus`)
    OUT/report/                     report.html (+ images/)
    OUT/dicom/, OUT/pacs/<uid>/     DICOM SEG/SR, retrieved series
    OUT/run.json                    what `run` was given (inputs, model) and why a stage was skipped
    OUT/audit.jsonl                 one line per stage run
    OUT/stages.json                 completed stages: output SHA-256s + input/settings fingerprint (resume.py)
    OUT/studies/<id>/               a cohort's per-study run folders (cohort-extract, cohort-run)
    OUT/cohort/                     cohort-run's combined status.csv, lesions.csv, prediction.csv

Every stage folder is written through `files.atomic_folder(..., replace=True)`: built as a temporary
sibling and swapped in only when complete, so an interrupted stage leaves the previous one intact.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEEP_STAGE", "RunFolder", "STAGES"]

STAGES = ("registration", "segmentation", "radiomics", "followup", "lirads", "clinical", "prediction", "report",
          "dicom")
#: the deep fusion prediction stage of `run --deep-model`: its folder is nested, OUT/prediction/deep/
DEEP_STAGE = "deep_prediction"


@dataclass(frozen=True)
class RunFolder:
    """Paths inside one run folder `root` (nothing is created or read here)."""

    root: Path

    def __init__(self, root: "str | Path"):
        object.__setattr__(self, "root", Path(root))

    def stage(self, name: str) -> Path:
        """The folder of stage `name` (one of STAGES, DEEP_STAGE, or "study")."""
        if name == DEEP_STAGE:
            return self.deep_prediction
        if name not in (*STAGES, "study"):
            raise ValueError(f"unknown stage {name!r}; expected one of {', '.join(('study',) + STAGES)}")
        return self.root / name

    # ------------------------------------------------------------ inputs and registration
    @property
    def study(self) -> Path:
        return self.root / "study"

    @property
    def study_manifest(self) -> Path:
        return self.study / "study.json"

    @property
    def registration(self) -> Path:
        return self.root / "registration"

    def transform(self, series: str) -> Path:
        return self.registration / f"{series}_transform.h5"

    @property
    def registered_study(self) -> Path:
        return self.registration / "study.json"

    @property
    def fused(self) -> Path:
        return self.registration / "fused.nii.gz"

    @property
    def channels(self) -> Path:
        return self.registration / "channels.json"

    @property
    def registration_qc(self) -> Path:
        return self.registration / "qc.csv"

    def checkerboard(self, series: str) -> Path:
        return self.registration / "qc" / f"{series}_checkerboard.nii.gz"

    # ------------------------------------------------------------ segmentation
    @property
    def segmentation(self) -> Path:
        return self.root / "segmentation"

    @property
    def labels(self) -> Path:
        return self.segmentation / "segmentation.nii.gz"

    @property
    def segmentation_info(self) -> Path:
        return self.segmentation / "segmentation.json"

    @property
    def lesions(self) -> Path:
        return self.segmentation / "lesions.csv"

    @property
    def lesion_map(self) -> Path:
        return self.segmentation / "lesions.nii.gz"

    # ------------------------------------------------------------ radiomics, LI-RADS, staging, prediction
    @property
    def radiomics(self) -> Path:
        return self.root / "radiomics"

    @property
    def features_long(self) -> Path:
        return self.radiomics / "features_long.csv"

    @property
    def features_wide(self) -> Path:
        return self.radiomics / "features_wide.csv"

    @property
    def kinetics(self) -> Path:
        return self.radiomics / "kinetics.csv"

    @property
    def definitions(self) -> Path:
        return self.radiomics / "definitions.csv"

    @property
    def radiomics_diagnostics(self) -> Path:
        return self.radiomics / "diagnostics.json"

    @property
    def lirads(self) -> Path:
        return self.root / "lirads"

    @property
    def lirads_table(self) -> Path:
        return self.lirads / "lirads.csv"

    @property
    def lirads_evidence(self) -> Path:
        return self.lirads / "lirads_evidence.csv"

    @property
    def lirads_overrides(self) -> Path:
        return self.lirads / "lirads_overrides.csv"

    @property
    def lirads_lesions(self) -> Path:
        return self.lirads / "lesions.csv"

    def subtraction(self, name: str) -> Path:
        """MR subtraction image `name` ("MR_AP-MR_PRE", ...: lirads_mri.subtraction_images)."""
        return self.lirads / f"subtraction_{name}.nii.gz"

    @property
    def followup(self) -> Path:
        return self.root / "followup"

    @property
    def followup_matches(self) -> Path:
        return self.followup / "matches.csv"

    @property
    def followup_response(self) -> Path:
        return self.followup / "response.csv"

    @property
    def followup_delta(self) -> Path:
        return self.followup / "delta_radiomics.csv"

    @property
    def followup_registration(self) -> Path:
        return self.followup / "registration.csv"

    @property
    def followup_transform(self) -> Path:
        return self.followup / "to_followup_transform.h5"

    @property
    def followup_risk_curve(self) -> Path:
        """The patient's dynamic risk curve (`run --prior --risk-bundle`: followup_risk.patient_risk)."""
        return self.followup / "risk_curve.csv"

    @property
    def followup_risk_inputs(self) -> Path:
        return self.followup / "risk_inputs.csv"

    @property
    def clinical(self) -> Path:
        return self.root / "clinical"

    @property
    def staging(self) -> Path:
        return self.clinical / "staging.csv"

    @property
    def prediction(self) -> Path:
        return self.root / "prediction"

    @property
    def prediction_table(self) -> Path:
        return self.prediction / "prediction.csv"

    @property
    def evidence(self) -> Path:
        return self.prediction / "evidence.csv"

    @property
    def deep_prediction(self) -> Path:
        """`predict-deep`: prediction.csv, attention.csv, gradcam.npz of the deep fusion model."""
        return self.prediction / "deep"

    @property
    def deep_prediction_table(self) -> Path:
        return self.deep_prediction / "prediction.csv"

    @property
    def deep_attention(self) -> Path:
        return self.deep_prediction / "attention.csv"

    @property
    def deep_gradcam(self) -> Path:
        return self.deep_prediction / "gradcam.npz"

    @property
    def contributions(self) -> Path:
        return self.prediction / "contributions.csv"

    @property
    def nomogram_figure(self) -> Path:
        """The bundle's nomogram (figure) and this run's points on it, when the model bundle has a nomogram."""
        return self.prediction / "nomogram.png"

    @property
    def nomogram_points(self) -> Path:
        return self.prediction / "nomogram_points.csv"

    @property
    def protocol_qc(self) -> Path:
        """`hccfusion protocol-qc`: one row per DICOM series with its acquisition protocol and outlier flags."""
        return self.root / "protocol_qc" / "protocol.csv"

    @property
    def nomogram(self) -> Path:
        """`hccfusion nomogram BUNDLE --out OUT`: nomogram.png and points.csv (the scales as numbers)."""
        return self.root / "nomogram"

    @property
    def nomogram_chart(self) -> Path:
        return self.nomogram / "nomogram.png"

    @property
    def nomogram_scales(self) -> Path:
        return self.nomogram / "points.csv"

    # ------------------------------------------------------------ PET and CEUS
    @property
    def pet(self) -> Path:
        return self.root / "pet"

    @property
    def pet_suv(self) -> Path:
        return self.pet / "suv.nii.gz"

    @property
    def pet_sul(self) -> Path:
        return self.pet / "sul.nii.gz"

    @property
    def pet_lesions(self) -> Path:
        return self.pet / "lesions.csv"

    @property
    def ceus(self) -> Path:
        return self.root / "ceus"

    @property
    def ceus_perfusion(self) -> Path:
        return self.ceus / "perfusion.csv"

    @property
    def ceus_lirads(self) -> Path:
        return self.ceus / "lirads.csv"

    # ------------------------------------------------------------ outputs
    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def report_html(self) -> Path:
        return self.report / "report.html"

    @property
    def dicom(self) -> Path:
        return self.root / "dicom"

    @property
    def seg(self) -> Path:
        return self.dicom / "seg.dcm"

    @property
    def sr(self) -> Path:
        return self.dicom / "sr.dcm"

    def pacs(self, study_uid: str) -> Path:
        return self.root / "pacs" / study_uid

    # ------------------------------------------------------------ cohorts (cohort-extract, cohort-run)
    def cohort_study(self, study_id: str) -> Path:
        """A cohort study's own run folder: OUT/studies/<study_id, with unsafe characters replaced>."""
        return self.root / "studies" / (re.sub(r"[^A-Za-z0-9_.-]+", "_", str(study_id)) or "study")

    @property
    def cohort_done(self) -> Path:
        """In a cohort study's folder: written by cohort-run once every stage of the study finished."""
        return self.root / "cohort_done.json"

    @property
    def cohort_lock(self) -> Path:
        """In a cohort study's folder: held by the cohort task working on it (cluster.study_lock)."""
        return self.root / ".cohort.lock"

    @property
    def cohort(self) -> Path:
        return self.root / "cohort"

    @property
    def cohort_status(self) -> Path:
        return self.cohort / "status.csv"

    @property
    def cohort_lesions(self) -> Path:
        return self.cohort / "lesions.csv"

    @property
    def cohort_prediction(self) -> Path:
        return self.cohort / "prediction.csv"

    @property
    def run_record(self) -> Path:
        return self.root / "run.json"

    @property
    def audit(self) -> Path:
        return self.root / "audit.jsonl"

    @property
    def stage_manifest(self) -> Path:
        return self.root / "stages.json"
