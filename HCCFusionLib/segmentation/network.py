"""MONAI DynUNet (the nnU-Net architecture) built from plans."""
from __future__ import annotations


def build_network(plans: dict, deep_supervision: bool = False):
    """DynUNet: one input channel per plan channel, one output per label; deep supervision for training."""
    from monai.networks.nets import DynUNet

    strides = plans["strides"]
    return DynUNet(
        spatial_dims=3,
        in_channels=len(plans["channels"]),
        out_channels=len(plans["labels"]),
        kernel_size=plans["kernels"],
        strides=strides,
        upsample_kernel_size=strides[1:],
        filters=plans["filters"],
        norm_name=("INSTANCE", {"affine": True}),
        deep_supervision=deep_supervision,
        deep_supr_num=max(1, min(2, len(strides) - 2)),
    )
