"""MRML bridge: SimpleITK images, label maps, tables and transforms ↔ Slicer scene nodes.

The only library module that imports `slicer`/`vtk`. It uses MRML classes and module logics only, so it
behaves the same inside the Slicer application (where `new_scene()` returns `slicer.mrmlScene`) and
headless on the `slicer-core` wheel (where `new_scene()` builds the application/module logics a scene
needs to load and save data).

Coordinates: SimpleITK/ITK work in LPS, MRML in RAS; every conversion here flips x and y. A SimpleITK
transform that maps points of a fixed (reference) frame into a moving frame is ITK's file transform,
which is MRML's "transform from parent": placing the moving volume under that node aligns it to the
fixed volume.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util import numpy_support

from .errors import GeometryError, InputError
from .study import LABELS, Modality, check_same_grid

log = logging.getLogger(__name__)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

#: Node attribute / segment tag names written by HCCFusion.
CHANNELS_ATTRIBUTE = "HCCFusion.Channels"
LABEL_VALUE_TAG = "HCCFusion.LabelValue"
INDEX_ATTRIBUTE = "HCCFusion.IndexColumns"
DTYPE_PROPERTY = "dtype"

_SLICER_ANATOMY = "Segmentation category and type - 3D Slicer General Anatomy list"
_DICOM_MASTER = "Segmentation category and type - DICOM master list"
_REGION_CONTEXT = "Anatomic codes - DICOM master list"
_ANATOMICAL_STRUCTURE = "SCT^123037004^Anatomical Structure"


def terminology_string(context: str, category: str, type_: str, region: str = "^^") -> str:
    """Slicer's serialized terminology entry (context~category~type~modifier~regionContext~region~modifier)."""
    return "~".join([context, category, type_, "^^", _REGION_CONTEXT, region, "^^"])


@dataclass(frozen=True)
class SegmentInfo:
    name: str
    color: tuple[float, float, float]  # RGB 0..1
    terminology: str = ""


#: Segment names, colours and SNOMED-CT terminology for the study label values (study.LABELS).
SEGMENTS = {
    LABELS["liver"]: SegmentInfo(
        "liver", (221 / 255, 130 / 255, 101 / 255),
        terminology_string(_SLICER_ANATOMY, _ANATOMICAL_STRUCTURE, "SCT^10200004^Liver")),
    LABELS["tumour"]: SegmentInfo(
        "tumour", (1.0, 0.85, 0.0),
        terminology_string(_DICOM_MASTER, "SCT^49755003^Morphologically Altered Structure",
                           "SCT^108369006^Neoplasm", "SCT^10200004^Liver")),
    LABELS["spleen"]: SegmentInfo(
        "spleen", (157 / 255, 108 / 255, 162 / 255),
        terminology_string(_SLICER_ANATOMY, _ANATOMICAL_STRUCTURE, "SCT^78961009^Spleen")),
    LABELS["portal_vein"]: SegmentInfo(
        "portal_vein", (0.0, 151 / 255, 206 / 255),
        terminology_string(_SLICER_ANATOMY, _ANATOMICAL_STRUCTURE, "SCT^32764006^Portal vein")),
}

_LINEAR_TRANSFORMS = {
    sitk.sitkIdentity, sitk.sitkTranslation, sitk.sitkScale, sitk.sitkScaleLogarithmic, sitk.sitkEuler,
    sitk.sitkSimilarity, sitk.sitkQuaternionRigid, sitk.sitkVersor, sitk.sitkVersorRigid,
    sitk.sitkScaleSkewVersor, sitk.sitkComposeScaleSkewVersor, sitk.sitkScaleVersor, sitk.sitkAffine,
}


# ---------------------------------------------------------------- scene
def in_slicer_app() -> bool:
    """True inside the Slicer application (not the headless slicer-core wheel)."""
    return hasattr(slicer, "app")


