"""Pre- and post-processing of the pyliverlesionseg cascade (Tang et al., EJNMMI Research 2020), ported.

All arrays here are (x, y, z) in LPS voxel order (x towards the patient's left, y posterior, z head-wards),
as the original reads them; spacings are (x, y, z) in mm. Reimplemented from the original's behaviour:
- `zoom3d`: pymirc.image_operations.zoom3d (centre-aligned grids; linear interpolation when upsampling,
  box averaging when downsampling; zeros outside), as separable 1D linear operators;
- `crop_ct_box` / `crop_mr_box`: the body/abdomen box of `crop_ct_image` / `crop_mr_image`;
- `liver_input` / `liver_net_mask` / `liver_to_full`: liver-net input and output handling;
- `lesion_input` / `lesion_mask_from_probs`: the liver-restricted lesion-net input and output handling.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from scipy.signal import argrelextrema, convolve

log = logging.getLogger(__name__)

#: The liver net's single window, 163 x 136 x 136 voxels of 3 mm: the original's maximum crop size.
LIVER_FOV_MM = (489.0, 408.0, 408.0)


# ------------------------------------------------------------------ resampling (pymirc zoom3d)
def zoom_matrix(n: int, zoom: float) -> np.ndarray:
    """(m, n) operator of pymirc's 1D zoom of n samples by `zoom` (m = ceil(n * zoom), centres aligned)."""
    if zoom == 1:
        return np.eye(n, dtype=np.float32)
    delta = 1.0 / zoom
    m = math.ceil(n / delta)
    w = np.zeros((m, n), np.float64)
    if zoom > 1:  # linear interpolation at the small voxels' centres, zero beyond the edges
        c = delta * (np.arange(m) - 0.5 * m + 0.5) + 0.5 * n - 0.5
        left = np.floor(c).astype(int)
        for i, (lo, ci) in enumerate(zip(left, c)):
            if lo >= 0:
                w[i, lo] += lo + 1 - ci
            if lo + 1 < n:
                w[i, lo + 1] += ci - lo
    else:  # each small voxel spreads its overlap fractions over the (at most two) big voxels it touches
        for j in range(n):
            bl = zoom * (j - 0.5 * n) + 0.5 * m
            br = zoom * (j + 1 - 0.5 * n) + 0.5 * m
            lb, rb = math.floor(bl), math.ceil(br) - 1
            if lb == rb:
                w[lb, j] += zoom
            else:
                c = math.ceil(bl)
                w[lb, j] += c - bl
                w[rb, j] += br - c
    return w.astype(np.float32)


def zoom3d(vol: np.ndarray, zoom, rows=None) -> np.ndarray:
    """pymirc's zoom3d (cval 0) of a 3D array; `rows`: optional output slices per axis (only those are
    computed: the same values as slicing the full result)."""
    out = np.asarray(vol, np.float32)
    for axis, z in enumerate(np.broadcast_to(np.asarray(zoom, float), (3,))):
        w = zoom_matrix(out.shape[axis], float(z))
        if rows is not None and rows[axis] is not None:
            w = w[rows[axis]]
        if w.shape[0] == w.shape[1] and z == 1 and (rows is None or rows[axis] is None):
            continue
        out = np.moveaxis(np.tensordot(w, out, axes=([1], [axis])), 0, axis)
    return np.ascontiguousarray(out, np.float32)


def zoomed_shape(shape, zoom) -> tuple:
    return tuple(s if z == 1 else math.ceil(s / (1.0 / z)) for s, z in zip(shape, zoom))


# ------------------------------------------------------------------ helpers
def _largest_box(mask: np.ndarray):
    """Bounding slices of the largest (6-connected) component of `mask`, or None when empty."""
    lab, n = ndimage.label(mask)
    if not n:
        return None
    counts = np.bincount(lab.ravel())
    counts[0] = 0
    return ndimage.find_objects((lab == int(np.argmax(counts))).astype(np.uint8))[0]


