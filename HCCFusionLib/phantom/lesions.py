"""Phantom lesions: `LesionSpec` (designed, with its expected LI-RADS v2018 category), `LesionTruth`, tumours.

The expected category is the phantom's own ground truth, read from `EXPECTED_LIRADS` (the ACR LI-RADS v2018
CT/MRI diagnostic table written out as data), never computed by `HCCFusionLib.lirads`, so the LI-RADS tests
compare the classifier with an independent truth.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import numpy as np

from ..errors import InputError
from .tissue import HEPATIC_VEIN, KEEP, LIVER, NODULE, PATTERNS, PERI, PORTAL, TUMOUR_BASE
from .anatomy import Anatomy, Field, random_rotation


# ---------------------------------------------------------------- public data classes
@dataclass
class LesionSpec:
    """A designed lesion: centre in reference-frame LPS mm (None = placed at random inside the liver)."""

    centre_mm: tuple | None = None
    diameter_mm: float = 20.0
    pattern: str = "hcc"
    aphe: bool = True
    washout: bool = True
    capsule: bool = False
    diffusion: bool = True  # MRI ancillary features (hcc): restricted diffusion,
    t2: str = "mild"  # T2 signal "iso", "mild" (mild-moderate hyperintensity) or "marked" (favours benignity),
    hbp_hypo: bool = True  # hypointense in the hepatobiliary (and, with gadoxetate, transitional) phase
    necrosis: float = 0.0  # radius fraction of a central non-enhancing core (after TACE; 1 = all necrotic)
    vein: str = "none"  # "tumour": tumour in vein (LR-TIV); "bland": bland thrombus; both in the portal vein it abuts

    def expected_lirads(self, diameter_mm: float | None = None) -> str | None:
        """Expected LI-RADS v2018 category of an "hcc" lesion (at `diameter_mm`, default the designed one);
        tumour in vein is LR-TIV whatever the other features (a bland thrombus changes nothing)."""
        if self.pattern != "hcc":
            return None
        if self.vein == "tumour":
            return "LR-TIV"
        return self._table_category(diameter_mm)

    def _table_category(self, diameter_mm: float | None) -> str:
        size = self.diameter_mm if diameter_mm is None else diameter_mm
        column = 0 if size < 10 else (1 if size < 20 else 2)
        return EXPECTED_LIRADS[(bool(self.aphe), bool(self.washout), bool(self.capsule))][column]

    def expected_lirads_mri(self, agent: str, diameter_mm: float | None = None) -> str | None:
        """Expected LI-RADS v2018 category on the phantom's MRI (`agent` "extracellular" or "gadoxetate"): the
        diagnostic table, then ancillary features as v2018 applies them (written out here, not computed by
        `lirads`): favouring malignancy (restricted diffusion, mild-moderate T2, with gadoxetate transitional
        phase hypointensity (washout or no uptake) and HBP hypointensity) up by one but never to LR-5; favouring
        benignity (marked T2) down by one; both ways: unchanged."""
        major = self.expected_lirads(diameter_mm)
        if major in (None, "LR-TIV"):
            return major
        gadoxetate = agent == "gadoxetate"
        malignant = self.diffusion or self.t2 == "mild" or (gadoxetate and (self.hbp_hypo or self.washout))
        benign = self.t2 == "marked"
        if malignant == benign:
            return major
        if benign:
            return {"LR-3": "LR-2", "LR-4": "LR-3", "LR-5": "LR-4"}[major]
        return {"LR-3": "LR-4", "LR-4": "LR-4", "LR-5": "LR-5"}[major]


#: LI-RADS v2018 CT/MRI diagnostic table for untreated observations without threshold growth, one row per
#: (nonrim APHE, nonperipheral washout, enhancing capsule): category at < 10 mm, 10-19 mm, >= 20 mm.
EXPECTED_LIRADS = {
    (False, False, False): ("LR-3", "LR-3", "LR-3"),
    (False, True, False): ("LR-3", "LR-3", "LR-4"),
    (False, False, True): ("LR-3", "LR-3", "LR-4"),
    (False, True, True): ("LR-4", "LR-4", "LR-4"),
    (True, False, False): ("LR-3", "LR-3", "LR-4"),
    (True, True, False): ("LR-4", "LR-5", "LR-5"),
    (True, False, True): ("LR-4", "LR-4", "LR-5"),
    (True, True, True): ("LR-4", "LR-5", "LR-5"),
}


@dataclass
class LesionTruth:
    """Ground truth of one rendered lesion; `index` is its value in `PhantomPatient.lesion_labels`."""

    index: int
    centre_mm: tuple
    diameter_mm: float  # longest diameter (caliper through the centre), capsule included
    pattern: str
    aphe: bool
    washout: bool
    capsule: bool
    lirads: str | None  # expected LI-RADS v2018 category for "hcc" lesions, None for other patterns
    lirads_mri: str | None = None  # expected category on the MRI series (with ancillary features), if rendered


# ---------------------------------------------------------------- tumours
@functools.lru_cache(maxsize=4)
def _unit_directions(n: int = 256) -> np.ndarray:
    """`n` near-uniform unit vectors (Fibonacci sphere; deterministic)."""
    k = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * k / n)
    theta = math.pi * (1 + 5 ** 0.5) * k
    return np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], 1)


class Tumour:
    """A spheroid with low-order surface bumps; scaled so its longest caliper equals the designed diameter."""

    def __init__(self, rng, spec: LesionSpec, index: int, irregularity: float, capsule_mm: float):
        self.spec, self.index = spec, index
        self.centre = np.asarray(spec.centre_mm, float)
        self.rot = random_rotation(rng, 180)
        self.ratio = np.array([1.0, rng.uniform(0.85, 1.0), rng.uniform(0.85, 1.0)])
        self.bump_dirs = rng.normal(size=(4, 3))
        self.bump_dirs /= np.linalg.norm(self.bump_dirs, axis=1, keepdims=True)
        self.bump_phase = rng.uniform(0, 2 * math.pi, 4)
        self.bump_amp = irregularity * rng.uniform(0.6, 1.0, 4) / 2.0
        self.texture_seed = rng.spawn(1)[0]
        u = _unit_directions()
        caliper = self._radius_factor(u) + self._radius_factor(-u)
        self.scale = spec.diameter_mm / float(caliper.max())
        self.capsule_mm = capsule_mm
        base = TUMOUR_BASE + 4 * (index - 1)
        self.classes = (base, base + 1, base + 2, base + 3)
        self.texture = None

    def _radius_factor(self, u):
        """Surface radius (before scaling) along unit directions u (..., 3) given in the tumour's frame."""
        r = 1.0 / np.sqrt(((u / self.ratio) ** 2).sum(-1))
        bumps = sum(a * np.sin(3.0 * (u @ d) + p) for a, d, p in zip(self.bump_amp, self.bump_dirs, self.bump_phase))
        return r * (1.0 + bumps)

    @property
    def max_radius(self):
        return self.scale * float(self._radius_factor(_unit_directions()).max()) * 1.05

    def norm_radius(self, X, Y, Z):
        """rho = distance / surface radius in that direction (rho < 1 inside), and the distance in mm."""
        d = [X - self.centre[0], Y - self.centre[1], Z - self.centre[2]]
        q = np.stack(np.broadcast_arrays(*[self.rot[0, i] * d[0] + self.rot[1, i] * d[1] + self.rot[2, i] * d[2]
                                           for i in range(3)]), -1)
        dist = np.sqrt((q ** 2).sum(-1))
        u = q / np.maximum(dist, 1e-9)[..., None]
        surface = self.scale * self._radius_factor(u)
        return dist / surface, dist, surface

    def painter(self, peritumoral: bool):
        pattern = self.spec.pattern
        core, core_b, rim, necrosis = self.classes
        if self.texture is None:
            r = self.max_radius + 8
            self.texture = Field(np.random.default_rng(self.texture_seed), self.centre - r, self.centre + r,
                                  max(4.0, self.scale * 0.5))

        def paint(X, Y, Z, cur):
            rho, dist, surface = self.norm_radius(X, Y, Z)
            inside = rho < 1.0
            tex = self.texture.sample(X, Y, Z)
            cls = np.where(tex > 0.0, core_b, core).astype(np.uint8)
            depth = surface - dist  # mm from the surface, inward
            if pattern == "hcc" and self.spec.capsule:
                cls[depth < self.capsule_mm] = rim
            elif pattern == "metastasis":
                cls[depth < np.maximum(2.0, 0.2 * surface)] = rim
            elif pattern == "hemangioma":
                cls[(depth < np.maximum(2.5, 0.3 * surface)) & (tex > -0.3)] = rim
            if pattern in ("hcc", "metastasis") and self.spec.diameter_mm >= 40:
                cls[(rho < 0.35) & (tex < 0.3)] = necrosis
            if self.spec.necrosis > 0:  # treated (TACE): the whole core is necrotic
                cls[rho < self.spec.necrosis] = necrosis
            out = np.where(inside, cls, KEEP).astype(np.uint8)
            if peritumoral:
                ring = (~inside) & (dist - surface < 5.0) & np.isin(cur, (LIVER, NODULE))
                out[ring] = PERI
            return out

        return paint

    def bbox(self, margin=0.0):
        r = self.max_radius + margin
        return [(c - r, c + r) for c in self.centre]


