"""pacs: DICOMweb query/pull/push against a real Orthanc, SEG+SR through the PACS, and a server stopped mid-push."""
from __future__ import annotations

import hashlib
import socket
import time

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk

from HCCFusionLib import cli
from HCCFusionLib.dicom import read_seg, read_sr, write_dicom_series, write_seg, write_sr
from HCCFusionLib.errors import InputError, PacsError
from HCCFusionLib.io import load_study
from HCCFusionLib.lesions import LesionTable
from HCCFusionLib.pacs import ENV_URL, Pacs
from HCCFusionLib.study import LABELS
from orthanc_server import OrthancServer

pytestmark = pytest.mark.filterwarnings("ignore:The string .* is unlikely to represent the intended person name")


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    server = OrthancServer(tmp_path_factory.mktemp("orthanc")).start()
    yield server
    server.stop()


def abdomen(seed: int, size=(40, 36, 8)) -> tuple[sitk.Image, np.ndarray]:
    """A small phantom-like CT (body, liver, a lesion) in HU, and its label map."""
    z, y, x = np.mgrid[:size[2], :size[1], :size[0]]
    rng = np.random.default_rng(seed)
    body = ((x - 20) / 18) ** 2 + ((y - 18) / 16) ** 2 < 1
    liver = ((x - 14) / 9) ** 2 + ((y - 16) / 8) ** 2 + ((z - 4) / 5) ** 2 < 1
    lesion = ((x - 13) / 3) ** 2 + ((y - 15) / 3) ** 2 + ((z - 4) / 2) ** 2 < 1
    hu = np.where(body, 40, -1000) + np.where(liver, 60, 0) + np.where(lesion, 40, 0) + rng.normal(0, 12, body.shape)
    image = sitk.GetImageFromArray(np.rint(hu).astype(np.int16))
    image.SetSpacing((3.0, 3.0, 5.0))
    image.SetOrigin((-60.0, -50.0, -20.0))
    labels = np.where(lesion, LABELS["tumour"], np.where(liver, LABELS["liver"], 0)).astype(np.uint8)
    return image, labels


def write_study(folder, seed: int, phases=("AP", "PVP"), study_uid=None):
    from pydicom.uid import generate_uid

    study_uid = study_uid or generate_uid()
    image, labels = abdomen(seed)
    files = {p: write_dicom_series(image, folder / p, phase=p, study_id=f"PH{seed}", study_uid=study_uid,
                                   series_number=n) for n, p in enumerate(phases, start=1)}
    return study_uid, image, labels, files


def digest(files) -> dict:
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def test_push_query_pull_round_trip(orthanc, tmp_path):
    study_uid, image, _, files = write_study(tmp_path / "local", seed=1)
    pacs = Pacs(orthanc.dicomweb_url, timeout=10, retries=1, backoff_s=0.1)
    result = pacs.push(tmp_path / "local")
    assert len(result.stored) == 16 and result.skipped == []
    again = pacs.push(tmp_path / "local")  # idempotent: nothing sent twice
    assert again.stored == [] and sorted(again.skipped) == sorted(result.stored)
    studies = pacs.query("studies")
    assert study_uid in set(studies["StudyInstanceUID"])
    assert not {"PatientName", "PatientID"} & set(studies.columns)
    series = pacs.query("series", study_uid=study_uid)
    assert sorted(series["SeriesDescription"]) == ["Late arterial phase (AP)", "Portal venous phase (PVP)"]
    assert sorted(pacs.instance_uids(study_uid)) == sorted(result.stored)
    pulled = pacs.pull(study_uid, tmp_path / "pulled")
    assert len(pulled) == 16 and all(f.is_file() for f in pulled)
    study = load_study(tmp_path / "pulled")
    assert list(study.series) == ["AP", "PVP"]
    for s in study:
        np.testing.assert_array_equal(sitk.GetArrayFromImage(s.image), sitk.GetArrayFromImage(image))
        np.testing.assert_allclose(s.image.GetOrigin(), image.GetOrigin(), atol=1e-4)
        assert s.meta["study_uid"] == study_uid
    assert orthanc.get("/statistics")["CountInstances"] >= 16


def test_seg_and_sr_travel_through_the_pacs(orthanc, tmp_path):
    study_uid, image, labels, files = write_study(tmp_path / "local", seed=2, phases=("PVP",))
    pacs = Pacs(orthanc.dicomweb_url, timeout=10, retries=1, backoff_s=0.1)
    pacs.push(tmp_path / "local")
    pacs.pull(study_uid, tmp_path / "pulled")
    pulled = load_study(tmp_path / "pulled")
    source = pulled["PVP"]
    label_image = sitk.GetImageFromArray(labels)
    label_image.CopyInformation(source.image)
    out = tmp_path / "results"
    seg = write_seg(label_image, source.meta["files"], out / "seg.dcm")
    lesions = LesionTable.from_labels(label_image)[1]  # the one lesion model, with its LI-RADS row
    lirads = pd.DataFrame({"category": ["LR-5"], "aphe": [True], "washout": [True], "capsule": [False]},
                          index=pd.Index([1], name="lesion"))
    sr = write_sr(lesions, seg, source.meta["files"], out / "sr.dcm", lirads=lirads, predictions={"mvi": 0.7})
    assert len(pacs.push([seg, sr]).stored) == 2
    series = pacs.query("series", study_uid=study_uid)
    assert sorted(series["Modality"]) == ["CT", "SEG", "SR"]
    back = pacs.pull(study_uid, tmp_path / "back")
    seg_file = next(f for f in back if f.parent.name == series.loc[series.Modality == "SEG", "SeriesInstanceUID"].item())
    sr_file = next(f for f in back if f.parent.name == series.loc[series.Modality == "SR", "SeriesInstanceUID"].item())
    labels_back, segments = read_seg(seg_file, reference=source.image)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels_back), labels)
    table = read_sr(sr_file)
    seg_ds = pydicom.dcmread(seg_file)
    assert seg_ds.ReferencedSeriesSequence[0].SeriesInstanceUID == source.meta["series_uid"]
    assert table.loc[0, "seg_uid"] == seg_ds.SOPInstanceUID and table.loc[0, "lirads"] == "LR-5"
    assert table.loc[0, "volume_mm3"] == pytest.approx(lesions.frame.loc[0, "volume_ml"] * 1000.0)
    assert table.loc[1, "p_mvi"] == pytest.approx(0.7)


