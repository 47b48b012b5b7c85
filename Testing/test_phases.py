"""phases: phase / sequence detection from DICOM headers (CT keywords and timing, MR sequences, PET)."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset

from HCCFusionLib.dicom.series import write_dicom_series
from HCCFusionLib.io import load_study
from HCCFusionLib.phases import detect_phase, phase_from_name
from HCCFusionLib.study import Phase


def header(**tags) -> Dataset:
    ds = Dataset()
    ds.Modality = tags.pop("Modality", "CT")
    for key, value in tags.items():
        setattr(ds, key, value)
    return ds


@pytest.mark.parametrize("description, phase", [
    ("Abdomen nativ 5.0 B30f", Phase.NC), ("ABD C-", Phase.NC), ("Leber plain", Phase.NC), ("PRE", Phase.NC),
    ("W/O CONTRAST", Phase.NC), ("Late arterial phase", Phase.AP), ("HAP 1.25", Phase.AP), ("ART 3mm", Phase.AP),
    ("Arteriell", Phase.AP), ("PV 5mm", Phase.PVP), ("Portalvenous", Phase.PVP), ("Venös 3.0", Phase.PVP),
    ("Delay 3 min", Phase.DP), ("Equilibrium", Phase.DP), ("5 MIN", Phase.DP), ("Spät", Phase.DP),
    ("LATE", Phase.DP),
])
def test_ct_phase_keywords(description, phase):
    detected, confidence, reason = detect_phase([header(SeriesDescription=description)])
    assert detected is phase and confidence >= 0.9 and "keyword" in reason


@pytest.mark.parametrize("seconds, phase", [(30, Phase.AP), (45, Phase.AP), (75, Phase.PVP), (100, Phase.PVP),
                                            (180, Phase.DP), (300, Phase.DP)])
def test_ct_phase_from_bolus_timing(seconds, phase):
    ds = header(SeriesDescription="Abdomen 3.0 B31f", ContrastBolusAgent="Ultravist 370",
                ContrastBolusStartTime="120000.0", AcquisitionTime=f"12{seconds // 60:02d}{seconds % 60:02d}.5")
    detected, confidence, reason = detect_phase([ds])
    assert detected is phase and 0.5 <= confidence < 0.9 and f"{seconds + 0.5:.0f} s after bolus" in reason


def test_ct_contrast_without_timing_or_keyword_is_a_low_confidence_pvp():
    for ds in (header(SeriesDescription="Abd C+"), header(SeriesDescription="Body", ContrastBolusAgent="OMNI")):
        phase, confidence, reason = detect_phase([ds])
        assert phase is Phase.PVP and confidence < 0.5 and "assumed" in reason
    phase, confidence, _ = detect_phase([header(SeriesDescription="Body", ContrastBolusAgent="NONE")])
    assert phase is Phase.NC and confidence < 0.5


def test_mr_sequences_and_pet():
    def mr(**tags):
        return header(Modality="MR", **tags)

    assert detect_phase([mr(SeriesDescription="Apparent Diffusion Coefficient (mm2/s)")])[0] is Phase.ADC
    assert detect_phase([mr(SeriesDescription="ep2d_diff", ImageType=["DERIVED", "PRIMARY", "ADC"])])[0] is Phase.ADC
    assert detect_phase([mr(SeriesDescription="ax", DiffusionBValue=800)])[0] is Phase.DWI
    ge = mr(SeriesDescription="ax")
    ge.add_new((0x0043, 0x1039), "IS", ["1000000800", "0", "0", "0"])  # GE private b-value (+1e9 flag)
    assert detect_phase([ge]) == (Phase.DWI, 0.95, "diffusion b-value(s) [800]")
    siemens = mr(SeriesDescription="ax")
    siemens.add_new((0x0019, 0x100C), "UN", b"50 ")  # Siemens private b-value as raw bytes
    assert detect_phase([siemens])[0] is Phase.DWI
    assert detect_phase([mr(SeriesDescription="t1_vibe_HBP 20 min")])[0] is Phase.HBP
    assert detect_phase([mr(SeriesDescription="hepatobiliary phase")])[0] is Phase.HBP
    assert detect_phase([mr(SeriesDescription="T1 arterial dyn")])[0] is Phase.MR_AP
    assert detect_phase([mr(SeriesDescription="T1 DYN")])[0] is Phase.DCE  # no timing: generic dynamic
    assert detect_phase([mr(SeriesDescription="AX T2 HASTE")])[0] is Phase.T2
    assert detect_phase([mr(SeriesDescription="LAVA FLEX")])[0] is Phase.T1
    assert detect_phase([mr(SeriesDescription="ax 1", EchoTime=85, RepetitionTime=4000)])[:2] == (Phase.T2, 0.7)
    assert detect_phase([mr(SeriesDescription="ax 2", EchoTime=2.2, RepetitionTime=4.5)])[:2] == (Phase.T1, 0.7)
    assert detect_phase([mr(SeriesDescription="AX T2", ProtocolName="LIVER DYN")])[0] is Phase.T2  # description first
    assert detect_phase([header(Modality="PT", SeriesDescription="WB")])[0] is Phase.PET


@pytest.mark.parametrize("name, phase", [("PVP", Phase.PVP), ("case7_arterial", Phase.AP), ("liver_T2w", Phase.T2),
                                         ("pat3_adc", Phase.ADC), ("hepatobiliary_20min", Phase.HBP),
                                         ("venous", Phase.PVP), ("nativ", Phase.NC)])
def test_phase_from_file_names(name, phase):
    assert phase_from_name(name)[0] is phase
    assert phase_from_name("mr_abdomen") is None


def test_post_contrast_mr_by_timing_and_agent():
    def mr(**tags):
        return header(Modality="MR", ContrastBolusStartTime="100000", **tags)

    hbp = detect_phase([mr(SeriesDescription="t1 vibe tra", ContrastBolusAgent="Primovist", AcquisitionTime="102000")])
    assert hbp[0] is Phase.HBP and hbp[1] == 0.7 and "20 min after the gadoxetate bolus" in hbp[2]
    late = detect_phase([mr(SeriesDescription="ax", ContrastBolusAgent="Dotarem", AcquisitionTime="101800")])
    assert late[:2] == (Phase.HBP, 0.5)  # late, but not a hepatobiliary agent: lower confidence
    dynamic = detect_phase([mr(SeriesDescription="t1 vibe tra", ContrastBolusAgent="Primovist", AcquisitionTime="100035")])
    assert dynamic[0] is Phase.MR_AP and "35 s" in dynamic[2]
    gradient = header(Modality="MR", SeriesDescription="ax", ScanningSequence="GR")
    assert detect_phase([gradient])[:2] == (Phase.T1, 0.5)
    spin_echo = header(Modality="MR", SeriesDescription="ax", ScanningSequence=["SE", "IR"], EchoTime=80,
                       RepetitionTime=5000)
    assert detect_phase([spin_echo])[0] is Phase.T2 and "SE\\IR" in detect_phase([spin_echo])[2]


@pytest.mark.parametrize("tags, phase, words", [
    # timing from ContrastBolusStartTime + AcquisitionTime (agent named) ...
    ({"SeriesDescription": "t1 vibe fs tra", "ContrastBolusAgent": "Gadovist", "AcquisitionTime": "095930"},
     Phase.MR_PRE, "before the bolus"),
    ({"SeriesDescription": "t1 vibe fs tra", "ContrastBolusAgent": "Eovist", "AcquisitionTime": "100030"},
     Phase.MR_AP, "arterial"),
    ({"SeriesDescription": "t1 vibe fs tra", "ContrastBolusAgent": "Primovist", "AcquisitionTime": "100110"},
     Phase.MR_PVP, "portal venous"),
    ({"SeriesDescription": "t1 vibe fs tra", "ContrastBolusAgent": "GADOXETATE DISODIUM",
      "AcquisitionTime": "100300"}, Phase.TP, "transitional"),
    ({"SeriesDescription": "t1 vibe fs tra", "ContrastBolusAgent": "Dotarem", "AcquisitionTime": "100300"},
     Phase.TP, "delayed"),
    ({"SeriesDescription": "LAVA DYN", "ContrastBolusAgent": "Eovist", "AcquisitionTime": "100110"},
     Phase.MR_PVP, "keyword 'DYN'"),  # a generic dynamic keyword refined by the timing
    ({"SeriesDescription": "t1 vibe", "ContrastBolusAgent": "Primovist", "AcquisitionTime": "101900"},
     Phase.HBP, "19 min after the gadoxetate bolus"),
])
def test_mr_dynamic_phases_by_bolus_timing(tags, phase, words):
    ds = header(Modality="MR", ContrastBolusStartTime="100000", **tags)
    detected, confidence, reason = detect_phase([ds])
    assert detected is phase and confidence == 0.7 and words in reason, reason


@pytest.mark.parametrize("description, phase", [
    ("t1_vibe_fs_pre", Phase.MR_PRE), ("T1 native", Phase.MR_PRE), ("AX LAVA late arterial", Phase.MR_AP),
    ("t1 vibe portal venous", Phase.MR_PVP), ("T1 transitional", Phase.TP), ("vibe delayed 3 min", Phase.TP),
    ("t1 vibe 20 min hepatobiliary", Phase.HBP), ("AX DCE", Phase.DCE),
])
def test_mr_dynamic_phases_by_description(description, phase):
    assert detect_phase([header(Modality="MR", SeriesDescription=description)])[0] is phase


def test_mr_phase_from_trigger_time_and_names():
    ds = header(Modality="MR", SeriesDescription="t1 fl3d", ContrastBolusAgent="Primovist", TriggerTime=38000)
    detected, _, reason = detect_phase([ds])
    assert detected is Phase.MR_AP and "TriggerTime" in reason
    untimed = header(Modality="MR", SeriesDescription="t1 fl3d", ContrastBolusAgent="Primovist")
    assert detect_phase([untimed])[:2] == (Phase.DCE, 0.5)
    assert Phase.parse("MR_PVP") is Phase.MR_PVP and Phase.parse("TP") is Phase.TP
    assert Phase.parse("mr-ap") is Phase.MR_AP and Phase.parse("PRE") is Phase.NC  # CT keeps its plain names
    assert Phase.MR_AP.modality.value == "MR" and Phase.TP.modality.value == "MR"


def test_mr_dynamic_series_round_trip_through_dicom(tmp_path):
    """MRI dynamic series written with gadoxetate timing tags and one neutral description are read back apart
    by their time after the bolus (the pre-contrast one by its description), with the agent kept."""
    image = sitk.GetImageFromArray(np.random.default_rng(4).random((3, 6, 5)).astype(np.float32) * 300)
    phases = ("MR_PRE", "MR_AP", "MR_PVP", "TP", "HBP")
    for number, phase in enumerate(phases, start=1):
        write_dicom_series(image, tmp_path / phase, phase=phase, study_id="DYN", study_uid="1.2.3.4",
                           modality="MR", series_number=number,
                           description="t1 vibe fs pre" if phase == "MR_PRE" else "t1 vibe fs tra")
    study = load_study(tmp_path)
    assert sorted(s.phase.value for s in study) == sorted(phases)
    timed = {s.phase: s.meta for s in study if s.phase is not Phase.MR_PRE}
    assert all(meta["contrast_agent"] == "Gd-EOB-DTPA" for meta in timed.values())
    assert all(meta["phase_confidence"] == 0.7 and "gadoxetate bolus (ContrastBolusStartTime)" in meta["phase_reason"]
               for meta in timed.values()), {p: m["phase_reason"] for p, m in timed.items()}