def new_scene(cache_dir: "str | Path | None" = None):
    """The scene to work in: `slicer.mrmlScene` inside Slicer, else a new headless scene with its logics.

    Headless, the scene gets an application logic, the Colors logic with Slicer's default colour nodes,
    the Volumes/Segmentations/Transforms/SubjectHierarchy/Tables/Plots/Data module logics and a RemoteIO +
    DataIOManager pair whose cache is `cache_dir` (needed to read .mrb bundles); `slicer.mrmlScene` is set
    to it. The logics stay alive as long as the scene's Python object (kept as `scene.hccfusion_logics`).
    """
    if in_slicer_app():
        return slicer.mrmlScene
    cache = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / f"hccfusion-mrml-{os.getuid()}"
    cache.mkdir(parents=True, exist_ok=True)
    scene = slicer.vtkMRMLScene()
    scene.SetRootDirectory(str(cache))
    app = slicer.vtkSlicerApplicationLogic()
    app.SetTemporaryPath(str(cache))
    # the wheel ships no colour files: point the Colors logic at an empty folder instead of none
    (cache / "share" / "ColorFiles").mkdir(parents=True, exist_ok=True)
    app.SetHomeDirectory(str(cache))
    app.SetShareDirectory("share")
    app.SetMRMLScene(scene)
    logics = {"Application": app}

    def add_logic(name, logic):
        logic.SetMRMLApplicationLogic(app)
        logic.SetMRMLScene(scene)
        app.SetModuleLogic(name, logic)
        logics[name] = logic
        return logic

    app.SetColorLogic(add_logic("Colors", slicer.vtkSlicerColorLogic()))
    for name, cls in (("Volumes", slicer.vtkSlicerVolumesLogic),
                      ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
                      ("Transforms", slicer.vtkSlicerTransformLogic),
                      ("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic),
                      ("Tables", slicer.vtkSlicerTablesLogic),
                      ("Plots", slicer.vtkSlicerPlotsLogic),
                      ("Data", slicer.vtkSlicerDataModuleLogic)):
        add_logic(name, cls())
    remote_io = slicer.vtkMRMLRemoteIOLogic()
    remote_io.SetMRMLApplicationLogic(app)
    remote_io.SetMRMLScene(scene)
    remote_io.AddDataIOToScene()
    remote = cache / "RemoteIO"
    remote.mkdir(exist_ok=True)
    (remote / ".slicer-cache").touch()  # marks the folder as a cache Slicer may clean
    remote_io.GetCacheManager().SetRemoteCacheDirectory(str(remote))
    data_io = slicer.vtkDataIOManagerLogic()
    data_io.SetMRMLApplicationLogic(app)
    data_io.SetMRMLScene(scene)
    data_io.SetAndObserveDataIOManager(remote_io.GetDataIOManager())
    logics.update(RemoteIO=remote_io, DataIO=data_io)
    scene.hccfusion_logics = logics
    slicer.mrmlScene = scene
    return scene


def module_logic(scene, name: str):
    """A module logic ("Volumes", "Segmentations", ...) for `scene`, in the app or headless."""
    logics = getattr(scene, "hccfusion_logics", None)
    if logics and name in logics:
        return logics[name]
    if in_slicer_app():
        return slicer.app.applicationLogic().GetModuleLogic(name)
    raise InputError(f"The scene has no '{name}' logic: create scenes with HCCFusionLib.scene.new_scene().")


# ---------------------------------------------------------------- volumes
def ijk_to_ras(image: sitk.Image) -> np.ndarray:
    """4x4 IJK→RAS matrix of a SimpleITK image (its LPS geometry with x and y flipped)."""
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = LPS_TO_RAS @ direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = LPS_TO_RAS @ np.array(image.GetOrigin(), dtype=float)
    return matrix


def _vtk_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def _np_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _set_image_data(node, image: sitk.Image) -> None:
    array = sitk.GetArrayViewFromImage(image)
    if array.dtype.kind == "c":
        raise InputError(f"Image for node '{node.GetName()}' is complex-valued: MRML volumes need real voxels.")
    components = image.GetNumberOfComponentsPerPixel()
    data = vtk.vtkImageData()
    data.SetDimensions(*image.GetSize())
    flat = np.ascontiguousarray(array).reshape(-1, components) if components > 1 else np.ascontiguousarray(array).ravel()
    scalars = numpy_support.numpy_to_vtk(flat, deep=True)
    scalars.SetName("ImageScalars")
    data.GetPointData().SetScalars(scalars)
    node.SetAndObserveImageData(data)
    node.SetIJKToRASMatrix(_vtk_matrix(ijk_to_ras(image)))


def image_to_volume(scene, image: sitk.Image, name: str, *, labelmap: bool = False,
                    channels: "list[str] | None" = None, window_level: "tuple[float, float] | None" = None):
    """Add a volume node holding `image` (voxels copied, geometry exact).

    Scalar images become vtkMRMLScalarVolumeNode (vtkMRMLLabelMapVolumeNode with `labelmap=True`),
    multi-component images vtkMRMLVectorVolumeNode (channel names kept in the node attribute
    CHANNELS_ATTRIBUTE).
    """
    if image.GetDimension() != 3:
        raise GeometryError(f"Image '{name}' is {image.GetDimension()}D: MRML volumes here are 3D.")
    vector = image.GetNumberOfComponentsPerPixel() > 1
    if vector and labelmap:
        raise InputError(f"Label map '{name}' has {image.GetNumberOfComponentsPerPixel()} components: use one.")
    cls = "vtkMRMLVectorVolumeNode" if vector else (
        "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode")
    node = scene.AddNewNodeByClass(cls, name)
    _set_image_data(node, image)
    node.CreateDefaultDisplayNodes()
    if vector:
        names = list(channels or [f"channel{i}" for i in range(image.GetNumberOfComponentsPerPixel())])
        if len(names) != image.GetNumberOfComponentsPerPixel():
            raise InputError(f"Vector image '{name}' has {image.GetNumberOfComponentsPerPixel()} channels "
                             f"but {len(names)} channel names were given.")
        node.SetAttribute(CHANNELS_ATTRIBUTE, json.dumps(names))
    elif window_level and not labelmap:
        display = node.GetDisplayNode()
        display.AutoWindowLevelOff()
        display.SetWindowLevel(*window_level)
    return node


def volume_to_image(node, *, ignore_transform: bool = False) -> sitk.Image:
    """SimpleITK image (voxels copied, LPS geometry) of a scalar, label map or vector volume node.

    A node under a transform raises GeometryError unless `ignore_transform` (then the node's own
    geometry is used); call `harden(node)` first to bake the transform in.
    """
    data = node.GetImageData() if node is not None else None
    if data is None:
        raise InputError(f"Volume node '{node.GetName() if node else None}' has no voxels.")
    if node.GetParentTransformNode() is not None and not ignore_transform:
        raise GeometryError(
            f"Volume '{node.GetName()}' is under transform '{node.GetParentTransformNode().GetName()}': "
            "harden it first (scene.harden) or pass ignore_transform=True.")
    scalars = data.GetPointData().GetScalars()
    components = scalars.GetNumberOfComponents()
    size = data.GetDimensions()
    shape = (size[2], size[1], size[0]) + ((components,) if components > 1 else ())
    array = numpy_support.vtk_to_numpy(scalars).reshape(shape).copy()
    image = sitk.GetImageFromArray(array, isVector=components > 1)
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    m = LPS_TO_RAS @ _np_matrix(matrix)[:3]
    spacing = np.linalg.norm(m[:, :3], axis=0)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((m[:, :3] / spacing).ravel().tolist())
    image.SetOrigin(m[:, 3].tolist())
    return image


def channel_names(node) -> list[str]:
    """Channel names of a vector volume created by `image_to_volume`."""
    text = node.GetAttribute(CHANNELS_ATTRIBUTE)
    return json.loads(text) if text else []


# ---------------------------------------------------------------- segmentations
def _segment_info(value: int, names: "dict[int, str] | None") -> SegmentInfo:
    known = SEGMENTS.get(value)
    name = (names or {}).get(value) or (known.name if known else f"label_{value}")
    if known and known.name == name:
        return known
    rng = np.random.default_rng(value)  # stable colour for labels without a table entry
    return SegmentInfo(name, tuple(float(c) for c in rng.uniform(0.2, 1.0, 3)))


def labels_to_segmentation(scene, labels: sitk.Image, name: str = "Segmentation",
                           names: "dict[int, str] | None" = None, reference_volume=None):
    """Segmentation node with one segment per nonzero label of `labels` (an integer label map).

    Segment names, colours and SNOMED-CT terminology come from SEGMENTS (study.LABELS values) unless
    `names` maps a value to another name; each segment keeps its label value in the tag LABEL_VALUE_TAG.
    The import goes through a label map node + colour table and Segmentations' ImportLabelmapToSegmentationNode.
    """
    array = sitk.GetArrayViewFromImage(labels)
    if labels.GetNumberOfComponentsPerPixel() != 1 or array.dtype.kind not in "iub":
        raise InputError(f"Label map for segmentation '{name}' must be a single-component integer image "
                         f"(got {labels.GetPixelIDTypeAsString()}): round or cast it to UInt8.")
    values = [int(v) for v in np.unique(array) if v > 0]
    if values and min(values) < 0:
        raise InputError(f"Label map for segmentation '{name}' has negative labels: use 0 for background.")
    colors = scene.AddNewNodeByClass("vtkMRMLColorTableNode", f"{name}_colors")
    labelmap = None
    try:
        colors.SetTypeToUser()
        colors.SetNumberOfColors((max(values) if values else 0) + 1)
        colors.SetColor(0, "background", 0.0, 0.0, 0.0, 0.0)
        infos = {v: _segment_info(v, names) for v in values}
        for value, info in infos.items():
            colors.SetColor(value, info.name, *info.color, 1.0)
            if info.terminology:
                colors.SetTerminologyFromString(value, info.terminology)
        labelmap = image_to_volume(scene, sitk.Cast(labels, sitk.sitkInt32), f"{name}_labelmap", labelmap=True)
        labelmap.GetDisplayNode().SetAndObserveColorNodeID(colors.GetID())
        segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume or labelmap)
        ok = slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation)
        if not ok:
            scene.RemoveNode(segmentation)
            raise InputError(f"Slicer could not import the label map of segmentation '{name}'.")
        segmentation.CreateDefaultDisplayNodes()
        seg = segmentation.GetSegmentation()
        for value, info in infos.items():
            segment = seg.GetSegment(seg.GetSegmentIdBySegmentName(info.name))
            segment.SetColor(*info.color)
            if info.terminology:
                segment.SetTerminology(info.terminology)
            segment.SetTag(LABEL_VALUE_TAG, str(value))
        return segmentation
    finally:
        if labelmap is not None:
            scene.RemoveNode(labelmap)
        scene.RemoveNode(colors)


