"""Grey-level discretisation, first-order and texture features (GLCM, GLRLM, GLSZM, GLDM, NGTDM) in torch.

Each function takes tensors on any device (CPU or CUDA; no numpy, no per-voxel Python loop) and returns
{pyradiomics feature name: 0-d float64 tensor}, with pyradiomics' definitions and conventions (3D, distance 1,
symmetrical GLCM, no angle weighting, features averaged over the 13 directions, empty grey levels, run lengths,
sizes and angles removed, eps = 2^-52): see `torch_backend` for the measured agreement.

Matrices: GLCM by `bincount` of neighbour pairs per direction; GLRLM from run starts and ends sorted along
each direction's lines; GLSZM by 26-connected components (root hooking and pointer jumping); GLDM and NGTDM from
the 13 directions' neighbour pairs, counted for both voxels.
"""
from __future__ import annotations

import itertools
import math

import torch

EPS = 2.0 ** -52  # numpy.spacing(1), pyradiomics' eps
#: The 13 directions of a 3D grid (z, y, x), first non-zero component positive (with their opposites: the 26
#: neighbours)
DIRECTIONS = [d for d in itertools.product((-1, 0, 1), repeat=3) if d != (0, 0, 0) and d > (0, 0, 0)]


# ---------------------------------------------------------------- discretisation
def pyradiomics_levels(values: torch.Tensor, bin_width=None, bin_count=None) -> torch.Tensor:
    """Grey levels 1, 2, … of ROI `values` (the image's dtype, e.g. float32) as pyradiomics' `binImage`: fixed bin
    width from edges at multiples of the width (`getBinEdges`, numpy.digitize), or `bin_count` bins between the ROI
    minimum and maximum (numpy.histogram's edges, the last one raised by 1)."""
    lo, hi = values.min(), values.max()
    if bin_count:
        n = int(bin_count)
        a, b = float(lo), float(hi)
        if a == b:
            a, b = a - 0.5, b + 0.5
        step = (b - a) / n
        edges = a + step * torch.arange(n + 1, dtype=torch.float64, device=values.device)
        edges[-1] = b
        edges = edges.to(values.dtype).double()
        edges[-1] += 1
    else:
        width = float(bin_width if bin_width is not None else 25)
        rest = torch.fmod(lo, width)  # numpy's float remainder: fmod, moved to the divisor's sign
        if float(rest) != 0 and (float(rest) < 0) != (width < 0):
            rest = rest + width
        low = float(lo - rest)
        high = float(hi + 2 * width)
        count = max(int(math.ceil((high - low) / width)), 1)
        edges = low + width * torch.arange(count, dtype=torch.float64, device=values.device)
        if count == 1:
            edges = torch.tensor([low - 0.5, low + 0.5], dtype=torch.float64, device=values.device)
    return torch.bucketize(values.double(), edges, right=True)


def ibsi_levels(values: torch.Tensor, bin_width=None, bin_count=None, lower_bound=None) -> torch.Tensor:
    """IBSI discretisation as `ibsi.discretise` (fixed bin number between min and max; fixed bin size from
    `lower_bound`, else from the ROI minimum)."""
    values = values.double()
    if bin_count:
        n = int(bin_count)
        lo, hi = values.min(), values.max()
        if float(hi) == float(lo):
            return torch.ones_like(values, dtype=torch.long)
        return torch.clamp(torch.floor(n * (values - lo) / (hi - lo)).long() + 1, max=n)
    width = float(bin_width if bin_width is not None else 25)
    x0 = values.min() if lower_bound is None or not math.isfinite(lower_bound) else lower_bound
    return torch.floor((values - x0) / width).long() + 1


# ---------------------------------------------------------------- helpers
def _pair(shape, d):
    """(source slices, neighbour slices): voxel v and v + d, both inside `shape`."""
    src, dst = [], []
    for n, c in zip(shape, d):
        src.append(slice(max(0, -c), n - max(0, c)))
        dst.append(slice(max(0, c), n - max(0, -c)))
    return tuple(src), tuple(dst)


def _nanmean(x: torch.Tensor) -> torch.Tensor:
    return torch.nanmean(x)


