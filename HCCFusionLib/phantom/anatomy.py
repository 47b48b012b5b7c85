"""Phantom anatomy in millimetres: grids, smooth random fields, canvases and the abdomen model (`Anatomy`)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .tissue import (AIR, AORTA, BOWEL, CORTEX, CSF, DISC, FAT, GALLBLADDER, HEART, HEPATIC_VEIN, IVC, KEEP, KIDNEY,
                     LIVER, LUNG, MARROW, MUSCLE, NODULE, PORTAL, SPLEEN, SPLEEN_B)


# ---------------------------------------------------------------- grids and smooth random fields
@dataclass(frozen=True)
class Grid:
    size: tuple  # (nx, ny, nz)
    spacing: tuple
    origin: tuple

    @classmethod
    def centred(cls, size, spacing, shift=(0.0, 0.0, 0.0)):
        origin = tuple(-(n - 1) / 2 * s + d for n, s, d in zip(size, spacing, shift))
        return cls(tuple(int(n) for n in size), tuple(float(s) for s in spacing), origin)

    def axes(self):
        return [o + s * np.arange(n) for o, s, n in zip(self.origin, self.spacing, self.size)]

    def image(self, array: np.ndarray) -> sitk.Image:
        img = sitk.GetImageFromArray(array)
        img.SetSpacing(self.spacing)
        img.SetOrigin(self.origin)
        return img


class Field:
    """A smooth zero-mean unit-SD random field on a coarse physical grid, sampled by linear interpolation."""

    def __init__(self, rng, lo, hi, corr_mm):
        step = corr_mm / 2.0
        size = [int(np.ceil((h - l) / step)) + 3 for l, h in zip(lo, hi)]
        white = rng.standard_normal(size[::-1]).astype(np.float32)
        img = sitk.GetImageFromArray(white)
        img.SetSpacing([step] * 3)
        img.SetOrigin([l - step for l in lo])
        smooth = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(img, step))
        smooth = (smooth - smooth.mean()) / max(float(smooth.std()), 1e-6)
        self.image = sitk.GetImageFromArray(smooth.astype(np.float32))
        self.image.CopyInformation(img)
        self.array = smooth
        self.origin = np.array(img.GetOrigin())
        self.step = step

    def sample(self, X, Y, Z):
        """Values at broadcastable coordinate arrays (separable grid axes are resampled by SimpleITK)."""
        if X.ndim == 3 and X.shape[:2] == (1, 1) and Y.shape[::2] == (1, 1) and Z.shape[1:] == (1, 1):
            axes = (X.ravel(), Y.ravel(), Z.ravel())
            ref = sitk.Image([len(a) for a in axes], sitk.sitkFloat32)
            ref.SetOrigin([float(a[0]) for a in axes])
            ref.SetSpacing([float(a[1] - a[0]) if len(a) > 1 else 1.0 for a in axes])
            out = sitk.Resample(self.image, ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32,
                                True)
            return sitk.GetArrayFromImage(out)
        return trilinear(self.array, self.origin, self.step, X, Y, Z)


def trilinear(array, origin, step, X, Y, Z):
    """Linear interpolation of `array` (z, y, x[, c]) on a lattice (origin xyz, isotropic step), clamped."""
    X, Y, Z = np.broadcast_arrays(X, Y, Z)
    shape = array.shape[:3]
    flat_array = array.reshape(np.prod(shape), -1)
    base, frac = [], []
    for c, o, n in zip((Z, Y, X), np.asarray(origin)[::-1], shape):
        pos = np.clip((c.ravel() - o) / step, 0.0, n - 1.000001)
        b = pos.astype(np.intp)
        base.append(b)
        frac.append((pos - b)[:, None])
    flat = (base[0] * shape[1] + base[1]) * shape[2] + base[2]
    strides = (shape[1] * shape[2], shape[2], 1)
    out = np.zeros((flat.size, flat_array.shape[1]))
    for dz in (0, 1):
        wz = frac[0] if dz else 1 - frac[0]
        for dy in (0, 1):
            wzy = wz * (frac[1] if dy else 1 - frac[1])
            for dx in (0, 1):
                w = wzy * (frac[2] if dx else 1 - frac[2])
                out += w * flat_array.take(flat + dz * strides[0] + dy * strides[1] + dx * strides[2], axis=0)
    return out.reshape(X.shape + array.shape[3:])


# ---------------------------------------------------------------- canvases: grids or point lists
class GridCanvas:
    """Paints tissue classes onto an axis-aligned grid, each painter only inside its bounding box."""

    def __init__(self, grid: Grid):
        self.axes = [a.astype(np.float32) for a in grid.axes()]
        self.cls = np.zeros(grid.size[::-1], np.uint8)

    def paint(self, bbox, painter):
        sl = []
        for a, (lo, hi) in zip(self.axes, bbox):
            i0, i1 = np.searchsorted(a, lo), np.searchsorted(a, hi, side="right")
            if i1 <= i0:
                return
            sl.append(slice(i0, i1))
        X = self.axes[0][sl[0]][None, None, :]
        Y = self.axes[1][sl[1]][None, :, None]
        Z = self.axes[2][sl[2]][:, None, None]
        region = self.cls[sl[2], sl[1], sl[0]]
        values = np.broadcast_to(painter(X, Y, Z, region), region.shape)
        np.copyto(region, values, where=values != KEEP)


class _PointCanvas:
    def __init__(self, points: np.ndarray):
        self.X, self.Y, self.Z = (np.asarray(points, float)[:, i] for i in range(3))
        self.cls = np.zeros(len(points), np.uint8)

    def paint(self, bbox, painter):
        inside = np.ones(len(self.cls), bool)
        for c, (lo, hi) in zip((self.X, self.Y, self.Z), bbox):
            inside &= (c >= lo) & (c <= hi)
        if inside.any():
            region = self.cls[inside]
            values = np.broadcast_to(painter(self.X[inside], self.Y[inside], self.Z[inside], region), region.shape)
            self.cls[inside] = np.where(values != KEEP, values, region)


def _ellipse2(X, Y, cx, cy, a, b):
    return ((X - cx) / a) ** 2 + ((Y - cy) / b) ** 2


def _segment_distance(X, Y, Z, p0, p1):
    p0 = [float(v) for v in p0]
    d = [float(b) - a for a, b in zip(p0, p1)]
    rx, ry, rz = X - p0[0], Y - p0[1], Z - p0[2]
    t = np.clip((rx * d[0] + ry * d[1] + rz * d[2]) / sum(v * v for v in d), 0.0, 1.0)
    return np.sqrt((rx - t * d[0]) ** 2 + (ry - t * d[1]) ** 2 + (rz - t * d[2]) ** 2)


def random_rotation(rng, max_deg):
    """Random rotation matrix of at most `max_deg` about a random axis (Rodrigues)."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = math.radians(rng.uniform(-max_deg, max_deg))
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


