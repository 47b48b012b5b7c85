"""HCCFusion logic: scene nodes → study folder → `hccfusion` verb (background process) → nodes in the scene.

No Qt here: the logic runs inside Slicer and headless on the slicer-core wheel (Testing/test_slicer_logic.py).
The process runner is injected: `SubprocessRunner` runs verbs synchronously, `QtProcessRunner` in the
background of the GUI. Each stage has a `...Job` method (export what the verb needs, return the command)
and a `load...` method (read the verb's outputs into nodes placed under the study in subject hierarchy).
"""
from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import SimpleITK as sitk

from HCCFusionLib import scene as mrml
from HCCFusionLib.errors import InputError
from HCCFusionLib.layout import RunFolder
from HCCFusionLib.study import CT_WINDOW

from .interfaces import Installer, ProcessRunner
from .process import CliJob, CliResult, SubprocessRunner
from .research import ResearchSteps
from .results import ResultLoaders
from .steps import PanelSteps

log = logging.getLogger(__name__)



@dataclass
class StageResult:
    """Nodes a stage added, by role (e.g. "transforms", "tables"), and the folder its outputs came from."""

    folder: Path
    nodes: dict = field(default_factory=dict)
    summary: str = ""
    studyId: str = ""

    def all(self) -> list:
        found = []
        for value in self.nodes.values():
            found += list(value.values()) if isinstance(value, dict) else (value if isinstance(value, list) else [value])
        return [n for n in found if n is not None]


