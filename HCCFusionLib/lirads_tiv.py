"""LI-RADS v2018 tumour in vein (LR-TIV), measured: enhancing soft tissue inside the portal vein.

The vein is the label map's `portal_vein` label (its lumen, with whatever fills it). Per voxel of the vein, the
portal venous contrast is the PVP signal over the pre-contrast one (CT: PVP − NC in HU; MRI: percent enhancement
of MR_PVP over MR_PRE; CT without NC: PVP − `UNENHANCED_BLOOD_HU`). The blood pool is the median contrast of the
vein's upper half; intraluminal tissue (a filling defect) is vein contrast below `DEFECT_FRACTION` of it (the
contrast averaged over the vein voxels of each 3×3×3 neighbourhood), in connected pieces of at least
`MIN_TISSUE_ML` that reach `WALL_MM` inside the vein mask in-plane, where voxels are that fine (a piece along the
wall alone is partial volume of the tissue around, or a label's stray voxels). A piece touching an observation
(within one voxel) belongs to it. Voxels in-plane beside flowing blood are left out of the measurement where at
least 3 remain (partial volume).

The feature `tumour_in_vein` of an observation is the arterial-phase enhancement of its intraluminal tissue:
AP − NC (HU) over `followup.VIABLE_ENHANCEMENT_HU` (the project's one enhancement threshold of viable tumour), or
MR percent enhancement of MR_AP over MR_PRE over `ENHANCEMENT_PERCENT`; on CT without NC, the tissue's AP
attenuation over `BLAND_THROMBUS_HU` (a non-enhancing clot stays below it). A bland (non-enhancing) thrombus is
not TIV. LR-TIV overrides the diagnostic table (v2018: after LR-NC, before LR-1/2/M; `lirads._categorise`).
"""
from __future__ import annotations

import logging
import math

import numpy as np
import SimpleITK as sitk

from .followup import VIABLE_ENHANCEMENT_HU
from .lirads import Feature, LiradsAssessment, decide, design_effect
from .study import LABELS, check_same_grid

log = logging.getLogger(__name__)

NAME = "tumour_in_vein"
UNENHANCED_BLOOD_HU = 40.0  # portal blood before contrast (HCC_IMAGING_FACTS: 35-45 HU)
BLAND_THROMBUS_HU = 85.0  # CT without NC: a non-enhancing clot stays below this in the arterial phase
ENHANCEMENT_PERCENT = 25.0  # MRI: percent enhancement (MR_AP over MR_PRE) of enhancing intraluminal tissue
DEFECT_FRACTION = 0.6  # intraluminal tissue: portal venous contrast below this fraction of the blood pool's
MIN_TISSUE_ML = 0.5  # smaller filling defects are noise, partial volume or a label's stray voxels
WALL_MM = 2.0  # a filling defect reaches this far inside the vein mask (in whole voxels in-plane; none if coarser)


def add_to(assessment: LiradsAssessment, images: dict, labels: sitk.Image, lesions: sitk.Image,
           modality: str) -> LiradsAssessment:
    """`measure` into every observation's features, its category updated (LR-TIV overrides the table)."""
    features = measure(images, labels, lesions, modality)
    for obs in assessment.observations:
        obs.features[NAME] = features.get(obs.lesion, Feature(NAME, None, evidence="observation not in the lesion map"))
        obs.update_category()
    return assessment


def measure(images: dict, labels: sitk.Image, lesions: sitk.Image, modality: str) -> dict:
    """{observation: lirads.Feature "tumour_in_vein"} for every observation (value 1..n of `lesions`).

    `images`: phase -> image on `labels`' grid, read: "NC" (the pre-contrast series; MRI: MR_PRE), "AP" and
    "PVP" (the MR ones on MRI). present None when the vein, the AP/PVP or (MRI) the pre-contrast series is
    missing; False without intraluminal tissue touching the observation."""
    for phase, image in images.items():
        check_same_grid(labels, image, f"{phase} image (register the phases onto one grid first)")
    ids = [int(i) for i in np.unique(sitk.GetArrayViewFromImage(lesions)) if i]
    unit = "HU" if modality == "CT" else "% enhancement vs pre"
    pre = images.get("NC")
    threshold = (VIABLE_ENHANCEMENT_HU if pre is not None else BLAND_THROMBUS_HU) if modality == "CT" else \
        ENHANCEMENT_PERCENT
    vein = sitk.GetArrayViewFromImage(labels) == LABELS["portal_vein"]
    why = ("no portal vein in the label map (label portal_vein)" if not vein.any() else
           "needs the arterial and portal venous phases" if "AP" not in images or "PVP" not in images else
           "MRI needs the pre-contrast series (MR_PRE)" if modality != "CT" and pre is None else "")
    if why:
        return {i: Feature(NAME, None, threshold=threshold, unit=unit, evidence=why) for i in ids}
    arrays = {p: sitk.GetArrayFromImage(images[p]).astype(np.float64) for p in ("NC", "AP", "PVP") if p in images}
    pieces, blood = filling_defect(arrays, vein, labels, modality)
    defect, pool = pieces > 0, f"blood pool {blood:.0f} {_contrast_unit(modality, pre is not None)}"
    lesion_array = sitk.GetArrayViewFromImage(lesions)
    out = {}
    for i in ids:
        near = _touching(pieces, lesion_array == i)
        if not near.any():
            out[i] = Feature(NAME, False, threshold=threshold, unit=unit, phase="PVP",
                             evidence=f"no filling defect (>= {MIN_TISSUE_ML:g} ml) of the portal vein touches the "
                                      f"observation ({pool})")
            continue
        tissue = _away_from_blood(near, vein & ~defect)
        out[i] = _enhancement(arrays, tissue, near, threshold, unit, modality, pool, pre is not None)
    log.info("tumour in vein: %s", ", ".join(f"{i}={f.present}" for i, f in out.items()) or "no observations")
    return out


