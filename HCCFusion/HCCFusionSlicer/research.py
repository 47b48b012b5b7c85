"""Cohort & research section: protocol QC of DICOM series, a model bundle's nomogram, a cohort run (no science, no Qt).

Mixed into `HCCFusionLogic` (which provides `scene`, `outputFolder`, `_table` and `_removePrevious`). Each tool
runs its verb as a job (`protocol-qc`, `nomogram`, `cohort-run`) into RESEARCH/<source>/, where <source> is
the name of its input (DICOM folder, cohort CSV or bundle folder), and loads what the verb wrote (RunFolder
paths) as nodes named `<source>_<result>`, placed in subject hierarchy under RESEARCH_SUBJECT / <source>; the
StageResult's folder is RESEARCH/<source>/.
"""
from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from HCCFusionLib import scene as mrml
from HCCFusionLib.errors import InputError
from HCCFusionLib.layout import RunFolder

from .process import CliJob
from .steps import PreparedStage, isFolder

#: subject hierarchy item above the research results (the per-study results sit under "Anonymous")
RESEARCH_SUBJECT = "HCCFusion research"
#: protocol QC columns shown first: where a series comes from and why it is flagged
PROTOCOL_FIRST_COLUMNS = ["site", "outlier", "flags"]
#: node-name suffix -> RunFolder attribute of a cohort-run table
COHORT_TABLES = {"cohort_status": "cohort_status", "cohort_lesions": "cohort_lesions",
                 "cohort_prediction": "cohort_prediction"}


def isCsv(path) -> bool:
    return bool(path) and str(path) not in ("", ".") and Path(path).suffix.lower() == ".csv" and Path(path).is_file()


def isProtocolSource(path) -> bool:
    """A DICOM folder or a CSV of DICOM folders (path, site columns): what protocol QC reads."""
    return isFolder(path) or isCsv(path)


def sourceName(path) -> str:
    """The input's name as a folder and node-name prefix (CSV: its stem), by the library's safe-name rule."""
    path = Path(path)
    return RunFolder(".").cohort_study(path.stem if path.suffix.lower() == ".csv" else path.name).name