def segment_label_values(segmentation, labels: "dict[str, int] | None" = None) -> dict[str, int]:
    """Segment ID → label value: `labels[name]`, else the segment's LABEL_VALUE_TAG, else study.LABELS[name],
    else its position (1-based)."""
    seg = segmentation.GetSegmentation()
    result = {}
    for i in range(seg.GetNumberOfSegments()):
        segment_id = seg.GetNthSegmentID(i)
        segment = seg.GetSegment(segment_id)
        name = segment.GetName()
        tag = vtk.reference("")
        segment.GetTag(LABEL_VALUE_TAG, tag)
        tag = str(tag)
        if labels and name in labels:
            result[segment_id] = int(labels[name])
        elif tag:
            result[segment_id] = int(tag)
        elif name in LABELS:
            result[segment_id] = LABELS[name]
        else:
            result[segment_id] = i + 1
    return result


def segmentation_to_labels(segmentation, reference, labels: "dict[str, int] | None" = None) -> sitk.Image:
    """Label map (UInt8, or UInt16 for values > 255) of a segmentation node on a reference grid.

    `reference`: a SimpleITK image or a volume node (its own geometry). Label values per segment as in
    `segment_label_values`; where segments overlap, later ones win.
    """
    if not isinstance(reference, sitk.Image):
        reference = volume_to_image(reference, ignore_transform=True)
    scene = segmentation.GetScene()
    values = segment_label_values(segmentation, labels)
    if any(v <= 0 for v in values.values()):
        raise InputError(f"Segment label values must be positive: {values}.")
    grid = sitk.Image(reference.GetSize(), sitk.sitkUInt8)
    grid.CopyInformation(reference)
    out = np.zeros(reference.GetSize()[::-1], dtype=np.uint16 if max(values.values(), default=0) > 255 else np.uint8)
    ref = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "hccfusion_reference")
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "hccfusion_export")
    try:
        _set_image_data(ref, grid)
        for segment_id, value in values.items():
            ids = vtk.vtkStringArray()
            ids.InsertNextValue(segment_id)
            ok = slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                segmentation, ids, labelmap, ref, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY)
            if not ok:
                raise GeometryError(f"Segment '{segment_id}' of '{segmentation.GetName()}' could not be "
                                    "exported on the reference grid.")
            mask = numpy_support.vtk_to_numpy(labelmap.GetImageData().GetPointData().GetScalars())
            out[mask.reshape(out.shape) > 0] = value
    finally:
        scene.RemoveNode(labelmap)
        scene.RemoveNode(ref)
    image = sitk.GetImageFromArray(out)
    image.CopyInformation(reference)
    return image