class HCCFusionLogic(PanelSteps, ResultLoaders, ResearchSteps):
    """Runs HCCFusion stages on scene nodes; `runner` runs the `hccfusion` verbs, `installer` the packages."""

    def __init__(self, runner: "ProcessRunner | None" = None, scene=None, installer: "Installer | None" = None):
        """`runner`: default a `SubprocessRunner`; `installer`: default `install.SlicerInstaller` (made on first
        use: it needs the Slicer application); `scene`: default the current `slicer.mrmlScene`, else a new one."""
        import slicer

        self.runner = runner or SubprocessRunner()
        self._installer = installer
        if scene is None:
            scene = getattr(slicer, "mrmlScene", None) or mrml.new_scene()
        self.scene = scene
        self.lirads = None

    @property
    def installer(self) -> Installer:
        if self._installer is None:
            from .install import SlicerInstaller

            self._installer = SlicerInstaller()
        return self._installer

    def installStages(self, step: str, engine: str = "", radiomicsBackend: str = "") -> tuple:
        """The installer stages a panel step needs (the nnU-Net v2 engine also needs nnunetv2, the torch radiomics
        backend torch: "seg"; others: dicom)."""
        from .choices import ENGINE_NNUNET, STEP_INSTALL_STAGES

        if step == "segmentation" and engine == ENGINE_NNUNET:
            return ("nnunet",)
        stages = STEP_INSTALL_STAGES.get(step, ("dicom",))
        torch = radiomicsBackend == "torch" and step in ("radiomics", "followup") and "seg" not in stages
        return stages + (("seg",) if torch else ())

    def ensureDependencies(self, step: str, engine: str = "", radiomicsBackend: str = "") -> bool:
        """Packages of a panel step installed (asking first); False when the user declined."""
        return all(self.installer.ensure(stage) for stage in self.installStages(step, engine, radiomicsBackend))

    # ------------------------------------------------------------ running verbs
    @staticmethod
    def hasVerb(verb: str) -> bool:
        """Whether this HCCFusionLib version has the `hccfusion VERB` command."""
        from HCCFusionLib import cli

        return verb in cli.VERBS

    def run(self, job: CliJob, load: Callable[[], StageResult], progress=None,
            finished: "Callable[[StageResult | None, Exception | None], None] | None" = None,
            waitForCompletion: bool = False) -> "StageResult | None":
        """Run `job`, then `load()` its outputs into the scene.

        With `waitForCompletion` (or a runner that is not `asynchronous`) this blocks and returns the result;
        otherwise the runner starts the job in the background and `finished(result, error)` is called when it ends.
        A `job` of None is done in-process: only `load()` runs.
        """
        if job is None:
            result = load()
            if finished:
                finished(result, None)
            return result
        if waitForCompletion or not self.runner.asynchronous:
            self.runner.run(job, progress)
            result = load()
            if finished:
                finished(result, None)
            return result

        def done(cliResult: "CliResult | None", error: "Exception | None"):
            if error is None:
                try:
                    result = load()
                except Exception as exc:  # reported to the user by `finished`
                    finished(None, exc)
                    return
                finished(result, None)
            else:
                finished(None, error)

        self.runner.start(job, progress, done)
        return None

    # ------------------------------------------------------------ inputs
    @staticmethod
    def outputFolder(workFolder: "str | Path | None", studyId: str) -> Path:
        """Where a study's files and stage outputs go: WORK/<study id> (a temporary folder when WORK is empty)."""
        studyId = studyId.strip()
        if not studyId or any(c in studyId for c in "/\\:"):
            raise InputError(f"Study ID '{studyId}' cannot name a folder: use letters, digits, '-' or '_'.")
        work = Path(workFolder) if workFolder and str(workFolder) not in ("", ".") else None
        if work is None:
            work = Path(tempfile.gettempdir()) / "HCCFusion"
        return work / studyId

    def exportStudy(self, inputs: list, folder: "str | Path", studyId: str, clinical: "dict | None" = None,
                    masks: "dict | None" = None) -> Path:
        """Write the input volumes as a study folder (NIfTI + study.json, contract 2) and return its path.

        `inputs`: (volume node, phase code) pairs; each becomes a series named by its phase. `masks`: phase →
        segmentation node, exported as that series' "labels" mask on its grid. A volume under a transform is
        exported in its own (untransformed) geometry: registration recovers the alignment.
        """
        from HCCFusionLib.io import save_study
        from HCCFusionLib.study import Clinical, Series, Study

        if not inputs:
            raise InputError("No input volume selected: pick at least one volume and its phase in Inputs.")
        phases = [phase for _, phase in inputs]
        duplicates = sorted({p for p in phases if phases.count(p) > 1})
        if duplicates:
            raise InputError(f"Phase(s) {', '.join(duplicates)} assigned to more than one input: give each "
                             "volume its own phase/sequence.")
        study = Study(studyId, clinical=Clinical.from_dict(clinical or {}))
        for node, phase in inputs:
            image = mrml.volume_to_image(node, ignore_transform=True)
            series = study.add(Series(phase, phase, image, meta={"source": "Slicer node"}))
            maskNode = (masks or {}).get(phase)
            if maskNode is not None:
                series.add_mask("labels", mrml.segmentation_to_labels(maskNode, image))
        return save_study(study, Path(folder), overwrite=True)

    def infoJob(self, studyFolder: "str | Path") -> CliJob:
        return CliJob("info", [studyFolder])

    def info(self, studyFolder: "str | Path") -> str:
        """`hccfusion info` of a study folder: its series, detected phases and geometry, as text."""
        result = self.runner.run(self.infoJob(studyFolder))
        return "\n".join(line for line in result.output if not line.startswith(("INFO ", "DEBUG ", "WARNING ")))

    def loadPhantom(self, seed: int = 1, size: str = "small") -> StageResult:
        """A synthetic multi-phase CT patient (HCCFusionLib.phantom) as volumes + ground-truth segmentation."""
        from HCCFusionLib.phantom import make_patient

        patient = make_patient(seed, size)
        study = patient.study
        volumes = {s.name: mrml.image_to_volume(self.scene, s.image, f"{study.study_id}_{s.name}",
                                                window_level=CT_WINDOW if s.modality.value == "CT" else None)
                   for s in study}
        truth = mrml.labels_to_segmentation(self.scene, patient.labels, f"{study.study_id}_ground_truth",
                                            reference_volume=volumes[patient.reference])
        result = StageResult(Path(), {"volumes": volumes, "segmentation": truth}, studyId=study.study_id)
        mrml.place_in_study(self.scene, result.all(), study.study_id)
        result.summary = f"Phantom {study.study_id}: {', '.join(volumes)} (reference {patient.reference})"
        return result

    # ------------------------------------------------------------ registration
    def registrationJob(self, studyFolder, outFolder, reference: str, mode: str, liverMask: bool = False) -> CliJob:
        """`hccfusion register` (it writes OUT/registration/, replacing an older one only once complete)."""
        args = [studyFolder, "--reference", reference, "--mode", mode, "--out", outFolder]
        return CliJob("register", args + (["--mask", "liver"] if liverMask else []))

    def loadRegistration(self, outFolder, inputNodes: dict, studyId: str) -> StageResult:
        """Transforms (moving volumes placed under them), resampled and fused volumes, QC table."""
        paths = RunFolder(outFolder)
        folder = paths.registration
        _require(paths.registered_study, "registration")
        self._removePrevious(f"{studyId}_", ("_to_reference", "_registered", "_fused", "_registration_QC"))
        result = StageResult(folder, {"transforms": {}, "resampled": {}})
        suffix = paths.transform("").name
        for path in sorted(folder.glob(f"*{suffix}")):
            name = path.name[: -len(suffix)]
            transform = sitk.ReadTransform(str(path))
            result.nodes["transforms"][name] = mrml.transform_to_node(
                self.scene, transform, f"{studyId}_{name}_to_reference", moving=inputNodes.get(name))
        manifest = json.loads(paths.registered_study.read_text(encoding="utf-8"))
        for entry in manifest.get("series", []):
            image = sitk.ReadImage(str(folder / entry["file"]))
            result.nodes["resampled"][entry["name"]] = mrml.image_to_volume(
                self.scene, image, f"{studyId}_{entry['name']}_registered",
                window_level=CT_WINDOW if entry.get("modality", "CT") == "CT" else None)
        if paths.fused.exists():
            result.nodes["fused"] = mrml.image_to_volume(
                self.scene, sitk.ReadImage(str(paths.fused)), f"{studyId}_fused",
                channels=_channel_names(paths.channels))
        if paths.registration_qc.exists():
            result.nodes["qc"] = self._table(paths.registration_qc, f"{studyId}_registration_QC")
        mrml.place_in_study(self.scene, result.all(), studyId)
        result.summary = (f"{len(result.nodes['transforms'])} transform(s), "
                          f"{len(result.nodes['resampled'])} series on the reference grid")
        return result

    # ------------------------------------------------------------ segmentation
    def segmentationJob(self, studyFolder, outFolder, modelFolder=None, nnunetFolder=None, tta: bool = True,
                        reference: "str | None" = None, overlap: "float | None" = None,
                        channelMap: str = "", engine: str = "auto") -> CliJob:
        """`hccfusion segment` with `engine` (HCCFusionLib.segmentation.engines; "auto" picks by the study's
        phases) or the model bundle / nnU-Net v2 folder given; `overlap` of the sliding windows (default: the
        verb's); `channelMap` ("0=AP, 1=PVP") maps nnU-Net channels to phases."""
        args = [studyFolder, "--out", outFolder] + (["--engine", engine] if engine not in ("auto", "bundle", "nnunet")
                                                    else [])
        if nnunetFolder:
            args += ["--nnunet", nnunetFolder]
            for channel, phase in parseChannelMap(channelMap):
                args += ["--channel", channel, phase]
        elif modelFolder:
            args += ["--model", modelFolder]
        if reference:
            args += ["--reference", reference]
        if overlap is not None:
            args += ["--overlap", f"{overlap:g}"]
        return CliJob("segment", args + ([] if tta else ["--no-tta"]))

    def loadSegmentation(self, outFolder, referenceNode, studyId: str, outputNode=None) -> StageResult:
        """Segmentation node (names, colours, SNOMED terminology) on the reference geometry + lesion table."""
        paths = RunFolder(outFolder)
        folder = paths.segmentation
        labels = _require(paths.labels, "segment")
        created = mrml.labels_to_segmentation(self.scene, sitk.ReadImage(str(labels)), f"{studyId}_segmentation",
                                              reference_volume=referenceNode)
        node = created
        if outputNode is not None:
            outputNode.GetSegmentation().DeepCopy(created.GetSegmentation())
            outputNode.SetReferenceImageGeometryParameterFromVolumeNode(referenceNode)
            outputNode.CreateDefaultDisplayNodes()
            self.scene.RemoveNode(created)
            node = outputNode
        result = StageResult(folder, {"segmentation": node})
        if paths.lesions.exists():
            result.nodes["lesions"] = self._table(paths.lesions, f"{studyId}_lesions")
        mrml.place_in_study(self.scene, result.all(), studyId)
        count = node.GetSegmentation().GetNumberOfSegments()
        result.summary = f"{count} segment(s)" + (
            f", {result.nodes['lesions'].GetNumberOfRows()} lesion(s)" if "lesions" in result.nodes else "")
        info = json.loads(paths.segmentation_info.read_text()) if paths.segmentation_info.exists() else {}
        if info.get("engine_reason"):
            result.summary += f"; engine {info['engine']} ({info['engine_reason']})"
        result.summary += "".join(f"\nQC warning: {w}" for w in info.get("qc_warnings") or [])
        return result

    def exportSegmentation(self, segmentationNode, referenceNode, path: "str | Path") -> Path:
        """Write a segmentation as a label map (study.LABELS values) on the reference volume's grid."""
        from HCCFusionLib.io import save_image

        reference = mrml.volume_to_image(referenceNode, ignore_transform=True)
        return save_image(mrml.segmentation_to_labels(segmentationNode, reference), path)

    def saveSegmentation(self, segmentationNode, referenceNode, outFolder) -> Path:
        """Write a segmentation node as the run folder's segmentation (label map on the reference volume's grid,
        lesion map and LesionTable, segmentation.json), unless the folder already holds the same label map."""
        import numpy as np

        from HCCFusionLib.segmentation.predictor import Segmentation, lesion_table, save_segmentation

        paths = RunFolder(outFolder)
        reference = mrml.volume_to_image(referenceNode, ignore_transform=True)
        labels = mrml.segmentation_to_labels(segmentationNode, reference)
        if all(p.exists() for p in (paths.labels, paths.lesion_map, paths.lesions)) and np.array_equal(
                sitk.GetArrayFromImage(sitk.ReadImage(str(paths.labels))), sitk.GetArrayFromImage(labels)):
            return paths.segmentation
        lesionMap, table = lesion_table(labels)
        info = {"engine": "user", "engine_reason": f"segmentation node '{segmentationNode.GetName()}' (Slicer)"}
        return save_segmentation(Segmentation(labels, table, lesionMap, {}), paths.segmentation, info)

    # ------------------------------------------------------------ radiomics
    def radiomicsJob(self, studyFolder, segmentationFile, outFolder, preset: str = "auto", regions: str = "",
                     imageTypes: str = "", backend: str = "pyradiomics", device: str = "") -> CliJob:
        """`hccfusion extract`: `preset` a preset name (ct, mr, pet, …; "auto": per modality), `regions` a comma
        list of region groups (empty: the verb's default), `imageTypes` e.g. "Original,LoG" (empty: the preset's),
        `backend`/`device` the radiomics backend (`radiomicsOptions`)."""
        args = [studyFolder, "--segmentation", segmentationFile, "--out", outFolder]
        if preset and preset != "auto":
            args += ["--preset", preset]
        names = [r.strip() for r in regions.replace(";", ",").split(",") if r.strip()]
        if names:
            args += ["--regions", ",".join(names)]
        if imageTypes:
            args += ["--image-types", imageTypes]
        return CliJob("extract", args + radiomicsOptions(backend, device))

    @staticmethod
    def subsetStudy(studyFolder, series: list, folder) -> Path:
        """A copy of a study folder with only the named series (e.g. the phases picked for radiomics)."""
        from HCCFusionLib.io import load_study, save_study

        study = load_study(studyFolder)
        unknown = sorted(set(series) - set(study.series))
        if unknown:
            raise InputError(f"Study '{study.study_id}' has no series {', '.join(unknown)}: "
                             f"it has {', '.join(study.series)}.")
        for name in [n for n in study.series if n not in series]:
            del study.series[name]
        return save_study(study, Path(folder), overwrite=True)

    def loadFeatures(self, outFolder, studyId: str, tableNode=None) -> StageResult:
        """Feature tables: long (one row per series × region × feature, filterable), kinetic, definitions."""
        paths = RunFolder(outFolder)
        folder = paths.radiomics
        long = _require(paths.features_long, "extract")
        result = StageResult(folder, {"features": self._table(long, f"{studyId}_features", tableNode)})
        for key, file in (("kinetics", paths.kinetics), ("definitions", paths.definitions)):
            if file.exists():
                result.nodes[key] = self._table(file, f"{studyId}_{key}")
        mrml.place_in_study(self.scene, result.all(), studyId)
        result.summary = f"{result.nodes['features'].GetNumberOfRows()} feature values"
        return result

    # ------------------------------------------------------------ prediction & report
    def predictionJob(self, featuresFile, bundleFolder, outFolder, clinicalFile=None) -> CliJob:
        """`hccfusion predict FEATURES [CLINICAL] --model BUNDLE --out OUT`."""
        inputs = [featuresFile] + ([clinicalFile] if clinicalFile else [])
        return CliJob("predict", [*inputs, "--model", bundleFolder, "--out", outFolder])

    @staticmethod
    def writeClinical(clinical: dict, studyId: str, path) -> Path:
        """One-row clinical table (study_id + Clinical fields) for `hccfusion predict`, written atomically."""
        import pandas as pd

        from HCCFusionLib.files import atomic_write

        path = Path(path)
        with atomic_write(path) as tmp:
            pd.DataFrame([{"study_id": studyId, **clinical}]).to_csv(tmp, index=False)
        return path

    def loadPrediction(self, outFolder, studyId: str) -> StageResult:
        """Prediction text, evidence table and this study's per-feature contributions as a bar chart."""
        paths = RunFolder(outFolder)
        folder = paths.prediction
        predictionNode = self._table(_require(paths.prediction_table, "predict"), f"{studyId}_prediction")
        result = StageResult(folder, {"prediction": predictionNode}, studyId=studyId)
        if paths.evidence.exists():
            result.nodes["evidence"] = self._table(paths.evidence, f"{studyId}_evidence")
        if paths.contributions.exists():
            import pandas as pd

            contributions = pd.read_csv(paths.contributions)
            result.nodes["contributions"] = mrml.dataframe_to_table(self.scene, contributions, f"{studyId}_contributions")
            from HCCFusionLib.fusion.explain import top_contributions

            top = top_contributions(contributions, studyId)
            if len(top):
                table = mrml.dataframe_to_table(self.scene, top, f"{studyId}_top_contributions")
                result.nodes["top"] = table
                result.nodes["chart"] = self.contributionChart(table, f"{studyId}_contributions_chart")
        mrml.place_in_study(self.scene, result.all(), studyId)
        result.summary = predictionText(mrml.table_to_dataframe(predictionNode))
        return result

    def contributionChart(self, tableNode, name: str, valueColumn: str = "contribution", labelColumn: str = "name"):
        """Bar chart (plot chart node) of a table's `valueColumn`, bars labelled by `labelColumn`."""
        table = tableNode.GetTable()
        for column in (valueColumn, labelColumn):
            if table.GetColumnByName(column) is None:
                raise InputError(f"Table '{tableNode.GetName()}' has no '{column}' column to plot.")
        series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name}_series")
        series.SetAndObserveTableNodeID(tableNode.GetID())
        series.SetPlotType(series.PlotTypeBar)
        series.SetYColumnName(valueColumn)
        series.SetLabelColumnName(labelColumn)
        chart = self.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
        chart.SetTitle("Contributions to the prediction")
        chart.SetYAxisTitle(valueColumn)
        return chart

    # ------------------------------------------------------------ LI-RADS and DICOM (short: run in-process)
    def assessLirads(self, studyFolder, segmentationNode, outFolder, studyId: str) -> StageResult:
        """LI-RADS v2018 per observation on a registered study (phases on one grid) and its segmentation."""
        from HCCFusionLib import lirads_mri
        from HCCFusionLib.io import load_study

        study = load_study(studyFolder)
        labels = mrml.segmentation_to_labels(segmentationNode, next(iter(study)).image)
        self.lirads = lirads_mri.assess_study(study, labels)  # CT or MRI
        self.liradsFolder, self.auditFolder = RunFolder(outFolder).lirads, RunFolder(outFolder).root
        self.lirads.save(self.liradsFolder)
        table = mrml.dataframe_to_table(self.scene, _liradsFrame(self.lirads), f"{studyId}_LI-RADS")
        evidence = mrml.dataframe_to_table(self.scene, self.lirads.evidence(), f"{studyId}_LI-RADS_evidence")
        result = StageResult(self.liradsFolder, {"lirads": table, "evidence": evidence}, studyId=studyId)
        mrml.place_in_study(self.scene, result.all(), studyId)
        result.summary = _liradsSummary(self.lirads)
        return result

    def applyLiradsOverrides(self, tableNode, reader: str) -> list:
        """Record the reader's edits of the LI-RADS table (features, diameter, category) as overrides.

        Every changed cell becomes a recorded override (who, when, old → new); the categories are recomputed
        unless overridden themselves, the table node is refreshed and the CSVs rewritten.
        """
        from HCCFusionLib import lirads

        if self.lirads is None:
            raise InputError("No LI-RADS assessment to override: run 'Assess LI-RADS' first.")
        made = lirads.apply_table_edits(self.lirads, mrml.table_to_dataframe(tableNode), reader,
                                        audit_folder=self.auditFolder)
        refreshed = mrml.dataframe_to_table(self.scene, _liradsFrame(self.lirads), "refreshed")
        tableNode.GetTable().DeepCopy(refreshed.GetTable())
        tableNode.Modified()
        self.scene.RemoveNode(refreshed)
        self.lirads.save(self.liradsFolder)
        return made

    def exportDicom(self, outFolder, referencePhase: str, dicomFolder=None, segmentationNode=None,
                    referenceNode=None, keepIdentifiers: bool = False) -> dict:
        """`hccfusion export-dicom` of the run folder: DICOM SEG of the segmentation and a TID 1500 SR of its
        lesions (with LI-RADS when assessed), referencing the reference series: a de-identified copy under a
        pseudonymous patient, or with `keepIdentifiers` the input's own DICOM files (their patient and study
        attributes are copied). Returns {"seg", "sr", "source"} paths."""
        prepared = self.prepareDicom(outFolder, referencePhase, dicomFolder, segmentationNode, referenceNode,
                                     keepIdentifiers)
        return self.run(prepared.job, prepared.load, waitForCompletion=True).nodes

    def pacsPushJob(self, files: list, pacsUrl: str) -> CliJob:
        """`hccfusion pacs push`: STOW-RS store of DICOM files (instances already in the PACS are skipped)."""
        if not pacsUrl.strip():
            raise InputError("No PACS URL: enter the DICOMweb root of your PACS, e.g. http://host:8042/dicom-web.")
        return CliJob("pacs", ["push", *files, "--pacs-url", pacsUrl.strip()])

    def saveReport(self, outFolder, reportFolder=None, bundleFolder=None, segmentationNode=None,
                   referenceNode=None) -> Path:
        """`hccfusion report` of the run folder (the HTML the CLI writes for it); returns its report.html."""
        prepared = self.prepareReport(outFolder, reportFolder, bundleFolder, segmentationNode, referenceNode)
        result = self.run(prepared.job, prepared.load, waitForCompletion=True)
        return result.folder / RunFolder(outFolder).report_html.name

    def bclcStage(self, clinical: dict, lesionTableNode=None) -> str:
        """BCLC (2022) stage from the clinical fields, with tumour number/size from the lesion table if given."""
        from HCCFusionLib.clinical import stage_with_lesions

        lesions = mrml.table_to_dataframe(lesionTableNode) if lesionTableNode is not None else None
        staging = stage_with_lesions(clinical, lesions)[1]
        return f"{staging['bclc']}; {staging['child_pugh']}; {staging['albi']}"

    def exportTable(self, tableNode, path) -> Path:
        """Save a table node as CSV (atomically)."""
        from HCCFusionLib.files import atomic_write

        path = Path(path)
        with atomic_write(path) as tmp:
            mrml.table_to_dataframe(tableNode).to_csv(tmp, index=False)
        return path

    # ------------------------------------------------------------ helpers
    def _removePrevious(self, prefix: str, suffixes: tuple) -> None:
        """Remove nodes of an earlier run of a stage (named prefix…suffix), so a re-run replaces its results."""
        nodes = self.scene.GetNodes()
        old = [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]
        for node in old:
            name = node.GetName() or ""
            if name.startswith(prefix) and name.endswith(suffixes) and not node.IsA("vtkMRMLStorageNode"):
                self.scene.RemoveNode(node)

    def _table(self, csvPath: Path, name: str, node=None):
        """Table node from a CSV file (types kept); fills `node` when given."""
        import pandas as pd

        frame = pd.read_csv(csvPath)
        created = mrml.dataframe_to_table(self.scene, frame, name)
        if node is None:
            return created
        node.GetTable().DeepCopy(created.GetTable())
        for column in frame.columns:
            node.SetColumnProperty(str(column), mrml.DTYPE_PROPERTY, created.GetColumnProperty(str(column), mrml.DTYPE_PROPERTY))
        node.Modified()
        self.scene.RemoveNode(created)
        return node