class ResearchSteps:
    @staticmethod
    def researchOutput(source, researchFolder) -> "tuple[str, Path]":
        """(<source>, RESEARCH/<source>/) of a research tool's input."""
        name = sourceName(source)
        return name, Path(researchFolder) / name

    def researchFolder(self, researchFolder, workFolder) -> Path:
        """Where the research tools write: the chosen folder, else WORK/research."""
        if researchFolder and str(researchFolder) not in ("", "."):
            return Path(researchFolder)
        return self.outputFolder(workFolder, "research")

    # ------------------------------------------------------------ protocol QC
    def protocolQcJob(self, cohortCsv, outFolder) -> CliJob:
        """`hccfusion protocol-qc COHORT.csv --out OUT` (OUT/protocol_qc/protocol.csv)."""
        return CliJob("protocol-qc", [cohortCsv, "--out", outFolder])

    @staticmethod
    def protocolCohort(dicomFolder, path) -> Path:
        """A one-site cohort table (path, site) of one DICOM folder, for `protocol-qc`; written atomically."""
        import pandas as pd

        from HCCFusionLib.files import atomic_write

        folder, path = Path(dicomFolder).resolve(), Path(path)
        with atomic_write(path) as tmp:
            pd.DataFrame([{"path": str(folder), "site": sourceName(folder)}]).to_csv(tmp, index=False)
        return path

    def prepareProtocolQc(self, source, researchFolder) -> PreparedStage:
        """`protocol-qc` of a DICOM folder (its series judged as one site) or of a cohort CSV (path, site)."""
        if not isProtocolSource(source):
            raise InputError(f"'{source}' is neither a DICOM folder nor a CSV file: choose the folder holding the "
                             "DICOM series, or a CSV with path and site columns.")
        name, out = self.researchOutput(source, researchFolder)
        table = Path(source) if isCsv(source) else self.protocolCohort(source, out / "protocol_qc_input" / "cohort.csv")
        return PreparedStage(self.protocolQcJob(table, out), lambda: self.loadProtocolQc(out, name))

    def loadProtocolQc(self, outFolder, name: str):
        """Protocol table (one row per series), flagged series first, with the flags beside the site."""
        import pandas as pd

        from .logic import StageResult, _require

        frame = pd.read_csv(_require(RunFolder(outFolder).protocol_qc, "protocol-qc"))
        frame["flags"] = frame["flags"].fillna("")
        frame = frame[PROTOCOL_FIRST_COLUMNS + [c for c in frame.columns if c not in PROTOCOL_FIRST_COLUMNS]]
        frame = frame.sort_values("outlier", ascending=False, kind="stable").reset_index(drop=True)
        self._removePrevious(f"{name}_", ("_protocol_QC",))
        node = mrml.dataframe_to_table(self.scene, frame, f"{name}_protocol_QC")
        result = StageResult(Path(outFolder), {"table": node}, studyId=name)
        self._placeResearch(result)
        flagged = frame[frame.outlier]
        sites = ", ".join(f"{site}: {count}" for site, count in flagged.site.value_counts(sort=False).items())
        result.summary = f"{len(flagged)} of {len(frame)} series flagged" + (f" ({sites})" if sites else "")
        return result

    # ------------------------------------------------------------ nomogram
    def nomogramJob(self, bundleFolder, outFolder) -> CliJob:
        """`hccfusion nomogram BUNDLE --out OUT` (OUT/nomogram/: the figure and its scales as numbers)."""
        return CliJob("nomogram", [bundleFolder, "--out", outFolder])

    def prepareNomogram(self, bundleFolder, researchFolder) -> PreparedStage:
        if not isFolder(bundleFolder):
            raise InputError(f"'{bundleFolder}' is not a folder: choose a model bundle trained with --nomogram.")
        name, out = self.researchOutput(bundleFolder, researchFolder)
        return PreparedStage(self.nomogramJob(bundleFolder, out), lambda: self.loadNomogram(out, name))

    def loadNomogram(self, outFolder, name: str):
        """The nomogram figure as an RGB volume (one slice, 1 mm pixels) and its points table."""
        from .logic import StageResult, _require

        paths = RunFolder(outFolder)
        figure = sitk.ReadImage(str(_require(paths.nomogram_chart, "nomogram")))
        if figure.GetNumberOfComponentsPerPixel() == 4:  # RGBA -> RGB
            figure = sitk.Compose(*(sitk.VectorIndexSelectionCast(figure, i) for i in range(3)))
        self._removePrevious(f"{name}_", ("_nomogram", "_nomogram_points"))
        volume = mrml.image_to_volume(self.scene, sitk.JoinSeries(figure), f"{name}_nomogram",
                                      channels=["red", "green", "blue"][: figure.GetNumberOfComponentsPerPixel()])
        points = self._table(_require(paths.nomogram_scales, "nomogram"), f"{name}_nomogram_points")
        result = StageResult(paths.root, {"figure": volume, "table": points}, studyId=name)
        self._placeResearch(result)
        variables = mrml.table_to_dataframe(points)["variable"].unique()
        result.summary = f"Nomogram of {name}: {', '.join(map(str, variables))}"
        return result

    # ------------------------------------------------------------ cohort run
    def cohortRunJob(self, cohortCsv, outFolder, engine: str = "auto", mode: str = "deformable",
                     bundleFolder=None, preset: str = "auto", dask: bool = False) -> CliJob:
        """`hccfusion cohort-run`: `engine` a shipped engine name, `bundleFolder` the prediction model (None: no
        prediction), `preset` a radiomics preset ("auto": per modality), `dask` the verb's Dask cluster (else
        --sequential: the studies one after the other)."""
        args = [cohortCsv, "--out", outFolder, "--engine", engine, "--mode", mode,
                "--model", bundleFolder if bundleFolder else "none"]
        if preset and preset != "auto":
            args += ["--preset", preset]
        return CliJob("cohort-run", args + ([] if dask else ["--sequential"]))

    def prepareCohortRun(self, cohortCsv, researchFolder, engine: str, mode: str = "deformable", bundleFolder=None,
                         preset: str = "auto", dask: bool = False) -> PreparedStage:
        """`cohort-run` of a cohort CSV into RESEARCH/<csv stem>/ with the panel's engine (a COHORT_ENGINES
        choice), registration mode and preset; a rerun into the same folder resumes."""
        from .choices import COHORT_ENGINES, ENGINE_NAMES

        if not isCsv(cohortCsv):
            raise InputError(f"'{cohortCsv}' is not a CSV file: choose the cohort table (study_id, path columns).")
        if engine not in COHORT_ENGINES:
            raise InputError(f"A cohort run cannot use '{engine}': choose one of {', '.join(COHORT_ENGINES)} in "
                             "Segmentation (a cohort row may give its own segmentation file).")
        name, out = self.researchOutput(cohortCsv, researchFolder)
        job = self.cohortRunJob(cohortCsv, out, ENGINE_NAMES[engine], mode, bundleFolder if isFolder(bundleFolder)
                                else None, preset, dask)
        return PreparedStage(job, lambda: self.loadCohort(out, name))

    def loadCohort(self, outFolder, name: str):
        """The cohort's status table (one row per study), and its lesions and predictions when written."""
        from .logic import StageResult, _require

        paths = RunFolder(outFolder)
        _require(paths.cohort_status, "cohort-run")
        self._removePrevious(f"{name}_", tuple(f"_{suffix}" for suffix in COHORT_TABLES))
        tables = {suffix: self._table(getattr(paths, attr), f"{name}_{suffix}")
                  for suffix, attr in COHORT_TABLES.items() if getattr(paths, attr).is_file()}
        result = StageResult(paths.root, tables, studyId=name)
        self._placeResearch(result)
        status = mrml.table_to_dataframe(tables["cohort_status"])["status"]
        counts = status.str.split(" ").str[0].value_counts(sort=False)  # in the order of the table
        result.summary = f"{len(status)} studies: " + ", ".join(f"{n} {state}" for state, n in counts.items())
        return result

    # ------------------------------------------------------------ helpers
    def _placeResearch(self, result) -> None:
        """The result's nodes under RESEARCH_SUBJECT / <source> in subject hierarchy."""
        mrml.place_in_study(self.scene, result.all(), result.studyId, patient=RESEARCH_SUBJECT)