# ---------------------------------------------------------------- tables
def dataframe_to_table(scene, frame, name: str):
    """Table node with one typed column per DataFrame column (a non-default index becomes leading columns).

    Numbers keep their numpy type (int8…uint64, float32/64), booleans become bit columns, everything else
    strings (missing strings → ""); each column's pandas dtype is kept in the column property "dtype" so
    `table_to_dataframe` restores it (also after a .mrb round trip, where Slicer's table storage keeps
    ~6 significant digits of floating-point values).
    """
    import pandas as pd

    frame = pd.DataFrame(frame)
    index_names = []
    if not (isinstance(frame.index, pd.RangeIndex) and frame.index.start == 0 and frame.index.step == 1
            and frame.index.name is None):
        index_names = [n if n is not None else f"level_{i}" for i, n in enumerate(frame.index.names)]
        frame = frame.reset_index(names=index_names)
    if len(set(map(str, frame.columns))) != frame.shape[1]:
        raise InputError(f"Table '{name}' has duplicate column names: make them unique.")
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table = node.GetTable()
    for column in frame.columns:
        table.AddColumn(_vtk_column(str(column), frame[column]))
    for column in frame.columns:
        node.SetColumnProperty(str(column), DTYPE_PROPERTY, str(frame[column].dtype))
    if index_names:
        node.SetAttribute(INDEX_ATTRIBUTE, json.dumps(index_names))
    node.Modified()
    return node


