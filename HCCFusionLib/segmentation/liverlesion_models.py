"""The two trained U-Nets of pyliverlesionseg 0.3 (whole liver; liver lesions), ported to PyTorch.

`load_liverlesion(kind)` opens the shipped bundle (HCCFusionLib/models/liverlesion_<kind>/, converted by
scripts/convert_pyliverlesionseg.py); `predict_volume` reproduces DeepVoxNet.predict as pyliverlesionseg
calls it (ExtractSegment3D2 tiles with zero padding, ForcedUniformCenterSampler for the liver model: one tile
at the volume centre; ForcedUniformCoordinateSampler for the lesion model: a grid of output-sized tiles).

Voxel order: network arrays are (x, y, z) with indices increasing toward patient Right, Anterior, Superior
(pyliverlesionseg flips its LPS arrays in x and y before the network), e.g.
`sitk.GetArrayFromImage(sitk.DICOMOrient(img, "RAS")).transpose(2, 1, 0)`.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from ..errors import InputError, ModelError
from .speed import inference

log = logging.getLogger(__name__)

_COMMON = {"number_input_features": 1, "kernel_sizes_common_pathway": [[1, 1, 1]],
           "number_features_common_pathway": [1], "pooling": "max", "activation": "lrelu",
           "activation_final_layer": "sigmoid", "instance_normalization": True}
_FEATURES = [[[20, 40], [40, 20]], [[40, 80], [80, 40]], [[80, 160], [160, 80]], [[160, 160], []]]
_INPLANE = [[[3, 3, 1], [3, 3, 3]], [[3, 3, 3], [3, 3, 1]]]

# The create_unet_like_model arguments of unet_liver_predict / unet_lesion_predict, and the segment
# sizes and sampling that cnn_liver_lesion_seg_CT_MR_main passes to them.
MODELS = {
    "liver": {
        "hdf5": "model_unet_ct_mr_liv_seg_resize_1.5mm_med_3_resize_3mm_20201011_dice_loss_val_binary_dice_mean.hdf5",
        "network": {**_COMMON, "subsample_factors_per_pathway": [[1, 1, 1], [3, 3, 3], [9, 9, 9], [27, 27, 27]],
                    "kernel_sizes_per_pathway": [_INPLANE] * 3 + [[[[3, 3, 3], [3, 3, 3]], []]],
                    "number_features_per_pathway": _FEATURES, "padding": "same", "upsampling": "linear",
                    "residual_connections": False},
        "output_segment_size": [163, 136, 136],
        "center_sampling": True,
        "task": "whole-liver segmentation (probability of liver) on CT or MR",
        "preprocessing": (
            "pyliverlesionseg cnn_liver_lesion_seg_CT_MR_main: LPS image cropped to the abdomen (crop_ct_image / "
            "crop_mr_image, at most 489 x 408 x 408 mm), resampled (pymirc zoom3d, cval 0) to half the target "
            "spacing (1.5 mm), 3x3x3 median filter, resampled to the target spacing (3 mm); CT: "
            "clip(HU / 1000, -0.2, 0.2) * 2.5; MR: clip to [min, min + 0.8 * range] then linearly to "
            "[-0.5, 0.5]; flipped in x and y (RAS voxel order)"),
        "postprocessing": ("threshold 0.5, binary erosion (3x3x3, 18-connected), largest 6-connected component, "
                           "binary dilation, linear zoom back to the crop, pasted into the full image"),
    },
    "lesion": {
        "hdf5": "model_unet_ct_mr_lesion_seg_resize_1mm_1mm_3mm_20220207_dice_loss_val_binary_dice_mean.hdf5",
        "network": {**_COMMON, "subsample_factors_per_pathway": [[1, 1, 1], [2, 2, 2], [4, 4, 4], [8, 8, 8]],
                    "kernel_sizes_per_pathway": [_INPLANE] * 3 + [[[[3, 3, 1], [3, 3, 3]], []]],
                    "number_features_per_pathway": _FEATURES, "padding": "valid", "upsampling": "copy",
                    "residual_connections": True},
        "output_segment_size": [92, 84, 42],
        "center_sampling": False,
        "task": "liver-lesion segmentation (probability of lesion) inside a given liver mask, CT or MR",
        "preprocessing": (
            "pyliverlesionseg cnn_liver_lesion_seg_CT_MR_main: RAS image; CT: clip(HU / 1000, -0.2, 0.2) * 2.5; "
            "MR: minus the liver median, times min(0.5 / |min - median|, 0.5 / |max - median|) over the liver; "
            "image and liver mask resampled (pymirc zoom3d, cval 0) to the target spacing (1 x 1 x 3 mm); mask "
            "> 0.5, dilated (18-connectivity structure iterated twice); image set to -0.5 outside the dilated "
            "mask, clipped to [-0.5, 0.5], cropped to the dilated mask's bounding box"),
        "postprocessing": "threshold 0.5, pasted into the resampled grid, linear zoom back to the image, > 0",
    },
}


def bundle_path(kind: str) -> Path:
    """Folder of the shipped bundle for kind "liver" or "lesion"."""
    if kind not in MODELS:
        raise InputError(f"Unknown pyliverlesionseg model '{kind}': use 'liver' or 'lesion'.")
    return Path(__file__).resolve().parents[1] / "models" / f"liverlesion_{kind}"


def load_liverlesion(kind: str):
    """(bundle, net) for kind "liver" or "lesion": checksums verified, net in eval mode on the CPU, weights in
    channels-last 3D memory format (about 1.5x faster convolutions on CPU than the default layout)."""
    import torch

    from .bundle import load_bundle

    bundle = load_bundle(bundle_path(kind))
    if bundle.plans.get("architecture") != "unet_generalized":
        raise ModelError(f"Bundle '{bundle.path}' is not a pyliverlesionseg U-Net: re-run "
                         "scripts/convert_pyliverlesionseg.py.")
    return bundle, bundle.build_network().to(memory_format=torch.channels_last_3d)


def extract_segment(volume: np.ndarray, center, size) -> np.ndarray:
    """ExtractSegment3D2: a `size` block whose voxel size // 2 sits on `center`; zeros outside the volume."""
    out = np.zeros(tuple(size), np.float32)
    src, dst = [], []
    for n_vol, c, n in zip(volume.shape, center, size):
        lo = c - n // 2
        a, b = max(lo, 0), min(lo + n, n_vol)
        src.append(slice(a, b))
        dst.append(slice(a - lo, b - lo))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def tile_layout(shape, input_size, output_size, center_sampling: bool) -> list:
    """DeepVoxNet.predict's tiles (output scale 1): [(sampling centre, slices into the volume, slices into
    the tile output)], in its x, y, z loop order (later tiles overwrite earlier ones)."""
    per_axis = []
    for n_vol, n_in, n_out in zip(shape, input_size, output_size):
        seg = n_vol if center_sampling or n_out >= n_vol else n_out
        starts = list(range(0, n_vol, seg)) + ([n_vol - seg] if n_vol % seg else [])
        axis = []
        for s in starts:
            c = math.ceil(s + (seg - 1) / 2)
            centre = c if n_in % 2 else c - 0.5
            first, last = centre - (n_out - 1) / 2, centre + (n_out - 1) / 2
            under, over = max(0, -first), max(0, last - (n_vol - 1))
            vol_slice = slice(round(first + math.ceil(under) - 1e-7), round(last - math.ceil(over) + 1 - 1e-7))
            out_slice = slice(math.ceil(under), -math.ceil(over) or None)
            axis.append((c, vol_slice, out_slice, s, seg))
        per_axis.append(axis)
    return [tuple(zip(*combo)) for combo in
            ((ax, ay, az) for ax in per_axis[0] for ay in per_axis[1] for az in per_axis[2])]