def filling_defect(arrays: dict, vein: np.ndarray, reference: sitk.Image, modality: str) -> tuple[np.ndarray, float]:
    """(pieces, blood pool): intraluminal tissue of the vein mask as numbered pieces (>= MIN_TISSUE_ML; 0 elsewhere)
    and the blood pool's portal venous contrast. `arrays`: "PVP" and optionally "NC" (numpy, on `reference`'s grid)."""
    contrast = _contrast(arrays, "PVP", modality)
    blood = float(np.median(contrast[vein][contrast[vein] >= np.median(contrast[vein])]))
    pieces = _pieces(vein & (_vein_mean(contrast, vein) < DEFECT_FRACTION * blood), reference)
    wall = [int(WALL_MM // s) for s in reference.GetSpacing()[:2]] + [0]  # in-plane voxels (0: coarser grid)
    inner = sitk.GetArrayFromImage(sitk.BinaryErode(sitk.GetImageFromArray(vein.astype(np.uint8)), wall,
                                                    sitk.sitkBox)).astype(bool)
    kept = np.unique(pieces[inner & (pieces > 0)])  # a defect reaches inside the lumen
    return np.where(np.isin(pieces, kept[kept > 0]), pieces, 0), blood


def _vein_mean(values: np.ndarray, vein: np.ndarray) -> np.ndarray:
    """Mean of `values` over the vein voxels of each voxel's 3x3x3 neighbourhood (the liver around is left out)."""
    def box(a):
        return sitk.GetArrayFromImage(sitk.BoxMean(sitk.GetImageFromArray(a.astype(np.float64)), [1, 1, 1]))

    return box(np.where(vein, values, 0.0)) / np.maximum(box(vein), 1e-9)


def _contrast(arrays: dict, phase: str, modality: str) -> np.ndarray:
    """Enhancement of `phase` over the pre-contrast image (CT HU; MRI percent), CT without NC over blood's HU."""
    post = arrays[phase]
    if modality != "CT":
        return 100.0 * (post - arrays["NC"]) / np.maximum(arrays["NC"], 1.0)
    return post - arrays["NC"] if "NC" in arrays else post - UNENHANCED_BLOOD_HU


def _contrast_unit(modality: str, has_pre: bool) -> str:
    return "% over MR_PRE" if modality != "CT" else ("HU over NC" if has_pre else
                                                     f"HU over {UNENHANCED_BLOOD_HU:g} HU")


def _pieces(defect: np.ndarray, reference: sitk.Image) -> np.ndarray:
    """The filling defect without its pieces smaller than MIN_TISSUE_ML (face-connected)."""
    image = sitk.GetImageFromArray(defect.astype(np.uint8))
    image.CopyInformation(reference)
    components = sitk.RelabelComponent(sitk.ConnectedComponent(image, False),
                                       minimumObjectSize=max(1, math.ceil(MIN_TISSUE_ML * 1000 / np.prod(
                                           reference.GetSpacing()))))
    return sitk.GetArrayFromImage(components)


def _touching(pieces: np.ndarray, observation: np.ndarray) -> np.ndarray:
    """Voxels of the pieces that touch `observation` (within one voxel, 26-neighbourhood)."""
    grown = sitk.GetArrayFromImage(sitk.BinaryDilate(sitk.GetImageFromArray(observation.astype(np.uint8)),
                                                     [1, 1, 1], sitk.sitkBox)).astype(bool)
    ids = np.unique(pieces[grown & (pieces > 0)])
    return np.isin(pieces, ids[ids > 0])


def _away_from_blood(tissue: np.ndarray, blood: np.ndarray) -> np.ndarray:
    """`tissue` without its voxels in-plane next to blood-pool voxels, when at least 3 remain."""
    grown = sitk.GetArrayFromImage(sitk.BinaryDilate(sitk.GetImageFromArray(blood.astype(np.uint8)), [1, 1, 0],
                                                     sitk.sitkBox)).astype(bool)
    core = tissue & ~grown
    return core if core.sum() >= 3 else tissue


def _enhancement(arrays, tissue, piece, threshold, unit, modality, pool: str, has_pre: bool) -> Feature:
    """The feature of one observation's intraluminal tissue: arterial enhancement against `threshold`."""
    if has_pre:
        values = _contrast(arrays, "AP", modality)
        what = "AP - NC" if modality == "CT" else "enhancement of MR_AP over MR_PRE"
    else:
        values, what = arrays["AP"], f"AP attenuation (bland thrombus stays below {threshold:g} HU)"
    sample = values[tissue]
    se = math.sqrt(design_effect(values, piece) * sample.var(ddof=1) / sample.size) if sample.size > 1 else math.inf
    portal = _contrast(arrays, "PVP", modality)[tissue].mean()
    evidence = (f"intraluminal tissue in the portal vein touching the observation ({int(piece.sum())} vx, "
                f"{sample.size} measured away from flowing blood): {what} {sample.mean():.1f}; PVP contrast "
                f"{portal:.1f} vs {pool}")
    return decide(NAME, float(sample.mean()), threshold, se, unit, "AP", evidence)