def _box_erosion(mask: np.ndarray, size) -> np.ndarray:
    """ndimage.binary_erosion by np.ones(size) (outside = background), as separable 1D minimum filters
    (same result, several times faster on large bodies)."""
    return ndimage.minimum_filter(mask.view(np.uint8), size=size, mode="constant", cval=0).view(bool)


def _box_opening(mask: np.ndarray, size) -> np.ndarray:
    """ndimage.binary_opening by np.ones(size) with odd sizes, as separable 1D minimum/maximum filters."""
    return ndimage.maximum_filter(_box_erosion(mask, size).view(np.uint8), size=size, mode="constant",
                                  cval=0).view(bool)


def _local_extrema(profile: np.ndarray, compare, order: int, step: int) -> np.ndarray:
    """argrelextrema, lowering the order by `step` until something is found (as the original; [] at order 1)."""
    while True:
        found = argrelextrema(profile, compare, order=order)[0]
        if len(found) or order == 1:
            return found
        order = max(1, order - step)


class _NoLandmark(Exception):
    """The lung/pelvis landmarks of the CT z-crop cannot be found on this image."""


def _limit(box: tuple, voxsize, size_mm_max, centre) -> tuple:
    """Shrink the box to `size_mm_max`: x/y around `centre` in proportion (CT) or symmetrically (centre None),
    z from the feet (the original keeps the head end)."""
    out = list(box)
    for axis in range(3):
        limit, sl = size_mm_max[axis], box[axis]
        size = sl.stop - sl.start
        if limit is None or size * voxsize[axis] <= limit:
            continue
        excess_mm = size * voxsize[axis] - limit
        if axis == 2:
            out[2] = slice(sl.start + int(np.ceil(excess_mm / voxsize[2])), sl.stop)
        elif centre is None:
            d = int(np.ceil(excess_mm / (2 * voxsize[axis])))
            out[axis] = slice(sl.start + d, sl.stop - d)
        else:
            c = centre[axis]
            d0 = int(np.ceil((c - sl.start) / size * excess_mm / voxsize[axis]))
            d1 = int(np.ceil((sl.stop - c) / size * excess_mm / voxsize[axis]))
            out[axis] = slice(sl.start + d0, sl.stop - d1)
    return tuple(out)