def predictionText(prediction) -> str:
    """One line per prediction row: endpoint, probability / risk / predicted class, and its interval if any."""
    lines = []
    for _, row in prediction.iterrows():
        values = {str(k).lower(): v for k, v in row.items()}
        label = values.get("endpoint", "prediction")
        key = next((k for k in ("probability", "risk", "predicted", "prediction", "score") if k in values), None)
        if key is None:
            lines.append(", ".join(f"{k}={v}" for k, v in row.items()))
            continue
        value = values[key]
        text = f"{label}: {key} " + (f"{float(value):.2f}" if key != "predicted" else str(value))
        low = next((values[k] for k in ("low", "ci_low", "lower") if k in values), None)
        high = next((values[k] for k in ("high", "ci_high", "upper") if k in values), None)
        if _number(low) and _number(high):
            method = str(values.get("interval", "") or "")
            name = "95% CI" if not method or method == "none" or "95%" in method else method
            text += f" ({name} {float(low):.2f}–{float(high):.2f})"
        if values.get("risk_group") is not None and key == "risk":
            text += f", risk group {values['risk_group']}"
        lines.append(text)
    return "\n".join(lines)


def _number(value) -> bool:
    try:
        return value is not None and float(value) == float(value)
    except (TypeError, ValueError):
        return False