def _entropy(p: torch.Tensor, dims) -> torch.Tensor:
    return -(p * torch.log2(p + EPS)).sum(dims)


# ---------------------------------------------------------------- first order
def firstorder(values: torch.Tensor, levels: torch.Tensor, spacing, shift: float = 0.0) -> dict:
    """First-order features of ROI intensities `values` (float64) and their grey levels (entropy, uniformity)."""
    x = values.double()
    n = x.numel()
    counts = torch.bincount(levels)
    p = counts[counts > 0].double() / n
    q = torch.quantile(x, torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9], dtype=torch.float64, device=x.device))
    mean = x.mean()
    dev = x - mean
    m2, m3, m4 = (dev ** 2).mean(), (dev ** 3).mean(), (dev ** 4).mean()
    m2_safe = torch.where(m2 == 0, torch.ones_like(m2), m2)
    inner = x[(x >= q[0]) & (x <= q[4])]
    energy = ((x + shift) ** 2).sum()
    return {"Energy": energy, "TotalEnergy": energy * math.prod(float(s) for s in spacing),
            "Entropy": _entropy(p, 0), "Minimum": x.min(), "10Percentile": q[0], "90Percentile": q[4],
            "Maximum": x.max(), "Mean": mean, "Median": torch.median(x) if n % 2 else x.sort().values[
                n // 2 - 1:n // 2 + 1].mean(),
            "InterquartileRange": q[3] - q[1], "Range": x.max() - x.min(),
            "MeanAbsoluteDeviation": dev.abs().mean(),
            "RobustMeanAbsoluteDeviation": (inner - inner.mean()).abs().mean(),
            "RootMeanSquared": torch.sqrt(energy / n), "Skewness": m3 / m2_safe ** 1.5,
            "Kurtosis": m4 / m2_safe ** 2, "Variance": m2, "Uniformity": (p ** 2).sum(),
            "StandardDeviation": torch.sqrt(m2)}


# ---------------------------------------------------------------- GLCM
def glcm(levels: torch.Tensor, mask: torch.Tensor, gray: torch.Tensor, ng: int) -> dict:
    """GLCM features: `levels` (long, crop), `mask` (bool), `gray` (grey levels present, sorted), `ng` (max)."""
    mats = []
    for d in DIRECTIONS:
        s, t = _pair(levels.shape, d)
        ok = mask[s] & mask[t]
        idx = (levels[s][ok] - 1) * ng + (levels[t][ok] - 1)
        mats.append(torch.bincount(idx, minlength=ng * ng).reshape(ng, ng))
    p = torch.stack(mats, -1).double()[gray - 1][:, gray - 1]
    p = p + p.transpose(0, 1)
    sums = p.sum((0, 1))
    if p.shape[2] > 1:
        p, sums = p[:, :, sums > 0], sums[sums > 0]
    p = p / sums
    g = gray.double()
    i, j = g[:, None, None], g[None, :, None]
    px, py = p.sum(1, keepdim=True), p.sum(0, keepdim=True)
    ux, uy = (i * p).sum((0, 1), keepdim=True), (j * p).sum((0, 1), keepdim=True)
    angles = p.shape[2]
    ksum = (gray[:, None] + gray[None, :] - 2).reshape(-1)
    kdiff = (gray[:, None] - gray[None, :]).abs().reshape(-1)
    flat = p.reshape(-1, angles)
    p_sum = torch.zeros(2 * ng - 1, angles, dtype=p.dtype, device=p.device).index_add_(0, ksum, flat)
    p_diff = torch.zeros(ng, angles, dtype=p.dtype, device=p.device).index_add_(0, kdiff, flat)
    k_sum = torch.arange(2, 2 * ng + 1, dtype=p.dtype, device=p.device)[:, None]
    k_diff = torch.arange(0, ng, dtype=p.dtype, device=p.device)[:, None]
    hxy = _entropy(p, (0, 1))
    sigx = ((i - ux) ** 2 * p).sum((0, 1)) ** 0.5
    sigy = ((j - uy) ** 2 * p).sum((0, 1)) ** 0.5
    corm = ((i - ux) * (j - uy) * p).sum((0, 1))
    corr = torch.where(sigx * sigy == 0, torch.ones_like(corm), corm / (sigx * sigy + EPS))
    hx, hy = _entropy(px, (0, 1)), _entropy(py, (0, 1))
    hxy1 = -(p * torch.log2(px * py + EPS)).sum((0, 1))
    hxy2 = -(px * py * torch.log2(px * py + EPS)).sum((0, 1))
    div = torch.fmax(hx, hy)
    imc1 = torch.where(div != 0, (hxy - hxy1) / torch.where(div != 0, div, torch.ones_like(div)), 0 * div)
    imc2 = torch.where(hxy2 == hxy, 0 * hxy, (1 - torch.exp(-2 * (hxy2 - hxy))) ** 0.5)
    diff_avg = (k_diff * p_diff).sum(0)
    cluster = i + j - ux - uy
    return {"Autocorrelation": _nanmean((p * i * j).sum((0, 1))), "JointAverage": ux.mean(),
            "ClusterProminence": _nanmean((p * cluster ** 4).sum((0, 1))),
            "ClusterShade": _nanmean((p * cluster ** 3).sum((0, 1))),
            "ClusterTendency": _nanmean((p * cluster ** 2).sum((0, 1))),
            "Contrast": _nanmean((p * (i - j) ** 2).sum((0, 1))), "Correlation": _nanmean(corr),
            "DifferenceAverage": _nanmean(diff_avg), "DifferenceEntropy": _nanmean(_entropy(p_diff, 0)),
            "DifferenceVariance": _nanmean((p_diff * (k_diff - diff_avg) ** 2).sum(0)),
            "JointEnergy": _nanmean((p ** 2).sum((0, 1))), "JointEntropy": _nanmean(hxy),
            "Imc1": _nanmean(imc1), "Imc2": _nanmean(imc2),
            "Idm": _nanmean((p_diff / (1 + k_diff ** 2)).sum(0)), "MCC": _mcc(p, px, py),
            "Idmn": _nanmean((p_diff / (1 + k_diff ** 2 / ng ** 2)).sum(0)),
            "Id": _nanmean((p_diff / (1 + k_diff)).sum(0)), "Idn": _nanmean((p_diff / (1 + k_diff / ng)).sum(0)),
            "InverseVariance": _nanmean((p_diff[1:] / k_diff[1:] ** 2).sum(0)),
            "MaximumProbability": _nanmean(p.amax((0, 1))), "SumAverage": _nanmean((k_sum * p_sum).sum(0)),
            "SumEntropy": _nanmean(_entropy(p_sum, 0)), "SumSquares": _nanmean(((i - ux) ** 2 * p).sum((0, 1)))}


def _mcc(p, px, py) -> torch.Tensor:
    """Maximal correlation coefficient: sqrt of the second largest eigenvalue of Q, averaged over angles."""
    if p.shape[0] < 2:
        return torch.tensor(1.0, dtype=torch.float64, device=p.device)
    pa = p.permute(2, 0, 1)  # (angle, i, k)
    q = torch.einsum("aik,ajk->aij", pa, pa / (px.permute(2, 0, 1) * py.permute(2, 0, 1) + EPS))
    eig = torch.linalg.eigvals(q.cpu())  # 13 small matrices: LAPACK on the host on every device
    order = torch.argsort(eig.real, dim=-1)  # numpy sorts by the real part first
    second = torch.gather(eig, -1, order[:, -2:-1])[:, 0]
    return torch.nanmean(torch.sqrt(second).real.to(p.device))


# ---------------------------------------------------------------- GLRLM
def _line_key(shape, d, device) -> torch.Tensor:
    """Per voxel: (line along `d`) × stride + position on it, so that sorting keys orders runs by line, then by
    position, and two voxels of one line differ by their distance in steps."""
    axis = next(i for i, c in enumerate(d) if c)  # first non-zero component (positive): position along the line
    coords = torch.meshgrid(*[torch.arange(n, device=device) for n in shape], indexing="ij")
    pos = coords[axis]
    stride = shape[axis] + 1
    key = torch.zeros(shape, dtype=torch.long, device=device)
    for i, (n, c) in enumerate(zip(shape, d)):
        key = key * (n + 2 * stride) + (coords[i] - pos * c + stride)
    return key * stride + pos


def _runs(levels: torch.Tensor, mask: torch.Tensor, d) -> tuple[torch.Tensor, torch.Tensor]:
    """(grey level, length) of every run along direction `d`: run starts and ends, each sorted by line and position,
    pair up in order."""
    s, t = _pair(levels.shape, d)
    cont = mask[s] & mask[t] & (levels[s] == levels[t])
    has_next, has_prev = torch.zeros_like(mask), torch.zeros_like(mask)
    has_next[s], has_prev[t] = cont, cont
    starts, ends = mask & ~has_prev, mask & ~has_next
    key = _line_key(levels.shape, d, levels.device)
    first, order = torch.sort(key[starts])
    last = torch.sort(key[ends]).values
    return levels[starts][order], last - first + 1


def glrlm(levels: torch.Tensor, mask: torch.Tensor, gray: torch.Tensor, ng: int) -> dict:
    nr = max(levels.shape)
    mats = []
    for d in DIRECTIONS:
        lv, ln = _runs(levels, mask, d)
        mats.append(torch.bincount((lv - 1) * nr + (ln - 1), minlength=ng * nr).reshape(ng, nr))
    p = torch.stack(mats, -1).double()[gray - 1]
    n_runs = p.sum((0, 1))
    if p.shape[2] > 1:
        p, n_runs = p[:, :, n_runs > 0], n_runs[n_runs > 0]
    n_runs = torch.where(n_runs == 0, torch.full_like(n_runs, math.nan), n_runs)
    pr, pg = p.sum(0), p.sum(1)
    keep = pr.sum(1) > 0
    p, pr = p[:, keep], pr[keep]
    jv = torch.arange(1, nr + 1, dtype=p.dtype, device=p.device)[keep][:, None]
    iv = gray.double()[:, None]
    i2, j2 = iv[:, :, None] ** 2, jv[None] ** 2
    pgn, prn = pg / n_runs, pr / n_runs
    u_i, u_j = (pgn * iv).sum(0, keepdim=True), (prn * jv).sum(0, keepdim=True)
    return {"ShortRunEmphasis": _nanmean((pr / jv ** 2).sum(0) / n_runs),
            "LongRunEmphasis": _nanmean((pr * jv ** 2).sum(0) / n_runs),
            "GrayLevelNonUniformity": _nanmean((pg ** 2).sum(0) / n_runs),
            "GrayLevelNonUniformityNormalized": _nanmean((pg ** 2).sum(0) / n_runs ** 2),
            "RunLengthNonUniformity": _nanmean((pr ** 2).sum(0) / n_runs),
            "RunLengthNonUniformityNormalized": _nanmean((pr ** 2).sum(0) / n_runs ** 2),
            "RunPercentage": _nanmean(n_runs / (pr * jv).sum(0)),
            "GrayLevelVariance": _nanmean((pgn * (iv - u_i) ** 2).sum(0)),
            "RunVariance": _nanmean((prn * (jv - u_j) ** 2).sum(0)),
            "RunEntropy": _nanmean(_entropy(p / n_runs, (0, 1))),
            "LowGrayLevelRunEmphasis": _nanmean((pg / iv ** 2).sum(0) / n_runs),
            "HighGrayLevelRunEmphasis": _nanmean((pg * iv ** 2).sum(0) / n_runs),
            "ShortRunLowGrayLevelEmphasis": _nanmean((p / (i2 * j2)).sum((0, 1)) / n_runs),
            "ShortRunHighGrayLevelEmphasis": _nanmean((p * i2 / j2).sum((0, 1)) / n_runs),
            "LongRunLowGrayLevelEmphasis": _nanmean((p * j2 / i2).sum((0, 1)) / n_runs),
            "LongRunHighGrayLevelEmphasis": _nanmean((p * j2 * i2).sum((0, 1)) / n_runs)}


# ---------------------------------------------------------------- zone-like matrices (no angles)
def _zone_features(p: torch.Tensor, gray: torch.Tensor, prefix_names: dict) -> dict:
    """Features shared by GLSZM and GLDM from P (grey level × size), empty sizes removed; names mapped."""
    ps, pg = p.sum(0), p.sum(1)
    jv = torch.arange(1, p.shape[1] + 1, dtype=p.dtype, device=p.device)
    nz = torch.clamp(p.sum(), min=1.0)
    n_vox = torch.clamp((ps * jv).sum(), min=1.0)
    keep = ps > 0
    p, ps, jv = p[:, keep], ps[keep], jv[keep]
    iv = gray.double()
    pgn, psn = pg / nz, ps / nz
    i2, j2 = iv[:, None] ** 2, jv[None] ** 2
    values = {"small": (ps / jv ** 2).sum() / nz, "large": (ps * jv ** 2).sum() / nz,
              "gln": (pg ** 2).sum() / nz, "glnn": (pg ** 2).sum() / nz ** 2,
              "sn": (ps ** 2).sum() / nz, "snn": (ps ** 2).sum() / nz ** 2, "percentage": nz / n_vox,
              "glv": (pgn * (iv - (pgn * iv).sum()) ** 2).sum(), "sv": (psn * (jv - (psn * jv).sum()) ** 2).sum(),
              "entropy": _entropy(p / nz, (0, 1)), "low": (pg / iv ** 2).sum() / nz, "high": (pg * iv ** 2).sum() / nz,
              "small_low": (p / (i2 * j2)).sum() / nz, "small_high": (p * i2 / j2).sum() / nz,
              "large_low": (p * j2 / i2).sum() / nz, "large_high": (p * i2 * j2).sum() / nz}
    return {name: values[key] for key, name in prefix_names.items()}


GLSZM_NAMES = {"small": "SmallAreaEmphasis", "large": "LargeAreaEmphasis", "gln": "GrayLevelNonUniformity",
               "glnn": "GrayLevelNonUniformityNormalized", "sn": "SizeZoneNonUniformity",
               "snn": "SizeZoneNonUniformityNormalized", "percentage": "ZonePercentage",
               "glv": "GrayLevelVariance", "sv": "ZoneVariance", "entropy": "ZoneEntropy",
               "low": "LowGrayLevelZoneEmphasis", "high": "HighGrayLevelZoneEmphasis",
               "small_low": "SmallAreaLowGrayLevelEmphasis", "small_high": "SmallAreaHighGrayLevelEmphasis",
               "large_low": "LargeAreaLowGrayLevelEmphasis", "large_high": "LargeAreaHighGrayLevelEmphasis"}
GLDM_NAMES = {"small": "SmallDependenceEmphasis", "large": "LargeDependenceEmphasis",
              "gln": "GrayLevelNonUniformity", "sn": "DependenceNonUniformity",
              "snn": "DependenceNonUniformityNormalized", "glv": "GrayLevelVariance", "sv": "DependenceVariance",
              "entropy": "DependenceEntropy", "low": "LowGrayLevelEmphasis", "high": "HighGrayLevelEmphasis",
              "small_low": "SmallDependenceLowGrayLevelEmphasis", "small_high": "SmallDependenceHighGrayLevelEmphasis",
              "large_low": "LargeDependenceLowGrayLevelEmphasis", "large_high": "LargeDependenceHighGrayLevelEmphasis"}


def zones(levels: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(grey level, size) of every 26-connected zone of equal grey level: connected components of the graph whose
    edges join neighbouring ROI voxels of one grey level, by hooking roots onto the smaller label and full pointer
    jumping (Shiloach-Vishkin style; O(log n) rounds)."""
    n = levels.numel()
    idx = torch.arange(n, device=levels.device).reshape(levels.shape)
    ends = []
    for d in DIRECTIONS:  # undirected: the 13 half-directions
        s, t = _pair(levels.shape, d)
        ok = mask[s] & mask[t] & (levels[s] == levels[t])
        ends.append((idx[s][ok], idx[t][ok]))
    a = torch.cat([e[0] for e in ends])
    b = torch.cat([e[1] for e in ends])
    parent = torch.arange(n, device=levels.device)
    while a.numel():
        ra, rb = parent[a], parent[b]
        differ = ra != rb
        if not bool(differ.any()):
            break
        a, b, ra, rb = a[differ], b[differ], ra[differ], rb[differ]
        parent.scatter_reduce_(0, torch.maximum(ra, rb), torch.minimum(ra, rb), reduce="amin")
        while True:  # every node to its root
            grand = parent[parent]
            if torch.equal(grand, parent):
                break
            parent = grand
    roots = parent.reshape(levels.shape)[mask]
    sizes = torch.bincount(roots, minlength=n)
    root_ids = torch.nonzero(sizes).reshape(-1)
    return levels.reshape(-1)[root_ids], sizes[root_ids]


def glszm(levels: torch.Tensor, mask: torch.Tensor, gray: torch.Tensor, ng: int) -> dict:
    ns = int(mask.sum())
    lv, size = zones(levels, mask)
    p = torch.bincount((lv - 1) * ns + (size - 1), minlength=ng * ns).reshape(ng, ns).double()[gray - 1]
    return _zone_features(p, gray, GLSZM_NAMES)


def gldm(levels: torch.Tensor, mask: torch.Tensor, gray: torch.Tensor, ng: int, alpha: float = 0) -> dict:
    dep = torch.ones_like(levels)
    for d in DIRECTIONS:  # each pair of ROI neighbours once, counted for both
        s, t = _pair(levels.shape, d)
        ok = (mask[s] & mask[t] & ((levels[s] - levels[t]).abs() <= alpha)).long()
        dep[s] += ok
        dep[t] += ok
    width = 2 * len(DIRECTIONS) + 1
    p = torch.bincount((levels[mask] - 1) * width + (dep[mask] - 1), minlength=ng * width)
    return _zone_features(p.reshape(ng, width).double()[gray - 1], gray, GLDM_NAMES)


def ngtdm(levels: torch.Tensor, mask: torch.Tensor, ng: int) -> dict:
    """NGTDM features: the mean grey level of each ROI voxel's ROI neighbours (26-neighbourhood); voxels without
    one are left out, as in pyradiomics."""
    total = torch.zeros(levels.shape, dtype=torch.float64, device=levels.device)
    count = torch.zeros(levels.shape, dtype=torch.float64, device=levels.device)
    lv = levels.double()
    for d in DIRECTIONS:  # each pair of ROI neighbours once, added to both
        s, t = _pair(levels.shape, d)
        both = (mask[s] & mask[t]).double()
        total[s] += lv[t] * both
        total[t] += lv[s] * both
        count[s] += both
        count[t] += both
    valid = mask & (count > 0)
    diff = (lv - total / torch.clamp(count, min=1.0)).abs()
    g = levels[valid] - 1
    n_i = torch.zeros(ng, dtype=torch.float64, device=levels.device).index_add_(0, g, torch.ones_like(diff[valid]))
    s_i = torch.zeros(ng, dtype=torch.float64, device=levels.device).index_add_(0, g, diff[valid])
    keep = n_i > 0
    n_i, s_i = n_i[keep], s_i[keep]
    i = torch.arange(1, ng + 1, dtype=torch.float64, device=levels.device)[keep]
    nvp = n_i.sum()
    p = n_i / nvp
    ngp = p.numel()
    ps = (p * s_i).sum()
    di = i[:, None] - i[None, :]
    div = ngp * (ngp - 1)
    contrast = (p[:, None] * p[None, :] * di ** 2).sum() * s_i.sum() / nvp
    ipi = i * p
    absdiff = (ipi[:, None] - ipi[None, :]).abs().sum()
    pisi = p * s_i
    psum = p[:, None] + p[None, :]
    ssum = s_i.sum()
    return {"Coarseness": torch.where(ps != 0, 1 / torch.where(ps != 0, ps, 1.0), 1e6),
            "Contrast": contrast / div if div else 0 * contrast,
            "Busyness": torch.where(absdiff != 0, ps / torch.where(absdiff != 0, absdiff, 1.0), 0 * ps),
            "Complexity": (di.abs() * (pisi[:, None] + pisi[None, :]) / psum).sum() / nvp,
            "Strength": torch.where(ssum != 0, (psum * di ** 2).sum() / torch.where(ssum != 0, ssum, 1.0),
                                    0 * ssum)}
