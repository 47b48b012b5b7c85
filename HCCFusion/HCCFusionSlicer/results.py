"""PET, CEUS, follow-up, MR subtraction and deep fusion results of a run folder as scene nodes (no science, no Qt).

Mixed into `HCCFusionLogic` (which provides `scene`, `_table` and `_removePrevious`). Reads only `RunFolder` paths
that the library verbs wrote (`pet-suv`, `ceus`, `run --prior [--risk-bundle]`, MR LI-RADS, `predict-deep`); each
file present becomes one node, named `<study>_<result>` and placed under the study in subject hierarchy, like the
other stages' nodes; the risk curve also becomes a chart, the Grad-CAM maps volumes on their lesions' patch grids.
"""
from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from HCCFusionLib import scene as mrml
from HCCFusionLib.layout import RunFolder

PET_COLOR_NODE = "vtkMRMLPETProceduralColorNodePET-Heat"  # Slicer's default PET colour table
SUV_WINDOW_LEVEL = (10.0, 5.0)  # g/mL: shows SUV 0-10
#: column-name ending -> unit, for tables whose columns carry their unit in the name (follow-up)
UNIT_SUFFIXES = {"_mm": "mm", "_ml": "mL", "_s": "s", "_months": "months"}
#: node-name suffix -> RunFolder attribute of the table it holds
TABLES = {"PET_lesions": "pet_lesions", "CEUS_perfusion": "ceus_perfusion", "CEUS_LI-RADS": "ceus_lirads",
          "followup_matches": "followup_matches", "followup_response": "followup_response",
          "followup_delta_radiomics": "followup_delta", "followup_registration": "followup_registration",
          "followup_risk_curve": "followup_risk_curve", "followup_risk_inputs": "followup_risk_inputs"}
RISK_CHART = "risk_curve_chart"  # node-name suffix of the risk curve's chart (and of its series, + "_series")
#: node-name suffix -> RunFolder attribute of the PET volume it holds
PET_VOLUMES = {"PET_SUV": "pet_suv", "PET_SUL": "pet_sul"}


def subtractionImages(outFolder) -> dict:
    """{name: path} of the MR subtraction images in OUT/lirads/ ("MR_AP-MR_PRE", ...)."""
    paths = RunFolder(outFolder)
    pattern = paths.subtraction("*").name
    prefix, suffix = pattern.split("*")
    found = sorted(paths.lirads.glob(pattern)) if paths.lirads.is_dir() else []
    return {p.name[len(prefix): -len(suffix)]: p for p in found}


def availableResults(outFolder) -> list:
    """Node-name suffixes of the PET/CEUS/follow-up/MR results present in the run folder (what the panel lists)."""
    if not outFolder or not Path(outFolder).is_dir():
        return []
    paths = RunFolder(outFolder)
    found = [key for key, attr in {**PET_VOLUMES, **TABLES}.items() if getattr(paths, attr).is_file()]
    return found + [f"subtraction_{name}" for name in subtractionImages(outFolder)]


def columnUnits(columns) -> dict:
    """Column -> unit: the PET table's units (pet.PET_COLUMNS), else the unit a column name ends with."""
    from HCCFusionLib.pet import PET_COLUMNS

    units = {}
    for column in map(str, columns):
        if column in PET_COLUMNS and column != "lesion":
            units[column] = PET_COLUMNS[column]
        else:
            units.update({column: unit for end, unit in UNIT_SUFFIXES.items() if column.endswith(end)})
    return units


