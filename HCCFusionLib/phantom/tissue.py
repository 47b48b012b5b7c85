"""Phantom tissue classes and their per-series values (HU for CT, MR-like signal, ADC), after HCC_IMAGING_FACTS.md."""
from __future__ import annotations


import numpy as np

from ..study import LABELS


CT_PHASES = ("NC", "AP", "PVP", "DP")
MR_SEQUENCES = ("T1", "T2", "ADC", "HBP")
ALL_SERIES = CT_PHASES + MR_SEQUENCES
#: T1 dynamic MRI series (value-table columns after ALL_SERIES; rendered by `make_patient(mr_agent=...)`).
MR_DYNAMIC = ("MR_PRE", "MR_AP", "MR_PVP", "TP")
PATTERNS = ("hcc", "hypovascular", "metastasis", "hemangioma")
MISALIGNMENTS = ("deformable", "rigid", "none")

#: Grid of each size: voxels (x, y, z) and spacing in mm; the field of view is centred on (0, 0, 0).
SIZES = {
    "small": ((96, 96, 40), (3.7, 3.7, 5.0)),
    "medium": ((192, 192, 80), (1.85, 1.85, 2.5)),
    "full": ((512, 512, 120), (0.7, 0.7, 2.5)),
}
#: MR series are acquired coarser than CT: at least this spacing (mm), covering the same field of view.
MR_MIN_SPACING = (1.4, 1.4, 5.0)
CT_NOISE_SD = 12.0  # HU, after the in-plane point-spread blur
MAX_ROTATION_DEG = 3.0
MAX_TRANSLATION_MM = 8.0
BREATHING_MM = (5.0, 15.0)  # cranio-caudal liver displacement of a deformable series


# ---------------------------------------------------------------- tissue classes and their values
# Anatomy classes (values of the internal tissue map); tumour k uses TUMOUR_BASE + 4k + (core, core_b, rim, necrosis).
AIR, FAT, MUSCLE, BOWEL, LUNG, HEART, CORTEX, MARROW, DISC, CSF = range(10)
AORTA, IVC, KIDNEY, GALLBLADDER, SPLEEN, SPLEEN_B, LIVER, NODULE, PERI, PORTAL, HEPATIC_VEIN = range(10, 21)
TUMOUR_THROMBUS, BLAND_THROMBUS = 21, 22  # occlusive portal vein thrombi (`LesionSpec.vein`), labelled as the vein
#: `LesionSpec.vein` values: no thrombus, enhancing tumour in vein (LR-TIV), or bland (non-enhancing) thrombus
VEIN_THROMBI = {"none": None, "tumour": TUMOUR_THROMBUS, "bland": BLAND_THROMBUS}
TUMOUR_BASE = 32
MAX_LESIONS = (255 - TUMOUR_BASE) // 4
KEEP = 255  # "leave this voxel as it is" in painter outputs

#              NC     AP    PVP    DP    T1    T2   ADC   HBP
TISSUE = {
    AIR: (-1000, -1000, -1000, -1000, 0, 0, 0, 0),
    FAT: (-100, -100, -100, -100, 900, 650, 150, 250),
    MUSCLE: (50, 58, 62, 60, 380, 160, 1450, 300),
    BOWEL: (20, 40, 55, 50, 300, 500, 2000, 200),
    LUNG: (-850, -850, -850, -850, 30, 30, 0, 30),
    HEART: (40, 180, 140, 120, 250, 200, 2500, 250),
    CORTEX: (800, 800, 800, 800, 60, 50, 300, 60),
    MARROW: (250, 260, 265, 262, 650, 350, 500, 300),
    DISC: (80, 85, 90, 88, 300, 550, 1900, 220),
    CSF: (15, 15, 18, 18, 150, 1100, 3000, 120),
    AORTA: (40, 300, 165, 115, 200, 100, 2500, 250),
    IVC: (40, 90, 140, 120, 200, 100, 2500, 250),
    KIDNEY: (32, 165, 185, 150, 400, 500, 2100, 450),
    GALLBLADDER: (10, 10, 12, 12, 120, 1200, 2900, 100),
    SPLEEN: (50, 140, 120, 102, 380, 480, 800, 300),
    SPLEEN_B: (50, 100, 118, 101, 380, 480, 800, 300),
    PORTAL: (40, 125, 185, 130, 200, 100, 2400, 260),
    HEPATIC_VEIN: (40, 75, 150, 125, 200, 100, 2400, 260),
    # tumour in vein enhances in AP like its HCC and washes out (a PVP filling defect); MR T1 low as the tumour's
    TUMOUR_THROMBUS: (45, 115, 90, 80, 220, 315, 950, 300),
    BLAND_THROMBUS: (50, 50, 52, 52, 300, 160, 1200, 250),  # clot: no enhancement in any phase
}
LIVER_VALUES = {False: (60, 78, 110, 92, 520, 210, 1300, 800), True: (52, 72, 100, 87, 480, 230, 1150, 650)}
NODULE_DELTA = (5, -3, -5, -2, 40, -30, 0, 40)  # regenerative nodules vs cirrhotic parenchyma
COLUMN = {name: i for i, name in enumerate(ALL_SERIES + MR_DYNAMIC)}

