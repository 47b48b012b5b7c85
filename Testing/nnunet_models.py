"""nnU-Net v2 model folders for tests, laid out as nnU-Net v2 writes them (dataset.json, plans.json, fold_0).

`interval_model` is nnU-Net's default PlainConvUNet with hand-set weights: with no norm and no nonlinearity the
net is linear, and only its full-resolution path is non-zero, so it copies one input channel to the output and
its three logits split that channel's CT-normalised intensity into intervals. `interval_labels` gives the label
map it must produce, voxel by voxel.
"""
from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk
import torch

from HCCFusionLib.study import LABELS

FOLDER = ("Dataset042_Liver", "nnUNetTrainer__nnUNetPlans__3d_fullres")
FG = {"mean": 80.0, "std": 40.0, "percentile_00_5": -100.0, "percentile_99_5": 300.0}  # HU, per channel
LIVER_HU, TUMOUR_HU = 59.5, 99.5  # the interval net: "liver" 60-99 HU (phantom HU are integers), "tumor" above


def _write_folder(root, channel_names, labels, payload, configurations=None):
    folder = root.joinpath(*FOLDER)
    (folder / "fold_0").mkdir(parents=True)
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": channel_names, "labels": labels, "numTraining": 10, "file_ending": ".nii.gz"}))
    (folder / "plans.json").write_text(json.dumps({
        "dataset_name": FOLDER[0], "plans_name": "nnUNetPlans", "configurations": configurations or {},
        "original_median_spacing_after_transp": [5.0, 3.7, 3.7], "original_median_shape_after_transp": [40, 96, 96],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {str(i): dict(FG) for i in range(len(channel_names))}}))
    torch.save(payload, folder / "fold_0" / "checkpoint_final.pth")
    return folder


def model_folder(root, channel_names, labels=None, payload=None):
    """A folder with valid metadata and placeholder weights (for mapping and checkpoint checks)."""
    return _write_folder(root, channel_names, labels or {"background": 0, "liver": 1, "tumor": 2},
                         payload or {"network_weights": {"w": torch.zeros(2)}, "trainer_name": "nnUNetTrainer",
                                     "init_args": {"configuration": "3d_fullres", "fold": 0},
                                     "inference_allowed_mirroring_axes": (0, 1, 2),
                                     "logging": {"ema_fg_dice": [np.float64(0.5)]}})


ARCH = {"n_stages": 3, "features_per_stage": [4, 8, 8], "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": [[3, 3, 3]] * 3, "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
        "n_conv_per_stage": [2, 2, 2], "n_conv_per_stage_decoder": [2, 2], "conv_bias": True,
        "norm_op": None, "norm_op_kwargs": None, "dropout_op": None, "dropout_op_kwargs": None,
        "nonlin": None, "nonlin_kwargs": None}
NETWORK = "dynamic_network_architectures.architectures.unet.PlainConvUNet"  # nnU-Net v2's default
REQUIRES_IMPORT = ["conv_op", "norm_op", "dropout_op", "nonlin"]


def _interval_weights(read_channel: int, n_channels: int, mid_label: int, high_label: int) -> dict:
    """PlainConvUNet weights: logits of (background, mid_label, high_label) linear in the normalised channel."""
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    net = get_network_from_plans(NETWORK, ARCH, REQUIRES_IMPORT, n_channels, 3, deep_supervision=False)
    z1, z2 = ((t - FG["mean"]) / FG["std"] for t in (LIVER_HU, TUMOUR_HU))
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        encoder, decoder = net.encoder.stages[0], net.decoder.stages[-1]
        encoder[0].convs[0].conv.weight[0, read_channel, 1, 1, 1] = 1.0
        encoder[0].convs[1].conv.weight[0, 0, 1, 1, 1] = 1.0
        up = ARCH["features_per_stage"][0]  # decoder input = cat(upsampled deeper features, skip)
        decoder.convs[0].conv.weight[0, up, 1, 1, 1] = 1.0
        decoder.convs[1].conv.weight[0, 0, 1, 1, 1] = 1.0
        seg = net.decoder.seg_layers[-1]
        # background 0; mid: x - z1; high: 2x - z1 - z2  ->  argmax = background | mid | high at z1, z2
        seg.weight[mid_label, 0] = 1.0
        seg.bias[mid_label] = -z1
        seg.weight[high_label, 0] = 2.0
        seg.bias[high_label] = -z1 - z2
    return net.state_dict()


def interval_model(root, channel_names, read_channel, spacing, labels=None):
    """The interval net reading channel `read_channel`, planned at `spacing` (z, y, x mm); `labels` as in
    dataset.json (needs "liver" and "tumor"/"tumour"/"HCC")."""
    labels = labels or {"background": 0, "liver": 1, "tumor": 2}
    config = {"data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
              "batch_size": 2, "patch_size": [32, 64, 64], "median_image_size_in_voxels": [40, 96, 96],
              "spacing": spacing, "normalization_schemes": ["CTNormalization"] * len(channel_names),
              "use_mask_for_norm": [False] * len(channel_names),
              "resampling_fn_data": "resample_data_or_seg_to_shape",
              "resampling_fn_seg": "resample_data_or_seg_to_shape",
              "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
              "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
              "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
              "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                     "force_separate_z": None},
              "batch_dice": False,
              "architecture": {"network_class_name": NETWORK, "arch_kwargs": ARCH,
                               "_kw_requires_import": REQUIRES_IMPORT}}
    tumour = next(v for k, v in labels.items() if k.lower() in ("tumor", "tumour", "hcc"))
    weights = _interval_weights(read_channel, len(channel_names), labels["liver"], tumour)
    return _write_folder(root, channel_names, labels, {
        "network_weights": weights, "trainer_name": "nnUNetTrainer",
        "init_args": {"configuration": "3d_fullres", "fold": 0}, "inference_allowed_mirroring_axes": (0, 1, 2)},
        {"3d_fullres": config})


def interval_labels(image: sitk.Image) -> sitk.Image:
    """HCCFusion labels (study.LABELS) that the interval net gives for the channel `image`, on its grid."""
    hu = sitk.GetArrayFromImage(image)
    out = np.zeros(hu.shape, np.uint8)
    out[(hu >= LIVER_HU) & (hu < TUMOUR_HU)] = LABELS["liver"]
    out[hu >= TUMOUR_HU] = LABELS["tumour"]
    labels = sitk.GetImageFromArray(out)
    labels.CopyInformation(image)
    return labels