def place_lesions(rng, anatomy: Anatomy, specs: list, random_sizes: bool) -> list:
    """Fix every lesion's centre: inside the liver with a margin, clear of vessels and of each other."""
    dirs = _unit_directions(64)
    liverish = (LIVER, NODULE)
    in_liver = (LIVER, NODULE, HEPATIC_VEIN, PORTAL)  # tumours may abut intrahepatic vessels
    placed = []
    order = sorted(range(len(specs)), key=lambda i: -specs[i].diameter_mm)
    out = list(specs)
    for i in order:
        spec = specs[i]
        diameter = float(spec.diameter_mm)
        for attempt in range(12):
            radius = 0.54 * diameter + 2.0
            if spec.vein != "none":  # abutting the portal vein (overlapping its wall), wherever the liver allows
                cands = vein_contact_candidates(anatomy, diameter)
            elif spec.centre_mm is not None:
                cands = np.asarray(spec.centre_mm, float)[None, :]
            else:
                lo = np.array([-150, -90, -70])
                hi = np.array([60, 80, 80])
                cands = lo + (hi - lo) * rng.random((1024, 3))
            ok = np.isin(anatomy.classes_at(cands), liverish)
            if spec.vein == "none":
                ok &= anatomy.vessel_clearance(cands) > min(0.5 * diameter + 2.0, 10.0)
            for c, d in placed:
                ok &= np.linalg.norm(cands - c, axis=1) > 0.56 * (diameter + d) + 6.0
            idx = np.flatnonzero(ok)[:256]
            if len(idx):
                shell = (cands[idx][:, None, :] + radius * dirs[None]).reshape(-1, 3)
                good = np.isin(anatomy.classes_at(shell), in_liver).reshape(len(idx), -1).all(1)
                idx = idx[good]
            if len(idx):
                centre = cands[idx[0]]
                break
            if spec.centre_mm is not None or not random_sizes:
                where = f"at {tuple(np.round(spec.centre_mm, 1))} mm" if spec.centre_mm is not None else "anywhere"
                raise InputError(
                    f"Lesion {i + 1} ({diameter:.0f} mm, {spec.pattern}) cannot be placed {where} inside this "
                    "phantom's liver clear of vessels and other lesions: give a smaller diameter, another "
                    "centre_mm (reference-frame LPS mm) or fewer lesions.")
            if attempt % 3 == 2:
                diameter *= 0.85
        else:
            raise InputError(f"Could not place lesion {i + 1} inside the liver even after shrinking it.")
        placed.append((centre, diameter))
        out[i] = replace(spec, centre_mm=tuple(float(v) for v in centre), diameter_mm=diameter)
    return out


