"""The Slicer extension's files, checked without Slicer: .ui panel, parameter node, CMake, catalog entry.

The .ui is loaded with PySide6's QUiLoader offscreen (Slicer widgets become their declared base classes);
the module's Python is read with ast/regex, never run (its widget needs Slicer's PythonQt).
"""
from __future__ import annotations

import ast
import fnmatch
import importlib.util
import json
import os
import re
import sys
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "HCCFusion"
UI_FILE = MODULE / "Resources" / "UI" / "HCCFusion.ui"
PARAMETERS = MODULE / "HCCFusionSlicer" / "parameters.py"
SECTIONS = ["Inputs", "Registration", "Segmentation", "Radiomics", "Prediction & Report"]
MODULE_SOURCES = sorted(p for p in MODULE.rglob("*.py") if "__pycache__" not in p.parts)


# ---------------------------------------------------------------- helpers
@pytest.fixture(scope="module")
def qt_loaded():
    """(QUiLoader, root widget, {objectName: widget}) of the panel, loaded offscreen."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    QtWidgets = pytest.importorskip("PySide6.QtWidgets", reason="PySide6 is not installed")
    from PySide6.QtCore import QFile, QIODevice
    from PySide6.QtUiTools import QUiLoader

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    loader = QUiLoader()
    file = QFile(str(UI_FILE))
    assert file.open(QIODevice.ReadOnly)
    root = loader.load(file)
    file.close()
    assert root is not None, loader.errorString()
    widgets = {w.objectName(): w for w in root.findChildren(QtWidgets.QWidget) if w.objectName()}
    widgets[root.objectName()] = root
    yield loader, root, widgets
    root.deleteLater()
    del app


def ui_tree() -> ET.Element:
    return ET.parse(UI_FILE).getroot()


def xml_widgets() -> dict:
    """objectName → (class, {property name: element}) for every <widget> in the .ui."""
    found = {}
    for el in ui_tree().iter("widget"):
        props = {p.get("name"): p for p in el.findall("property")}
        found[el.get("name")] = (el.get("class"), props)
    return found


def bound_widgets() -> dict:
    """SlicerParameterName → (widget name, widget class, properties)."""
    bound = {}
    for name, (cls, props) in xml_widgets().items():
        if "SlicerParameterName" in props:
            param = props["SlicerParameterName"].findtext("string")
            assert param not in bound, f"parameter {param} bound twice ({bound.get(param, [None])[0]} and {name})"
            bound[param] = (name, cls, props)
    return bound


def parameter_fields() -> dict:
    """Field name → annotation source of the @parameterNodeWrapper class (read with ast: it needs Slicer)."""
    tree = ast.parse(PARAMETERS.read_text())
    aliases = {t.id: ast.unparse(node.value) for node in tree.body if isinstance(node, ast.Assign)
               for t in node.targets if isinstance(t, ast.Name)}
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)
               and any(ast.unparse(d) == "parameterNodeWrapper" for d in n.decorator_list)]
    assert len(classes) == 1, "parameters.py must define exactly one @parameterNodeWrapper class"
    fields = {}
    for node in classes[0].body:
        if isinstance(node, ast.AnnAssign):
            annotation = ast.unparse(node.annotation)
            fields[node.target.id] = aliases.get(annotation, annotation)
    return fields


def panel_widget_names(links: bool = False) -> set:
    """Widget names the shared panel reaches by name: `_widget("X")`, `_connect("X", ...)`, and the widgets
    of its STAGES and ACTIONS tables (MODULE_LINKS too when `links`)."""
    text = (MODULE / "HCCFusionSlicer" / "widget.py").read_text()
    names = set(re.findall(r"_(?:widget|connect)\(\"(\w+)\"", text))
    tree = ast.parse(text)
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id in ("STAGES", "ACTIONS", "MODULE_LINKS", "ENGINE_WIDGETS"):
            table = node.targets[0].id
            if table == "MODULE_LINKS":
                names |= {k.value for k in node.value.keys} if links else set()
                continue
            for value in node.value.values:
                if isinstance(value, ast.Constant):
                    names.add(value.value)
                    continue
                names |= {e.value for e in value.elts if isinstance(e, ast.Constant) and
                          re.fullmatch(r"[a-z]\w*(Button|Bar|Label)", str(e.value))}
    return names


# ---------------------------------------------------------------- the .ui file
def test_ui_loads_offscreen_and_creates_every_widget(qt_loaded):
    _, root, widgets = qt_loaded
    assert root.objectName() == "HCCFusion"
    missing = sorted(set(xml_widgets()) - set(widgets))
    assert not missing, f"declared in the .ui but not created by QUiLoader: {missing}"


def test_object_names_are_unique():
    names = [el.get("name") for el in ui_tree().iter() if el.get("name") and el.tag in ("widget", "layout")]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates


def test_module_code_uses_only_widgets_that_exist(qt_loaded):
    _, _, widgets = qt_loaded
    used = {}
    for path in MODULE_SOURCES:
        for name in re.findall(r"\bui\.([A-Za-z_]\w*)", path.read_text()):
            used.setdefault(name, path.relative_to(ROOT))
    assert len(used) > 15, "the module code should reach its widgets through self.ui"
    for name in panel_widget_names():  # reached by name: the panel connects only what its .ui has
        used.setdefault(name, "HCCFusion/HCCFusionSlicer/widget.py")
    missing = {name: str(where) for name, where in used.items() if name not in widgets}
    assert not missing, f"self.ui names not in HCCFusion.ui: {missing}"


def test_sections_in_pipeline_order(qt_loaded):
    _, root, widgets = qt_loaded
    main = ui_tree().find("widget/layout")
    titles = [item.find("widget/property[@name='text']/string").text for item in main.findall("item")
              if item.find("widget") is not None and item.find("widget").get("class") == "ctkCollapsibleButton"]
    assert titles[: len(SECTIONS)] == SECTIONS
    layout = root.layout()
    loaded_order = [layout.itemAt(i).widget().objectName() for i in range(layout.count()) if layout.itemAt(i).widget()]
    assert loaded_order[0] == "stageModulesWidget"  # links to the per-stage modules, above the sections
    assert [n for n in loaded_order if n.endswith("CollapsibleButton")][:5] == ["inputsCollapsibleButton", "registrationCollapsibleButton",
                                "segmentationCollapsibleButton", "radiomicsCollapsibleButton",
                                "predictionCollapsibleButton"]


def test_custom_widgets_declared_with_extends_chain(qt_loaded):
    loader, _, _ = qt_loaded
    qt_classes = set(loader.availableWidgets())
    declared = {}
    for cw in ui_tree().iter("customwidget"):
        cls, extends = cw.findtext("class"), cw.findtext("extends")
        assert extends, f"custom widget {cls} has no <extends>: QUiLoader would silently not create it"
        assert cw.findtext("header"), f"custom widget {cls} has no <header>"
        declared[cls] = extends
    used = {cls for cls, _ in xml_widgets().values()}
    undeclared = sorted(c for c in used - qt_classes if c not in declared)
    assert not undeclared, f"Slicer widgets used without a <customwidget> declaration: {undeclared}"
    for cls in declared:
        chain, current = [cls], cls
        while current not in qt_classes:
            assert current in declared and declared[current] not in chain, f"broken <extends> chain {chain}"
            current = declared[current]
            chain.append(current)
    assert {"qMRMLNodeComboBox", "qMRMLCheckableNodeComboBox", "ctkPathLineEdit", "ctkCollapsibleButton",
            "qMRMLSubjectHierarchyTreeView", "qMRMLTableView"} <= used


def test_every_mrml_widget_receives_the_scene():
    root_name = ui_tree().find("widget").get("name")
    receivers = {c.findtext("receiver") for c in ui_tree().iter("connection")
                 if c.findtext("sender") == root_name and c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    mrml = {name for name, (cls, _) in xml_widgets().items() if cls.startswith("qMRML") and cls != "qMRMLWidget"}
    assert mrml and mrml <= receivers, f"no setMRMLScene connection for {sorted(mrml - receivers)}"


# ---------------------------------------------------------------- parameter node binding
def test_parameter_names_are_parameter_node_fields():
    fields, bound = parameter_fields(), bound_widgets()
    assert not sorted(set(bound) - set(fields)), "SlicerParameterName values that are not parameter node fields"
    assert not sorted(set(fields) - set(bound)), "parameter node fields that no widget shows"


# which widget classes Slicer's parameterNodeWrapper can connect to which field types (guiConnectors.py)
CONNECTABLE = {
    "bool": {"QCheckBox", "ctkCheckBox", "QPushButton", "ctkCheckablePushButton"},
    "int": {"QSpinBox", "QSlider", "QDoubleSpinBox", "ctkSliderWidget", "ctkDoubleSpinBox", "qMRMLSpinBox"},
    "float": {"QDoubleSpinBox", "ctkSliderWidget", "qMRMLSliderWidget", "ctkDoubleSlider", "ctkDoubleSpinBox",
              "qMRMLSpinBox"},
    "str": {"QLineEdit", "QLabel", "QTextEdit"},
    "choice": {"QComboBox", "ctkComboBox"},
    "path": {"ctkPathLineEdit", "ctkDirectoryButton"},
    "node": {"qMRMLNodeComboBox"},  # exact type: qMRMLCheckableNodeComboBox has no connector
}


def field_kind(annotation: str) -> str:
    if "Choice(" in annotation:
        return "choice"
    if annotation.startswith("vtkMRML"):
        return "node"
    if "pathlib.Path" in annotation:
        return "path"
    base = re.sub(r"^Annotated\[(\w+),.*$", r"\1", annotation)
    return base


def test_bound_widgets_have_a_gui_connector_for_their_field_type():
    fields = parameter_fields()
    wrong = {}
    for param, (name, cls, props) in bound_widgets().items():
        kind = field_kind(fields[param])
        assert kind in CONNECTABLE, f"field {param}: unsupported annotation {fields[param]}"
        if cls not in CONNECTABLE[kind]:
            wrong[name] = f"{cls} cannot show a {kind} field ({param})"
        if kind == "node":
            types = [s.text for s in props["nodeTypes"].iter("string")]
            assert fields[param] in types, f"{name} offers {types}, field {param} is {fields[param]}"
        if kind == "choice":
            assert ui_tree().find(f".//widget[@name='{name}']/item") is None, f"{name}: Choice fills the items"
    assert not wrong, wrong


def test_clinical_spin_boxes_show_not_known_at_the_sentinel():
    widgets = xml_widgets()
    fields = parameter_fields()
    for param, (name, cls, props) in bound_widgets().items():
        if cls == "QDoubleSpinBox" and "WithinRange(-1.0" in fields[param]:
            assert props["specialValueText"].findtext("string") == "not known"
            assert float(props["minimum"].findtext("double")) == -1.0
    assert widgets["afpSpinBox"][0] == "QDoubleSpinBox"


# ---------------------------------------------------------------- module code rules
ALLOWED_FILE_SCOPE = {"slicer", "vtk", "qt", "ctk", "SimpleITK", "numpy", "HCCFusionLib", "HCCFusionSlicer"}


def test_module_imports_no_third_party_package_at_file_scope():
    offenders = []
    for path in MODULE_SOURCES:
        for node in ast.parse(path.read_text()).body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            for name in names:
                root = name.split(".")[0]
                if root not in ALLOWED_FILE_SCOPE and root not in sys.stdlib_module_names:
                    offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert not offenders


def test_module_never_uses_removed_or_unsafe_calls():
    for path in MODULE_SOURCES:
        text = path.read_text()
        assert not re.search(r"^\s*import imp\b", text, re.M), f"{path}: the imp module is gone; use importlib"
        assert "print(" not in text, f"{path}: log instead of printing"


def test_requirements_generated_from_pyproject():
    """Resources/requirements.txt is exactly what scripts/gen_requirements.py makes of pyproject.toml, and the
    install stages the glue reads from it are the pyproject extras' names."""
    spec = importlib.util.spec_from_file_location("gen_requirements", ROOT / "scripts" / "gen_requirements.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    text = (MODULE / "Resources" / "requirements.txt").read_text(encoding="utf-8")
    assert text == gen.render(), "requirements.txt is stale: run `python scripts/gen_requirements.py`"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    headers = re.findall(r"^# \[([\w-]+)\]", text, re.M)
    assert headers[0] == "core" and set(headers[1:]) <= set(extras) and "nnunet" in headers
    requirements = dict(line.lower().split("==") for line in text.splitlines() if line and not line.startswith("#"))
    assert not {"simpleitk", "numpy", "torch"} & set(requirements), "never replace Slicer's packages"


# ---------------------------------------------------------------- CMake and packaging
def cmake_list(text: str, variable: str) -> list[str]:
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"set({variable} ...) not found"
    return [item.replace("${MODULE_NAME}", "HCCFusion") for item in match.group(1).split()]


def shipped_files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def test_module_cmakelists_lists_every_module_file():
    text = (MODULE / "CMakeLists.txt").read_text()
    assert re.search(r"set\(MODULE_NAME HCCFusion\)", text)
    listed = cmake_list(text, "MODULE_PYTHON_SCRIPTS") + cmake_list(text, "MODULE_PYTHON_RESOURCES")
    assert all((MODULE / f).is_file() for f in listed), [f for f in listed if not (MODULE / f).is_file()]
    assert shipped_files(MODULE) - {"CMakeLists.txt"} == set(listed)
    macro = re.search(r"slicerMacroBuildScriptedModule\((.*?)\)", text, re.S).group(1)
    assert {"NAME", "SCRIPTS", "RESOURCES", "WITH_GENERIC_TESTS"} <= set(macro.split())
    assert re.search(r"if\(BUILD_TESTING\)\s*slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)",
                     re.sub(r"#.*", "", text))


def test_module_cmakelists_ships_every_library_file():
    text = (MODULE / "CMakeLists.txt").read_text()
    assert "set(HCCFUSIONLIB_SOURCE_DIR ${CMAKE_CURRENT_SOURCE_DIR}/..)" in text
    globs = {}
    for variable, body in re.findall(r"file\(GLOB_RECURSE (\w+) RELATIVE \S+ CONFIGURE_DEPENDS\s+(.*?)\)", text, re.S):
        globs[variable] = [p.replace("${HCCFUSIONLIB_SOURCE_DIR}/", "") for p in body.split()]
    excluded = re.search(r'list\(FILTER HCCFUSIONLIB_RESOURCES EXCLUDE REGEX "(.*?)"\)', text).group(1)
    excluded = excluded.replace("\\\\", "\\")
    scripts = {f for f in shipped_files(ROOT / "HCCFusionLib")
               if any(fnmatch.fnmatch(f"HCCFusionLib/{f}", g) for g in globs["HCCFUSIONLIB_PYTHON_SCRIPTS"])}
    resources = {f for f in shipped_files(ROOT / "HCCFusionLib")
                 if any(fnmatch.fnmatch(f"HCCFusionLib/{f}", g) for g in globs["HCCFUSIONLIB_RESOURCES"])
                 and not re.search(excluded, f"HCCFusionLib/{f}")}
    assert "__init__.py" in scripts and "cli/__init__.py" in scripts
    assert scripts | resources == shipped_files(ROOT / "HCCFusionLib")
    assert not scripts & resources
    call = re.search(r"ctkMacroCompilePythonScript\((.*?)\n  \)", text, re.S).group(1)
    for argument in ("TARGET_NAME HCCFusionLib", "SOURCE_DIR ${HCCFUSIONLIB_SOURCE_DIR}",
                     "DESTINATION_DIR ${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}",
                     "INSTALL_DIR ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}", "NO_INSTALL_SUBDIR"):
        assert argument in call


def test_top_level_cmakelists_declares_the_extension():
    text = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r"^project\(HCCFusion\)", text, re.M)
    values = dict(re.findall(r'set\((EXTENSION_\w+) "(.*?)"\)', text, re.S))
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert values.get(f"EXTENSION_{key}"), f"EXTENSION_{key} is missing"
    assert values["EXTENSION_ICONURL"].startswith("http")
    assert values["EXTENSION_ICONURL"].endswith("/HCCFusion/Resources/Icons/HCCFusion.png")
    assert all(u.startswith("http") for u in values["EXTENSION_SCREENSHOTURLS"].split())
    assert "PyTorch" in values["EXTENSION_DEPENDS"].split()
    steps = ["find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})", "add_subdirectory(HCCFusion)",
             "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"]
    positions = [text.find(step) for step in steps]
    assert -1 not in positions and positions == sorted(positions)
    catalog = json.loads((ROOT / "HCCFusion.json").read_text())
    assert catalog["category"] == values["EXTENSION_CATEGORY"]
    assert set(catalog["build_dependencies"]) == set(values["EXTENSION_DEPENDS"].split())