def _liradsFrame(assessment):
    """The assessment's table with the lesion as a column (what the panel shows and the reader edits)."""
    from HCCFusionLib.lirads import reader_table

    return reader_table(assessment)


def _liradsSummary(assessment) -> str:
    cats = ", ".join(f"{o.lesion}: {o.category}" for o in assessment.observations)
    return f"{len(assessment.observations)} observation(s)" + (f" ({cats})" if cats else "")


def _channel_names(path: Path) -> "list[str] | None":
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data = data.get("channels", data.get("names"))
    return [c if isinstance(c, str) else c.get("name", str(c)) for c in data] if data else None


def _require(path: Path, verb: str) -> Path:
    if not path.exists():
        raise InputError(f"'hccfusion {verb}' did not write '{path}': check its output folder and log.")
    return path


def radiomicsOptions(backend: str = "pyradiomics", device: str = "") -> list:
    """`--radiomics-backend/--radiomics-device` of `extract` and `run` (nothing for the default, pyradiomics)."""
    if not backend or backend == "pyradiomics":
        return ["--radiomics-device", device.strip()] if device and device.strip() else []  # the verb says why not
    return ["--radiomics-backend", backend] + (["--radiomics-device", device.strip()] if device.strip() else [])


def parseChannelMap(text: str) -> list:
    """[(channel, phase)] from "0=AP, 1=PVP" (the panel's nnU-Net channel map); ValueError says what to fix."""
    pairs = []
    for item in filter(None, (part.strip() for part in (text or "").replace(";", ",").split(","))):
        channel, sep, phase = (piece.strip() for piece in item.partition("="))
        if not (sep and channel and phase):
            raise ValueError(f"Channel map entry '{item}' is not CHANNEL=PHASE: write e.g. \"0=AP, 1=PVP\".")
        pairs.append((channel, phase))
    return pairs