#: The portal segment a vein-invading lesion abuts (`Anatomy.portal` index: hilum -> right branching, r 5.5 mm),
#: and the length (mm) of the occlusive thrombus painted in it around the contact.
VEIN_SEGMENT, THROMBUS_MM = 2, 24.0


def vein_contact_candidates(anatomy: Anatomy, diameter: float) -> np.ndarray:
    """Lesion centres whose surface overlaps the wall of the portal segment `VEIN_SEGMENT` by ~1.5 mm: points
    along its middle third, moved perpendicular to it in 16 directions (nearest the middle first)."""
    p0, p1, radius = (np.asarray(v, float) for v in anatomy.portal[VEIN_SEGMENT])
    axis = (p1 - p0) / np.linalg.norm(p1 - p0)
    u = np.cross(axis, [0.0, 0.0, 1.0])
    u /= np.linalg.norm(u)
    v = np.cross(axis, u)
    angles = np.linspace(0, 2 * math.pi, 16, endpoint=False)
    normals = np.cos(angles)[:, None] * u + np.sin(angles)[:, None] * v
    out = [p0 + t * (p1 - p0) + (float(radius) + 0.5 * diameter - 1.5) * normals for t in (0.55, 0.45, 0.65)]
    return np.concatenate(out)


def thrombus_painter(anatomy: Anatomy, centre, cls: int):
    """Painter of an occlusive thrombus (class `cls`) in the portal segment `VEIN_SEGMENT`: its lumen within
    THROMBUS_MM / 2 along the vein of the point nearest `centre` (a lesion abutting the vein)."""
    p0, p1, radius = (np.asarray(v, float) for v in anatomy.portal[VEIN_SEGMENT])
    d = p1 - p0
    t_contact = float(np.clip(np.dot(np.asarray(centre, float) - p0, d) / np.dot(d, d), 0.0, 1.0))
    half = 0.5 * THROMBUS_MM / float(np.linalg.norm(d))  # in units of the segment parameter t

    def paint(X, Y, Z, cur):
        rx, ry, rz = X - p0[0], Y - p0[1], Z - p0[2]
        t = (rx * d[0] + ry * d[1] + rz * d[2]) / float(np.dot(d, d))
        m = (np.abs(t - t_contact) <= half) & (cur == PORTAL)
        return np.where(m, cls, KEEP).astype(np.uint8)

    lo, hi = np.minimum(p0, p1) - radius - 1, np.maximum(p0, p1) + radius + 1
    return list(zip(lo, hi)), paint


