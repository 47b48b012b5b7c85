"""LI-RADS v2018 (CT/MRI) per observation: measured major features, diagnostic table, reader overrides.

Observations are the connected components of the tumour label (or a given instance map). On images that
share one grid (registered phases) each major feature is measured with its value, the threshold used and a
confidence from the noise of the compared regions:

- nonrim APHE: tumour core (rim of ~2 mm eroded) minus background liver in the arterial phase;
- nonperipheral washout: core minus liver in the portal venous or delayed phase (the stronger one);
- enhancing capsule: a shell 0–2 mm (at least one voxel) outside the tumour minus the brighter of core
  and liver, in the portal venous or delayed phase;
- size: longest diameter (mm, edge to edge) of the observation;
- threshold growth: size increase ≥ 50 % in ≤ 6 months against a prior study's observation.

CT differences are in HU; MRI differences in percent of the liver signal. LR-3/4/5 come from the v2018
diagnostic table (`category`); LR-NC, LR-TIV, LR-1/2 and LR-M from reader findings; LR-TIV also from the
measured feature `tumour_in_vein` (`lirads_tiv`, added by `lirads_mri.assess_study`). Every feature and
the category can be overridden by a reader; overrides are recorded (who, when, what, old → new).
"""
from __future__ import annotations

import datetime
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .followup import THRESHOLD_GROWTH, THRESHOLD_GROWTH_MONTHS, pair_prior, prior_observations, threshold_growth
from .lesions import label_lesions
from .study import LABELS, Phase, check_same_grid

log = logging.getLogger(__name__)

FEATURES = ("aphe", "washout", "capsule", "threshold_growth")
#: v2018 MRI ancillary features (measured ones in `lirads_mri`, the others given by a reader).
ANCILLARY_MALIGNANT = ("restricted_diffusion", "t2_mild_moderate", "tp_hypointensity", "hbp_hypointensity",
                       "nodule_in_nodule", "mosaic", "fat_in_mass", "corona", "blood_products", "iron_sparing")
ANCILLARY_BENIGN = ("t2_marked", "hbp_isointensity", "size_stability", "size_reduction", "parallels_blood_pool",
                    "undistorted_vessels", "iron_in_mass")
#: LR-M features (measured on MRI in `lirads_mri`): any present -> LR-M (after reader findings).
LR_M_FEATURES = ("rim_aphe", "peripheral_washout", "delayed_central_enhancement", "targetoid_diffusion",
                 "targetoid_hbp")
READER_FEATURES = ANCILLARY_MALIGNANT + ANCILLARY_BENIGN + LR_M_FEATURES  # tumour in vein: a Findings field
CATEGORIES = ("LR-NC", "LR-1", "LR-2", "LR-3", "LR-4", "LR-5", "LR-M", "LR-TIV")

# ---------------------------------------------------------------- v2018 diagnostic table (as data)
#: (APHE, size band) -> category for 0, 1, >= 2 additional major features (washout, capsule, threshold growth).
#: Size bands: "<10", "10-19", ">=20" mm (without APHE "<10" and "10-19" read the same "<20" column).
#: "LR-4/5" marks the v2018 cell "nonrim APHE, 10–19 mm, one feature": LR-4 if that feature is the capsule
#: alone, LR-5 if it is washout or threshold growth.
DIAGNOSTIC_TABLE = {
    (False, "<10"): ("LR-3", "LR-3", "LR-4"),
    (False, "10-19"): ("LR-3", "LR-3", "LR-4"),
    (False, ">=20"): ("LR-3", "LR-4", "LR-4"),
    (True, "<10"): ("LR-3", "LR-4", "LR-4"),
    (True, "10-19"): ("LR-3", "LR-4/5", "LR-5"),
    (True, ">=20"): ("LR-4", "LR-5", "LR-5"),
}

