"""Generic checks of every HCCFusion scripted module (the workflow and the four per-stage modules).

Each module: its file parses and sets the metadata Slicer requires; its .ui loads offscreen (PySide6) and binds
only fields of the one shared parameter node; its CMakeLists builds it with generic tests; and the logic behind
its panel runs its stage on real MRML (slicer-core wheel), with the verbs called in-process.
"""
from __future__ import annotations

import ast
import os
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from test_ui import ALLOWED_FILE_SCOPE, panel_widget_names, parameter_fields

ROOT = Path(__file__).resolve().parents[1]
#: module → (stage of its panel, section of HCCFusion.ui it shows)
STAGE_MODULES = {"HCCFusionRegistration": ("registration", "registrationCollapsibleButton"),
                 "HCCFusionSegmentation": ("segmentation", "segmentationCollapsibleButton"),
                 "HCCFusionRadiomics": ("radiomics", "radiomicsCollapsibleButton"),
                 "HCCFusionPrediction": ("prediction", "predictionCollapsibleButton")}
MODULES = ["HCCFusion", *STAGE_MODULES]
METADATA = ("title", "categories", "contributors", "helpText", "acknowledgementText")


def module_tree(name: str) -> ast.Module:
    return ast.parse((ROOT / name / f"{name}.py").read_text())


def ui_root(name: str) -> ET.Element:
    return ET.parse(ROOT / name / "Resources" / "UI" / f"{name}.ui").getroot()


# ---------------------------------------------------------------- module files
@pytest.mark.parametrize("name", MODULES)
def test_module_file_sets_slicer_metadata_under_one_category(name):
    tree = module_tree(name)
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    assert {name, f"{name}Widget", f"{name}Test"} <= set(classes)
    assert [ast.unparse(b) for b in classes[name].bases] == ["ScriptedLoadableModule"]
    init = next(f for f in classes[name].body if isinstance(f, ast.FunctionDef) and f.name == "__init__")
    values = {t.attr: node.value for node in ast.walk(init) if isinstance(node, ast.Assign)
              for t in node.targets if isinstance(t, ast.Attribute) and ast.unparse(t.value) == "self.parent"}
    assert set(METADATA) <= set(values), f"{name} lacks {set(METADATA) - set(values)}"
    assert ast.unparse(values["categories"]) == "[translate('qSlicerAbstractCoreModule', 'HCCFusion')]"
    help_text = "".join(c.value for c in ast.walk(values["helpText"]) if isinstance(c, ast.Constant))
    assert "README" in help_text and "not for clinical use" in help_text
    if name != "HCCFusion":
        assert ast.unparse(values["dependencies"]) == "['HCCFusion']"  # its glue package and parameter node
        assert f'"UI/{name}.ui"' in ast.unparse(classes[f"{name}Widget"]).replace("'", '"')


@pytest.mark.parametrize("name", MODULES)
def test_module_file_imports_no_third_party_package_at_file_scope(name):
    for node in module_tree(name).body:
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
        for imported in names:
            root = imported.split(".")[0]
            assert root in ALLOWED_FILE_SCOPE or root in sys.stdlib_module_names, f"{name}.py imports {imported}"


# ---------------------------------------------------------------- .ui files
@pytest.fixture(scope="module")
def qt_app():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    QtWidgets = pytest.importorskip("PySide6.QtWidgets", reason="PySide6 is not installed")
    return QtWidgets.QApplication.instance() or QtWidgets.QApplication([])