def _vtk_column(name: str, series) -> vtk.vtkAbstractArray:
    values = series.to_numpy()
    if values.dtype.kind == "b":
        array = vtk.vtkBitArray()
        array.SetNumberOfTuples(len(values))
        for i, v in enumerate(values):
            array.SetValue(i, int(v))
    elif values.dtype.kind in "iuf" and values.dtype.itemsize <= 8:
        array = numpy_support.numpy_to_vtk(np.ascontiguousarray(values), deep=True,
                                           array_type=numpy_support.get_vtk_array_type(values.dtype))
    elif series.dtype.kind in "iuf" or str(series.dtype) in ("Int64", "Int32", "Float64", "boolean"):
        # pandas nullable numbers: missing → NaN in a double column; dtype property restores the type
        array = numpy_support.numpy_to_vtk(series.astype("float64").to_numpy(), deep=True)
    else:
        array = vtk.vtkStringArray()
        array.SetNumberOfValues(len(values))
        for i, v in enumerate(series.astype(object)):
            array.SetValue(i, "" if _is_missing(v) else (v.isoformat() if hasattr(v, "isoformat") else str(v)))
    array.SetName(name)
    return array


def _is_missing(value) -> bool:
    import pandas as pd

    return value is None or (not isinstance(value, (list, tuple, np.ndarray)) and bool(pd.isna(value)))