def size_band(diameter_mm: float) -> str:
    return "<10" if diameter_mm < 10 else ("10-19" if diameter_mm < 20 else ">=20")


def category(aphe: bool, diameter_mm: float, washout: bool, capsule: bool, threshold_growth: bool = False) -> str:
    """LR-3/LR-4/LR-5 from the LI-RADS v2018 CT/MRI diagnostic table."""
    if diameter_mm is None or not np.isfinite(diameter_mm) or diameter_mm <= 0:
        raise InputError(f"Observation size {diameter_mm!r} mm is not a positive number: measure the diameter.")
    count = int(bool(washout)) + int(bool(capsule)) + int(bool(threshold_growth))
    cell = DIAGNOSTIC_TABLE[(bool(aphe), size_band(diameter_mm))][min(count, 2)]
    if cell == "LR-4/5":
        return "LR-4" if capsule else "LR-5"
    return cell


# ---------------------------------------------------------------- measurement records
@dataclass
class Thresholds:
    """Decision thresholds: HU for CT, percent of the liver signal for MRI (same numbers)."""

    aphe: float = 10.0  # core brighter than liver by more than this in AP
    washout: float = 5.0  # core darker than liver by more than this in PVP/DP
    capsule: float = 8.0  # shell brighter than both core and liver by more than this in PVP/DP
    rim_mm: float = 2.0  # rim eroded from the tumour to get its core
    shell_mm: float = 2.0  # capsule shell thickness outside the tumour (at least one voxel)
    liver_ring_mm: tuple[float, float] = (5.0, 25.0)  # background liver: this far from the tumour
    washout_phases: tuple[str, ...] = ("PVP", "DP")  # gadoxetate MRI: PVP only (v2018)


@dataclass
class Feature:
    name: str
    present: bool | None  # None: could not be measured (phase missing)
    value: float | None = None  # measured difference (HU or %), diameter (mm) or growth (fraction)
    threshold: float | None = None
    unit: str = ""
    confidence: float | None = None  # probability the decision is right given the noise (0.5..1)
    phase: str = ""
    evidence: str = ""
    source: str = "auto"  # "auto" | "reader"


@dataclass
class Findings:
    """Reader-entered findings that decide the category before the diagnostic table."""

    not_evaluable: bool = False  # image degradation / omission -> LR-NC
    tumour_in_vein: bool = False  # -> LR-TIV
    definitely_benign: bool = False  # -> LR-1
    probably_benign: bool = False  # -> LR-2
    lr_m_features: bool = False  # targetoid / non-HCC malignancy features -> LR-M


@dataclass
class Override:
    lesion: int
    what: str  # a feature name, "diameter_mm" or "category"
    old: object
    new: object
    reader: str
    when: str  # UTC ISO time
    reason: str = ""


@dataclass
class Observation:
    lesion: int
    centre_mm: tuple[float, float, float]  # LPS, physical
    voxels: int
    volume_ml: float
    diameter_mm: float
    features: dict[str, Feature]
    findings: Findings = field(default_factory=Findings)
    category: str = ""
    category_reason: str = ""
    category_overridden: bool = False

    def update_category(self) -> None:
        """Category from the findings, then the diagnostic table (kept when a reader overrode it)."""
        if self.category_overridden:
            return
        self.category, self.category_reason = _categorise(self)