# Structure of Slicer's catalog entry schema v1.0.2 (Slicer/Slicer Schemas/), and the categories and
# repository-name rule that Slicer/ExtensionsIndex scripts/check_description_files.py enforces.
SCHEMA_REQUIRED = {"$schema", "category", "scm_url"}
SCHEMA_TYPES = {"$schema": str, "category": str, "scm_url": str, "scm_revision": str, "scm_type": str,
                "build_dependencies": list, "dicom_support_rule": str, "build_subdirectory": str, "enabled": bool,
                "tier": int}
ACCEPTED_CATEGORIES = {
    "Active Learning", "Analysis", "Cardiac", "Chest Imaging Platform", "Converters", "DICOM", "Developer Tools",
    "Diffusion", "Examples", "Exporter", "Filtering", "IGT", "Informatics", "Neuroimaging", "Nuclear Medicine",
    "Pipelines", "Planning", "Quantification", "Radiotherapy", "Registration", "Remote", "Rendering", "Segmentation",
    "Sequences", "Shape Analysis", "Simulation", "Spectral Imaging", "Surface Models", "Tomographic Reconstruction",
    "Tracking", "Tractography", "Training", "Ultrasound", "Utilities", "Virtual Reality", "Wizards"}


def test_extension_description_validates_against_catalog_schema():
    entry = json.loads((ROOT / "HCCFusion.json").read_text())
    assert SCHEMA_REQUIRED <= set(entry)
    assert set(entry) <= set(SCHEMA_TYPES), "additionalProperties is false in the schema"
    for key, value in entry.items():
        assert isinstance(value, SCHEMA_TYPES[key]) and not (SCHEMA_TYPES[key] is int and isinstance(value, bool))
    assert all(isinstance(d, str) for d in entry["build_dependencies"])
    assert 1 <= entry.get("tier", 1) <= 5
    assert entry.get("scm_type", "git") in ("git", "local")
    assert re.fullmatch(r"https://raw\.githubusercontent\.com/Slicer/Slicer/main/Schemas/"
                        r"slicer-extension-catalog-entry-schema-v1\.0\.\d+\.json#?", entry["$schema"])
    assert entry["category"] in ACCEPTED_CATEGORIES
    assert entry["scm_url"].split("://")[0] in ("https", "git")
    repository = entry["scm_url"].rstrip("/").split("/")[-1].removesuffix(".git")
    assert repository == "SlicerHCCFusion" and "slicer" in repository.lower()
    assert entry["build_subdirectory"] == "."


def test_license_and_icon():
    license_text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert "END OF TERMS AND CONDITIONS" in license_text  # the full text, not a stub
    from PIL import Image

    with Image.open(MODULE / "Resources" / "Icons" / "HCCFusion.png") as icon:
        assert icon.format == "PNG" and icon.size == (128, 128)