@pytest.mark.parametrize("name", MODULES)
def test_ui_loads_offscreen_and_binds_only_shared_parameter_fields(qt_app, name):
    from PySide6.QtCore import QFile, QIODevice
    from PySide6.QtUiTools import QUiLoader
    from PySide6.QtWidgets import QWidget

    file = QFile(str(ROOT / name / "Resources" / "UI" / f"{name}.ui"))
    assert file.open(QIODevice.ReadOnly)
    loader = QUiLoader()
    root = loader.load(file)
    file.close()
    assert root is not None, loader.errorString()
    try:
        created = {w.objectName() for w in root.findChildren(QWidget)} | {root.objectName()}
        tree = ui_root(name)
        declared = {el.get("name") for el in tree.iter("widget")}
        assert root.objectName() == name and declared <= created, sorted(declared - created)
        bound = {p.findtext("string") for p in tree.iter("property") if p.get("name") == "SlicerParameterName"}
        assert bound and bound <= set(parameter_fields())
        mrml = {el.get("name") for el in tree.iter("widget") if el.get("class", "").startswith("qMRML")}
        fed = {c.findtext("receiver") for c in tree.iter("connection") if c.findtext("slot").startswith("setMRMLScene")}
        assert mrml - {name} <= fed, f"MRML widgets without the scene: {sorted(mrml - {name} - fed)}"
        classes = {el.get("class") for el in tree.iter("widget")}
        customs = {c.findtext("class") for c in tree.iter("customwidget")}
        assert {c for c in classes if c.startswith(("qMRML", "ctk"))} <= customs
        links = {n for n in panel_widget_names(links=True) if n.startswith("open") and n.endswith("ModuleButton")}
        if name == "HCCFusion":
            assert {f"open{m[len('HCCFusion'):]}ModuleButton" for m in STAGE_MODULES} <= created
        else:
            stage, section = STAGE_MODULES[name]
            assert {"openWorkflowModuleButton", section} <= created and "inputsCollapsibleButton" not in created
            assert created & links == {"openWorkflowModuleButton"}
            workflow = {el.get("name") for el in ui_root("HCCFusion").iter("widget")}
            assert declared - {name, "stageInfoLabel", "openWorkflowModuleButton"} <= workflow  # same names
    finally:
        root.deleteLater()


# ---------------------------------------------------------------- CMake
@pytest.mark.parametrize("name", list(STAGE_MODULES))
def test_stage_module_is_built_with_generic_tests(name):
    text = re.sub(r"#.*", "", (ROOT / name / "CMakeLists.txt").read_text())
    assert f"set(MODULE_NAME {name})" in text
    listed = [f.replace("${MODULE_NAME}", name) for var in ("MODULE_PYTHON_SCRIPTS", "MODULE_PYTHON_RESOURCES")
              for f in re.search(rf"set\({var}\s+(.*?)\)", text, re.S).group(1).split()]
    shipped = {str(p.relative_to(ROOT / name)) for p in (ROOT / name).rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert set(listed) == shipped - {"CMakeLists.txt"}
    macro = re.search(r"slicerMacroBuildScriptedModule\((.*?)\)", text, re.S).group(1).split()
    assert {"NAME", "SCRIPTS", "RESOURCES", "WITH_GENERIC_TESTS"} <= set(macro)
    assert re.search(r"if\(BUILD_TESTING\)\s*slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)", text)
    top = (ROOT / "CMakeLists.txt").read_text()
    assert top.index("add_subdirectory(HCCFusion)\n") < top.index(f"add_subdirectory({name})\n") < top.index(
        "include(${Slicer_EXTENSION_GENERATE_CONFIG})")


# ---------------------------------------------------------------- each stage's logic on real MRML
@pytest.fixture
def logic(tmp_path):
    mrml = pytest.importorskip("HCCFusionLib.scene", reason="slicer-core (MRML) is not installed")
    sys.path.insert(0, str(ROOT / "HCCFusion"))
    from HCCFusionSlicer import process
    from HCCFusionSlicer.logic import HCCFusionLogic

    return HCCFusionLogic(process.InProcessRunner(), mrml.new_scene(cache_dir=tmp_path / "cache"))


@pytest.fixture
def phantom_inputs(logic):
    from HCCFusionLib import phantom
    from HCCFusionLib import scene as mrml

    patient = phantom.make_patient(4, "small", phases=("AP", "PVP"), misalignment="rigid")
    inputs = [(mrml.image_to_volume(logic.scene, s.image, s.name), s.name) for s in patient.study]
    truth = mrml.labels_to_segmentation(logic.scene, patient.labels, "truth", reference_volume=inputs[1][0])
    return patient, inputs, truth


def test_registration_module_logic(logic, phantom_inputs, tmp_path):
    patient, inputs, _ = phantom_inputs
    prepared = logic.prepareRegistration(inputs, tmp_path / "P4", "P4", {}, "PVP", "rigid")
    assert prepared.job.verb == "register"
    result = logic.run(prepared.job, prepared.load, waitForCompletion=True)
    assert inputs[0][0].GetParentTransformNode() is result.nodes["transforms"]["AP"]
    assert sorted(p.name for p in (tmp_path / "P4").iterdir()) == ["audit.jsonl", "registration", "study"]


def test_segmentation_module_logic_with_an_existing_segmentation(logic, phantom_inputs, tmp_path):
    from HCCFusionLib import scene as mrml
    from HCCFusionSlicer.choices import ENGINE_EXISTING

    patient, inputs, truth = phantom_inputs
    prepared = logic.prepareSegmentation(inputs, tmp_path / "P4", "P4", {}, "PVP", ENGINE_EXISTING,
                                         existingSegmentation=truth)
    assert prepared.job is None  # in-process: exported, then loaded as `segment` would have written it
    result = logic.run(prepared.job, prepared.load)
    labels = mrml.segmentation_to_labels(result.nodes["segmentation"], patient.study["PVP"].image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), sitk.GetArrayFromImage(patient.labels))


