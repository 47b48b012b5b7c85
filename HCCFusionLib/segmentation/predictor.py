"""Inference: resample to the plan spacing, Gaussian-weighted sliding window (optional mirroring TTA),
resample the class probabilities back onto the exact original grid, post-process, and tabulate lesions.

Speed on CPU comes from spending work only where it can change the result:
- tiles whose input is constant in every channel (air/fat below the CT clip window) are not run;
- a plain pass at a small overlap (LOCATE_OVERLAP) on the image averaged over 2x2x2 voxels (LOCATE_SCALE:
  1/8 of the tiles) finds the box around voxels that may be foreground; only that box (grown while the
  foreground touches its faces) is tiled at the full overlap;
- tiles run BATCH_TILES per forward pass, inside `speed.inference()` (the settings shared with every engine);
- mirroring TTA (all 8 axis flips, as nnU-Net, run as one batch) is spent only around the voxels that may
  belong to the `tta_classes` (a model may limit them to lesions with its plans' "tta_labels");
- resampling back to the original grid and post-processing run only in the box around the foreground
  (exactly: outside it background wins every interpolation).
"""
from __future__ import annotations

import itertools
import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from ..errors import InputError, ModelError
from ..lesions import LESION_COLUMNS, MIN_LESION_ML, LesionTable, label_lesions, max_diameter_mm  # noqa: F401
from ..progress import scaled, silent
from ..study import LABELS
from .data import Case, case_from_study, plan_grid, preprocess
from .planner import estimate_memory_mb
from .speed import inference

log = logging.getLogger(__name__)



@dataclass
class Segmentation:
    labels: sitk.Image  # study.LABELS values, on the case's reference grid
    lesions: "object"  # pandas DataFrame, LESION_COLUMNS
    lesion_map: sitk.Image  # lesion instance map 1..n (same numbering as the table)
    meta: dict = field(default_factory=dict)


# ------------------------------------------------------------------ tiling
def gaussian_weights(patch) -> np.ndarray:
    """nnU-Net importance map: Gaussian with sigma = patch/8, max 1, no zeros."""
    grids = np.meshgrid(*[np.arange(p) - (p - 1) / 2 for p in patch], indexing="ij")
    g = np.exp(-sum((x / (p / 8.0)) ** 2 / 2 for x, p in zip(grids, patch)))
    g /= g.max()
    g[g == 0] = g[g > 0].min()
    return g.astype(np.float32)


