"""The panel's steps as jobs: what each Apply button exports, which verb it runs, and how its outputs load.

Mixed into `HCCFusionLogic` (which provides exportStudy, the `...Job` builders and the `load...` methods), so
the panels only read their widgets and call one `prepare...` method; no Qt here.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from HCCFusionLib.errors import InputError
from HCCFusionLib.layout import RunFolder

if TYPE_CHECKING:
    from .logic import StageResult
    from .process import CliJob


@dataclass
class PreparedStage:
    """A stage ready to run: the verb (None: done in-process by `load`) and `load()` of its outputs."""

    job: "CliJob | None"
    load: "Callable[[], StageResult]"


def isFolder(path) -> bool:
    return bool(path) and str(path) not in ("", ".") and Path(path).is_dir()


def isRunFolder(path) -> bool:
    """A completed `hccfusion run` folder (registered study and segmentation): what `run --prior` compares with."""
    return isFolder(path) and RunFolder(path).registered_study.is_file() and RunFolder(path).labels.is_file()


class PanelSteps:
    # ------------------------------------------------------------ panel steps: build the job, say how to load it
    @staticmethod
    def referenceNode(inputs: list, referencePhase: str):
        """The input volume of the reference phase, else the first input."""
        nodes = {phase: node for node, phase in inputs}
        return nodes.get(referencePhase) or next(iter(nodes.values()))

    def studyForNextStage(self, inputs: list, out: Path, studyId: str, clinical: dict,
                          useRegistered: bool = True) -> Path:
        """OUT/registration when registered (and wanted), else the inputs exported as OUT/study."""
        paths = RunFolder(out)
        if useRegistered and paths.registered_study.exists():
            return paths.registration
        return self.exportStudy(inputs, Path(out) / "study", studyId, clinical)

    @staticmethod
    def featuresFile(out: "Path | None") -> Path:
        """The wide feature table Radiomics writes and Prediction reads."""
        return RunFolder(out).features_wide if out else Path()

    @staticmethod
    def reportBase(reportFolder, out: Path) -> Path:
        """Where reports and DICOM objects go: the chosen report folder when it exists, else the study's OUT."""
        return Path(reportFolder) if isFolder(reportFolder) else Path(out)

    def prepareRegistration(self, inputs: list, out: Path, studyId: str, clinical: dict, referencePhase: str,
                            mode: str, useLiverMask: bool = False, maskSegmentation=None,
                            movingIds: "set | None" = None) -> PreparedStage:
        """Export the study (only the moving volumes checked, if any), then `register` into OUT/registration/."""
        inputs = [(n, ph) for n, ph in inputs if ph == referencePhase or not movingIds or n.GetID() in movingIds]
        masks = {referencePhase: maskSegmentation} if maskSegmentation else None
        study = self.exportStudy(inputs, Path(out) / "study", studyId, clinical, masks)
        job = self.registrationJob(study, out, referencePhase, mode, useLiverMask)
        moving = {ph: n for n, ph in inputs if ph != referencePhase}
        return PreparedStage(job, lambda: self.loadRegistration(out, moving, studyId))

    def prepareSegmentation(self, inputs: list, out: Path, studyId: str, clinical: dict, referencePhase: str,
                            engine: str, modelPath=None, existingSegmentation=None, channelMap: str = "",
                            useRegistered: bool = True, tta: bool = True, outputNode=None) -> PreparedStage:
        """`segment` with the panel's engine choice; an existing segmentation is exported in-process instead."""
        from .choices import ENGINE_EXISTING, ENGINE_FOLDER, ENGINE_NAMES, ENGINE_NNUNET

        reference = self.referenceNode(inputs, referencePhase)
        out = Path(out)

        def load():
            return self.loadSegmentation(out, reference, studyId, outputNode)

        if engine == ENGINE_EXISTING:
            self.saveSegmentation(existingSegmentation, reference, out)
            return PreparedStage(None, load)
        study = self.studyForNextStage(inputs, out, studyId, clinical, useRegistered)
        job = self.segmentationJob(study, out, modelFolder=modelPath if engine == ENGINE_FOLDER else None,
                                   nnunetFolder=modelPath if engine == ENGINE_NNUNET else None, tta=tta,
                                   reference=referencePhase, channelMap=channelMap, engine=ENGINE_NAMES[engine])
        return PreparedStage(job, load)

    def prepareRadiomics(self, inputs: list, out: Path, studyId: str, clinical: dict, referencePhase: str,
                         segmentationNode, preset: str = "auto", regions: str = "", selectedIds: "set | None" = None,
                         tableNode=None, imageTypes: str = "", backend: str = "pyradiomics",
                         device: str = "") -> PreparedStage:
        """`extract` on the (registered) study, only the checked volumes' phases if any, with the segmentation, on
        the radiomics `backend` (pyradiomics or torch on `device`)."""
        out = Path(out)
        study = self.studyForNextStage(inputs, out, studyId, clinical)
        if selectedIds:
            phases = [ph for n, ph in inputs if n.GetID() in selectedIds]
            study = self.subsetStudy(study, phases, out / "radiomics_input" / "study")
        segmentationFile = self.exportSegmentation(segmentationNode, self.referenceNode(inputs, referencePhase),
                                                   out / "radiomics_input" / "segmentation.nii.gz")
        job = self.radiomicsJob(study, segmentationFile, out, preset, regions, imageTypes, backend, device)
        return PreparedStage(job, lambda: self.loadFeatures(out, studyId, tableNode))

    def preparePrediction(self, out: Path, studyId: str, clinical: dict, bundleFolder) -> PreparedStage:
        """`predict` on Radiomics' wide feature table and the panel's clinical values."""
        out = Path(out)
        clinicalFile = self.writeClinical(clinical, studyId, out / "prediction_input" / "clinical.csv")
        job = self.predictionJob(self.featuresFile(out), bundleFolder, out, clinicalFile)
        return PreparedStage(job, lambda: self.loadPrediction(out, studyId))

    def prepareDeepPrediction(self, out: Path, studyId: str, deepBundle, segmentationNode=None,
                              referenceNode=None) -> PreparedStage:
        """`predict-deep OUT --model BUNDLE` on the registered phases and the panel's segmentation (written into the
        run folder first); loads the prediction, the phase attention and the Grad-CAM maps (`loadDeepPrediction`)."""
        from .process import CliJob

        out = Path(out)
        if not isFolder(deepBundle):
            raise InputError(f"'{deepBundle}' is not a folder: choose a deep fusion bundle (hccfusion train-deep).")
        self.segmentationIntoRunFolder(out, segmentationNode, referenceNode)
        return PreparedStage(CliJob("predict-deep", [out, "--model", deepBundle]),
                             lambda: self.loadDeepPrediction(out, studyId))

    def prepareFollowup(self, inputs: list, out: Path, studyId: str, clinical: dict, referencePhase: str, priorRun,
                        segmentationNode, riskBundle=None, mode: str = "deformable", bundleFolder=None,
                        deepBundle=None, preset: str = "auto", radiomicsBackend: str = "pyradiomics",
                        radiomicsDevice: str = "") -> PreparedStage:
        """`run` of the panel's study against the prior run folder (`--prior`, `--risk-bundle` when chosen) with the
        panel's segmentation, reference phase, registration mode, preset and model bundles (`--model`,
        `--deep-model`) and radiomics backend: every stage again into OUT (`--overwrite`). Loads the follow-up tables, the risk curve
        (table and chart) and, with a deep fusion bundle, its outputs."""
        from .process import CliJob

        out = Path(out)
        if not isRunFolder(priorRun):
            raise InputError(f"'{priorRun}' is not a completed run folder (registration/study.json and a "
                             "segmentation): choose the output folder of an earlier `hccfusion run` of this patient.")
        if riskBundle and str(riskBundle) not in ("", ".") and not isFolder(riskBundle):
            raise InputError(f"The risk bundle '{riskBundle}' is not a folder: choose a landmark bundle or none.")
        study = self.exportStudy(inputs, out / "study", studyId, clinical)
        labels = self.exportSegmentation(segmentationNode, self.referenceNode(inputs, referencePhase),
                                         out / "followup_input" / "segmentation.nii.gz")
        args = [study, "--out", out, "--prior", priorRun, "--segmentation", labels, "--reference", referencePhase,
                "--mode", mode, "--model", bundleFolder if isFolder(bundleFolder) else "none", "--overwrite"]
        args += ["--risk-bundle", riskBundle] if isFolder(riskBundle) else []
        args += ["--deep-model", deepBundle] if isFolder(deepBundle) else []
        args += ["--preset", preset] if preset and preset != "auto" else []
        from .logic import radiomicsOptions

        args += radiomicsOptions(radiomicsBackend, radiomicsDevice)
        return PreparedStage(CliJob("run", args), lambda: self.loadFollowup(out, studyId))

    def segmentationIntoRunFolder(self, out: Path, segmentationNode, referenceNode) -> None:
        """The panel's segmentation node becomes the run folder's segmentation (`saveSegmentation`), so the verbs
        that read the run folder (report, export-dicom) report what the panel shows."""
        if segmentationNode is not None and referenceNode is not None:
            self.saveSegmentation(segmentationNode, referenceNode, out)

    def prepareReport(self, out: Path, reportFolder: "Path | None" = None, bundleFolder=None,
                      segmentationNode=None, referenceNode=None) -> PreparedStage:
        """`report` of the run folder OUT (into `reportFolder`, default OUT/report): the same HTML as the CLI's."""
        from .process import CliJob

        out = Path(out)
        self.segmentationIntoRunFolder(out, segmentationNode, referenceNode)
        folder = Path(reportFolder) if reportFolder else RunFolder(out).report
        args = [out, "--to", folder] + (["--model", bundleFolder] if bundleFolder else [])
        html = folder / RunFolder(out).report_html.name

        def load():
            from .logic import StageResult

            return StageResult(folder, {}, f"Report written to {html}")

        return PreparedStage(CliJob("report", args), load)

    def prepareDicom(self, out: Path, referencePhase: str, dicomFolder: "Path | None" = None, segmentationNode=None,
                     referenceNode=None, keepIdentifiers: bool = False) -> PreparedStage:
        """`export-dicom` of the run folder OUT (SEG + SR referencing the reference phase) into `dicomFolder`."""
        from .process import CliJob

        out = Path(out)
        self.segmentationIntoRunFolder(out, segmentationNode, referenceNode)
        folder = Path(dicomFolder) if dicomFolder else RunFolder(out).dicom
        args = [out, "--reference", referencePhase, "--to", folder, "--overwrite",
                *(["--keep-identifiers"] if keepIdentifiers else [])]

        def load():
            from .logic import StageResult

            return StageResult(folder, {"seg": folder / RunFolder(out).seg.name, "sr": folder / RunFolder(out).sr.name,
                                        "source": sorted(folder.glob("source*/*.dcm"))},
                               f"DICOM SEG and SR written to {folder}")

        return PreparedStage(CliJob("export-dicom", args), load)

    def preparePacs(self, dicomFolder: Path, pacsUrl: str) -> PreparedStage:
        """`pacs push` of the exported SEG and SR, with the series they reference when it was written beside them
        (a de-identified copy, or a NIfTI series as DICOM): the PACS never holds a SEG whose source is missing."""
        folder, paths = Path(dicomFolder), RunFolder(dicomFolder)
        job = self.pacsPushJob([folder / paths.seg.name, folder / paths.sr.name,
                                *sorted(folder.glob("source*/*.dcm"))], pacsUrl)
        url = pacsUrl.strip()
        from .logic import StageResult

        return PreparedStage(job, lambda: StageResult(Path(dicomFolder), {}, f"SEG and SR stored on {url}"))

    @staticmethod
    def modelChannels(engine: str, modelPath) -> str:
        """What an engine reads: the catalogue rows of a shipped engine, or a model folder's channels."""
        from HCCFusionLib.segmentation import catalog

        from .choices import ENGINE_NAMES, ENGINE_NNUNET

        name = ENGINE_NAMES.get(engine)
        if name in ("auto", "liverlesion", "phantom"):
            rows = [r for r in catalog.rows() if name in ("auto", r["engine"])]
            return "\n".join(f"{r['name']}: {r['phases']}; {r['seconds_cpu']} s on CPU; {r['licence']}; {r['status']}"
                             for r in rows)
        dataset = Path(modelPath) / "dataset.json" if isFolder(modelPath) else None
        if dataset is None or not dataset.is_file():
            return ""
        try:
            description = json.loads(dataset.read_text(encoding="utf-8"))
            if engine == ENGINE_NNUNET:  # nnU-Net v2: {"0": "CT", ...}
                names = description.get("channel_names") or {}
                return ", ".join(f"{k}: {names[k]}" for k in sorted(names, key=int))
        except (OSError, ValueError):
            return "dataset.json of the model is unreadable"
        channels = description.get("channels", [])
        return ", ".join(str(c.get("name", c)) if isinstance(c, dict) else str(c) for c in channels)

