"""pandas tables <-> MRML table nodes (column types kept), and table plots."""
from __future__ import annotations

import json
import logging

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from ..errors import InputError
from .nodes import DTYPE_PROPERTY, INDEX_ATTRIBUTE

log = logging.getLogger(__name__)


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