# ---------------------------------------------------------------- the anatomy
class Anatomy:
    """Random but plausible abdominal anatomy in reference-frame millimetres (no tumours)."""

    def __init__(self, rng, cirrhotic: bool):
        u = rng.uniform
        self.body = (u(150, 168), u(115, 130))  # outer semi-axes x, y
        self.fat = u(10, 26)
        self.wall = 10.0
        self.cavity = (self.body[0] - self.fat - self.wall, self.body[1] - self.fat - self.wall)
        self.dome = u(75, 88)  # right hemidiaphragm apex z
        right_scale, left_scale = (0.86, 1.12) if cirrhotic else (1.0, 1.0)
        self.lobes = [
            (np.array([-68 + u(-5, 5), -4 + u(-4, 4), 12 + u(-5, 5)]),
             np.array([80, 78, 76]) * right_scale * u(0.93, 1.07), random_rotation(rng, 8)),
            (np.array([14 + u(-6, 6), -46 + u(-4, 4), 32 + u(-5, 5)]),
             np.array([64, 36, 40]) * left_scale * u(0.92, 1.08), random_rotation(rng, 10)),
        ]
        box_lo, box_hi = (-175, -110, -110), (110, 110, 130)
        self.liver_shape = Field(rng, box_lo, box_hi, 60.0)
        self.liver_surface = Field(rng, box_lo, box_hi, 8.0) if cirrhotic else None
        self.nodules = Field(rng, box_lo, box_hi, 6.0) if cirrhotic else None
        self.viscera = Field(rng, (-180, -140, -200), (180, 140, 200), 16.0)
        self.spleen_texture = Field(rng, (40, -40, -60), (160, 120, 130), 12.0)
        self.spleen = (np.array([92 + u(-6, 6), 42 + u(-5, 5), 30 + u(-6, 6)]),
                       np.array([30, 48, 55]) * u(0.85, 1.15), random_rotation(rng, 15))
        self.kidneys = [
            (np.array([side * 72 + u(-4, 4), 58 + u(-4, 4), z + u(-6, 6)]), np.array([27, 22, 52]) * u(0.9, 1.1),
             random_rotation(rng, 12)) for side, z in ((-1, -52), (1, -40))
        ]
        self.gallbladder = (np.array([-38 + u(-5, 5), -52 + u(-4, 4), -38 + u(-5, 5)]),
                            np.array([14, 14, 32]) * u(0.85, 1.15), random_rotation(rng, 20))
        self.aorta = (np.array([16 + u(-3, 3), 34 + u(-3, 3)]), u(10, 13))
        self.ivc = (np.array([-24 + u(-3, 3), 30 + u(-3, 3)]), u(10, 12))
        self.spine = np.array([u(-3, 3), 66 + u(-3, 3)])
        self.disc_phase = u(0, 32)
        j = lambda p: np.asarray(p, float) + rng.uniform(-4, 4, 3)  # noqa: E731
        conf, hilum, right, left = j((6, 22, -62)), j((-34, 4, -6)), j((-74, 6, 8)), j((-4, -26, 18))
        hv = j((self.ivc[0][0], self.ivc[0][1] - 4, 64))
        self.portal = [  # (start, end, radius)
            (j((10, 18, -150)), conf, 6.5), (conf, hilum, 7.0), (hilum, right, 5.5), (hilum, left, 4.5),
            (right, j((-96, -30, 34)), 3.5), (right, j((-104, 34, -8)), 3.5), (left, j((30, -46, 36)), 3.0),
        ]
        self.hepatic = [(hv, j((-108, 18, 22)), 4.0), (hv, j((-46, -44, 4)), 3.5), (hv, j((8, -40, 44)), 3.0)]
        self.points = {"portal_confluence": conf, "portal_bifurcation": hilum, "right_portal_branching": right,
                       "left_portal_vein": left, "hepatic_vein_confluence": hv}

    # -- implicit shapes ------------------------------------------------------------------------
    def diaphragm(self, X, Y):
        right = self.dome - ((X + 65) ** 2 + (Y - 10) ** 2) / 440.0
        left = self.dome - 12 - ((X - 70) ** 2 + (Y - 10) ** 2) / 440.0
        return np.maximum(right, left)

    @staticmethod
    def _ellipsoid(X, Y, Z, centre, axes, rot):
        dx, dy, dz = X - float(centre[0]), Y - float(centre[1]), Z - float(centre[2])
        r = [[float(rot[j, i]) / float(axes[i]) for j in range(3)] for i in range(3)]
        q = [r[i][0] * dx + r[i][1] * dy + r[i][2] * dz for i in range(3)]
        return q[0] ** 2 + q[1] ** 2 + q[2] ** 2

    def liver_inside(self, X, Y, Z):
        r = [np.sqrt(self._ellipsoid(X, Y, Z, *lobe)) for lobe in self.lobes]
        k = 10.0
        f = -np.log(np.exp(-k * r[0]) + np.exp(-k * r[1])) / k  # smooth union of the two lobes
        f = f - 0.07 * self.liver_shape.sample(X, Y, Z)
        if self.liver_surface is not None:
            f = f - 0.035 * self.liver_surface.sample(X, Y, Z)
        return (f < 1.0) & (Z < self.diaphragm(X, Y) - 2.0) & (_ellipse2(X, Y, 0, 0, *self.cavity) < 0.97)

    # -- painters ---------------------------------------------------------------------------------
    def paint(self, canvas):
        a, b = self.body
        ca, cb = self.cavity
        big = 1e4

        def body(X, Y, Z, cur):
            outer = _ellipse2(X, Y, 0, 0, a, b) < 1
            inner = _ellipse2(X, Y, 0, 0, a - self.fat, b - self.fat) < 1
            return np.where(inner, MUSCLE, np.where(outer, FAT, AIR)).astype(np.uint8)

        def viscera(X, Y, Z, cur):
            inside = _ellipse2(X, Y, 0, 0, ca, cb) < 1
            fat = self.viscera.sample(X, Y, Z) > -0.2
            return np.where(inside, np.where(fat, FAT, BOWEL), KEEP).astype(np.uint8)

        def chest(X, Y, Z, cur):
            above = Z > self.diaphragm(X, Y)
            inside = _ellipse2(X, Y, 0, 0, ca, cb) < 1
            heart = _ellipse2(X, Y, 5, -25, 60, 55) + ((Z - self.dome - 45) / 60.0) ** 2 < 1
            return np.where(above & inside, np.where(heart, HEART, LUNG), KEEP).astype(np.uint8)

        def paraspinal(X, Y, Z, cur):
            m = (_ellipse2(X, Y, self.spine[0] - 42, self.spine[1] + 40, 26, 20) < 1) | (
                _ellipse2(X, Y, self.spine[0] + 42, self.spine[1] + 40, 26, 20) < 1)
            return np.where(m, MUSCLE, KEEP).astype(np.uint8)

        def spine(X, Y, Z, cur):
            sx, sy = self.spine
            r2 = (X - sx) ** 2 + (Y - sy) ** 2
            disc = np.mod(Z - self.disc_phase, 32.0) < 6.0
            vert = np.where(r2 < 16.5 ** 2, np.where(disc, DISC, MARROW), np.where(r2 < 19 ** 2, CORTEX, KEEP))
            canal = (X - sx) ** 2 + (Y - sy - 29) ** 2 < 8 ** 2
            arch = (_ellipse2(X, Y, sx, sy + 30, 14, 13) < 1) | (_ellipse2(X, Y, sx, sy + 48, 5, 12) < 1)
            return np.where(canal, CSF, np.where(arch, CORTEX, vert)).astype(np.uint8)

        def tube2d(centre, radius, cls):
            return lambda X, Y, Z, cur: np.where(
                (X - centre[0]) ** 2 + (Y - centre[1]) ** 2 < radius ** 2, cls, KEEP).astype(np.uint8)

        def ellipsoid(spec, cls, below_diaphragm=False):
            def painter(X, Y, Z, cur):
                m = self._ellipsoid(X, Y, Z, *spec) < 1
                m &= _ellipse2(X, Y, 0, 0, ca, cb) < 0.97
                if below_diaphragm:
                    m &= Z < self.diaphragm(X, Y) - 2.0
                return np.where(m, cls, KEEP).astype(np.uint8)
            return painter

        def spleen(X, Y, Z, cur):
            m = self._ellipsoid(X, Y, Z, *self.spleen) < 1
            m &= (_ellipse2(X, Y, 0, 0, ca, cb) < 0.97) & (Z < self.diaphragm(X, Y) - 2.0)
            patchy = self.spleen_texture.sample(X, Y, Z) > 0.3
            return np.where(m, np.where(patchy, SPLEEN_B, SPLEEN), KEEP).astype(np.uint8)

        def liver(X, Y, Z, cur):
            m = self.liver_inside(X, Y, Z)
            cls = np.full(m.shape, LIVER, np.uint8)
            if self.nodules is not None:
                cls[self.nodules.sample(X, Y, Z) > 0.6] = NODULE
            return np.where(m, cls, KEEP).astype(np.uint8)

        def tube(p0, p1, radius, cls, only=None):
            def painter(X, Y, Z, cur):
                m = _segment_distance(X, Y, Z, p0, p1) < radius
                if only is not None:
                    m &= np.isin(cur, only)
                return np.where(m, cls, KEEP).astype(np.uint8)
            return painter

        def box(centre, radii):
            return [(c - r, c + r) for c, r in zip(centre, radii)]

        full = [(-big, big)] * 3
        canvas.paint([(-a, a), (-b, b), (-big, big)], body)
        canvas.paint([(-ca, ca), (-cb, cb), (-big, big)], viscera)
        canvas.paint([(-ca, ca), (-cb, cb), (self.dome - 40, big)], chest)
        canvas.paint(full, paraspinal)
        for spec in self.kidneys:
            canvas.paint(box(spec[0], [max(spec[1])] * 3), ellipsoid(spec, KIDNEY))
        canvas.paint(box(self.spleen[0], [max(self.spleen[1])] * 3), spleen)
        reach = [c[:, None] + np.array([-1.15, 1.15]) * ax.max() for c, ax, _ in self.lobes]
        canvas.paint([(min(r[i][0] for r in reach), max(r[i][1] for r in reach)) for i in range(2)]
                     + [(min(r[2][0] for r in reach), self.dome)], liver)
        canvas.paint(box(self.gallbladder[0], [max(self.gallbladder[1])] * 3),
                     ellipsoid(self.gallbladder, GALLBLADDER, True))
        for p0, p1, r in self.hepatic:
            canvas.paint(list(zip(np.minimum(p0, p1) - r, np.maximum(p0, p1) + r)),
                         tube(p0, p1, r, HEPATIC_VEIN, only=[LIVER, NODULE]))
        canvas.paint([(self.ivc[0][0] - 13, self.ivc[0][0] + 13), (self.ivc[0][1] - 13, self.ivc[0][1] + 13),
                      (-big, big)], tube2d(self.ivc[0], self.ivc[1], IVC))
        canvas.paint([(self.aorta[0][0] - 14, self.aorta[0][0] + 14),
                      (self.aorta[0][1] - 14, self.aorta[0][1] + 14), (-big, big)],
                     tube2d(self.aorta[0], self.aorta[1], AORTA))
        canvas.paint([(self.spine[0] - 50, self.spine[0] + 50), (self.spine[1] - 20, self.spine[1] + 62),
                      (-big, big)], spine)
        for p0, p1, r in self.portal:
            canvas.paint(list(zip(np.minimum(p0, p1) - r, np.maximum(p0, p1) + r)), tube(p0, p1, r, PORTAL))

    def classes_at(self, points):
        canvas = _PointCanvas(points)
        self.paint(canvas)
        return canvas.cls

    def vessel_clearance(self, centres):
        """Distance (mm) from each centre to the surface of the nearest portal/hepatic vein or IVC."""
        c = np.asarray(centres, float)
        X, Y, Z = c[:, 0], c[:, 1], c[:, 2]
        d = [_segment_distance(X, Y, Z, p0, p1) - r for p0, p1, r in self.portal + self.hepatic]
        d.append(np.hypot(X - self.ivc[0][0], Y - self.ivc[0][1]) - self.ivc[1])
        return np.min(d, axis=0)