def needed_tiles(tiles: list, shape) -> list:
    """The tiles whose output is not entirely overwritten by later tiles (skipping the others leaves the
    result unchanged: a tile's output depends on its own input only). DeepVoxNet's start list
    range(0, n, seg) + [n - seg] makes the last range() tile redundant on every axis where seg does not divide n."""
    written = np.zeros(tuple(shape), bool)
    keep = []
    for tile in reversed(tiles):
        region = written[tile[1]]
        if not region.all():
            keep.append(tile)
            region[...] = True
    return keep[::-1]


def predict_volume(net, volume: np.ndarray, plans: dict, *, batch_size: int = 1,
                   roi: "np.ndarray | None" = None) -> np.ndarray:
    """Sigmoid probabilities (float32, same shape as `volume`) by DeepVoxNet.predict's tiling.

    `volume`: preprocessed float32 (x, y, z) array in network voxel order (see the module docstring).
    Voxels no tile covers take the value of the nearest covered voxel (scipy EDT indices, as DeepVoxNet).
    `roi` (DeepVoxNet's option, unused by pyliverlesionseg): skip tiles whose sampling segment holds no ROI
    voxel, and multiply the result by the ROI.
    """
    import torch
    from scipy import ndimage

    volume = np.asarray(volume, dtype=np.float32)
    if volume.ndim != 3 or min(volume.shape) < 1:
        raise InputError(f"predict_volume needs a 3D (x, y, z) volume, got shape {volume.shape}.")
    if roi is not None and np.shape(roi) != volume.shape:
        raise InputError(f"ROI shape {np.shape(roi)} differs from the volume's {volume.shape}.")
    n_in, n_out = plans["input_segment_size"], plans["output_segment_size"]
    tiles = tile_layout(volume.shape, n_in, n_out, bool(plans["center_sampling"]))
    if roi is not None:
        roi = np.asarray(roi).astype(bool)
        tiles = [t for t in tiles if roi[tuple(slice(s, s + g) for s, g in zip(t[3], t[4]))].any()]
    tiles = needed_tiles(tiles, volume.shape)
    result = np.full(volume.shape, np.nan, np.float32)
    log.info("pyliverlesionseg U-Net: %d tile(s) of %s for a %s volume", len(tiles), n_in, volume.shape)
    with inference():
        for b in range(0, len(tiles), batch_size):
            batch = tiles[b:b + batch_size]
            x = np.stack([extract_segment(volume, t[0], n_in) for t in batch])[:, None]
            y = net(torch.from_numpy(x).contiguous(memory_format=torch.channels_last_3d)).contiguous().numpy()
            if list(y.shape[2:]) != list(n_out):
                raise ModelError(f"The network gave a {list(y.shape[2:])} output for a {n_in} input; plans say "
                                 f"{n_out}: re-convert the bundle.")
            for t, y_tile in zip(batch, y[:, 0]):
                result[t[1]] = y_tile[t[2]]
    missing = np.isnan(result)
    if missing.all():
        return np.zeros(volume.shape, np.float32)
    if missing.any():
        result = result[tuple(ndimage.distance_transform_edt(missing, return_distances=False, return_indices=True))]
    if roi is not None:
        result = result * roi
    return result
