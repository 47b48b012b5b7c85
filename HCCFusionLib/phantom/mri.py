"""Phantom MRI studies: T1 dynamic series, T2, DWI (b 50/400/800) with the ADC fitted from them, DICOM tags.

Signal model (../shared/HCC_IMAGING_FACTS.md: on MRI "the same wash-in / wash-out pattern as CT"): after
contrast a tissue's T1 signal is its pre-contrast signal times (1 + its CT enhancement over NC / 100 HU), so
100 HU of iodine enhancement reads as 100 % gadolinium enhancement (aorta ~ +650 % arterial, liver +18 %
arterial, +50 % portal venous). With gadoxetate the liver keeps taking the agent up: the transitional phase
(~3 min) lies halfway between the portal venous phase and the hepatobiliary phase (~20 min, liver +54 %, blood
and other organs keeping a quarter of their 3-minute enhancement). With
an extracellular agent the 3-minute series is the delayed phase (CT's DP curve). HCC tumours are drawn by
their designed LI-RADS features (`LesionSpec`): hypointense before contrast (0.8 x liver), nonrim APHE as
60-100 % relative enhancement (liver 18 %), washout 20-35 % below the liver, an enhancing capsule 50 % above
it in MR_PVP/TP; ancillary: ADC 0.62-0.72 x liver (restricted diffusion), T2 1.5 x (mild-moderate) or 4 x
(marked) the liver, HBP/TP hypointensity with gadoxetate. DWI: S(b) = S0 exp(-b ADC) with S0 = 2 x the T2
signal, one coil bias field and Rician noise per b-value; the ADC series is fitted from the three b-values
(`lirads_mri.adc_from_dwi`), as a scanner does.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..lirads_mri import AGENTS, adc_from_dwi
from .tissue import COLUMN, CT_PHASES, LIVER, NODULE, PERI, TUMOUR_BASE

#: Series of an MRI phantom study (acquisitions; "DWI" gives DWI_b50, DWI_b400, DWI_b800 and ADC).
MR_ACQUISITIONS = {"extracellular": ("MR_PRE", "MR_AP", "MR_PVP", "TP", "T2", "DWI"),
                   "gadoxetate": ("MR_PRE", "MR_AP", "MR_PVP", "TP", "HBP", "T2", "DWI")}
DWI_B_VALUES = (50.0, 400.0, 800.0)  # s/mm^2
T2_LEVELS = {"iso": 1.0, "mild": 1.5, "marked": 4.0}  # tumour T2 signal / liver T2 signal
T1_SERIES = ("MR_PRE", "MR_AP", "MR_PVP", "TP", "HBP")  # one receive coil; DICOM: agent + bolus timing
PRE_DELAY_S = -60.0  # the pre-contrast series is acquired a minute before the bolus
AGENT_NAMES = {"extracellular": "Gadobutrol", "gadoxetate": "Gd-EOB-DTPA"}
_DYNAMIC_FROM_CT = {"MR_PRE": "NC", "MR_AP": "AP", "MR_PVP": "PVP", "TP": "DP"}


def fill_mr_dynamic(table: np.ndarray, agent: str) -> None:
    """Fill the MR_PRE/MR_AP/MR_PVP/TP columns of every class from its T1 signal and CT enhancement (in place)."""
    t1, nc = table[:, COLUMN["T1"]], table[:, COLUMN["NC"]]
    for mr, ct in _DYNAMIC_FROM_CT.items():
        table[:, COLUMN[mr]] = np.maximum(t1 * (1.0 + (table[:, COLUMN[ct]] - nc) / 100.0), 0.0)
    if agent == "gadoxetate":  # hepatocyte uptake: liver signal rises from PVP towards HBP
        liverish = [LIVER, NODULE, PERI]
        table[liverish, COLUMN["TP"]] = 0.5 * (table[liverish, COLUMN["MR_PVP"]] + table[liverish, COLUMN["HBP"]])
        # HBP (~20 min) of the anatomy: blood and extracellular space keep a quarter of their 3-minute enhancement
        other = np.setdiff1d(np.arange(TUMOUR_BASE), liverish)
        table[other, COLUMN["HBP"]] = t1[other] * (1.0 + 0.25 * np.maximum(table[other, COLUMN["DP"]] - nc[other], 0)
                                                   / 100.0)


def hcc_mr_values(spec, liver: np.ndarray, rows: tuple, agent: str, traits: dict) -> None:
    """Overwrite the MR columns of an HCC's (core, core_b, rim, necrosis) `rows` from its designed features.

    `liver`: the liver row of the value table (all columns filled); rows are modified in place."""
    c = {name: liver[COLUMN[name]] for name in COLUMN}
    core, core_b, rim, necrosis = rows
    pre = 0.8 * c["MR_PRE"]
    ap = pre * (1.6 + 0.4 * traits["arterial_enhancement"]) if spec.aphe else pre * (0.5 + 0.5 * c["MR_AP"] / c["MR_PRE"])
    wash = 0.8 - 0.15 * traits["washout"]
    pvp = c["MR_PVP"] * (wash if spec.washout else 1.03)
    dark_tp = spec.washout or (agent == "gadoxetate" and spec.hbp_hypo)
    tp = c["TP"] * (wash if spec.washout else 0.8 if dark_tp else 1.02)
    hbp = c["HBP"] * (0.75 - 0.45 * traits["hbp_hypointensity"] if spec.hbp_hypo else 1.0)
    adc = c["ADC"] * (0.72 - 0.1 * traits["adc_restriction"] if spec.diffusion else 1.02)
    t2 = c["T2"] * T2_LEVELS[spec.t2]
    spread = 0.25 * traits["ap_heterogeneity"] * (ap - pre)
    for row, ap_value in ((core, ap + spread), (core_b, ap - spread)):
        row[[COLUMN[n] for n in ("MR_PRE", "MR_AP", "MR_PVP", "TP", "HBP", "ADC", "T2")]] = (
            pre, ap_value, pvp, tp, hbp, adc, t2)
    # capsule: not enhancing in AP, 50 % above the liver in MR_PVP/TP; same ADC as the core (no targetoid rim)
    rim[[COLUMN[n] for n in ("MR_PRE", "MR_AP", "MR_PVP", "TP", "HBP", "ADC", "T2")]] = (
        pre, 0.95 * c["MR_AP"], 1.5 * c["MR_PVP"], 1.5 * c["TP"], hbp, adc, 1.3 * c["T2"])
    necrosis[[COLUMN[n] for n in ("MR_PRE", "MR_AP", "MR_PVP", "TP")]] = necrosis[COLUMN["T1"]]


def metastasis_mr_values(liver: np.ndarray, rows: tuple) -> None:
    """Targetoid HBP appearance of a metastasis (gadoxetate): rim darker (0.3 x liver) than the core (0.5 x)."""
    core, core_b, rim, _ = rows
    for row in (core, core_b):
        row[COLUMN["HBP"]] = 0.5 * liver[COLUMN["HBP"]]
    rim[COLUMN["HBP"]] = 0.3 * liver[COLUMN["HBP"]]


def render_dwi(classes, grid, table, rng, render) -> dict:
    """DWI_b50/400/800 and the fitted ADC of one acquisition: {series name: image}. `render` is
    `render.render_series` (one coil bias for all b-values)."""
    coil = rng.normal(0, 0.12, 4)
    s0, adc = 2.0 * table[:, COLUMN["T2"]], table[:, COLUMN["ADC"]] * 1e-6
    images = {}
    for b in DWI_B_VALUES:
        images[b] = render("DWI", classes, grid, table, rng, 0.0, 0.0, lut=s0 * np.exp(-b * adc), coil=coil)
    out = {f"DWI_b{int(b)}": image for b, image in images.items()}
    out["ADC"] = adc_from_dwi(images)
    return out


def dicom_meta(name: str, agent: str) -> dict:
    """Series.meta entries that make the DICOM export write what the phase detector reads: a generic dynamic
    description ("T1 VIBE dynamic") with the agent and bolus timing for the T1 series (the export's per-phase
    delays; the pre-contrast series `PRE_DELAY_S`), b-values for DWI."""
    if name in T1_SERIES:
        return {"series_description": "T1 VIBE dynamic", "contrast_agent": AGENT_NAMES[agent],
                **({"bolus_delay_s": PRE_DELAY_S} if name == "MR_PRE" else {})}
    if name.startswith("DWI_b"):
        return {"series_description": "DWI", "b_value": float(name[5:])}
    return {"series_description": {"T2": "T2 HASTE", "ADC": "ADC"}.get(name, name)}


def check_agent(agent, phases) -> None:
    if agent not in AGENTS:
        raise InputError(f"Unknown MR contrast agent '{agent}': use one of {', '.join(AGENTS)}.")
    if any(p not in CT_PHASES for p in phases):
        raise InputError(f"Phases {list(phases)}: give CT phase codes ({', '.join(CT_PHASES)}); the MRI series "
                         "come with mr_agent.")