def _categorise(obs: Observation) -> tuple[str, str]:
    f, tiv = obs.findings, obs.features.get("tumour_in_vein")  # measured by lirads_tiv (or a reader's call)
    for flag, cat, why in ((f.not_evaluable, "LR-NC", "not evaluable (reader)"),
                           (f.tumour_in_vein, "LR-TIV", "tumour in vein (reader)"),
                           (tiv is not None and tiv.present, "LR-TIV", _tiv_reason(tiv)),
                           (f.definitely_benign, "LR-1", "definitely benign (reader)"),
                           (f.probably_benign, "LR-2", "probably benign (reader)"),
                           (f.lr_m_features, "LR-M", "LR-M features (reader)")):
        if flag:
            return cat, why
    feats = obs.features
    missing = [n for n in ("aphe", "washout", "capsule") if feats[n].present is None]
    if missing:
        return "LR-NC", "cannot assess " + "; ".join(f"{n} ({feats[n].evidence})" for n in missing) + (
            ": add the phase or record a reader override")
    lr_m = [n for n in LR_M_FEATURES if n in feats and feats[n].present]
    if lr_m:
        return "LR-M", "LR-M features: " + ", ".join(lr_m)
    growth = bool(feats["threshold_growth"].present)
    cat = category(feats["aphe"].present, obs.diameter_mm, feats["washout"].present, feats["capsule"].present, growth)
    present = [n for n in ("washout", "capsule", "threshold_growth") if feats[n].present]
    reason = (f"{'nonrim APHE' if feats['aphe'].present else 'no APHE'}, {obs.diameter_mm:.1f} mm "
              f"({size_band(obs.diameter_mm)}), additional: {', '.join(present) or 'none'}")
    return apply_ancillary(cat, reason, feats)


def _tiv_reason(tiv: "Feature | None") -> str:
    if tiv is None or tiv.value is None or tiv.source == "reader":
        return "tumour in vein (reader)"
    return f"tumour in vein: enhancing intraluminal tissue, {tiv.value:.1f} {tiv.unit} > {tiv.threshold:g}"


def apply_ancillary(cat: str, reason: str, features: dict) -> tuple[str, str]:
    """v2018 ancillary features (MRI): favouring malignancy upgrade LR-1..LR-3 by one (never to LR-5);
    favouring benignity downgrade LR-2..LR-5 by one; features both ways, or none present: the category stands."""
    malignant = [n for n in ANCILLARY_MALIGNANT if n in features and features[n].present]
    benign = [n for n in ANCILLARY_BENIGN if n in features and features[n].present]
    order = ("LR-1", "LR-2", "LR-3", "LR-4", "LR-5")
    if not (malignant or benign) or cat not in order:
        return cat, reason
    if malignant and benign:
        return cat, f"{reason}; ancillary features both ways ({', '.join(malignant + benign)}): not adjusted"
    i = order.index(cat)
    new = order[min(i + 1, 3) if malignant and i < 3 else i] if malignant else order[max(i - 1, 0)]
    why = f"ancillary favouring {'malignancy' if malignant else 'benignity'}: {', '.join(malignant or benign)}"
    return new, f"{reason}; {why}" + (f" -> {new}" if new != cat else " (never upgraded to LR-5)")