def test_orthanc_stopped_mid_push_then_retry_completes_without_duplicates(tmp_path):
    server = OrthancServer(tmp_path / "orthanc").start()
    try:
        _, _, _, files = write_study(tmp_path / "local", seed=3, phases=("NC", "AP", "PVP"))
        local = [f for group in files.values() for f in group]
        before = digest(local)
        pacs = Pacs(server.dicomweb_url, timeout=5, retries=2, backoff_s=0.05, batch_size=4)

        def stop_midway(fraction, message):
            if fraction >= 0.3 and server.process is not None:
                server.stop()  # the PACS goes away between two STOW requests

        with pytest.raises(PacsError) as failure:
            pacs.push(tmp_path / "local", progress=stop_midway)
        message = str(failure.value)
        assert server.dicomweb_url.split("/dicom-web")[0] in message and "unreachable" in message
        assert "Stored 8 of 24" in message and "run again" in message
        assert digest(local) == before  # local files intact
        server.start()  # same storage folder
        result = pacs.push(tmp_path / "local")
        assert len(result.stored) == 16 and len(result.skipped) == 8
        assert server.get("/statistics")["CountInstances"] == 24  # each instance exactly once
        remote = set(pacs.query("instances")["SOPInstanceUID"])
        assert remote == set(result.stored) | set(result.skipped) and len(remote) == 24
    finally:
        server.stop()


def test_unreachable_server_fails_fast_and_clearly():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pacs = Pacs(f"http://127.0.0.1:{port}/dicom-web", timeout=2, retries=2, backoff_s=0.05)
    start = time.monotonic()
    with pytest.raises(PacsError, match=f"127.0.0.1:{port}.*unreachable.*3 attempts"):
        pacs.query("studies")
    assert time.monotonic() - start < 10


def test_a_server_that_never_answers_times_out():
    with socket.socket() as hung:  # accepts connections (kernel backlog) but never replies
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        pacs = Pacs(f"http://127.0.0.1:{hung.getsockname()[1]}/dicom-web", timeout=0.5, retries=1, backoff_s=0.05)
        start = time.monotonic()
        with pytest.raises(PacsError, match="Timeout after 2 attempts, timeout 0.5 s"):
            pacs.query("studies")
        assert time.monotonic() - start < 5


def test_configuration(monkeypatch, orthanc, tmp_path):
    monkeypatch.delenv(ENV_URL, raising=False)
    with pytest.raises(InputError, match=ENV_URL):
        Pacs()
    with pytest.raises(InputError, match="http"):
        Pacs("127.0.0.1:8042")
    monkeypatch.setenv(ENV_URL, orthanc.dicomweb_url)
    assert Pacs().url == orthanc.dicomweb_url
    with pytest.raises(PacsError, match="holds no study"):
        Pacs().pull("1.2.3.999", tmp_path / "none")
    assert not (tmp_path / "none").exists()
    with pytest.raises(InputError, match="UID 'not a uid!'"):
        Pacs().query("instances", study_uid="not a uid!")


def test_basic_auth(tmp_path, monkeypatch):
    server = OrthancServer(tmp_path / "orthanc", users={"hcc": "s3cret"}).start()
    try:
        with pytest.raises(PacsError, match="HTTP 401.*--pacs-user"):
            Pacs(server.dicomweb_url, retries=0).query("studies")
        monkeypatch.setenv("HCCFUSION_PACS_PASSWORD", "s3cret")  # the password never goes on a command line
        _, _, _, files = write_study(tmp_path / "local", seed=5, phases=("PVP",))
        (tmp_path / "local" / "notes.txt").write_text("not DICOM: ignored when pushing a folder")
        pacs = Pacs(server.dicomweb_url, username="hcc", retries=0)
        assert len(pacs.push(tmp_path / "local").stored) == 8
        assert len(pacs.query("studies")) == 1
    finally:
        server.stop()


def test_cli_pacs_verbs(orthanc, tmp_path, capsys):
    study_uid, _, _, _ = write_study(tmp_path / "local", seed=4, phases=("DP",))
    url = ["--pacs-url", orthanc.dicomweb_url]
    assert cli.main(["--progress", "none", "pacs", "push", str(tmp_path / "local"), *url]) == 0
    assert "stored 8 instances, 0 already present" in capsys.readouterr().out
    assert cli.main(["--progress", "none", "pacs", "query", "--level", "series", "--study", study_uid, *url]) == 0
    assert "Delayed phase (DP)" in capsys.readouterr().out
    assert cli.main(["--progress", "none", "pacs", "pull", study_uid, "--out", str(tmp_path / "out"), *url]) == 0
    assert "retrieved 8 instances" in capsys.readouterr().out
    assert load_study(tmp_path / "out" / "pacs" / study_uid)["DP"].image.GetSize() == (40, 36, 8)
    assert cli.main(["--progress", "none", "pacs", "query", "--pacs-url", "http://127.0.0.1:9/dicom-web",
                     "--retries", "0", "--timeout", "2"]) == 2
    assert "unreachable" in capsys.readouterr().err
