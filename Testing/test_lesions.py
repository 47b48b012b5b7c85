"""The one lesion model: labelling rule, table columns/units, CSV round trip, and that nothing else labels lesions."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from HCCFusionLib import lesions
from HCCFusionLib.errors import InputError
from HCCFusionLib.lesions import LESION_COLUMNS, LesionTable, label_lesions
from HCCFusionLib.study import LABELS

ROOT = Path(__file__).resolve().parents[1]
T = LABELS["tumour"]


def _labels(array, spacing=(1.0, 1.0, 1.0)):
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin((-10.0, 5.0, 20.0))
    return image


def test_face_connectivity_and_largest_first():
    a = np.zeros((20, 20, 20), np.uint8)
    a[2:6, 2:6, 2:6] = T  # 64 voxels
    a[6:8, 6:8, 6:8] = T  # touches the first only at a corner: a separate lesion under face connectivity
    a[10:18, 10:18, 10:18] = T  # 512 voxels: the largest, numbered 1
    a[15, 2, 2] = LABELS["liver"]
    lesion_map = sitk.GetArrayFromImage(label_lesions(_labels(a), min_ml=0))
    assert lesion_map.max() == 3
    assert (lesion_map[10:18, 10:18, 10:18] == 1).all() and (lesion_map[2:6, 2:6, 2:6] == 2).all()
    assert (lesion_map[6:8, 6:8, 6:8] == 3).all() and lesion_map[15, 2, 2] == 0
    assert not lesions.FULLY_CONNECTED


def test_minimum_size_in_ml_uses_the_voxel_volume():
    a = np.zeros((20, 20, 20), np.uint8)
    a[2:5, 2:5, 2:5] = T  # 27 voxels
    a[10:18, 10:18, 10:18] = T
    assert sitk.GetArrayFromImage(label_lesions(_labels(a))).max() == 1  # 27 µl < 0.05 ml
    # at 2 mm voxels the same 27 voxels are 0.216 ml: a lesion
    assert sitk.GetArrayFromImage(label_lesions(_labels(a, (2.0, 2.0, 2.0)))).max() == 2
    # the limit is inclusive: exactly 50 voxels of 1 µl are kept, 49 are not
    b = np.zeros((10, 10, 60), np.uint8)
    b[5, 5, 0:50] = T
    b[2, 2, 0:49] = T
    assert sitk.GetArrayFromImage(label_lesions(_labels(b))).max() == 1
    assert sitk.GetArrayFromImage(label_lesions(_labels(b), min_ml=0.049)).max() == 2


def test_table_columns_units_and_values():
    a = np.zeros((30, 30, 30), np.uint8)
    a[5:15, 5:15, 5:15] = T  # a 10 mm cube at 1 mm spacing
    labels = _labels(a, (1.0, 1.0, 2.0))
    lesion_map, table = LesionTable.from_labels(labels)
    assert list(table.frame.columns) == LESION_COLUMNS == list(lesions.COLUMNS)
    assert lesions.DIAMETER_COLUMN in LESION_COLUMNS
    row = table.frame.iloc[0]
    assert len(table) == 1 and row.lesion == 1 and row.voxels == 1000
    assert row.volume_ml == pytest.approx(2.0)  # 1000 voxels of 2 µl
    # 3D maximum diameter between boundary voxel centres: the cube's space diagonal 9 x 9 x 18 mm
    assert row.max_diameter_mm == pytest.approx(np.sqrt(81 + 81 + 324), abs=0.05)
    # centroid in physical LPS mm
    assert (row.centroid_x_mm, row.centroid_y_mm, row.centroid_z_mm) == pytest.approx((-0.5, 14.5, 39.0))
    assert (sitk.GetArrayFromImage(lesion_map) > 0).sum() == 1000


def test_table_from_a_given_map_keeps_its_numbering():
    a = np.zeros((10, 10, 10), np.uint8)
    a[1:4, 1:4, 1:4] = T
    labels = _labels(a)
    given = sitk.GetArrayFromImage(labels).astype(np.uint16) * 0
    given[1:4, 1:4, 1:4] = 7
    instance = sitk.GetImageFromArray(given)
    instance.CopyInformation(labels)
    assert LesionTable.from_map(labels, instance).frame.lesion.tolist() == [7]


def test_csv_round_trip_and_malformed_csv(tmp_path):
    a = np.zeros((20, 20, 20), np.uint8)
    a[2:8, 2:8, 2:8] = T
    a[10:18, 10:18, 10:18] = T
    _, table = LesionTable.from_labels(_labels(a))
    path = table.to_csv(tmp_path / "lesions.csv")
    back = LesionTable.from_csv(path)
    pd.testing.assert_frame_equal(back.frame, table.frame, check_dtype=False)
    assert path.read_text().splitlines()[0] == ",".join(LESION_COLUMNS)
    bad = tmp_path / "bad.csv"
    bad.write_text("lesion,volume_mm3,diameter_mm\n1,900,12\n")
    with pytest.raises(InputError, match=r"lacks column.*max_diameter_mm"):
        LesionTable.from_csv(bad)
    with pytest.raises(InputError, match="Cannot read"):
        LesionTable.from_csv(tmp_path / "missing.csv")


#: modules that label connected components of something other than the tumour label (file: why)
NON_LESION_LABELLING = {
    "HCCFusionLib/segmentation/liverlesion_prep.py": "body / air / liver components of the preprocessing",
    "HCCFusionLib/phase_image.py": "body, bone and vessel components of the synthetic phase images",
    "HCCFusionLib/registration/intensity.py": "largest component of a registration mask",
    "HCCFusionLib/regions.py": "largest connected liver for the clipping mask",
    "HCCFusionLib/segmentation/predictor.py": "largest connected liver (liver + tumour) in post-processing",
    "HCCFusionLib/segmentation/predictor.py#find_objects": "bounding boxes of a mask",
    "HCCFusionLib/followup.py": "enhancing (viable) islands inside lesions, dropped when tiny (mRECIST)",
    "HCCFusionLib/lirads_tiv.py": "pieces of a portal-vein filling defect, dropped when tiny (LR-TIV)",
}


def test_exactly_one_module_labels_lesions():
    pattern = re.compile(r"ConnectedComponent\(|ndimage\.label\(|measure\.label\(")
    callers = {str(p.relative_to(ROOT)) for folder in ("HCCFusionLib", "HCCFusion") for p in (ROOT / folder).rglob("*.py")
               if pattern.search(p.read_text(encoding="utf-8"))}
    allowed = {k.split("#")[0] for k in NON_LESION_LABELLING}
    assert callers - allowed == {"HCCFusionLib/lesions.py"}
    # the allowed ones do not label the tumour label (the only tumour labelling is lesions.label_lesions)
    for path in allowed & callers:
        text = (ROOT / path).read_text(encoding="utf-8")
        assert not re.search(r"ConnectedComponent\([^)]*tumour", text), path