# ---------------------------------------------------------------- assessment
@dataclass
class LiradsAssessment:
    observations: list[Observation]
    modality: str = "CT"
    overrides: list[Override] = field(default_factory=list)

    def __getitem__(self, lesion: int) -> Observation:
        for obs in self.observations:
            if obs.lesion == lesion:
                return obs
        raise InputError(f"No observation {lesion}: observations are {[o.lesion for o in self.observations]}.")

    def override(self, lesion: int, what: str, new, reader: str, reason: str = "",
                 when: "datetime.datetime | None" = None) -> Override:
        """Reader override of a feature (True/False), the diameter (mm), the findings or the category.

        `what` is one of FEATURES, "diameter_mm", a Findings field or "category" (one of CATEGORIES).
        The category is recomputed unless it was overridden itself. The change is recorded.
        """
        if not reader or not str(reader).strip():
            raise InputError("An override needs the reader's name (who made the change).")
        obs = self[lesion]
        if what in READER_FEATURES and what not in obs.features:  # reader-only ancillary / LR-M / TIV feature
            obs.features[what] = Feature(what, None, evidence="reader")
        if what in obs.features:
            feature = obs.features[what]
            old, value = feature.present, bool(new)
            feature.present, feature.source, feature.confidence = value, "reader", None  # the reader's call
        elif what == "diameter_mm":
            old, value = obs.diameter_mm, float(new)
            if not value > 0:
                raise InputError(f"Diameter override {new!r} for observation {lesion} must be positive (mm).")
            obs.diameter_mm = value
        elif what in Findings.__dataclass_fields__:
            old, value = getattr(obs.findings, what), bool(new)
            setattr(obs.findings, what, value)
        elif what == "category":
            if new not in CATEGORIES:
                raise InputError(f"Category '{new}' is not a LI-RADS CT/MRI category: use one of {CATEGORIES}.")
            old, value = obs.category, str(new)
            obs.category, obs.category_overridden = value, True
            obs.category_reason = f"reader override ({reader})" + (f": {reason}" if reason else "")
        else:
            raise InputError(f"Cannot override '{what}': use one of {FEATURES}, 'diameter_mm', 'category' or "
                             f"a finding ({', '.join(Findings.__dataclass_fields__)}).")
        obs.update_category()
        when = (when or datetime.datetime.now(datetime.timezone.utc)).isoformat(timespec="seconds")
        record = Override(lesion, what, old, value, str(reader), when, reason)
        self.overrides.append(record)
        log.info("LI-RADS override: observation %s %s %r -> %r by %s", lesion, what, old, value, reader)
        return record

    def table(self):
        """One row per observation: size, each feature (present, value, threshold, confidence), category."""
        import pandas as pd

        rows = []
        for obs in self.observations:
            row = {"lesion": obs.lesion, "diameter_mm": round(obs.diameter_mm, 1),
                   "volume_ml": round(obs.volume_ml, 3)}
            row.update({f"centre_{a}_mm": round(float(c), 2) for a, c in zip("xyz", obs.centre_mm)})
            for name, feat in obs.features.items():
                row[name] = feat.present
                row[f"{name}_value"] = None if feat.value is None else round(feat.value, 2)
                row[f"{name}_threshold"] = feat.threshold
                row[f"{name}_confidence"] = None if feat.confidence is None else round(feat.confidence, 3)
            row.update(category=obs.category, reason=obs.category_reason)
            rows.append(row)
        return pd.DataFrame(rows).set_index("lesion") if rows else pd.DataFrame()

    def evidence(self):
        """Long table: one row per observation × feature with value, threshold, unit, phase, confidence, source."""
        import pandas as pd

        rows = [{"lesion": obs.lesion, "feature": name, **{k: v for k, v in asdict(feat).items() if k != "name"}}
                for obs in self.observations for name, feat in obs.features.items()]
        return pd.DataFrame(rows)

    def overrides_table(self):
        import pandas as pd

        columns = list(Override.__dataclass_fields__)
        return pd.DataFrame([asdict(o) for o in self.overrides], columns=columns)

    def save(self, folder: "str | Path") -> dict[str, Path]:
        """Write lirads.csv, lirads_evidence.csv and lirads_overrides.csv (atomically) into `folder`."""
        from .files import atomic_write

        folder = Path(folder)
        written = {}
        for name, frame, index in (("lirads.csv", self.table(), True), ("lirads_evidence.csv", self.evidence(), False),
                                   ("lirads_overrides.csv", self.overrides_table(), False)):
            with atomic_write(folder / name) as tmp:
                frame.to_csv(tmp, index=index)
            written[name] = folder / name
        return written


def assess_ct(study, labels: sitk.Image, **kwargs) -> LiradsAssessment:
    """`assess` on a registered Study (series on one grid): AP, PVP and DP taken by phase."""
    images = {p.value: study.get(p).image for p in (Phase.AP, Phase.PVP, Phase.DP) if study.get(p) is not None}
    modality = next(iter(study)).modality.value if len(study) else "CT"
    kwargs.setdefault("modality", "CT" if modality == "CT" else "MR")
    return assess(images, labels, **kwargs)