def table_to_dataframe(node):
    """DataFrame of a table node; column dtypes restored from the "dtype" column property when present."""
    import pandas as pd

    table = node.GetTable()
    columns = {}
    for c in range(table.GetNumberOfColumns()):
        array = table.GetColumn(c)
        name = array.GetName()
        if isinstance(array, vtk.vtkStringArray):
            values = pd.Series([array.GetValue(i) for i in range(array.GetNumberOfValues())], dtype=object)
        elif isinstance(array, vtk.vtkBitArray):
            values = pd.Series([bool(array.GetValue(i)) for i in range(array.GetNumberOfTuples())], dtype=bool)
        else:
            values = pd.Series(numpy_support.vtk_to_numpy(array).copy())
        dtype = node.GetColumnProperty(name, DTYPE_PROPERTY)
        if dtype and dtype != str(values.dtype):
            values = _restore_dtype(values, dtype, name, node.GetName())
        columns[name] = values
    frame = pd.DataFrame(columns)
    index = node.GetAttribute(INDEX_ATTRIBUTE)
    if index:
        names = json.loads(index)
        frame = frame.set_index(names)
        frame.index.names = [None if n.startswith("level_") else n for n in names]
    return frame


def _restore_dtype(values, dtype: str, column: str, table: str):
    import pandas as pd

    if dtype.startswith("datetime64"):
        return pd.to_datetime(values.replace("", None)).astype(dtype)
    try:
        if values.dtype == object and dtype not in ("object", "str", "string"):
            values = values.replace("", None)
        return values.astype(dtype)
    except (TypeError, ValueError):
        log.warning("Column '%s' of table '%s' kept as %s (cannot restore %s)", column, table, values.dtype, dtype)
        return values


_PLOT_TYPES = {"bar": "PlotTypeBar", "line": "PlotTypeLine", "scatter": "PlotTypeScatter"}


def table_plot(scene, table, y_columns: "list[str]", name: str, *, x_column: "str | None" = None,
               label_column: "str | None" = None, kind: str = "bar", x_title: str = "", y_title: str = ""):
    """Plot chart node showing columns of a table node (one plot series per y column); returns the chart."""
    if kind not in _PLOT_TYPES:
        raise InputError(f"Plot kind '{kind}' is not supported: use one of {', '.join(_PLOT_TYPES)}.")
    present = {table.GetColumnName(i) for i in range(table.GetNumberOfColumns())}
    missing = [c for c in [*y_columns, x_column, label_column] if c and c not in present]
    if missing:
        raise InputError(f"Table '{table.GetName()}' has no column(s) {missing}: it has {sorted(present)}.")
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
    chart.SetTitle(name)
    chart.SetXAxisTitle(x_title or x_column or "")
    chart.SetYAxisTitle(y_title or (y_columns[0] if len(y_columns) == 1 else ""))
    for column in y_columns:
        series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", f"{name}: {column}")
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetPlotType(getattr(slicer.vtkMRMLPlotSeriesNode, _PLOT_TYPES[kind]))
        series.SetYColumnName(column)
        if x_column:
            series.SetXColumnName(x_column)
        if label_column:
            series.SetLabelColumnName(label_column)
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    return chart


# ---------------------------------------------------------------- transforms
def _flatten(transform: sitk.Transform) -> list[sitk.Transform]:
    if transform.GetTransformEnum() == sitk.sitkComposite:
        composite = sitk.CompositeTransform(transform)
        return [t for i in range(composite.GetNumberOfTransforms()) for t in _flatten(composite.GetNthTransform(i))]
    return [transform]


def _linear_matrix_lps(transform: sitk.Transform) -> np.ndarray:
    """4x4 matrix of a linear transform, read off its point mapping (exact for affine maps)."""
    offset = np.array(transform.TransformPoint((0.0, 0.0, 0.0)))
    matrix = np.eye(4)
    for axis in range(3):
        unit = [0.0, 0.0, 0.0]
        unit[axis] = 1.0
        matrix[:3, axis] = np.array(transform.TransformPoint(unit)) - offset
    matrix[:3, 3] = offset
    return matrix