LABEL_OF_CLASS = np.zeros(256, np.uint8)
LABEL_OF_CLASS[[LIVER, NODULE, PERI, HEPATIC_VEIN]] = LABELS["liver"]
LABEL_OF_CLASS[TUMOUR_BASE:TUMOUR_BASE + 4 * MAX_LESIONS] = LABELS["tumour"]
LABEL_OF_CLASS[[SPLEEN, SPLEEN_B]] = LABELS["spleen"]
LABEL_OF_CLASS[[PORTAL, TUMOUR_THROMBUS, BLAND_THROMBUS]] = LABELS["portal_vein"]  # a vein mask holds its lumen
LESION_OF_CLASS = np.zeros(256, np.uint8)
LESION_OF_CLASS[TUMOUR_BASE:TUMOUR_BASE + 4 * MAX_LESIONS] = 1 + np.arange(4 * MAX_LESIONS) // 4

#: Default latent traits of the index tumour (each 0..1 except size); the cohort sets them per patient.
DEFAULT_TRAITS = {
    "arterial_enhancement": 0.5,  # APHE strength
    "ap_heterogeneity": 0.3,  # arterial texture: core_a/core_b difference
    "peritumoral_enhancement": 0.0,  # arterial enhancement of the 0-5 mm liver ring
    "margin_irregularity": 0.2,  # non-smooth margin (bump amplitude)
    "washout": 0.5,  # washout depth in PVP/DP
    "adc_restriction": 0.5,  # lower tumour ADC
    "hbp_hypointensity": 0.6,  # lower tumour/liver HBP ratio
}


def tumour_values(pattern, aphe, washout, liver, traits):
    """Per-series values (8-tuples in ALL_SERIES order) of a tumour's core, core_b, rim and necrosis."""
    nc, ap, pv, dp, t1, t2, adc, hbp = liver
    t = traits
    if pattern == "hcc":
        core_ap = 100 + 30 * t["arterial_enhancement"] if aphe else ap - 10
        core_pv = pv - (12 + 18 * t["washout"]) if washout else pv + 4
        core_dp = dp - (14 + 16 * t["washout"]) if washout else dp + 2
        core_adc = 1200 - 350 * t["adc_restriction"]
        core_hbp = hbp * (0.75 - 0.45 * t["hbp_hypointensity"])
        core = [nc - 15, core_ap, core_pv, core_dp, 0.75 * t1, 1.5 * t2, core_adc, core_hbp]
        rim = [nc, ap - 4, pv + 30, dp + 30, 0.8 * t1, 1.3 * t2, 1200, 0.6 * hbp]  # enhancing capsule
        spread = 25 * t["ap_heterogeneity"]
    elif pattern == "hypovascular":
        core = [38, 52, 72, 70, 0.6 * t1, 1.4 * t2, 1050, 0.4 * hbp]
        rim, spread = core, 5
    elif pattern == "metastasis":
        core = [38, 52, 72, 70, 0.6 * t1, 2.0 * t2, 1100, 0.35 * hbp]
        rim = [45, 108, 112, 92, 0.7 * t1, 1.6 * t2, 950, 0.4 * hbp]  # enhancing rim
        spread = 5
    else:  # hemangioma: peripheral nodular enhancement following the blood pool, centripetal fill-in
        core = [40, 48, 115, 108, 0.5 * t1, 4.0 * t2, 1800, 0.35 * hbp]
        rim = [40, 240, 165, 118, 0.5 * t1, 4.0 * t2, 1800, 0.35 * hbp]
        spread = 5
    core = np.asarray(core, float)
    shift = np.zeros(8)
    shift[COLUMN["AP"]] = spread
    necrosis = [20, 22, 25, 27, 0.3 * t1, 900, 2200, 0.2 * hbp]
    return core + shift, core - shift, np.asarray(rim, float), np.asarray(necrosis, float)