def tile_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Evenly spread window starts covering [0, size) with at least `overlap` overlap (nnU-Net steps)."""
    if size <= patch:
        return [0]
    n = int(np.ceil((size - patch) / (patch * (1 - overlap)))) + 1
    return [int(round(i * (size - patch) / (n - 1))) for i in range(n)]


LOCATE_OVERLAP = 0.25  # overlap of the pass that only finds the foreground box (MONAI's default)
LOCATE_SCALE = 2  # the locate pass runs on the image averaged over 2x2x2 plan voxels (1/8 of the tiles)
BATCH_TILES = 4  # tiles per forward pass
MIRRORS = [axes for r in range(1, 4) for axes in itertools.combinations((2, 3, 4), r)]


def sliding_window(net, image: np.ndarray, patch, n_classes: int, *, overlap: float = 0.5, tta: bool = True,
                   locate_overlap: float | None = None, locate_scale: int = 1, tta_classes=None,
                   min_probability: float = 0.25, batch_tiles: int = BATCH_TILES, device=None, progress=None,
                   stats: dict | None = None, found=None):
    """Class probabilities (n_classes, x, y, z) of `image` (C, x, y, z) by Gaussian-weighted tiles, in up to
    three passes:

    1. plain tiles over the whole image at `locate_overlap` (default `overlap`), on the image averaged over
       blocks of `locate_scale`^3 voxels when that is above 1 (only to find the foreground; its result is kept
       only at scale 1);
    2. if that pass is coarser (lower overlap or scale > 1): the box around voxels whose foreground probability
       reaches `min_probability` (padded by a quarter window) is tiled anew at `overlap` and replaces pass 1
       there (background outside it); while that foreground touches a face of the box inside the image, the
       box grows by half a window there and is tiled again;
    3. with `tta`: around each connected group of voxels where a class of `tta_classes` (indices; default all
       foreground) reaches `min_probability`, the 7 mirrored predictions are tiled at `overlap` and averaged
       with the unmirrored one (boxes padded by a quarter window; overlapping boxes merged).
    Tiles run `batch_tiles` at a time (mirrors in the same batch). `found` (bool (x, y, z), e.g. `Located.found`
    of the same plan grid) is the foreground of pass 1, which is then skipped.
    """
    import torch

    progress = progress or silent
    patch = [int(p) for p in patch]
    shape = np.asarray(image.shape[1:])
    image = _pad_to(image, patch)
    full = image.shape[1:]
    locate_overlap = overlap if locate_overlap is None else locate_overlap
    tta_classes = list(tta_classes or range(1, n_classes))
    counts = {"tiles": 0, "skipped": 0, "box_tiles": 0, "tta_tiles": 0, "forward_passes": 0, "overlap": overlap,
              "locate_overlap": locate_overlap, "locate_scale": locate_scale, "tta_boxes": []}
    refine = locate_overlap != overlap or locate_scale > 1 or found is not None

    def tiled(region, ov, flips, lo, hi, key):
        return _tiled(net, region, patch, n_classes, ov, flips, device, scaled(progress, lo, hi), counts, key,
                      batch_tiles)

    with inference():
        stop1 = 0.3 if refine or tta else 1.0
        if found is not None or locate_scale > 1:
            if found is None:
                coarse = tiled(_pad_to(_downsample(image, locate_scale), patch), locate_overlap, [()], 0.0, stop1,
                               "tiles")
                found = _upsample(coarse[1:].max(0)[0] >= min_probability, locate_scale, full)
            else:
                found = torch.from_numpy(np.pad(found, [(0, f - n) for f, n in zip(full, found.shape)]))
                counts["seeded"] = True
            probs = torch.zeros((n_classes, *full), dtype=torch.float32)
            probs[0] = 1.0
        else:
            probs = tiled(image, locate_overlap, [()], 0.0, stop1, "tiles")
            found = probs[1:].max(0)[0] >= min_probability
        for box in _boxes(found, patch, merge_all=True) if refine else []:
            while True:
                inside = (slice(None), *box)
                part = tiled(image[inside], overlap, [()], 0.3, 0.5 if tta else 1.0, "box_tiles")
                grown = _grow(box, part[1:].max(0)[0] >= min_probability, patch, full)
                if grown == box:
                    break
                box = grown
            probs[inside] = part
        counts["box"] = [int(b.stop - b.start) for b in box] if refine and found.any() else None
        boxes = _boxes(probs[tta_classes].max(0)[0] >= min_probability, patch) if tta else []
        for i, box in enumerate(boxes):
            inside = (slice(None), *box)
            mirrored = tiled(image[inside], overlap, MIRRORS, 0.5 + 0.5 * i / len(boxes),
                             0.5 + 0.5 * (i + 1) / len(boxes), "tta_tiles")
            probs[inside] = (probs[inside] + len(MIRRORS) * mirrored) / (1 + len(MIRRORS))
            counts["tta_boxes"].append([int(b.stop - b.start) for b in box])
    progress(1.0, "tiles done")
    if stats is not None:
        stats.update(counts)
    return probs[:, :shape[0], :shape[1], :shape[2]].numpy()


def _pad_to(image: np.ndarray, patch) -> np.ndarray:
    """`image` (C, x, y, z) padded at the end to at least one window with each channel's minimum."""
    pad = np.maximum(np.asarray(patch) - np.asarray(image.shape[1:]), 0)
    if not pad.any():
        return image
    return np.stack([np.pad(ch, [(0, int(p)) for p in pad], constant_values=float(ch.min())) for ch in image])


def _upsample(mask, scale: int, size):
    """`mask` (torch, x, y, z) of blocks of scale^3 voxels back on the voxels, cut to `size`."""
    for axis in range(3):
        mask = mask.repeat_interleave(scale, axis)
    return mask[:size[0], :size[1], :size[2]]


def _downsample(image: np.ndarray, scale: int) -> np.ndarray:
    """Mean over blocks of scale^3 voxels (partial blocks at the end averaged over what they hold)."""
    import torch

    t = torch.nn.functional.avg_pool3d(torch.from_numpy(image)[None], scale, ceil_mode=True,
                                       count_include_pad=False)
    return np.ascontiguousarray(t[0].numpy())