def _lps_ras(matrix: np.ndarray) -> np.ndarray:
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    return flip @ matrix @ flip


def transform_to_node(scene, transform: sitk.Transform, name: str, *, moving=None):
    """Transform node for a SimpleITK transform (points of the fixed frame → moving frame, LPS).

    The node's "transform from parent" is `transform` in RAS: linear transforms (incl. composites of linear
    ones) give a vtkMRMLLinearTransformNode set directly; B-spline → vtkMRMLBSplineTransformNode,
    displacement field → vtkMRMLGridTransformNode, other composites → vtkMRMLTransformNode, read from an
    ITK .h5 file through vtkMRMLTransformStorageNode (the path Slicer uses to load ITK transforms).
    With `moving`, that volume is placed under the node, which aligns it to the fixed volume.
    """
    parts = _flatten(transform)
    kinds = {p.GetTransformEnum() for p in parts}
    if kinds <= _LINEAR_TRANSFORMS:
        node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", name)
        node.SetMatrixTransformFromParent(_vtk_matrix(_lps_ras(_linear_matrix_lps(transform))))
    else:
        if len(parts) == 1 and kinds == {sitk.sitkBSplineTransform}:
            cls = "vtkMRMLBSplineTransformNode"
        elif len(parts) == 1 and kinds == {sitk.sitkDisplacementField}:
            cls = "vtkMRMLGridTransformNode"
        else:
            cls = "vtkMRMLTransformNode"
        node = scene.AddNewNodeByClass(cls, name)
        with tempfile.TemporaryDirectory(prefix="hccfusion-tfm-") as tmp:
            path = os.path.join(tmp, "transform.h5")
            sitk.WriteTransform(transform, path)
            storage = slicer.vtkMRMLTransformStorageNode()
            storage.SetFileName(path)
            if not storage.ReadData(node):
                scene.RemoveNode(node)
                raise InputError(f"Slicer could not read transform '{name}' ({transform.GetName()}).")
        _interpolate_grids_linearly(node.GetTransformFromParent())
    node.CreateDefaultDisplayNodes()
    if moving is not None:
        moving.SetAndObserveTransformNodeID(node.GetID())
    return node


def _interpolate_grids_linearly(transform) -> None:
    """Displacement grids interpolate linearly in ITK; Slicer's reader sets cubic. Match ITK."""
    if transform is None:
        return
    if transform.IsA("vtkGridTransform"):
        transform.SetInterpolationModeToLinear()
    for i in range(transform.GetNumberOfConcatenatedTransforms() if transform.IsA("vtkGeneralTransform") else 0):
        _interpolate_grids_linearly(transform.GetConcatenatedTransform(i))


def node_to_transform(node) -> sitk.Transform:
    """SimpleITK transform (fixed → moving, LPS) of a transform node's "transform from parent".

    Linear nodes convert directly; others are written by vtkMRMLTransformStorageNode as ITK .h5 and read
    with SimpleITK.
    """
    if node.IsLinear():
        matrix = vtk.vtkMatrix4x4()
        node.GetMatrixTransformFromParent(matrix)
        m = _lps_ras(_np_matrix(matrix))
        return sitk.AffineTransform(m[:3, :3].ravel().tolist(), m[:3, 3].tolist())
    with tempfile.TemporaryDirectory(prefix="hccfusion-tfm-") as tmp:
        path = os.path.join(tmp, "transform.h5")
        storage = slicer.vtkMRMLTransformStorageNode()
        storage.SetFileName(path)
        if not storage.WriteData(node):
            raise InputError(f"Slicer could not write transform '{node.GetName()}' as an ITK file.")
        transform = sitk.ReadTransform(path)
    parts = _flatten(transform)
    return parts[0] if len(parts) == 1 else transform


