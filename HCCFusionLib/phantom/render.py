"""Phantom rendering: sample the tissue model through a series' inverse transform, blur, add noise."""
from __future__ import annotations

import math

import numpy as np

from .tissue import COLUMN, CT_PHASES, MR_DYNAMIC, MR_MIN_SPACING, MR_SEQUENCES
from .anatomy import Grid
from .motion import InverseMap


# ---------------------------------------------------------------- rendering
def _blur_plane(plane: np.ndarray, tmp: np.ndarray) -> np.ndarray:
    """In-place [1, 2, 1]/4 blur of one slice along x and y (the in-plane point-spread function)."""
    quarter = np.float32(0.25)
    for lo, mid, hi in (((slice(None), slice(0, -2)), (slice(None), slice(1, -1)), (slice(None), slice(2, None))),
                        ((slice(0, -2),), (slice(1, -1),), (slice(2, None),))):
        inner = tmp[mid]
        np.add(plane[lo], plane[hi], out=inner)
        inner += plane[mid]
        inner += plane[mid]
        inner *= quarter
        plane[mid] = inner
    return plane


_BLUR_NOISE_GAIN = math.sqrt(1 / 12) * 0.375  # SD of blurred uniform(-0.5, 0.5) noise


def _lerp_weights(coords: np.ndarray, origin: float, step: float, n: int) -> np.ndarray:
    """(len(coords), n) matrix of linear-interpolation weights of `coords` on a lattice (clamped at the ends)."""
    pos = np.clip((coords - origin) / step, 0, n - 1 - 1e-9)
    base = np.floor(pos).astype(int)
    w = np.zeros((len(coords), n), np.float32)
    rows = np.arange(len(coords))
    w[rows, base] = 1 - (pos - base)
    w[rows, np.minimum(base + 1, n - 1)] += pos - base
    return w


def sample_classes(model: np.ndarray, model_grid: Grid, grid: Grid, inverse: "InverseMap | None",
                    lattice_mm: float = 10.0) -> np.ndarray:
    """Nearest-neighbour sample of the model at inverse(series voxel centres), slice by slice.

    The smooth series->reference map is evaluated exactly on a `lattice_mm` lattice and interpolated
    linearly (separable matrix products), which keeps full-size phantoms fast.
    """
    axes = grid.axes()
    mo, ms = np.asarray(model_grid.origin), np.asarray(model_grid.spacing)
    mshape = np.asarray(model.shape)  # (z, y, x)
    if inverse is None:
        idx = [np.clip(np.rint((a - o) / s), 0, n - 1).astype(np.intp)
               for a, o, s, n in zip(axes, mo, ms, mshape[::-1])]
        return model[np.ix_(idx[2], idx[1], idx[0])]
    lo = np.array([a[0] for a in axes]) - lattice_mm
    count = [int(np.ceil((a[-1] - a[0]) / lattice_mm)) + 3 for a in axes]
    Z, Y, X = np.meshgrid(*[lo[i] + lattice_mm * np.arange(count[i]) for i in (2, 1, 0)], indexing="ij")
    points = np.stack([X.ravel(), Y.ravel(), Z.ravel()], 1)
    # model voxel coordinates + 0.5, so that truncation after clipping rounds to the nearest voxel
    index = ((inverse(points) - mo) / ms + 0.5).reshape(count[2], count[1], count[0], 3)
    lattice = index.astype(np.float32).transpose(0, 3, 1, 2)  # (cz, 3, cy, cx)
    wx = _lerp_weights(axes[0], lo[0], lattice_mm, count[0])
    along_x = np.ascontiguousarray(np.matmul(lattice, wx.T).transpose(0, 2, 1, 3))  # (cz, cy, 3, nx)
    along_x = along_x.reshape(count[2], count[1], -1)
    (y0, y1, fy), (z0, z1, fz) = (_lerp_pairs(a, o, lattice_mm, n) for a, o, n in zip(axes[1:], lo[1:], count[1:]))
    fy = fy[:, None]
    flat_model = model.ravel()
    out = np.empty(grid.size[::-1], np.uint8)
    ny, nx = len(axes[1]), len(axes[0])
    upper = [np.float32(n - 0.5) for n in mshape[::-1]]  # x, y, z
    for z in range(grid.size[2]):
        plane = (1 - fz[z]) * along_x[z0[z]] + fz[z] * along_x[z1[z]]  # (cy, 3 nx)
        coords = plane[y0] * (1 - fy)
        coords += plane[y1] * fy
        coords = coords.reshape(ny, 3, nx)
        for k in range(3):
            np.clip(coords[:, k], 0, upper[k], out=coords[:, k])
        i = coords.astype(np.int32)
        flat = i[:, 2] * np.int32(mshape[1])
        flat += i[:, 1]
        flat *= np.int32(mshape[2])
        flat += i[:, 0]
        out[z] = flat_model.take(flat)
    return out


