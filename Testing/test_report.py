"""HTML report: every section optional, images resolve, patient-free by default, renders in headless Chromium."""
from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from HCCFusionLib import lirads, report
from HCCFusionLib.errors import GeometryError
from HCCFusionLib.phantom import LesionSpec, make_patient

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Parser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.sections = [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        if tag == "section":
            self.sections.append(attrs.get("id"))


def parse(html_path: Path) -> _Parser:
    parser = _Parser()
    parser.feed(html_path.read_text(encoding="utf-8"))
    return parser


def image_bytes(html_path: Path, src: str) -> bytes:
    """The PNG an <img src> points at: a data URI, or a file relative to the HTML."""
    if src.startswith("data:"):
        header, payload = src.split(",", 1)
        assert header == "data:image/png;base64"
        return base64.b64decode(payload, validate=True)
    assert "://" not in src and not src.startswith("/"), f"report image {src} is not local and relative"
    path = html_path.parent / src
    assert path.is_file(), f"missing image {path}"
    return path.read_bytes()


@pytest.fixture(scope="module")
def full_data(tmp_path_factory):
    patient = make_patient(11, "small", lesions=[LesionSpec(diameter_mm=30), LesionSpec(diameter_mm=16, washout=False)],
                           misalignment="none")
    study_dir = tmp_path_factory.mktemp("inputs")
    sitk.WriteImage(patient.study["AP"].image, str(study_dir / "AP.nii.gz"))
    assessment = lirads.assess_ct(patient.study, patient.labels)
    assessment.override(1, "capsule", True, reader="reader_1", reason="visible on DP")
    return report.ReportData(
        study_id=patient.study.study_id,
        images={s.name: s.image for s in patient.study}, labels=patient.labels,
        lirads=assessment.table(), lirads_evidence=assessment.evidence(),
        lirads_overrides=assessment.overrides_table(),
        registration_qc=pd.DataFrame({"series": ["AP", "DP"], "dice_liver": [0.93, 0.91], "tre_mm": [1.2, 1.8]}),
        radiomics=pd.DataFrame({"value": [120.3, 0.81]},
                               index=["AP__tumour__original_firstorder_Mean", "PVP__tumour__original_shape_Sphericity"]),
        prediction={"mvi": {"probability": 0.72, "ci_low": 0.6, "ci_high": 0.82}},
        contributions=pd.DataFrame({"feature": [f"AP__tumour__f{i}" for i in range(20)],
                                    "contribution": np.linspace(-0.3, 0.4, 20)}),
        model_card={"name": "mvi-fusion", "version": "1.0", "AUC (cross-validated)": 0.84},
        inputs={"AP image": study_dir / "AP.nii.gz", "study folder": study_dir},
        patient={"Patient name": "Jane Example"},
    )


@pytest.mark.parametrize("embed", [False, True])
def test_report_sections_and_images_resolve(full_data, tmp_path, embed):
    html = report.write_report(full_data, tmp_path / "report", embed_images=embed)
    parsed = parse(html)
    assert parsed.sections == ["images", "lirads", "registration", "radiomics", "prediction", "model", "provenance"]
    assert len(parsed.images) == len(full_data.images) + 1  # key image per phase + contribution plot
    for src in parsed.images:
        assert image_bytes(html, src).startswith(PNG_MAGIC)
    text = html.read_text(encoding="utf-8")
    assert full_data.study_id in text and "LR-5" in text and "reader_1" in text
    assert "Jane Example" not in text  # patient-free unless opted in
    assert report.sha256_of(full_data.inputs["AP image"]) in text
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging leftovers


def test_patient_details_only_when_opted_in(full_data, tmp_path):
    html = report.write_report(full_data, tmp_path / "report", include_patient=True)
    assert "Jane Example" in html.read_text(encoding="utf-8")


def test_minimal_report_renders_only_given_sections(tmp_path):
    html = report.write_report(report.ReportData(study_id="S-1"), tmp_path / "report")
    parsed = parse(html)
    assert parsed.sections == ["provenance"] and parsed.images == []


def test_failed_render_keeps_previous_report(full_data, tmp_path):
    folder = tmp_path / "report"
    report.write_report(report.ReportData(study_id="S-1"), folder)
    before = (folder / "report.html").read_text(encoding="utf-8")
    shifted = sitk.Image(full_data.images["AP"])
    shifted.SetOrigin([o + 10 for o in shifted.GetOrigin()])
    bad = report.ReportData(study_id="S-2", images={"AP": shifted}, labels=full_data.labels)
    with pytest.raises(GeometryError, match="AP image of the report"):
        report.write_report(bad, folder)
    assert (folder / "report.html").read_text(encoding="utf-8") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]


def test_report_renders_in_headless_chromium(full_data, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (Testing/system_deps.sh installs it)")
    html = report.write_report(full_data, tmp_path / "report")
    screenshot = tmp_path / "report_screenshot.png"
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run",
                        f"--user-data-dir={profile}", "--window-size=1200,1600", f"--screenshot={screenshot}",
                        html.resolve().as_uri()], check=True, timeout=120, capture_output=True)
    print(f"report screenshot: {screenshot}")
    import matplotlib.image

    pixels = matplotlib.image.imread(screenshot)[..., :3]
    assert pixels.shape[:2] == (1600, 1200)
    assert pixels.std() > 0.05  # not blank
    dark = (pixels.mean(axis=-1) < 0.2).mean()
    assert 0.05 < dark < 0.6  # the black key-image panels are on screen, the page is mostly light


def test_pdf_when_weasyprint_is_installed(full_data, tmp_path):
    pytest.importorskip("weasyprint", reason="the optional [report] extra (WeasyPrint) is not installed")
    html = report.write_report(full_data, tmp_path / "report", pdf=True)
    pdf = (html.parent / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-")
    assert pdf.count(b"/Subtype /Image") + pdf.count(b"/Subtype/Image") >= len(full_data.images) + 1