def _grow(box, mask, patch, size) -> tuple:
    """`box` grown by half a window on each face (inside the image) that `mask` (torch bool, the box) touches."""
    out = []
    for axis, (sl, p, n) in enumerate(zip(box, patch, size)):
        lo, hi = sl.start, sl.stop
        if lo > 0 and bool(mask.select(axis, 0).any()):
            lo = max(lo - p // 2, 0)
        if hi < n and bool(mask.select(axis, -1).any()):
            hi = min(hi + p // 2, n)
        out.append(slice(lo, hi))
    return tuple(out)


def _tiled(net, image: np.ndarray, patch, n_classes: int, overlap: float, flips, device, progress, counts: dict,
           tile_key: str, batch_tiles: int = BATCH_TILES):
    """Gaussian-blended probabilities over tiles, each the mean over `flips` (axis tuples of (B, C, x, y, z);
    () = as is), `batch_tiles` tiles (times their flips) per forward pass; tiles of constant input are
    background without running the network."""
    import torch

    device = torch.device(device or "cpu")
    full = image.shape[1:]
    weights = torch.from_numpy(gaussian_weights(patch))
    probs = torch.zeros((n_classes, *full), dtype=torch.float32)
    norm = torch.zeros(full, dtype=torch.float32)
    tiles = list(itertools.product(*[tile_starts(s, p, overlap) for s, p in zip(full, patch)]))
    counts[tile_key] += len(tiles)
    background = torch.zeros((n_classes, *patch))
    background[0] = 1.0
    pending = []

    def run():
        t = torch.from_numpy(np.stack([w for _, w in pending])).to(device)
        out = torch.softmax(net(torch.cat([torch.flip(t, axes) for axes in flips])), 1).float().cpu()
        out = out.reshape(len(flips), len(pending), *out.shape[1:])
        for j, (sl, _) in enumerate(pending):
            add(sl, sum(out[k, j].flip([a - 1 for a in axes]) for k, axes in enumerate(flips)) / len(flips))
        counts["forward_passes"] += len(flips) * len(pending)
        pending.clear()

    def add(sl, p):
        probs[(slice(None), *sl)] += p * weights
        norm[sl] += weights

    for i, (x, y, z) in enumerate(tiles):
        sl = (slice(x, x + patch[0]), slice(y, y + patch[1]), slice(z, z + patch[2]))
        window = image[(slice(None), *sl)]
        if all(float(ch.max() - ch.min()) < 1e-6 for ch in window):
            add(sl, background)
            counts["skipped"] += 1
        else:
            pending.append((sl, window))
            if len(pending) >= max(1, batch_tiles):
                run()
        progress((i + 1) / len(tiles), f"tile {i + 1}/{len(tiles)}")
    if pending:
        run()
    return probs / norm


def _boxes(mask, patch, merge_all: bool = False) -> list:
    """Slices of the boxes around the connected groups of `mask` (torch bool, x, y, z), each padded by a quarter
    window and at least one window large (within the image); overlapping boxes (or, with `merge_all`, all of
    them) merged into one."""
    from scipy import ndimage

    mask = mask.numpy()
    if not mask.any():
        return []
    size, patch = np.asarray(mask.shape), np.asarray(patch)
    found = ndimage.find_objects(ndimage.label(mask)[0])
    boxes = [(np.array([s.start for s in f]), np.array([s.stop for s in f])) for f in found]
    if merge_all:
        boxes = [(np.min([lo for lo, _ in boxes], 0), np.max([hi for _, hi in boxes], 0))]
    padded = []
    for lo, hi in boxes:
        lo, hi = lo - patch // 4, hi + patch // 4
        grow = np.maximum(patch - (hi - lo), 0)
        lo, hi = lo - grow // 2, hi + grow - grow // 2
        shift = np.maximum(-lo, 0) - np.maximum(hi - size, 0)
        padded.append((np.maximum(lo + shift, 0), np.minimum(hi + shift, size)))
    merged = True
    while merged:  # merge until disjoint
        merged = False
        for i, j in itertools.combinations(range(len(padded)), 2):
            (a0, a1), (b0, b1) = padded[i], padded[j]
            if (np.maximum(a0, b0) < np.minimum(a1, b1)).all():
                padded[i] = (np.minimum(a0, b0), np.maximum(a1, b1))
                del padded[j]
                merged = True
                break
    return [tuple(slice(int(a), int(b)) for a, b in zip(lo, hi)) for lo, hi in padded]


# ------------------------------------------------------------------ memory
def available_memory_mb() -> float:
    """Memory the system can give without swapping: Linux's MemAvailable, which counts reclaimable page cache (free
    pages alone can be a few hundred MB on a machine with gigabytes of cache), else psutil's, else free pages; inf
    when the platform says nothing (then only --max-memory-mb limits)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    try:
        import psutil

        return psutil.virtual_memory().available / 2 ** 20
    except ImportError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except (AttributeError, ValueError, OSError):
        return float("inf")


def inference_memory_mb(size, spacing, plans: dict) -> float:
    """Estimated peak memory of predicting an image of `size` voxels at `spacing` (input grid)."""
    plan_voxels = float(np.prod([max(1, round(n * s / t)) for n, s, t in zip(size, spacing, plans["spacing"])]))
    full = float(np.prod(size))
    n_cls, n_ch = len(plans["labels"]), len(plans["channels"])
    plan_arrays = plan_voxels * (2 * n_ch + 2 * n_cls + 1) * 4  # input, probabilities, weights
    full_arrays = full * (4 * n_ch + 4 * 3 + 8)  # input channels, resampled class, running max/argmax, post-proc
    window = estimate_memory_mb(plans["patch_size"], n_ch, n_cls, plans["filters"], plans["strides"], 1, False)
    return (plan_arrays + full_arrays) / 2 ** 20 + window + 300  # + torch/runtime


def check_memory(size, spacing, plans: dict, max_memory_mb: float | None = None, what: str = "image") -> float:
    """Raise a clear error before running when the estimated memory exceeds the limit (default: available RAM)."""
    need = inference_memory_mb(size, spacing, plans)
    limit = max_memory_mb if max_memory_mb is not None else 0.9 * available_memory_mb()
    if need > limit:
        raise InputError(
            f"Segmenting the {what} ({'x'.join(str(int(s)) for s in size)} voxels) needs about {need:.0f} MB but "
            f"only {limit:.0f} MB are allowed/available: crop the image to the abdomen, resample it coarser, "
            "or raise --max-memory-mb on a machine with more memory.")
    return need


# ------------------------------------------------------------------ prediction
def resample_to_reference(probs: np.ndarray, grid: sitk.Image, reference: sitk.Image) -> np.ndarray:
    """Argmax label array (z, y, x) on `reference` of per-class probabilities on `grid` (linear per class).

    Only the box around plan voxels where some foreground class is at least as likely as background is
    resampled: outside it every interpolation corner favours background, so the argmax there is background
    (linear interpolation is a convex combination) and the result is exact.
    """
    labels = np.zeros(reference.GetSize()[::-1], np.uint8)
    fg = np.argwhere(probs[1:].max(0) >= probs[0])
    if not len(fg):
        return labels
    ratio = np.asarray(grid.GetSpacing()) / np.asarray(reference.GetSpacing())  # same origin and direction
    lo = np.maximum(np.ceil((fg.min(0) - 1) * ratio - 1e-6), 0).astype(int)
    hi = np.minimum(np.floor((fg.max(0) + 1) * ratio + 1e-6), np.asarray(reference.GetSize()) - 1).astype(int)
    box = sitk.Image([int(v) for v in hi - lo + 1], sitk.sitkUInt8)
    box.SetSpacing(reference.GetSpacing())
    box.SetDirection(reference.GetDirection())
    box.SetOrigin(reference.TransformIndexToPhysicalPoint([int(v) for v in lo]))
    best = sub = None
    for c in range(probs.shape[0]):
        img = sitk.GetImageFromArray(np.ascontiguousarray(probs[c].transpose(2, 1, 0)))
        img.CopyInformation(grid)
        res = sitk.GetArrayFromImage(sitk.Resample(img, box, sitk.Transform(), sitk.sitkLinear,
                                                   1.0 if c == 0 else 0.0, sitk.sitkFloat32))
        if best is None:
            best, sub = res, np.zeros(res.shape, np.uint8)
        else:
            better = res > best
            best = np.where(better, res, best)
            sub[better] = c
    labels[lo[2]:hi[2] + 1, lo[1]:hi[1] + 1, lo[0]:hi[0] + 1] = sub
    return labels


def predict_case(case: Case, bundle, *, tta: bool = True, overlap: float | None = None,
                 locate_overlap: float = LOCATE_OVERLAP, locate_scale: int = LOCATE_SCALE,
                 batch_tiles: int = BATCH_TILES, window=None, postprocess: bool = True,
                 min_lesion_ml: float = 0.05, liver_margin_mm: float = 5.0, max_memory_mb: float | None = None,
                 device: str | None = None, net=None, located: "Located | None" = None,
                 progress=None) -> Segmentation:
    """Segment one case with a bundle; labels come back on the case's reference grid with study.LABELS values.

    `window`: sliding-window size (x, y, z) at the plan spacing; default the plans' "inference_window" if set
    (chosen and validated by the model's training script), else the training patch size. `overlap`: default
    the plans' "inference_overlap" if set, else nnU-Net's 0.5, used in the box around the foreground found by a
    first pass at `locate_overlap`; mirroring TTA covers the plans' "tta_labels" if set, else all foreground
    (see `sliding_window`). `located`: `locate_case`'s result for this reference grid, reused as the first pass.
    """
    import torch

    progress = progress or silent
    plans = bundle.plans
    if case.channel_names != list(plans["channels"]):
        raise ModelError(
            f"Case '{case.case_id}' has channels {case.channel_names} but model '{bundle.path}' expects "
            f"{plans['channels']} (count and order): give exactly these phases in this order.")
    ref = case.reference
    check_memory(ref.GetSize(), ref.GetSpacing(), plans, max_memory_mb, f"case '{case.case_id}'")
    t0 = time.time()
    progress(0.0, "preprocessing")
    image, _, grid = preprocess(case, plans, with_labels=False)
    net = net if net is not None else bundle.build_network()
    net = net.to(torch.device(device or "cpu"))
    stats: dict = {}
    window = window or plans.get("inference_window") or plans["patch_size"]
    overlap = plans.get("inference_overlap", 0.5) if overlap is None else overlap
    tta_classes = [plans["labels"][name] for name in plans.get("tta_labels", [])]
    found = located.found if located is not None else None
    if found is not None and found.shape != image.shape[1:]:
        log.warning("located foreground is on a %s grid, the case's plan grid is %s: locating anew",
                    list(found.shape), list(image.shape[1:]))
        found = None
    probs = sliding_window(net, image, window, len(plans["labels"]), overlap=overlap, tta=tta,
                           locate_overlap=min(locate_overlap, overlap), locate_scale=locate_scale,
                           tta_classes=tta_classes, batch_tiles=batch_tiles, device=device,
                           progress=scaled(progress, 0.1, 0.85), stats=stats, found=found)
    progress(0.85, "resampling to the original grid")
    model_labels = resample_to_reference(probs, grid, ref)
    study_labels = np.zeros(model_labels.shape, np.uint8)
    for name, idx in plans["labels"].items():
        if idx:
            study_labels[model_labels == idx] = LABELS[name]
    labels = sitk.GetImageFromArray(study_labels)
    labels.CopyInformation(ref)
    progress(0.9, "post-processing")
    labels, lesion_map, table = postprocess_in_box(labels, postprocess, min_lesion_ml, liver_margin_mm)
    stats.update(seconds=round(time.time() - t0, 2), tta=tta, window=list(window))
    progress(1.0, "segmentation done")
    return Segmentation(labels, table, lesion_map, stats)


@dataclass
class Located:
    mask: sitk.Image  # liver (+ tumour) where the coarse pass finds them, UInt8 0/1 on the case's reference grid
    found: np.ndarray  # bool (x, y, z) on the plan grid: voxels that may be foreground (seeds `predict_case`)
    meta: dict = field(default_factory=dict)


def locate_case(case: Case, bundle, *, overlap: float = LOCATE_OVERLAP, scale: int = LOCATE_SCALE,
                min_probability: float = 0.25, batch_tiles: int = BATCH_TILES, device: str | None = None,
                net=None, progress=None) -> Located:
    """Only the first (locate) pass of `predict_case`: plain tiles at `overlap` over the image averaged over
    `scale`^3 plan voxels. Cheap (1/8 of the tiles at scale 2, no TTA, no box pass); coarse (blocks of
    `scale` plan voxels), so fit for a registration mask (which is dilated) and to seed `predict_case`."""
    progress = progress or silent
    plans = bundle.plans
    check_memory(case.reference.GetSize(), case.reference.GetSpacing(), plans, None, f"case '{case.case_id}'")
    t0 = time.time()
    image, _, grid = preprocess(case, plans, with_labels=False)
    net = net if net is not None else bundle.build_network()
    window = [int(w) for w in (plans.get("inference_window") or plans["patch_size"])]
    padded = _pad_to(image, window)
    counts = {"tiles": 0, "skipped": 0, "forward_passes": 0}
    with inference():
        coarse = _tiled(net, _pad_to(_downsample(padded, scale), window), window, len(plans["labels"]), overlap,
                        [()], device, scaled(progress, 0.1, 0.9), counts, "tiles", batch_tiles)
    size = image.shape[1:]
    cut = (slice(0, size[0]), slice(0, size[1]), slice(0, size[2]))
    found = _upsample(coarse[1:].max(0)[0] >= min_probability, scale, padded.shape[1:])[cut].numpy()
    liver = _upsample(coarse[1:].sum(0) >= 0.5, scale, padded.shape[1:])[cut].numpy()
    mask = sitk.GetImageFromArray(liver.transpose(2, 1, 0).astype(np.uint8))
    mask.CopyInformation(grid)
    mask = sitk.Resample(mask, case.reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    meta = {**counts, "overlap": overlap, "scale": scale, "seconds": round(time.time() - t0, 2)}
    progress(1.0, "located")
    return Located(mask, found, meta)


def locate_study(study, bundle=None, *, reference: str | None = None, progress=None, **kwargs) -> Located:
    """`locate_case` of a study (its series on the reference grid, unregistered is fine) with a bundle."""
    from .bundle import Bundle, load_bundle

    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    return locate_case(_case(study, bundle, reference), bundle, progress=progress, **kwargs)


def _case(study, bundle, reference):
    ref = reference or bundle.dataset.get("reference")
    if ref and study.get(ref) is None:
        ref = None
    return case_from_study(study, bundle.channels, ref)


def segment_study(study, bundle=None, *, reference: str | None = None, progress=None, **kwargs) -> Segmentation:
    """Segment a (registered) study with a bundle (default: the shipped sample model)."""
    from .bundle import Bundle, load_bundle

    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    return predict_case(_case(study, bundle, reference), bundle, progress=progress, **kwargs)


# ------------------------------------------------------------------ post-processing and lesions
def postprocess_in_box(labels: sitk.Image, postprocess: bool = True, min_lesion_ml: float = MIN_LESION_ML,
                       liver_margin_mm: float = 5.0):
    """(labels, lesion map, lesion table), post-processed inside the box around the labels plus the liver
    margin (nothing outside it can change), pasted back onto the full grid."""
    arr = sitk.GetArrayViewFromImage(labels)
    nz = np.argwhere(arr)
    if not len(nz):
        return (labels, *lesion_table(labels, min_lesion_ml))
    pad = np.ceil(max(liver_margin_mm, 0.0) / np.asarray(labels.GetSpacing())).astype(int) + 1
    lo = np.maximum(nz.min(0)[::-1] - pad, 0)
    hi = np.minimum(nz.max(0)[::-1] + pad, np.asarray(labels.GetSize()) - 1)
    index, size = [int(v) for v in lo], [int(v) for v in hi - lo + 1]
    box = sitk.RegionOfInterest(labels, size, index)
    if postprocess:
        box = postprocess_labels(box, min_lesion_ml, liver_margin_mm)
    box_lesions, table = lesion_table(box, min_lesion_ml)
    full = sitk.Paste(labels * 0, box, size, [0, 0, 0], index)
    lesions = sitk.Paste(sitk.Cast(labels * 0, box_lesions.GetPixelID()), box_lesions, size, [0, 0, 0], index)
    return full, lesions, table


def _components(mask: sitk.Image) -> sitk.Image:
    return sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)


def postprocess_labels(labels: sitk.Image, min_lesion_ml: float = MIN_LESION_ML, liver_margin_mm: float = 5.0) -> sitk.Image:
    """Largest connected liver (liver + tumour), tumours only inside the dilated liver, no lesion < min size."""
    liver_id, tumour_id = LABELS["liver"], LABELS["tumour"]
    arr = sitk.GetArrayFromImage(labels)
    organ = _components(sitk.Cast(labels == liver_id, sitk.sitkUInt8) | sitk.Cast(labels == tumour_id, sitk.sitkUInt8))
    organ = sitk.GetArrayFromImage(organ) == 1
    organ_img = sitk.GetImageFromArray(organ.astype(np.uint8))
    organ_img.CopyInformation(labels)
    radius = [int(np.ceil(liver_margin_mm / s)) for s in labels.GetSpacing()]
    near = sitk.GetArrayFromImage(sitk.BinaryDilate(organ_img, radius)) > 0 if liver_margin_mm > 0 else organ
    out = np.zeros_like(arr)
    out[(arr == liver_id) & organ] = liver_id
    tumour = sitk.GetImageFromArray(((arr == tumour_id) & near).astype(np.uint8))
    tumour.CopyInformation(labels)
    comps = sitk.GetArrayFromImage(label_lesions(tumour, min_ml=0, tumour_label=1))
    voxel_ml = float(np.prod(labels.GetSpacing())) / 1000.0
    sizes = np.bincount(comps.ravel())
    keep = np.flatnonzero(sizes * voxel_ml >= min_lesion_ml)
    keep = keep[keep > 0]
    kept = np.isin(comps, keep)
    out[kept] = tumour_id
    out[(comps > 0) & ~kept & organ] = liver_id  # dropped specks inside the liver are liver
    for name in ("spleen", "portal_vein"):
        out[arr == LABELS[name]] = LABELS[name]
    result = sitk.GetImageFromArray(out)
    result.CopyInformation(labels)
    return result


def lesion_table(labels: sitk.Image, min_ml: float = MIN_LESION_ML):
    """(lesion instance map, DataFrame): the lesions of `lesions.label_lesions`, largest first."""
    lesion_map, table = LesionTable.from_labels(labels, min_ml=min_ml)
    return lesion_map, table.frame


def save_segmentation(seg: Segmentation, folder, info: dict | None = None):
    """Write segmentation.nii.gz, lesions.nii.gz, lesions.csv and segmentation.json into `folder` (atomically)."""
    import json
    from pathlib import Path

    from ..io import save_image
    from ..files import atomic_write

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_image(seg.labels, folder / "segmentation.nii.gz")
    save_image(sitk.Cast(seg.lesion_map, sitk.sitkUInt16), folder / "lesions.nii.gz")
    LesionTable(seg.lesions).to_csv(folder / "lesions.csv")
    present = set(np.unique(sitk.GetArrayViewFromImage(seg.labels)).tolist())
    doc = {"labels": {name: value for name, value in LABELS.items() if value == 0 or value in present},
           **(info or {}), **seg.meta}
    with atomic_write(folder / "segmentation.json") as tmp:
        Path(tmp).write_text(json.dumps(doc, indent=2, default=str))
    return folder


def read_segmentation(folder) -> tuple[Segmentation, dict]:
    """(Segmentation, segmentation.json) as `save_segmentation` wrote them into `folder` (`run --resume`).

    The lesion map comes back as UInt32 (what `lesions.label_lesions` gives); `meta` is segmentation.json less
    its "labels" (the engine info and the Segmentation's meta were merged there)."""
    import json
    from pathlib import Path

    from ..io import read_image

    folder = Path(folder)
    try:
        doc = json.loads((folder / "segmentation.json").read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"Cannot read '{folder / 'segmentation.json'}' ({exc}): rerun the segmentation "
                         "stage.") from exc
    lesion_map = sitk.Cast(read_image(folder / "lesions.nii.gz"), sitk.sitkUInt32)
    seg = Segmentation(read_image(folder / "segmentation.nii.gz"), LesionTable.from_csv(folder / "lesions.csv").frame,
                       lesion_map, {k: v for k, v in doc.items() if k != "labels"})
    return seg, doc