def _lerp_pairs(coords: np.ndarray, origin: float, step: float, n: int) -> tuple:
    """Lower/upper lattice indices and the upper weight for linear interpolation of `coords` (clamped)."""
    pos = np.clip((coords - origin) / step, 0, n - 1 - 1e-6)
    base = np.floor(pos).astype(np.intp)
    return base, np.minimum(base + 1, n - 1), (pos - base).astype(np.float32)


def render_series(name, classes, grid, table, rng, noise_sd, hu_offset, *, lut=None, coil=None):
    """Image of one series from its tissue classes, slice by slice (cache-sized work): values, noise and the
    in-plane blur. CT: int16 HU, uniform noise made near-Gaussian and correlated by the blur (SD `noise_sd`
    after it). MR: float, smooth multiplicative bias field and Rician noise; ADC: Gaussian noise, no bias.
    `lut` (values per class) replaces the table column; `coil` (4 bias coefficients) shares one receive-coil
    bias field between series of one acquisition (else drawn from `rng`)."""
    lut = (table[:, COLUMN[name]] if lut is None else np.asarray(lut)).astype(np.float32)
    nz, ny, nx = classes.shape
    tmp = np.empty((ny, nx), np.float32)
    if name in CT_PHASES:
        lut += np.float32(hu_offset)
        scale = np.float32(noise_sd / _BLUR_NOISE_GAIN)
        out = np.empty(classes.shape, np.int16)
        for z in range(nz):
            plane = lut.take(classes[z])
            if noise_sd > 0:
                noise = rng.random((ny, nx), dtype=np.float32)
                noise -= np.float32(0.5)
                noise *= scale
                plane += noise
            _blur_plane(plane, tmp)
            np.rint(plane, out=plane)
            np.clip(plane, -1024, 3071, out=plane)
            out[z] = plane
        return grid.image(out)
    out = np.empty(classes.shape, np.float32)
    if name == "ADC":
        for z in range(nz):
            plane = _blur_plane(lut.take(classes[z]), tmp)
            plane += rng.normal(0.0, 60.0, (ny, nx)).astype(np.float32)
            out[z] = np.maximum(plane, 0)
        return grid.image(out)
    axes = [a / 150.0 for a in grid.axes()]
    c = rng.normal(0, 0.12, 4) if coil is None else np.asarray(coil, float)
    bias_xy = np.exp(c[0] * axes[0][None, :] + c[1] * axes[1][:, None]
                     + c[3] * (axes[0][None, :] ** 2 + axes[1][:, None] ** 2)).astype(np.float32)
    sigma = 0.025 * 500
    for z in range(nz):
        plane = _blur_plane(lut.take(classes[z]), tmp)
        plane *= bias_xy * np.float32(math.exp(c[2] * axes[2][z]))
        plane += rng.normal(0, sigma, (ny, nx)).astype(np.float32)
        imag = rng.normal(0, sigma, (ny, nx)).astype(np.float32)
        out[z] = np.sqrt(plane * plane + imag * imag)  # Rician magnitude
    return grid.image(out)


def series_grid(name, base: Grid, rng, misaligned: bool) -> Grid:
    size, spacing = base.size, base.spacing
    if name in MR_SEQUENCES + MR_DYNAMIC or name.startswith("DWI"):
        new_spacing = tuple(max(s, m) for s, m in zip(spacing, MR_MIN_SPACING))
        size = tuple(int(round(n * s / t)) for n, s, t in zip(size, spacing, new_spacing))
        spacing = new_spacing
    elif not misaligned:
        return base
    shift = tuple(rng.uniform(-2.0, 2.0, 3)) if misaligned else (0.0, 0.0, 0.0)
    return Grid.centred(size, spacing, shift)
