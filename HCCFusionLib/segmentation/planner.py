"""nnU-Net-style experiment planning: dataset fingerprint -> plans (JSON).

All per-axis lists (spacing, shapes, patch size, kernels, strides) are in image (x, y, z) order, the
order of SimpleITK's GetSpacing()/GetSize(); arrays handed to the network are indexed the same way
(channel, x, y, z).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ..errors import InputError, ModelError

log = logging.getLogger(__name__)

PLANS_VERSION = 1
ANISOTROPY_RATIO = 3.0  # nnU-Net: an axis is "low resolution" when its spacing is >3x the finest
MIN_FEATURE_MAP = 4  # pool an axis while its feature map stays >= this many voxels
MAX_POOLINGS = 5
SAMPLES_PER_CASE = 10000


def fingerprint(cases, seed: int = 0) -> dict:
    """Spacings, shapes and per-channel foreground intensity statistics of a list of `data.Case`.

    Foreground = label > 0; up to SAMPLES_PER_CASE foreground voxels per case and channel are sampled
    (seeded) for the global percentiles, as nnU-Net does.
    """
    cases = list(cases)
    if not cases:
        raise InputError("Cannot plan from an empty dataset: give at least one case with a label map.")
    channels = cases[0].channel_names
    rng = np.random.default_rng(seed)
    spacings, shapes, samples = [], [], {c: [] for c in channels}
    for case in cases:
        if case.channel_names != channels:
            raise InputError(f"Case '{case.case_id}' has channels {case.channel_names}, expected {channels}.")
        if case.labels is None:
            raise InputError(f"Case '{case.case_id}' has no label map: planning needs ground-truth labels.")
        spacings.append(list(case.reference.GetSpacing()))
        shapes.append(list(case.reference.GetSize()))
        fg = case.label_array() > 0
        if not fg.any():
            raise InputError(f"Case '{case.case_id}' has an empty label map (no foreground).")
        idx = np.flatnonzero(fg)
        pick = rng.choice(idx, size=min(SAMPLES_PER_CASE, idx.size), replace=False)
        for name in channels:
            samples[name].append(case.channel_array(name).ravel()[pick])
    stats = {}
    for name in channels:
        v = np.concatenate(samples[name]).astype(np.float64)
        stats[name] = {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max()),
                       "percentile_00_5": float(np.percentile(v, 0.5)),
                       "percentile_99_5": float(np.percentile(v, 99.5))}
    return {"channels": channels, "modalities": cases[0].modalities, "spacings": spacings, "shapes": shapes,
            "foreground_intensity": stats, "num_cases": len(cases)}


def target_spacing(spacings, shapes) -> list[float]:
    """Median spacing; a strongly anisotropic, low-resolution axis takes the 10th percentile (nnU-Net rule)."""
    spacings, shapes = np.asarray(spacings, float), np.asarray(shapes, float)
    target = np.median(spacings, axis=0)
    median_shape = np.median(shapes * spacings / target, axis=0)
    worst = int(np.argmax(target))
    others = [i for i in range(3) if i != worst]
    if target[worst] > ANISOTROPY_RATIO * target[others].max() and \
            median_shape[worst] * ANISOTROPY_RATIO < median_shape[others].min():
        target[worst] = max(np.percentile(spacings[:, worst], 10), target[others].max() * 1.0001)
    return [float(s) for s in target]


def topology(patch_size, spacing) -> dict:
    """Poolings per axis until ~MIN_FEATURE_MAP voxels, anisotropy-aware kernel sizes and strides."""
    spacing = np.asarray(spacing, float)
    size = np.asarray(patch_size, float)
    current = spacing.copy()
    kernels, strides = [], [[1, 1, 1]]
    n_pool = np.zeros(3, int)
    kernels.append([3 if current[i] / current.min() < 2 else 1 for i in range(3)])
    while True:
        pool = [int(size[i] / 2 >= MIN_FEATURE_MAP and current[i] / current.min() < 2 and n_pool[i] < MAX_POOLINGS)
                for i in range(3)]
        if not any(pool):
            break
        stride = [2 if p else 1 for p in pool]
        size = size / stride
        current = current * stride
        n_pool += pool
        strides.append(stride)
        kernels.append([3 if current[i] / current.min() < 2 else 1 for i in range(3)])
    return {"kernels": kernels, "strides": strides, "poolings": n_pool.tolist()}


def filters_per_level(n_levels: int, base: int, cap: int) -> list[int]:
    return [min(base * 2 ** i, cap) for i in range(n_levels)]


def estimate_memory_mb(patch_size, n_channels: int, n_classes: int, filters, strides, batch_size: int = 1,
                       training: bool = True) -> float:
    """Rough peak memory of one forward (+ backward) pass of the DynUNet in MB.

    Counts float32 feature maps per level (two convolutions with norm and activation in the encoder and
    decoder); training keeps them for backward (x ~2 with gradients), inference frees them level by level.
    """
    voxels = float(np.prod(patch_size))
    per_level = []
    for level, stride in enumerate(strides):
        voxels /= float(np.prod(stride))
        per_level.append(voxels * filters[level])
    encoder_decoder = 2 * 3 * sum(per_level)  # conv, norm, act kept per block, encoder + decoder
    io = float(np.prod(patch_size)) * (n_channels + 2 * n_classes)
    floats = batch_size * (2 * encoder_decoder + io) if training else batch_size * (0.5 * encoder_decoder + io)
    return 4.0 * floats / 2 ** 20


def make_plans(fp: dict, *, memory_mb: float = 2000.0, spacing=None, base_filters: int = 32, max_filters: int = 320,
               batch_size: int = 2, labels: dict | None = None, max_patch_mm=None) -> dict:
    """Plans from a fingerprint: spacing, patch size under `memory_mb` (training), normalisation, topology.

    `spacing` overrides the target spacing (e.g. a coarse plan for CPU); `max_patch_mm` caps the patch's
    physical extent per axis.
    """
    from ..study import LABELS

    spacing = [float(s) for s in (spacing or target_spacing(fp["spacings"], fp["shapes"]))]
    sizes = np.asarray(fp["shapes"], float) * np.asarray(fp["spacings"], float) / np.asarray(spacing)
    patch = np.median(sizes, axis=0)
    if max_patch_mm is not None:
        patch = np.minimum(patch, np.asarray(max_patch_mm, float) / spacing)
    patch = np.maximum(patch, 8)
    labels = dict(labels or {k: LABELS[k] for k in ("background", "liver", "tumour")})
    n_ch, n_cls = len(fp["channels"]), len(labels)

    def fit(p):
        topo = topology(p, spacing)
        divisor = np.prod(np.asarray(topo["strides"]), axis=0)
        p = np.maximum(np.round(p / divisor) * divisor, divisor).astype(int)
        filt = filters_per_level(len(topo["strides"]), base_filters, max_filters)
        return p, topo, filt, estimate_memory_mb(p, n_ch, n_cls, filt, topo["strides"], batch_size)

    p, topo, filt, mem = fit(patch)
    while mem > memory_mb:
        if np.all(patch <= 8):
            raise ModelError(f"No patch fits a memory budget of {memory_mb:.0f} MB: give a larger --memory-mb.")
        extent = np.where(patch > 8, patch * np.asarray(spacing), -1.0)
        axis = int(np.argmax(extent))  # shrink the physically longest axis that can still shrink
        patch[axis] = max(8.0, patch[axis] * 0.9)
        p, topo, filt, mem = fit(patch)
    normalisation = {name: ("ct" if mod == "CT" else "zscore") for name, mod in zip(fp["channels"], fp["modalities"])}
    plans = {
        "version": PLANS_VERSION, "axes": "xyz", "channels": fp["channels"], "modalities": fp["modalities"],
        "labels": labels, "spacing": spacing, "patch_size": p.tolist(), "batch_size": batch_size,
        "normalisation": normalisation,
        "intensity": {name: fp["foreground_intensity"][name] for name in fp["channels"]},
        "kernels": topo["kernels"], "strides": topo["strides"], "filters": filt,
        "memory_mb_estimate": round(mem, 1), "memory_mb_budget": memory_mb,
        "median_shape": np.round(np.median(sizes, axis=0)).astype(int).tolist(),
    }
    log.info("Plans: spacing %s mm, patch %s, %d levels, ~%.0f MB", spacing, plans["patch_size"], len(filt), mem)
    return plans


def save_plans(plans: dict, path: "str | Path") -> Path:
    from ..files import atomic_write

    with atomic_write(path) as tmp:
        Path(tmp).write_text(json.dumps(plans, indent=2))
    return Path(path)


def load_plans(path: "str | Path") -> dict:
    path = Path(path)
    try:
        plans = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"Cannot read plans '{path}' ({exc}): give a plans.json from `hccfusion plan`.") from None
    missing = {"channels", "labels", "spacing", "patch_size", "kernels", "strides", "filters",
               "normalisation", "intensity"} - set(plans)
    if missing:
        raise InputError(f"Plans '{path}' lack {sorted(missing)}: regenerate them with `hccfusion plan`.")
    return plans