def random_lesions(rng, n: int, traits: dict) -> list:
    """Random lesions; with a "size_mm" trait the first is a typical HCC of that size and the others smaller HCCs."""
    specs = []
    index_size = traits.get("size_mm")
    for k in range(n):  # a cohort patient (index_size given) has multifocal HCC only
        pattern = "hcc" if k == 0 or rng.random() < 0.7 or index_size else str(rng.choice(PATTERNS[1:]))
        top = 45.0 if k == 0 else (min(25.0, 0.8 * index_size) if index_size else 25.0)
        diameter = float(index_size) if k == 0 and index_size else float(np.exp(rng.uniform(np.log(10), np.log(top))))
        typical = k == 0 and index_size is not None
        specs.append(LesionSpec(None, diameter, pattern, aphe=typical or bool(rng.random() < 0.85),
                                washout=typical or bool(rng.random() < 0.75), capsule=bool(rng.random() < 0.5)))
    return specs


def lesion_truth(spec: LesionSpec, index: int, diameter: float, mr_agent: str | None = None) -> LesionTruth:
    lirads_mri = None
    if spec.pattern == "hcc":
        aphe, washout, capsule = spec.aphe, spec.washout, spec.capsule
        lirads = spec.expected_lirads(diameter)
        lirads_mri = spec.expected_lirads_mri(mr_agent, diameter) if mr_agent else None
    else:  # visual appearance in LI-RADS terms; these patterns are not categorised LR-3..5
        aphe, washout, capsule, lirads = False, spec.pattern == "hypovascular", False, None
    return LesionTruth(index, tuple(float(v) for v in spec.centre_mm), float(diameter), spec.pattern,
                       bool(aphe), bool(washout), bool(capsule), lirads, lirads_mri)