# ------------------------------------------------------------------ CT crop
def _ct_dome_and_centre(body: np.ndarray, voxsize, lung_th: float):
    """(approximate liver-dome slice, (x, y) centre of the inner air) from the lungs, as crop_ct_image."""
    vol = body.copy()
    vol[:, :, -1] = 0  # a lung cut by the top of the FOV must not join the outside air
    air = vol < lung_th
    if air.shape[2] > 1:
        air[:, :, :-1] = _box_opening(air[:, :, :-1], (5, 5, 5))
    lab, n = ndimage.label(np.pad(air, ((3, 3), (3, 3), (0, 0)), constant_values=1))
    lab = lab[3:-3, 3:-3, :]
    if n < 3:
        raise _NoLandmark(f"{n} air region(s); the lungs need 2 besides the outside air")
    volumes = np.bincount(lab.ravel(), minlength=n + 1)[1:] * float(np.prod(voxsize))
    order = np.argsort(volumes, kind="stable")  # labels - 1, smallest first
    inner = (lab != order[-1] + 1) & air
    profile = convolve(inner.sum(0).sum(0), np.ones(7), "same")
    hi, lo = profile.max(), profile.min()
    if hi <= lo:
        raise _NoLandmark("flat air profile")
    lung = np.where(profile > lo + 0.5 * (hi - lo))[0]
    starts = np.where(convolve(lung, np.array([1, -1]), "same") != 1)[0]
    dome1 = lung[0]
    if len(starts) > 1 and np.any(profile[lung[starts[1] - 1]:lung[starts[1]]] < lo + 0.2 * (hi - lo)):
        dome1 = lung[starts[1]]
    box = ndimage.find_objects(inner.astype(np.uint8))[0]
    centre = ((box[0].start + box[0].stop + 1) // 2, (box[1].start + box[1].stop + 1) // 2)
    lungs = [order[-2] + 1, order[-3] + 1]
    bottoms = [ndimage.find_objects((lab == k).astype(np.uint8))[0][2].start for k in lungs]
    dome2 = bottoms[int(np.argmax(bottoms))]
    return int(max(dome1, dome2)), centre


def _ct_hip(vol: np.ndarray, dome: int, bone_th: float, bone_hip_ratio: float) -> int:
    """Slice of the hip (pelvic bone peak below the liver), from the bone profile as crop_ct_image."""
    profile = convolve((vol > bone_th).astype(np.int16).sum(0).sum(0), np.ones(7), "same")[:dome]
    if len(profile) < 3:
        raise _NoLandmark("no slices below the liver dome")
    top = int(np.argmax(profile))
    minima = _local_extrema(profile, np.less, 15, 3)
    maxima = _local_extrema(profile, np.greater, 15, 3)
    if not len(minima) or not len(maxima):
        raise _NoLandmark("monotonic bone profile")
    bottom = int(minima[np.argsort(profile[minima], kind="stable")[0]])
    by_height = np.argsort(profile[maxima], kind="stable")
    second = int(maxima[by_height[-2]] if len(by_height) >= 2 else maxima[by_height[-1]])
    if bottom < top and bottom < second:
        bottom = second + int(np.argmin(profile[second:]))
    peaks = _local_extrema(profile, np.greater, 5, 1)
    ratio = bone_hip_ratio
    while True:
        candidates = np.intersect1d(peaks, np.where(profile > ratio * (profile[top] - profile[bottom])
                                                    + profile[bottom])[0])
        if len(candidates) or ratio <= 0.05:
            break
        ratio = max(ratio - 0.1, 0.05)
    below = candidates[candidates < bottom]
    return int(below[-1]) if len(below) >= 2 else 0


def crop_ct_box(vol: np.ndarray, voxsize, size_mm_max=LIVER_FOV_MM, tissue_th: float = -150,
                lung_th: float = -600, bone_th: float = 500, bone_hip_ratio: float = 0.7,
                liver_height_max: float = 400, liver_dome_margin_mm: float = 70.0,
                hip_margin_mm: float = 20.0) -> tuple[tuple, dict]:
    """(box, info) of crop_ct_image with the original's call settings: the body's x/y box, z from 20 mm
    below the hip to 70 mm above the liver dome (found from the lungs), limited to the liver net's FOV.

    Where the landmarks cannot exist (a slab without lungs or pelvis) the z-range is the whole image
    (then limited from the feet as the original does); info says which.
    """
    body = _largest_box(ndimage.binary_erosion(vol > tissue_th))
    if body is None:
        body = tuple(slice(0, s) for s in vol.shape)
    inside = np.full(vol.shape, vol.min(), vol.dtype)
    inside[body] = vol[body]
    info = {"z_crop": "landmarks"}
    try:
        dome, centre = _ct_dome_and_centre(inside, voxsize, lung_th)
        hip = _ct_hip(vol, dome, bone_th, bone_hip_ratio)
        if (dome - hip) * voxsize[2] > liver_height_max:
            hip = dome - int(liver_height_max / voxsize[2])
        z = slice(max(0, hip - int(hip_margin_mm / voxsize[2])),
                  min(vol.shape[2], dome + int(liver_dome_margin_mm / voxsize[2])))
        info.update(dome_slice=dome, hip_slice=hip)
    except _NoLandmark as exc:
        z, centre = slice(0, vol.shape[2]), None
        info = {"z_crop": f"whole z-range ({exc})"}
    if z.stop - z.start < 1:
        z, info = slice(0, vol.shape[2]), {"z_crop": "whole z-range (empty landmark range)"}
    box = (body[0], body[1], z)
    erosion = (5, 5, min(5, z.stop - z.start))
    tight = _largest_box(_box_erosion(vol[box] > tissue_th, erosion))
    if tight is not None:
        box = (slice(body[0].start + tight[0].start, body[0].start + tight[0].stop),
               slice(body[1].start + tight[1].start, body[1].start + tight[1].stop), z)
    if centre is None:
        centre = tuple((s.start + s.stop + 1) // 2 for s in box[:2])
    return _limit(box, voxsize, size_mm_max, centre), info


# ------------------------------------------------------------------ MR crop
def _mr_y_range(vol: np.ndarray) -> slice:
    """Anterior-posterior range of the abdomen from the y-profile's edges, as crop_mr_image."""
    ny = vol.shape[1]
    prof = convolve(np.sum(vol, (0, 2)), np.ones(7), "same")
    diff = convolve(prof, np.concatenate((np.ones(30), np.zeros(1), -np.ones(30))), "same")
    argmin = int(np.argmin(diff))
    order = 70
    peaks = argrelextrema(diff, np.greater, order=order)[0]
    while len(peaks) <= 1 and order != 2:
        order = max(order - 10, 2)
        peaks = argrelextrema(diff, np.greater, order=order)[0]
    if len(peaks) == 0:
        y_max = int(np.argmax(diff)) if np.argmax(diff) < 0.4 * ny else 0
    elif len(peaks) == 1:
        y_max = int(peaks[0])
    else:
        second = np.sort(diff[peaks])[-2]
        strong = peaks[diff[peaks] > 0.5 * second]
        cands, gap = strong[strong < argmin - 100], 100
        while len(cands) < 1 and gap > -ny:
            gap -= 10
            cands = strong[strong < argmin - gap]
        cands = cands[cands < 0.4 * ny]
        if len(cands) == 0:
            y_max = int(np.argmax(diff))
            y_max = 0 if y_max >= 0.4 * ny else y_max
        elif len(cands) > 1 and np.all(diff[cands[-2]:cands[-1] + 1] > 0.5 * diff[cands[-1]]):
            y_max = int(cands[-2])
        elif len(cands) > 1 and diff[cands[-1]] < 0.5 * diff[cands[-2]]:
            y_max = int(cands[-2])
        else:
            y_max = int(cands[-1])
    th, starts = 0.45, np.array([], int)
    while th < 1.0 + 1e-9:
        starts = np.where(diff < th * diff[y_max])[0]
        starts = starts[starts < y_max]
        if len(starts):
            break
        th += 0.05
    y_start = int(starts[-1]) if len(starts) else 0
    ratio, ends = 0.6, np.array([], int)
    while ratio <= 1.0:
        ends = np.where(diff > ratio * diff[argmin])[0]
        ends = ends[ends > argmin]
        if len(ends):
            break
        ratio += 0.05
    if not len(ends):
        return slice(y_start, ny)
    jumps = np.where(convolve(ends, np.array([1, -1]), "same") > 1)[0]
    if len(jumps) > 1:
        ends = ends[jumps[-1]:]
    return slice(y_start, int(ends[0]) if len(ends) else argmin)


def crop_mr_box(vol: np.ndarray, voxsize, size_mm_max=LIVER_FOV_MM, tissue_ratio: float = 0.01,
                liver_height_max: float = 400, zstart_margin_mm: float = 30.0) -> tuple[tuple, dict]:
    """(box, info) of crop_mr_image with the original's call settings: the top 430 mm in z, the largest body
    region above 1 % of the maximum in x/y, y limited to the abdomen's profile edges, then the FOV limit."""
    zstart = max(0, vol.shape[2] - int(liver_height_max / voxsize[2]) - int(zstart_margin_mm / voxsize[2]))
    z = slice(zstart, vol.shape[2])
    y_abd = _mr_y_range(vol)
    sub = vol[:, :, z]
    erosion = (5, 5, min(5, z.stop - z.start))
    body = _largest_box(_box_erosion(sub > tissue_ratio * sub.max(), erosion))
    if body is None:
        body = tuple(slice(0, s) for s in sub.shape)
    y = slice(max(body[1].start, y_abd.start), min(body[1].stop, y_abd.stop))
    if y.stop <= y.start:
        y = body[1]
    info = {"z_crop": "top 430 mm", "y_abdomen": [y_abd.start, y_abd.stop]}
    return _limit((body[0], y, z), voxsize, size_mm_max, None), info


# ------------------------------------------------------------------ liver stage
def normalise_ct(vol: np.ndarray) -> np.ndarray:
    """CT: HU / 1000 clipped to [-0.2, 0.2], times 2.5 (so -0.5..0.5)."""
    return (np.clip(vol / 1000.0, -0.2, 0.2) * 2.5).astype(np.float32)


def _median3(vol: np.ndarray) -> np.ndarray:
    """ndimage.median_filter(vol, size=3) by SimpleITK's multi-threaded median (same values: at radius 1
    scipy's 'reflect' border repeats the edge voxel, as ITK's zero-flux Neumann border does)."""
    return sitk.GetArrayFromImage(sitk.Median(sitk.GetImageFromArray(vol), [1, 1, 1])).astype(vol.dtype, copy=False)


def liver_input(cropped: np.ndarray, voxsize, target, modality: str) -> np.ndarray:
    """Liver-net input: zoom to half the target spacing, 3x3x3 median filter, zoom to the target, normalise
    (CT window; MR min..min+80 % of the range to -0.5..0.5)."""
    half = np.asarray(target, float) / 2.0
    vol = zoom3d(cropped, np.asarray(voxsize, float) / half)
    vol = _median3(vol)
    vol = zoom3d(vol, half / np.asarray(target, float))
    if modality == "CT":
        return normalise_ct(vol)
    lo, hi = float(vol.min()), float(vol.max())
    upper = lo + 0.8 * (hi - lo)
    if upper <= lo:
        return np.zeros_like(vol)
    return ((np.clip(vol, lo, upper) - lo) / (upper - lo) - 0.5).astype(np.float32)


def liver_net_mask(probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """The original's liver post-processing on the net grid: threshold, erode (3x3x3, 18-connected), largest
    6-connected component, dilate back."""
    ss = ndimage.iterate_structure(ndimage.generate_binary_structure(3, 2), 1)
    eroded = ndimage.binary_erosion(probs > threshold, structure=ss)
    lab, n = ndimage.label(eroded, structure=ndimage.generate_binary_structure(3, 1))
    if not n:
        return np.zeros(probs.shape, bool)
    counts = np.bincount(lab.ravel())
    counts[0] = 0
    return ndimage.binary_dilation(lab == int(np.argmax(counts)), structure=ss)


def liver_to_full(liver: np.ndarray, box: tuple, shape) -> np.ndarray:
    """Net-grid liver mask onto the full grid: linear zoom (corner-aligned, > 0) onto the crop's voxels, pasted
    into the box."""
    full = np.zeros(shape, bool)
    if liver.any():
        crop_shape = tuple(s.stop - s.start for s in box)
        factor = np.asarray(crop_shape, float) / np.asarray(liver.shape, float)
        full[box] = ndimage.zoom(liver.astype(np.float32), factor, order=1, prefilter=False) > 0
    return full


def cut_ends(probs: np.ndarray, box: tuple, nz: int, threshold: float = 0.5) -> tuple[bool, bool]:
    """(bottom, top): whether the net sees liver (p > threshold) in the scan's first / last slice, i.e. the
    scan ends inside the liver (the crop itself never cuts it: it keeps 20 mm below the hip and 70 mm above
    the dome). `probs` on the net grid of the crop `box` of an image with `nz` slices."""
    return (box[2].start == 0 and bool((probs[:, :, 0] > threshold).any()),
            box[2].stop == nz and bool((probs[:, :, -1] > threshold).any()))


def mirror_z(vol: np.ndarray, ends: tuple[bool, bool], margin_vox: int, max_slices: int):
    """(volume mirrored in z by up to `margin_vox` slices at the flagged ends, keeping the total within
    `max_slices`; the slice of the original part)."""
    room = max(0, max_slices - vol.shape[2])
    n = [min(margin_vox, room // 2 if all(ends) else room) if e else 0 for e in ends]
    out = np.pad(vol, ((0, 0), (0, 0), (n[0], n[1])), mode="symmetric")
    return out, slice(n[0], n[0] + vol.shape[2])


# ------------------------------------------------------------------ lesion stage
def lesion_normalise(vol: np.ndarray, liver: np.ndarray, modality: str) -> np.ndarray:
    """Lesion-net intensities: CT window as the liver stage; MR centred on the liver's median and scaled so
    the liver's min..max fits -0.5..0.5."""
    if modality == "CT":
        return normalise_ct(vol)
    values = vol[liver]
    lo, med, hi = float(values.min()), float(np.median(values)), float(values.max())
    spread = max(abs(lo - med), abs(hi - med))
    if spread <= 0:
        return np.zeros(vol.shape, np.float32)
    return ((vol - med) * (0.5 / spread)).astype(np.float32)


def lesion_input(vol: np.ndarray, liver: np.ndarray, voxsize, target, modality: str):
    """(input, box, resized shape): the normalised image and liver mask zoomed to the lesion spacing, the
    liver dilated (18-connected structure iterated twice), outside it -0.5, clipped to -0.5..0.5, cropped to
    the dilated liver's box. Only the rows of the box are zoomed (same values as zooming everything)."""
    zoom = np.asarray(voxsize, float) / np.asarray(target, float)
    resized_shape = zoomed_shape(vol.shape, zoom)
    liver_r = zoom3d(liver.astype(np.float32), zoom) > 0.5
    if not liver_r.any():
        return None, None, resized_shape
    ss = ndimage.iterate_structure(ndimage.generate_binary_structure(3, 2), 2)
    nz = np.argwhere(liver_r)
    lo = np.maximum(nz.min(0) - 2, 0)  # the dilation reaches 2 voxels along every axis
    hi = np.minimum(nz.max(0) + 3, resized_shape)
    near = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    dilated = ndimage.binary_dilation(np.pad(liver_r[near], 2), structure=ss)[2:-2, 2:-2, 2:-2]
    box_in = ndimage.find_objects(dilated.astype(np.uint8))[0]
    box = tuple(slice(n.start + b.start, n.start + b.stop) for n, b in zip(near, box_in))
    image = zoom3d(lesion_normalise(vol, liver, modality), zoom, rows=box)
    mask = dilated[box_in]
    out = np.where(mask, image, -0.5)
    return np.clip(out, -0.5, 0.5).astype(np.float32), box, resized_shape


def lesion_mask_from_probs(probs: np.ndarray, box: tuple, resized_shape, shape, threshold: float = 0.5):
    """Lesion mask on the full grid: threshold, paste into the resized grid, linear zoom (scipy's corner-aligned
    `zoom`, > 0) onto the original voxels. Only output rows whose interpolation can touch the box are computed
    (an affine map of the box with a one-voxel zero margin: the same values)."""
    full = np.zeros(shape, bool)
    binary = probs > threshold
    if not binary.any():
        return full
    lo_in = [max(b.start - 1, 0) for b in box]
    hi_in = [min(b.stop + 1, n) for b, n in zip(box, resized_shape)]
    sub = np.zeros([b - a for a, b in zip(lo_in, hi_in)], np.float32)
    sub[tuple(slice(b.start - a, b.stop - a) for b, a in zip(box, lo_in))] = binary
    scale = np.array([(n_in - 1) / (n_out - 1) if n_out > 1 else 0.0 for n_in, n_out in zip(resized_shape, shape)])
    lo_out, hi_out = [], []
    for axis in range(3):
        if scale[axis] == 0:
            lo_out.append(0)
            hi_out.append(shape[axis])
            continue
        lo_out.append(max(0, math.ceil(lo_in[axis] / scale[axis] - 1e-9)))
        hi_out.append(min(shape[axis], math.floor((hi_in[axis] - 1) / scale[axis] + 1e-9) + 1))
    if any(b <= a for a, b in zip(lo_out, hi_out)):
        return full
    values = ndimage.affine_transform(sub, scale, offset=np.asarray(lo_out) * scale - np.asarray(lo_in),
                                      output_shape=tuple(b - a for a, b in zip(lo_out, hi_out)), order=1,
                                      prefilter=False, mode="nearest")
    full[tuple(slice(a, b) for a, b in zip(lo_out, hi_out))] = values > 1e-6
    return full