def assess(images: dict, labels: sitk.Image, *, modality: str = "CT", lesions: "sitk.Image | None" = None,
           prior: "list[dict] | None" = None, interval_months: "float | None" = None,
           findings: "dict[int, Findings] | None" = None, thresholds: "Thresholds | None" = None) -> LiradsAssessment:
    """Measure LI-RADS major features and categorise every observation.

    images: phase code ("AP", "PVP", "DP") -> image, all on `labels`' grid (registered).
    labels: study label map (study.LABELS: liver 1, tumour 2, ...). lesions: optional instance map
    (1..n); default: `lesions.label_lesions(labels)` (the project's one lesion rule).
    prior: the same patient's earlier observations, `interval_months` before, in this study's frame: a
    LiradsAssessment or [{"centre_mm": (x, y, z), "diameter_mm": d}]; paired by `followup.pair_prior`.
    """
    thresholds = thresholds or Thresholds()
    prior = prior_observations(prior)
    if modality not in ("CT", "MR"):
        raise InputError(f"Modality '{modality}' is not supported for LI-RADS: use 'CT' or 'MR'.")
    images = {Phase.parse(k).value: v for k, v in images.items() if v is not None}
    for phase, image in images.items():
        check_same_grid(labels, image, f"{phase} image (register the phases onto one grid first)")
    label_array = sitk.GetArrayViewFromImage(labels)
    if lesions is None:
        lesions = label_lesions(labels)
    else:
        check_same_grid(labels, lesions, "lesion instance map")
    lesion_array = sitk.GetArrayViewFromImage(lesions)
    shapes = sitk.LabelShapeStatisticsImageFilter()
    shapes.Execute(sitk.Cast(lesions, sitk.sitkUInt32))
    margin = np.ceil((thresholds.liver_ring_mm[1] + 2 * max(labels.GetSpacing())) / np.array(labels.GetSpacing()))
    observations, indices = [], shapes.GetLabels()
    paired = pair_prior(np.array([shapes.GetCentroid(i) for i in indices]).reshape(-1, 3), prior)
    for k, index in enumerate(indices):
        x, y, z, sx, sy, sz = shapes.GetBoundingBox(index)
        lo = np.maximum(np.array([z, y, x]) - margin[::-1], 0).astype(int)
        hi = np.minimum(np.array([z + sz, y + sy, x + sx]) + margin[::-1], lesion_array.shape).astype(int)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        obs = _measure(int(index), box, lesion_array[box] == index, label_array, images, labels, modality, thresholds)
        obs.centre_mm = tuple(shapes.GetCentroid(index))  # physical (LPS) centroid
        obs.features["threshold_growth"] = _growth(obs, prior, paired.get(k), interval_months)
        obs.findings = (findings or {}).get(int(index), Findings())
        obs.update_category()
        observations.append(obs)
    log.info("LI-RADS: %d observation(s): %s", len(observations),
             ", ".join(f"{o.lesion}={o.category}" for o in observations) or "none")
    return LiradsAssessment(observations, modality)


def _core(mask: np.ndarray, spacing: np.ndarray, rim_mm: float) -> tuple[np.ndarray, str]:
    """Tumour core: the rim (>= rim_mm, at least one voxel on every axis) removed; thinner fallbacks for
    lesions too small to keep a core."""
    full = [max(1, int(round(rim_mm / s))) for s in spacing[::-1]]  # x, y, z
    for radius, note in ((full, f"core = tumour minus a {rim_mm:g} mm rim"),
                         (full[:2] + [0], f"core = tumour minus a {rim_mm:g} mm rim in-plane (thin lesion)")):
        core = sitk.GetArrayFromImage(sitk.BinaryErode(sitk.GetImageFromArray(mask.astype(np.uint8)), radius,
                                                       sitk.sitkBall)).astype(bool)
        if core.sum() >= 3:
            return core, note
    return mask, "whole lesion (too small to remove the rim)"