def test_radiomics_module_logic_on_one_phase(logic, phantom_inputs, tmp_path):
    from HCCFusionLib import scene as mrml

    _, inputs, truth = phantom_inputs
    prepared = logic.prepareRadiomics(inputs, tmp_path / "P4", "P4", {}, "PVP", truth, preset="ct", regions="tumour",
                                      selectedIds={inputs[1][0].GetID()}, imageTypes="Original")
    result = logic.run(prepared.job, prepared.load, waitForCompletion=True)
    features = mrml.table_to_dataframe(result.nodes["features"])
    assert set(features["series"]) == {"PVP"} and set(features["region"]) == {"tumour"} and len(features) > 50


def test_prediction_module_logic(logic, tmp_path):
    from HCCFusionLib import phantom
    from HCCFusionSlicer import process

    cohort = phantom.make_cohort(40, 3)
    features = cohort.simulated_features(seed=0)
    features.to_csv(tmp_path / "features.csv")
    cohort.table.to_csv(tmp_path / "clinical.csv")
    logic.runner.run(process.CliJob("train", [tmp_path / "features.csv", tmp_path / "clinical.csv", "--endpoint", "mvi",
                                              "--cv", "3", "--out", tmp_path / "bundle"]))
    study = features.index[0]
    out = tmp_path / "P"
    (out / "radiomics").mkdir(parents=True)
    features.loc[[study]].rename_axis("study_id").to_csv(out / "radiomics" / "features_wide.csv")
    wanted = ("afp", "bilirubin", "albumin", "inr", "ascites", "encephalopathy", "etiology", "performance_status",
              "vascular_invasion", "extrahepatic_spread", "tumour_number", "tumour_size_mm", "center", "age", "sex")
    clinical = {k: v for k, v in cohort.table.loc[study].items() if k in wanted and not pd.isna(v)}
    prepared = logic.preparePrediction(out, study, clinical, tmp_path / "bundle")
    result = logic.run(prepared.job, prepared.load, waitForCompletion=True)
    assert result.summary.startswith("mvi: probability ") and "chart" in result.nodes
    assert pd.read_csv(out / "prediction_input" / "clinical.csv").loc[0, "study_id"] == study