class ResultLoaders:
    def loadModalityResults(self, outFolder, studyId: str):
        """Nodes for every PET, CEUS, follow-up and MR subtraction result in the run folder (a StageResult).

        PET SUV/SUL volumes get the PET colour table and an SUV 0-10 window; tables get their units as column
        unit labels and in the column titles ("suv_max [g/mL (SUVbw)]"). Loading again replaces earlier nodes.
        """
        from .logic import StageResult

        paths = RunFolder(outFolder)
        names = availableResults(outFolder)
        self._removePrevious(f"{studyId}_", (*PET_VOLUMES, *TABLES))  # also results no longer in the folder
        self._removePrevious(f"{studyId}_subtraction_", ("",))
        self._removePrevious(f"{studyId}_", (RISK_CHART, f"{RISK_CHART}_series"))
        result = StageResult(paths.root, {"volumes": {}, "tables": {}}, studyId=studyId)
        for key in names:
            name = f"{studyId}_{key}"
            if key in PET_VOLUMES:
                result.nodes["volumes"][key] = self._petVolume(getattr(paths, PET_VOLUMES[key]), name)
            elif key in TABLES:
                result.nodes["tables"][key] = self._unitTable(getattr(paths, TABLES[key]), name)
        for subtraction, path in subtractionImages(outFolder).items():
            key = f"subtraction_{subtraction}"
            result.nodes["volumes"][key] = mrml.image_to_volume(self.scene, sitk.ReadImage(str(path)),
                                                                f"{studyId}_{key}")
        curve = result.nodes["tables"].get("followup_risk_curve")
        if curve is not None:
            result.nodes["chart"] = self.riskChart(curve, f"{studyId}_{RISK_CHART}")
        mrml.place_in_study(self.scene, result.all(), studyId)
        result.summary = resultsSummary(result) if names else "No PET, CEUS, follow-up or MR subtraction results."
        return result

    def riskChart(self, tableNode, name: str):
        """Line chart of the patient's cumulative risk (risk_curve.csv: risk against months since the baseline)."""
        series = self.scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name}_series")
        series.SetAndObserveTableNodeID(tableNode.GetID())
        series.SetPlotType(series.PlotTypeScatter)
        series.SetXColumnName("months_since_baseline")
        series.SetYColumnName("risk")
        series.SetMarkerStyle(series.MarkerStyleNone)
        chart = self.scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
        chart.SetTitle("Dynamic risk after the follow-up")
        chart.SetXAxisTitle("months since the baseline")
        chart.SetYAxisTitle("cumulative risk")
        return chart

    def loadFollowup(self, outFolder, studyId: str):
        """After `run --prior`: its follow-up results and risk curve (`loadModalityResults`), and the deep fusion
        outputs when the run had a deep fusion bundle."""
        result = self.loadModalityResults(outFolder, studyId)
        if RunFolder(outFolder).deep_prediction_table.is_file():
            deep = self.loadDeepPrediction(outFolder, studyId)
            result.nodes["deep"] = deep.all()
            result.summary += "\n" + deep.summary
        return result

    def loadDeepPrediction(self, outFolder, studyId: str):
        """`predict-deep`'s per-lesion prediction and phase attention tables, and its Grad-CAM maps as volumes
        (`<study>_gradcam_<lesion>_<phase>`, on each lesion's patch grid: they overlay the registered phases)."""
        from HCCFusionLib.deepfusion.evidence import gradcam_images

        from .logic import StageResult, _require

        paths = RunFolder(outFolder)
        _require(paths.deep_prediction_table, "predict-deep")
        self._removePrevious(f"{studyId}_", ("_deep_prediction", "_deep_attention"))
        self._removePrevious(f"{studyId}_gradcam_", ("",))
        prediction = self._table(paths.deep_prediction_table, f"{studyId}_deep_prediction")
        attention = self._table(paths.deep_attention, f"{studyId}_deep_attention")
        volumes = {key: mrml.image_to_volume(self.scene, image, f"{studyId}_gradcam_{key}")
                   for key, image in gradcam_images(outFolder).items()}
        result = StageResult(paths.deep_prediction, {"prediction": prediction, "attention": attention,
                                                     "gradcam": volumes}, studyId=studyId)
        mrml.place_in_study(self.scene, result.all(), studyId)
        result.summary = deepSummary(mrml.table_to_dataframe(prediction), mrml.table_to_dataframe(attention))
        return result

    def _petVolume(self, path: Path, name: str):
        node = mrml.image_to_volume(self.scene, sitk.ReadImage(str(path)), name, window_level=SUV_WINDOW_LEVEL)
        node.GetDisplayNode().SetAndObserveColorNodeID(PET_COLOR_NODE)
        node.SetVoxelValueUnits(_suvUnits())
        return node

    def _unitTable(self, path: Path, name: str):
        node = self._table(path, name)
        frame = mrml.table_to_dataframe(node)
        units = columnUnits(frame.columns)
        for column in map(str, frame.columns):  # every column titled: the header shows titles only
            node.SetColumnTitle(column, f"{column} [{units[column]}]" if column in units else column)
            if column in units:
                node.SetColumnUnitLabel(column, units[column])
        node.SetUseColumnTitleAsColumnHeader(True)
        return node


def _suvUnits():
    """SUV's unit (g/mL) as a coded entry, so Slicer's data probe and DICOM export name it."""
    import slicer

    units = slicer.vtkCodedEntry()
    units.SetValueSchemeMeaning("g/ml", "UCUM", "Standardized Uptake Value body weight")
    return units


def deepSummary(prediction, attention) -> str:
    """One line per lesion: its deep fusion probabilities (or risk and group) and the phase attention weights."""
    lines = []
    for k in range(len(prediction)):  # first column: the lesion
        row = prediction.iloc[k]
        values = [f"{c} {row[c]:.2f}" for c in prediction.columns if str(c).startswith("p_") or c == "risk"]
        values += [f"risk group {row['risk_group']}"] if "risk_group" in prediction.columns else []
        shares = ", ".join(f"{phase} {w:.2f}" for phase, w in attention.iloc[k, 1:].items() if w == w)
        lines.append(f"deep fusion lesion {prediction.iloc[k, 0]}: " + ", ".join(values)
                     + (f" (attention {shares})" if shares else ""))
    return "\n".join(lines)


def resultsSummary(result) -> str:
    """One line per loaded node: its name and what it holds (rows of a table, size of a volume)."""
    lines = []
    for node in result.all():
        if node.IsA("vtkMRMLTableNode"):
            lines.append(f"{node.GetName()}: {node.GetNumberOfRows()} row(s)")
        elif node.IsA("vtkMRMLPlotChartNode"):
            lines.append(f"{node.GetName()}: chart")
        else:
            dims = node.GetImageData().GetDimensions()
            lines.append(f"{node.GetName()}: volume {dims[0]}x{dims[1]}x{dims[2]}")
    return "\n".join(lines)
