"""pyradiomics' image filters in torch, on the device of the input tensor (arrays are (z, y, x), float64).

- `log`: SimpleITK's ``LaplacianRecursiveGaussianImageFilter`` (normalised across scale), the same recursive
  (Deriche-type, 4th-order IIR) filters as ITK: a second-derivative pass along one axis, zero-order smoothing along
  the others, summed over axes with 1/spacing² weights; each line starts from ITK's edge-extension initial
  conditions. The recursion runs over a line's length with every line of the volume in one vector.
- `wavelet`: pyradiomics' ``getWaveletImage`` (PyWavelets' ``swtn``, undecimated, level 1 per step, periodic
  extension; odd axes wrap-padded by one voxel and trimmed after): all 2³ sub-bands, named as pyradiomics names
  them (letter k = axis x, y, z; L = low pass, H = high pass).
"""
from __future__ import annotations

import math

import torch

# ITK's Deriche-type coefficients (RecursiveGaussianImageFilter): A1, B1, A2, B2 per order; W1, L1, W2, L2
_A1, _B1 = (1.3530, -0.6724, -1.3563), (1.8151, -3.4327, 5.2318)
_A2, _B2 = (-0.3531, 0.6724, 0.3446), (0.0902, 0.6100, -2.2355)
_W1, _L1, _W2, _L2 = 0.6681, -1.3932, 2.0787, -1.3732


def _d_coefficients(sigmad: float):
    c1, c2 = math.cos(_W1 / sigmad), math.cos(_W2 / sigmad)
    e1, e2 = math.exp(_L1 / sigmad), math.exp(_L2 / sigmad)
    d4 = e1 * e1 * e2 * e2
    d3 = -2 * c1 * e1 * e2 * e2 - 2 * c2 * e2 * e1 * e1
    d2 = 4 * c2 * c1 * e1 * e2 + e1 * e1 + e2 * e2
    d1 = -2 * (e2 * c2 + e1 * c1)
    d = (d1, d2, d3, d4)
    return d, 1.0 + sum(d), d1 + 2 * d2 + 3 * d3 + 4 * d4, d1 + 4 * d2 + 9 * d3 + 16 * d4


def _n_coefficients(sigmad: float, order: int):
    a1, b1, a2, b2 = _A1[order], _B1[order], _A2[order], _B2[order]
    s1, s2 = math.sin(_W1 / sigmad), math.sin(_W2 / sigmad)
    c1, c2 = math.cos(_W1 / sigmad), math.cos(_W2 / sigmad)
    e1, e2 = math.exp(_L1 / sigmad), math.exp(_L2 / sigmad)
    n0 = a1 + a2
    n1 = e2 * (b2 * s2 - (a2 + 2 * a1) * c2) + e1 * (b1 * s1 - (a1 + 2 * a2) * c1)
    n2 = 2 * e1 * e2 * ((a1 + a2) * c2 * c1 - (b1 * c2 * s1 + b2 * c1 * s2)) + a2 * e1 * e1 + a1 * e2 * e2
    n3 = e2 * e1 * e1 * (b2 * s2 - a2 * c2) + e1 * e2 * e2 * (b1 * s1 - a1 * c1)
    return [n0, n1, n2, n3], n0 + n1 + n2 + n3, n1 + 2 * n2 + 3 * n3, n1 + 4 * n2 + 9 * n3


def recursive_coefficients(sigma: float, spacing: float, order: int, normalize: bool = True) -> dict:
    """N, M, D and boundary coefficients of ITK's recursive Gaussian (order 0 or 2, symmetric kernels)."""
    sigmad = sigma / spacing
    d, sd, dd, ed = _d_coefficients(sigmad)
    if order == 0:
        n, sn, _, _ = _n_coefficients(sigmad, 0)
        scale = 1.0 / (2 * sn / sd - n[0])
    elif order == 2:
        n0, sn0, dn0, en0 = _n_coefficients(sigmad, 0)
        n2, sn2, dn2, en2 = _n_coefficients(sigmad, 2)
        beta = -(2 * sn2 - sd * n2[0]) / (2 * sn0 - sd * n0[0])
        n = [a + beta * b for a, b in zip(n2, n0)]
        sn, dn, en = sn2 + beta * sn0, dn2 + beta * dn0, en2 + beta * en0
        alpha = (en * sd * sd - ed * sn * sd - 2 * dn * dd * sd + 2 * dd * dd * sn) / sd ** 3
        scale = (sigma ** 2 if normalize else 1.0) / alpha
    else:
        raise ValueError(f"order {order} is not supported (0 or 2)")
    n = [v * scale for v in n]
    m = [n[1] - d[0] * n[0], n[2] - d[1] * n[0], n[3] - d[2] * n[0], -d[3] * n[0]]
    sn, sm = sum(n), sum(m)
    return {"n": n, "m": m, "d": d, "bn": [v * sn / sd for v in d], "bm": [v * sm / sd for v in d]}