def _measure(index, box, m, label_array, images, reference, modality, t: Thresholds) -> Observation:
    """Features of one observation: `m` is its mask inside `box` (numpy slices) of the full grid."""
    spacing = np.array(reference.GetSpacing())[::-1]  # numpy (z, y, x) order
    r = regions(m, label_array[box], spacing, t)
    core, core_note, rim, shell, ring, shell_mm = (r[k] for k in ("core", "core_note", "rim", "shell", "ring",
                                                                 "shell_mm"))
    liver_note = f"liver {t.liver_ring_mm[0]:g}-{t.liver_ring_mm[1]:g} mm around"
    arrays = {p: sitk.GetArrayViewFromImage(image)[box].astype(np.float64) for p, image in images.items()}
    liver_values = {p: a[ring] for p, a in arrays.items()}
    if ring.sum() < 10:
        liver_values = {p: sitk.GetArrayViewFromImage(images[p])[label_array == LABELS["liver"]].astype(
            np.float64) for p in arrays}
        liver_note = "whole liver (little liver around the observation)"
    unit = "HU" if modality == "CT" else "% of liver"
    inflation = {p: design_effect(a, ring) for p, a in arrays.items()}  # correlated (blurred) noise

    def difference(a: np.ndarray, b: np.ndarray, liver: np.ndarray, phase: str) -> tuple[float, float]:
        return relative_difference(a, b, liver, inflation[phase], modality)

    def describe(name, values):
        return f"{name} ({values.size} vx, mean {values.mean():.1f})"

    features = {}
    if "AP" in arrays:
        a, liver = arrays["AP"][core], liver_values["AP"]
        diff, se = difference(a, liver, liver, "AP")
        features["aphe"] = decide("aphe", diff, t.aphe, se, unit, "AP",
                                   f"{describe(core_note, a)} vs {describe(liver_note, liver)}")
    else:
        features["aphe"] = Feature("aphe", None, threshold=t.aphe, unit=unit, evidence="needs an arterial phase")
    washout, capsule = [], []
    for phase in (p for p in ("PVP", "DP") if p in arrays):
        a, liver = arrays[phase][core], liver_values[phase]
        diff, se = difference(liver, a, liver, phase)
        if phase in t.washout_phases:
            washout.append(decide("washout", diff, t.washout, se, unit, phase,
                                   f"{describe(liver_note, liver)} minus {describe(core_note, a)}"))
        # the capsule lies on the boundary: inside the label (rim) or just outside (shell), whichever is brighter
        sides = [(n, arrays[phase][r]) for n, r in (("tumour rim", rim), (f"shell 0-{shell_mm:g} mm", shell))
                 if r.sum() >= 2]
        if sides:
            side_name, side = max(sides, key=lambda item: item[1].mean())
            other_name, other = ("core", a) if a.mean() >= liver.mean() else ("liver", liver)
            diff, se = difference(side, other, liver, phase)
            capsule.append(decide("capsule", diff, t.capsule, se, unit, phase,
                                   f"{describe(side_name, side)} minus brighter of core/liver: "
                                   f"{describe(other_name, other)}"))
    missing = "needs a portal venous or delayed phase"
    features["washout"] = max(washout, key=lambda f: f.value) if washout else Feature(
        "washout", None, threshold=t.washout, unit=unit, evidence=missing)
    features["capsule"] = max(capsule, key=lambda f: f.value) if capsule else Feature(
        "capsule", None, threshold=t.capsule, unit=unit, evidence=missing)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return Observation(index, (0.0, 0.0, 0.0), int(m.sum()), float(m.sum() * voxel_ml),
                       longest_diameter_mm(m, spacing), features)