def harden(node):
    """Bake the node's parent transform into it (volumes: geometry, or voxels for non-linear transforms)."""
    if node.GetParentTransformNode() is not None and not node.HardenTransform():
        raise GeometryError(f"Slicer could not harden the transform of '{node.GetName()}'.")
    return node


# ---------------------------------------------------------------- subject hierarchy
def place_in_study(scene, nodes, study_id: str, patient: str = "Anonymous") -> int:
    """Put `nodes` under the study item `study_id` (below patient item `patient`) in subject hierarchy.

    The items are reused when they exist; returns the study item ID. No identifiers are added beyond
    the given names.
    """
    sh = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    root = sh.GetSceneItemID()
    patient_item = sh.GetItemChildWithName(root, patient) or sh.CreateSubjectItem(root, patient)
    study_item = sh.GetItemChildWithName(patient_item, study_id) or sh.CreateStudyItem(patient_item, study_id)
    for node in nodes:
        item = sh.GetItemByDataNode(node) or sh.CreateItem(study_item, node)
        sh.SetItemParent(item, study_item)
    return study_item


# ---------------------------------------------------------------- studies
#: Abdominal soft-tissue window (width, level) in HU for CT series.
CT_WINDOW = (400.0, 40.0)


def add_study(scene, study, *, labels: "sitk.Image | None" = None, reference: "str | None" = None,
              segmentation_name: str = "Segmentation") -> dict:
    """Add every series of a Study as a volume node, and `labels` (on the reference series' grid) as a
    segmentation node, all under the study in subject hierarchy. Returns {series name | segmentation_name: node}.
    """
    nodes = {}
    for series in study:
        window = CT_WINDOW if series.modality is Modality.CT else None
        node = image_to_volume(scene, series.image, series.name, window_level=window)
        node.SetAttribute("HCCFusion.Phase", series.phase.value)
        nodes[series.name] = node
    if labels is not None:
        ref = study[reference] if reference else next(iter(study))
        check_same_grid(ref.image, labels, f"segmentation of study '{study.study_id}'")
        nodes[segmentation_name] = labels_to_segmentation(scene, labels, segmentation_name,
                                                          reference_volume=nodes[ref.name])
    place_in_study(scene, nodes.values(), study.study_id)
    return nodes


# ---------------------------------------------------------------- scene bundles
def save_scene_mrb(scene, path: "str | Path") -> Path:
    """Write the scene as a Slicer bundle (.mrb) atomically; nodes without storage get default storage."""
    path = Path(path)
    if path.suffix.lower() != ".mrb":
        raise InputError(f"Scene file '{path}' must end in .mrb.")
    nodes = scene.GetNodesByClass("vtkMRMLStorableNode")
    for i in range(nodes.GetNumberOfItems()):
        node = nodes.GetItemAsObject(i)
        if node.GetStorageNode() is None and not node.GetHideFromEditors():
            node.AddDefaultStorageNode()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.stem}.", dir=path.parent))
    try:
        messages = slicer.vtkMRMLMessageCollection()
        if not scene.WriteToMRB(str(tmp / path.name), None, messages):
            raise InputError(f"Could not write scene '{path}': {messages.GetAllMessagesAsString().strip()}")
        os.replace(tmp / path.name, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def load_scene_mrb(path: "str | Path", scene=None):
    """Read a .mrb bundle into `scene` (default: a new headless scene, or Slicer's scene in the app)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Scene file '{path}' does not exist: check the path.")
    if not zipfile.is_zipfile(path):
        raise InputError(f"Cannot read scene '{path}': it is not a Slicer .mrb bundle (zip) or it is truncated.")
    scene = scene if scene is not None else new_scene()
    messages = slicer.vtkMRMLMessageCollection()
    cwd = os.getcwd()
    try:
        ok = scene.ReadFromMRB(str(path.resolve()), False, messages)
    finally:
        os.chdir(cwd)  # Slicer's unzip can leave the process in its (deleted) extraction folder on failure
    if not ok:
        raise InputError(f"Cannot read scene '{path}' ({messages.GetAllMessagesAsString().strip()[:300]}): "
                         "the file is not a Slicer .mrb bundle or is truncated.")
    return scene