def _recursive_lines(x: torch.Tensor, coefficients: list) -> torch.Tensor:
    """ITK's `FilterDataArray` along the first axis of `x` (n, B, …): batch item b with `coefficients[b]` (one D
    set for all: the same sigma and spacing). Causal and anticausal passes run as one recursion (the anticausal
    one on the flipped line), with ITK's edge-extension start values; each step reads one contiguous slice."""
    ln, batch = x.shape[0], x.shape[1]
    if ln < 4:
        raise ValueError("the recursive Gaussian needs at least 4 voxels along each axis")
    d = coefficients[0]["d"]
    # feed: the feed-forward sums, causal ones in items [0, B), anticausal ones (on the flipped line) in [B, 2B):
    # forward[i] = sum_k n[k] x[i - k], backward'[j] = sum_k m[k] x'[j - 1 - k] (x' = flipped x), an index before
    # the start taking the edge value (in place, one pass per tap: no temporaries of the whole volume)
    flipped = x.flip(0)
    feed = torch.zeros((ln, 2 * batch) + tuple(x.shape[2:]), dtype=x.dtype, device=x.device)
    edge = [torch.empty_like(feed[0]) for _ in range(4)]
    for b, c in enumerate(coefficients):
        for k in range(4):
            for item, source, tap, shift, bound in ((b, x, c["n"][k], k, c["bn"][k]),
                                                    (batch + b, flipped, c["m"][k], k + 1, c["bm"][k])):
                feed[shift:, item].add_(source[:ln - shift, b], alpha=tap)
                if shift:
                    feed[:shift, item].add_(source[0, b].expand_as(feed[:shift, item]), alpha=tap)
                edge[k][item] = source[0, b] * bound
    out = feed  # the recursion in place: y[i] = feed[i] - sum_k d[k] y[i - 1 - k] (edge terms before the start)
    for i in range(ln):
        row = out[i]
        for k in range(4):
            if k < i:
                row.sub_(out[i - 1 - k], alpha=d[k])
            else:
                row.sub_(edge[k])
    return out[:, :batch] + out[:, batch:].flip(0)


def log(image: torch.Tensor, spacing_xyz, sigma: float) -> torch.Tensor:
    """Laplacian of Gaussian of `image` (z, y, x) as SimpleITK's LaplacianRecursiveGaussianImageFilter with
    NormalizeAcrossScale on (pyradiomics' `getLoGImage`), in float64: term t is the second derivative along axis t
    smoothed along the others, weighted 1/spacing²; the three terms run as one batch per axis (separable passes
    commute: the pass order differs from ITK's only in float64 rounding)."""
    x = image.double()
    terms = x.unsqueeze(0).expand(3, *x.shape)
    for dim in range(3):  # ITK direction dim = x, y, z -> array axis 2 - dim (+1: the terms axis)
        spacing = float(spacing_xyz[dim])
        coefficients = [recursive_coefficients(sigma, spacing, 2 if term == dim else 0) for term in range(3)]
        lines = terms.movedim(3 - dim, 0).contiguous()  # (n, 3, …): one step = one contiguous slice
        terms = _recursive_lines(lines, coefficients).movedim(0, 3 - dim)
    weights = torch.tensor([1.0 / float(s) ** 2 for s in spacing_xyz], dtype=x.dtype, device=x.device)
    return (terms * weights.reshape(3, 1, 1, 1)).sum(0)


def log_applies(size_xyz, spacing_xyz, sigma: float) -> bool:
    """pyradiomics' condition for a LoG image: every axis ≥ 4 voxels and ≥ ceil(sigma / spacing) + 1."""
    return sigma > 0 and min(size_xyz) >= 4 and all(
        n >= math.ceil(sigma / s) + 1 for n, s in zip(size_xyz, spacing_xyz))


def log_name(sigma) -> str:
    return "log-sigma-%s-mm-3D" % str(sigma).replace(".", "-")


# ---------------------------------------------------------------- wavelet
def _swt_axis(x: torch.Tensor, axis: int, taps: list) -> torch.Tensor:
    """Level-1 undecimated transform along `axis` with periodic extension, as PyWavelets' swt: out[i] =
    sum_j taps[j] x[(i + L/2 - j) mod n]."""
    length, n = len(taps), x.shape[axis]
    half = length // 2
    # x[(i + half - j) mod n] for j = 0 … L-1: a view of x extended periodically by `half` on the right and
    # L - 1 - half on the left (n ≥ L/2 here: pyradiomics' images are larger than the filter)
    ext = torch.cat([x.narrow(axis, n - (length - 1 - half), length - 1 - half), x, x.narrow(axis, 0, half)], axis)
    out = torch.zeros_like(x)
    for j in range(length):
        out.add_(ext.narrow(axis, length - 1 - j, n), alpha=taps[j])
    return out


def wavelet(image: torch.Tensor, name: str = "coif1", level: int = 1, start_level: int = 0) -> dict:
    """{pyradiomics image type name: sub-band (z, y, x)} of pyradiomics' `getWaveletImage` (3D)."""
    import pywt  # only for the filter taps

    w = pywt.Wavelet(name)
    lo, hi = [float(v) for v in w.dec_lo], [float(v) for v in w.dec_hi]
    shape = image.shape
    data = image.double()  # PyWavelets works in float32 on float32 images: its sub-bands differ by its rounding
    for axis, n in enumerate(shape):  # odd axes: one voxel wrapped around
        if n % 2:
            data = torch.cat([data, data.narrow(axis, 0, 1)], axis)
    trim = tuple(slice(0, n) for n in shape)
    out = {}
    for step in range(start_level + level):
        bands = {"": data}
        for axis in (2, 1, 0):  # pyradiomics' axes order: x, y, z -> name letters in that order
            bands = {key + tag: _swt_axis(band, axis, taps) for key, band in bands.items()
                     for tag, taps in (("L", lo), ("H", hi))}
        data = bands.pop("LLL")
        if step >= start_level:
            prefix = "wavelet" if step == start_level else f"wavelet{step - start_level + 1}"
            out.update({f"{prefix}-{key}": band[trim] for key, band in bands.items()})
    prefix = "wavelet" if level == 1 else f"wavelet{level}"
    out[f"{prefix}-LLL"] = data[trim]
    return out