def regions(m: np.ndarray, label_box: np.ndarray, spacing: np.ndarray, t: Thresholds) -> dict:
    """Core (rim removed), rim, capsule shell and background-liver ring of mask `m` (numpy z, y, x; `spacing`
    in that order) inside a box of the label map."""
    distance = _distance_mm(m, spacing[::-1])  # > 0 outside (mm)
    core, core_note = _core(m, spacing, t.rim_mm)
    shell_mm = max(t.shell_mm, float(spacing.max()))
    ring = (label_box == LABELS["liver"]) & (distance > max(t.liver_ring_mm[0], shell_mm)) & (
        distance <= t.liver_ring_mm[1])
    return {"core": core, "core_note": core_note, "rim": m & ~core, "shell_mm": shell_mm,
            "shell": (distance > 0) & (distance <= shell_mm + 1e-6), "ring": ring}


def relative_difference(a: np.ndarray, b: np.ndarray, liver: np.ndarray, inflation: float,
                        modality: str) -> tuple[float, float]:
    """mean(a) - mean(b) and its standard error (noise variance inflated by `inflation`); MRI: in percent of
    the liver mean."""
    if min(a.size, b.size) < 2:
        return float(a.mean() - b.mean()), float("inf")
    diff = a.mean() - b.mean()
    se = math.sqrt(inflation * (a.var(ddof=1) / a.size + b.var(ddof=1) / b.size))
    if modality == "MR":
        scale = 100.0 / max(abs(liver.mean()), 1e-6)
        diff, se = diff * scale, se * scale
    return float(diff), float(se)


def confidence(margin: float, se: float) -> float:
    """Probability that a decision `margin` from its threshold is right, given Gaussian noise `se` (0.5..1)."""
    z = margin / se if se > 0 and np.isfinite(se) else math.copysign(float("inf"), margin)
    return 0.5 * (1 + math.erf(abs(z) / math.sqrt(2)))


def decide(name, value, threshold, se, unit, phase, evidence) -> Feature:
    """A measured feature: present when `value` exceeds `threshold`, with its confidence from the standard error."""
    return Feature(name, bool(value > threshold), float(value), float(threshold), unit,
                   confidence(value - threshold, se), phase, evidence)


def _growth(obs: Observation, prior, paired: int | None, interval_months) -> Feature:
    if paired is None:
        return Feature("threshold_growth", False, threshold=THRESHOLD_GROWTH, unit="fraction", confidence=None,
                       evidence="no prior study given" if not prior else
                       "no prior observation within max(its diameter, 10 mm) (new observation)")
    before = float(prior[paired]["diameter_mm"])
    months = interval_months if interval_months is not None else float("nan")
    return Feature("threshold_growth", bool(threshold_growth(before, obs.diameter_mm, months)),
                   float(obs.diameter_mm / before - 1.0), THRESHOLD_GROWTH, "fraction", None, "prior",
                   f"{before:.1f} -> {obs.diameter_mm:.1f} mm in "
                   f"{'unknown time' if not np.isfinite(months) else f'{months:g} months'} "
                   f"(threshold: >= 50% in <= {THRESHOLD_GROWTH_MONTHS:g} months)")


def design_effect(values: np.ndarray, region: np.ndarray) -> float:
    """Variance inflation of a mean from spatially correlated noise: prod over axes of (1 + r) / (1 - r), with r
    the lag-1 correlation of neighbouring voxels inside `region` (AR(1) approximation), at least 1."""
    effect = 1.0
    for axis in range(values.ndim):
        lead = [slice(None)] * values.ndim
        lag = [slice(None)] * values.ndim
        lead[axis], lag[axis] = slice(1, None), slice(None, -1)
        both = region[tuple(lead)] & region[tuple(lag)]
        if both.sum() < 20:
            continue
        x, y = values[tuple(lag)][both], values[tuple(lead)][both]
        if x.std() == 0 or y.std() == 0:
            continue
        r = float(np.clip(np.corrcoef(x, y)[0, 1], 0.0, 0.95))
        effect *= (1 + r) / (1 - r)
    return effect


