"""Fuzzing (issue 20 item 6): the manifest reader, DICOM-header phase detection and the DICOM SEG reader let
nothing escape but HCCFusionError. Deterministic (derandomize) and small (max_examples) so it is green every run."""
from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from HCCFusionLib.dicom import read_seg
from HCCFusionLib.errors import HCCFusionError
from HCCFusionLib.io import load_study
from HCCFusionLib.phases import detect_phase

FUZZ = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
SERIES = st.fixed_dictionaries({}, optional={"name": JSON, "phase": JSON | st.sampled_from(["PVP", "AP", "xx"]),
                                             "file": JSON | st.just("a.nii.gz"), "modality": JSON, "masks": JSON,
                                             "meta": JSON})
MANIFEST = st.fixed_dictionaries({}, optional={"study_id": JSON, "series": st.lists(SERIES, max_size=3) | JSON,
                                               "clinical": JSON, "meta": JSON})


def _only_hccfusion_errors(call):
    try:
        call()
    except HCCFusionError:
        pass


@FUZZ
@given(manifest=MANIFEST | JSON)
def test_manifest_reader(tmp_path_factory, manifest):
    folder = tmp_path_factory.mktemp("m")
    (folder / "study.json").write_text(json.dumps(manifest))
    _only_hccfusion_errors(lambda: load_study(folder))


@FUZZ
@given(text=st.text(max_size=200))
def test_manifest_reader_raw_text(tmp_path_factory, text):
    folder = tmp_path_factory.mktemp("r")
    (folder / "study.yaml").write_text(text)
    _only_hccfusion_errors(lambda: load_study(folder))


TEXT = st.text(max_size=24)
TIME = st.one_of(st.text(alphabet="0123456789.:", max_size=14), TEXT)
HEADER = st.fixed_dictionaries({}, optional={
    "Modality": st.sampled_from(["CT", "MR", "PT", "US", "", "SEG"]) | TEXT, "SeriesDescription": TEXT,
    "ProtocolName": TEXT, "ContrastBolusAgent": TEXT, "ContrastBolusStartTime": TIME, "AcquisitionTime": TIME,
    "SeriesTime": TIME, "ContentTime": TIME, "ImageType": st.lists(TEXT, max_size=4),
    "EchoTime": st.floats(allow_nan=True, allow_infinity=True) | TEXT,
    "RepetitionTime": st.floats(allow_nan=True, allow_infinity=True) | TEXT,
    "DiffusionBValue": st.floats(allow_nan=True, allow_infinity=True) | TEXT,
    "ScanningSequence": TEXT, "SequenceName": TEXT})


def _dataset(values: dict) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    for key, value in values.items():
        try:
            setattr(ds, key, value)
        except (ValueError, TypeError, OverflowError):  # pydicom refuses the value for this VR: leave it out
            pass
    return ds


@FUZZ
@given(headers=st.lists(HEADER, min_size=1, max_size=3))
def test_phase_detection(headers):
    try:
        phase, confidence, reason = detect_phase([_dataset(h) for h in headers])
    except HCCFusionError:
        return
    assert 0.0 <= confidence <= 1.0 and isinstance(reason, str)


@FUZZ
@given(data=st.binary(max_size=2000))
def test_seg_reader_random_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("s") / "seg.dcm"
    path.write_bytes(data)
    _only_hccfusion_errors(lambda: read_seg(path))


@pytest.fixture(scope="module")
def real_seg(shared_data) -> Path:
    path = Path(shared_data) / "real" / "liver_ct_dicom_seg" / "liver.dcm"
    if not path.is_file():
        pytest.skip("real DICOM SEG not present")
    return path


@FUZZ
@given(edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8),
       cut=st.none() | st.floats(0.05, 1.0))
def test_seg_reader_mutated_real(tmp_path_factory, real_seg, edits, cut):
    data = bytearray(real_seg.read_bytes())
    for where, value in edits:
        data[int(where * len(data))] = value
    if cut is not None:
        data = data[:int(cut * len(data))]
    path = tmp_path_factory.mktemp("s") / "seg.dcm"
    path.write_bytes(bytes(data))
    _only_hccfusion_errors(lambda: read_seg(path))