# ---------------------------------------------------------------- geometry helpers
def _distance_mm(mask: np.ndarray, spacing_xyz) -> np.ndarray:
    """Signed distance (mm) to the observation: > 0 outside (to the nearest lesion voxel), <= 0 inside."""
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.SetSpacing([float(s) for s in spacing_xyz])
    outside = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(image, insideIsPositive=False,
                                                                  squaredDistance=False, useImageSpacing=True))
    return outside


def longest_diameter_mm(mask: np.ndarray, spacing: np.ndarray) -> float:
    """Longest diameter (mm) of a voxel mask (numpy z, y, x order; `spacing` in that order).

    The largest distance between voxel centres (over the convex hull); on coarse grids this misses up to a
    voxel, so it is raised to the equivalent-sphere diameter (6V/pi)^(1/3), a lower bound of any body's
    longest diameter (isodiametric inequality).
    """
    points = np.argwhere(mask) * spacing
    equivalent = float((6.0 * len(points) * np.prod(spacing) / np.pi) ** (1.0 / 3.0))
    if len(points) < 2:
        return equivalent
    hull = _hull_points(points)
    diffs = hull[:, None, :] - hull[None, :, :]
    return max(float(np.sqrt((diffs ** 2).sum(-1)).max()), equivalent)


def _hull_points(points: np.ndarray) -> np.ndarray:
    from scipy.spatial import ConvexHull, QhullError

    try:
        return points[ConvexHull(points).vertices]
    except (QhullError, ValueError):  # flat (single-slice) or tiny sets: use them all
        return points


def reader_table(assessment: LiradsAssessment):
    """The assessment's table with the lesion as a column: what a reader sees and edits."""
    frame = assessment.table()
    return frame.reset_index() if len(frame) else frame


def yes_no(value, what: str = "") -> "bool | None":
    """True/False/None from a table cell (bool, 0/1 or yes/no/true/false text; empty = not measured)."""
    if value is None or (isinstance(value, float) and value != value) or str(value).strip() == "":
        return None
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "1.0"):
        return True
    if text in ("false", "no", "0", "0.0"):
        return False
    raise InputError(f"LI-RADS table: '{value}' for {what} is not yes/no (use true or false).")


def table_edits(before, edited) -> list[tuple[int, str, object]]:
    """(lesion, what, new value) for every cell a reader changed: features, diameter (> 0.05 mm), category.

    `before` and `edited` are `reader_table` frames (a "lesion" column); an empty feature cell is no edit.
    """
    before, edited = before.set_index("lesion"), edited.set_index("lesion")
    edits = []
    features = (*FEATURES, *(["tumour_in_vein"] if "tumour_in_vein" in before.columns else []))  # measured TIV
    for lesion in before.index:
        for column in (*features, "diameter_mm", "category"):
            old, new = before.at[lesion, column], edited.at[lesion, column]
            if column in features:
                old, new = yes_no(old), yes_no(new, f"lesion {lesion} {column}")
                changed = new is not None and new != old
            elif column == "diameter_mm":
                changed = abs(float(new) - float(old)) > 0.05
            else:
                new = str(new).strip()
                changed = new != str(old)
            if changed:
                edits.append((int(lesion), column, new))
    return edits


def apply_table_edits(assessment: LiradsAssessment, edited, reader: str, audit_folder=None) -> list[Override]:
    """Record each of a reader's edits of `reader_table(assessment)` as an override; returns the overrides.
    With `audit_folder`, the overrides are also appended as one line to its audit.jsonl."""
    done = [assessment.override(lesion, what, new, reader)
            for lesion, what, new in table_edits(reader_table(assessment), edited)]
    if audit_folder is not None and done:
        from . import audit

        audit.append(audit_folder, audit.record([], event="lirads_override", reader=reader,
                                                overrides=[asdict(o) for o in done]))
    return done
