"""PyTorch port of pyliverlesionseg 0.3's Keras U-Net (`create_unet_like_model`, DeepVoxNet v1 family).

Only the options its two trained models use are supported: max pooling by per-pathway subsample factors,
convolutions with 'valid' or 'same' padding (odd kernels: TF pads (k - 1) / 2 zeros on each side), optional
pre-activation instance normalisation ((x - mean) / (std + 1e-7) over the spatial axes of each tile and
channel, population std, no learned parameters; no batch norm), leaky ReLU (alpha 0.01) or linear, optional
residual connections (a 1x1x1 convolution on the shortcut when the channel count changes), 'copy' (repeat)
or 'linear' upsampling (repeat, then a box average of the factor's size with stride 1: Keras' UpSampling3D +
AveragePooling3D, n voxels -> f * n - f + 1), symmetric cropping of the skip connections (Cropping3D), and
a 1x1x1 output convolution with sigmoid. With odd kernels the Keras code's grid-alignment average pools are
always of size 1 (identities); configs needing others are refused.

Layout: tensors are (batch, channel, x, y, z); the three spatial axes are the Keras model's axes 1..3 in the
same order, i.e. the (x, y, z) voxel axes of the arrays pyliverlesionseg feeds it (see liverlesion_models).
Keras Conv3D kernels (kx, ky, kz, in, out) become torch weights (out, in, kx, ky, kz). Convolutions are
named conv3d_<k> in the order Keras creates them, which is the numbering of the weights in its HDF5 files.
"""
from __future__ import annotations

import numpy as np

from ..errors import ModelError

EPSILON = 1e-7  # keras.backend.epsilon(), added to the std in the instance normalisation
LRELU_SLOPE = 0.01
SUPPORTED = {"padding": ("valid", "same"), "pooling": ("max",), "upsampling": ("copy", "linear"),
             "activation": ("lrelu", "linear"), "activation_final_layer": ("sigmoid", "linear")}
_SEARCH = 500  # input sizes considered per axis, as in create_unet_like_model


def check_config(config: dict) -> dict:
    """Validate a network config (the keyword arguments of create_unet_like_model that the port supports)."""
    need = ("number_input_features", "subsample_factors_per_pathway", "kernel_sizes_per_pathway",
            "number_features_per_pathway", "kernel_sizes_common_pathway", "number_features_common_pathway",
            "padding", "pooling", "upsampling", "activation", "activation_final_layer",
            "instance_normalization", "residual_connections")
    missing = [k for k in need if k not in config]
    if missing:
        raise ModelError(f"unet_generalized config lacks {missing}: re-convert the model bundle.")
    for key, allowed in SUPPORTED.items():
        if config[key] not in allowed:
            raise ModelError(f"unet_generalized: {key}={config[key]!r} is not supported (allowed: {allowed}).")
    sfs = [tuple(s) for s in config["subsample_factors_per_pathway"]]
    if not len(sfs) == len(config["kernel_sizes_per_pathway"]) == len(config["number_features_per_pathway"]):
        raise ModelError("unet_generalized: inconsistent number of pathways in the config.")
    for prev, nxt in zip(sfs, sfs[1:]):
        if any(b % a for a, b in zip(prev, nxt)):
            raise ModelError("unet_generalized: each subsample factor must divide the next pathway's factor.")
    for ks, nf in zip(config["kernel_sizes_per_pathway"], config["number_features_per_pathway"]):
        if len(ks) != 2 or len(nf) != 2 or any(len(k) != len(n) for k, n in zip(ks, nf)):
            raise ModelError("unet_generalized: each pathway needs [down, up] kernel and feature lists of equal "
                             "length.")
        if any(k % 2 == 0 for side in ks for kernel in side for k in kernel):
            raise ModelError("unet_generalized: only odd kernel sizes are supported.")
    if len(config["kernel_sizes_common_pathway"]) != len(config["number_features_common_pathway"]):
        raise ModelError("unet_generalized: inconsistent depth of the common pathway.")
    return config


def _parity_step(factor, kernel_minus_one):
    return 1 - (np.asarray(factor) * kernel_minus_one + 1) % 2


def _walk(config: dict, sizes: np.ndarray):
    """The size/parity bookkeeping of create_unet_like_model for candidate input sizes (rows of `sizes`).

    Returns (output sizes per row, or <= 0 where impossible; stride-1 alignment pool size per upward level).
    """
    valid = config["padding"] == "valid"
    sfs = [np.array(s, dtype=np.int64) for s in config["subsample_factors_per_pathway"]]
    kss = config["kernel_sizes_per_pathway"]
    one = np.ones(3, dtype=np.int64)
    left_pos, left_sizes = [], []
    pos, prev = np.zeros(3, dtype=np.int64), one
    for sf, ks in zip([one] + sfs, [[[], []]] + kss):
        step = sf // prev
        prev = sf
        pos = np.abs(pos - _parity_step(sf, step - 1))
        sizes = (sizes // step) * ((sizes % step) == 0)
        for k in ks[0]:
            sizes = sizes - (np.array(k) - 1 if valid else 0)
            pos = np.abs(pos - _parity_step(sf, np.array(k) - 1))
        left_pos.append(pos)
        left_sizes.append(sizes)
    right_pos = [None] * len(left_pos)
    prev = sfs[-1]
    up_factors = [one, one] + sfs[:-1]
    for i in reversed(range(len(left_pos))):
        sf, ks = up_factors[i], ([[[], []]] + kss)[i]
        right_pos[i] = pos
        sizes = sizes - np.abs(left_pos[i] - pos)
        sizes = sizes * (((left_sizes[i] - sizes) % 2) == 0)
        pos = left_pos[i]
        for k in ks[1]:
            sizes = sizes - (np.array(k) - 1 if valid else 0)
            pos = np.abs(pos - _parity_step(sf, np.array(k) - 1))
        step = prev // sf
        prev = sf
        sizes = sizes * step
        if config["upsampling"] == "linear":
            sizes = sizes - step + 1
    for k in config["kernel_sizes_common_pathway"]:
        sizes = sizes - (np.array(k) - 1 if valid else 0)
    align = [[int(v) for v in np.abs(lp - rp) + 1] for lp, rp in zip(left_pos, right_pos)]
    return sizes, align


def alignment_pools(config: dict) -> list:
    """Per upward level i = 0..n, the size of the stride-1 average pool that aligns the grids (1 or 2)."""
    return _walk(check_config(config), np.zeros((1, 3), dtype=np.int64))[1]


def grid_plan(config: dict, output_size) -> dict:
    """Input size for an output size, found as create_unet_like_model does.

    Every candidate input size 0..499 goes through the Keras code's size bookkeeping; the input size is the
    smallest giving `output_size`. Returns {"input_size", "output_size", "align_pools"}.
    """
    sizes, align = _walk(check_config(config), np.stack([np.arange(_SEARCH, dtype=np.int64)] * 3, axis=-1))
    input_size = []
    for axis, want in enumerate(output_size):
        hits = np.nonzero((sizes[:, axis] > 0) & (sizes[:, axis] == int(want)))[0]
        if not len(hits):
            possible = sorted(set(int(s) for s in sizes[:, axis] if s > 0))[:20]
            raise ModelError(f"unet_generalized: output size {want} is impossible on axis {axis}; "
                             f"possible sizes start with {possible}.")
        input_size.append(int(hits[0]))
    return {"input_size": input_size, "output_size": [int(s) for s in output_size], "align_pools": align}


def conv_specs(config: dict) -> list[dict]:
    """The convolutions in Keras creation order: name conv3d_<k>, kernel, in/out channels, role."""
    check_config(config)
    specs = []

    def add(kernel, cin, cout, role):
        specs.append({"name": f"conv3d_{len(specs) + 1}", "kernel": [int(k) for k in kernel],
                      "in": int(cin), "out": int(cout), "role": role})

    residual = config["residual_connections"]
    chans = config["number_input_features"]
    left_chans = []
    for p, (ks, nf) in enumerate(zip(config["kernel_sizes_per_pathway"], config["number_features_per_pathway"])):
        block_in = chans
        for j, (k, n) in enumerate(zip(ks[0], nf[0])):
            add(k, chans, n, f"down{p + 1}.{j}")
            chans = n
            if residual and j == len(ks[0]) - 1 and block_in != chans:
                add((1, 1, 1), block_in, chans, f"down{p + 1}.shortcut")
        left_chans.append(chans)
    n_paths = len(left_chans)
    for p in reversed(range(n_paths)):
        ks, nf = config["kernel_sizes_per_pathway"][p], config["number_features_per_pathway"][p]
        if p < n_paths - 1:
            chans = left_chans[p] + chans
        block_in = chans
        for j, (k, n) in enumerate(zip(ks[1], nf[1])):
            add(k, chans, n, f"up{p + 1}.{j}")
            chans = n
            if residual and j == len(ks[1]) - 1 and block_in != chans:
                add((1, 1, 1), block_in, chans, f"up{p + 1}.shortcut")
    for j, (k, n) in enumerate(zip(config["kernel_sizes_common_pathway"], config["number_features_common_pathway"])):
        add(k, chans, n, f"common.{j}")
        chans = n
    return specs


def _torch():
    import torch
    import torch.nn.functional as F

    return torch, F


def instance_norm(x):
    """Keras Lambda: (x - mean) / (std + epsilon) per sample and channel over the spatial axes."""
    dev = x - x.mean(dim=(2, 3, 4), keepdim=True)
    std = dev.square().mean(dim=(2, 3, 4), keepdim=True).sqrt_()
    return dev.div_(std.add_(EPSILON))


def crop_to(x, like):
    """Keras Cropping3D(int((l - r) / 2)) on both sides of each spatial axis."""
    slices = [slice(None), slice(None)]
    for have, want in zip(x.shape[2:], like.shape[2:]):
        c = (have - want) // 2
        if have < want or (have - want) % 2:
            raise ModelError(f"unet_generalized: cannot crop {tuple(x.shape[2:])} to {tuple(like.shape[2:])}.")
        slices.append(slice(c, c + want))
    return x[tuple(slices)]


def upsample_copy(x, factor):
    """Keras UpSampling3D: repeat each voxel factor times along each axis."""
    n, c, a, b, d = x.shape
    fa, fb, fd = (int(f) for f in factor)
    if (fa, fb, fd) == (1, 1, 1):
        return x
    x = x[:, :, :, None, :, None, :, None].expand(n, c, a, fa, b, fb, d, fd)
    return x.reshape(n, c, a * fa, b * fb, d * fd)


def build_unet(config: dict):
    """An un-initialised GeneralizedUNet for a config (weights come from a bundle)."""
    torch, F = _torch()
    nn = torch.nn

    class GeneralizedUNet(nn.Module):
        """create_unet_like_model (mask_output=False) for one config; forward(x) -> sigmoid probabilities.

        forward(x, taps=[]) also appends (layer kind, conv name or "", output) for every non-identity
        layer in the order Keras builds them (for layer-by-layer checks).
        """

        def __init__(self, cfg: dict):
            super().__init__()
            self.config = check_config(dict(cfg))
            if any(a != [1, 1, 1] for a in alignment_pools(self.config)):  # only with even kernels
                raise ModelError("unet_generalized: grid-alignment pooling is not supported.")
            self.specs = conv_specs(self.config)
            same = self.config["padding"] == "same"
            self.convs = nn.ModuleDict({
                s["name"]: nn.Conv3d(s["in"], s["out"], tuple(s["kernel"]),
                                     padding=tuple(k // 2 for k in s["kernel"]) if same else 0)
                for s in self.specs})
            self._by_role = {s["role"]: s["name"] for s in self.specs}

        def _conv(self, role, x, rec):
            name = self._by_role[role]
            return rec("conv", self.convs[name](x), name)

        def _pre(self, x, rec, recording):
            if self.config["instance_normalization"]:
                x = rec("instance_norm", instance_norm(x))
            if self.config["activation"] == "linear":
                return x
            # in place on the fresh normalised tensor, unless the layers are being recorded
            inplace = self.config["instance_normalization"] and not recording
            return rec("lrelu", F.leaky_relu(x, LRELU_SLOPE, inplace=inplace))

        def _block(self, x, tag, n_convs, first_is_raw, rec):
            shortcut = x
            for j in range(n_convs):
                if not (first_is_raw and j == 0):
                    x = self._pre(x, rec, rec.recording)
                x = self._conv(f"{tag}.{j}", x, rec)
            if self.config["residual_connections"] and n_convs:
                shortcut = rec("crop", crop_to(shortcut, x))
                if rec.recording:
                    if shortcut.shape[1] != x.shape[1]:
                        shortcut = self._conv(f"{tag}.shortcut", shortcut, rec)
                    return rec("add", x + shortcut)
                return self._add_shortcut(x, shortcut, tag)
            return x

        def _add_shortcut(self, x, shortcut, tag):
            """x + shortcut (through the 1x1x1 shortcut convolution when the channels differ), in place on
            the fresh x; a one-channel shortcut is scaled per channel instead (oneDNN is slow at 1 -> n)."""
            if shortcut.shape[1] == x.shape[1]:
                return x.add_(shortcut)
            conv = self.convs[self._by_role[f"{tag}.shortcut"]]
            if shortcut.shape[1] == 1:
                shape = (1, -1, 1, 1, 1)
                scaled = torch.empty_like(x)  # x's memory layout: the add below then runs in order
                return x.add_(torch.addcmul(conv.bias.view(shape), shortcut, conv.weight.view(shape), out=scaled))
            return x.add_(conv(shortcut))

        def forward(self, x, taps: "list | None" = None):
            def rec(kind, y, name=""):
                if taps is not None:
                    taps.append((kind, name, y))
                return y

            rec.recording = taps is not None

            cfg = self.config
            sfs = [tuple(s) for s in cfg["subsample_factors_per_pathway"]]
            kss = cfg["kernel_sizes_per_pathway"]
            left, prev = [x], (1, 1, 1)
            for p, sf in enumerate(sfs):
                step = tuple(b // a for a, b in zip(prev, sf))
                prev = sf
                if step != (1, 1, 1):
                    x = rec("max_pool", F.max_pool3d(x, step, step))
                x = self._block(x, f"down{p + 1}", len(kss[p][0]), p == 0, rec)
                left.append(x)
            prev = sfs[-1]
            up_factors = [(1, 1, 1), (1, 1, 1)] + sfs[:-1]
            for i in reversed(range(len(left))):
                if 0 < i < len(sfs):
                    x = rec("concat", torch.cat([rec("crop", crop_to(left[i], x)), x], dim=1))
                if i > 0:
                    x = self._block(x, f"up{i}", len(kss[i - 1][1]), False, rec)
                step = tuple(a // b for a, b in zip(prev, up_factors[i]))
                prev = up_factors[i]
                if step != (1, 1, 1):
                    x = rec("upsample_copy", upsample_copy(x, step))
                    if cfg["upsampling"] == "linear":
                        x = rec("avg_pool_stride1", F.avg_pool3d(x, step, 1))
            for j in range(len(cfg["kernel_sizes_common_pathway"])):
                x = self._conv(f"common.{j}", self._pre(x, rec, rec.recording), rec)
            if cfg["activation_final_layer"] == "sigmoid":
                x = rec("sigmoid", torch.sigmoid(x))
            return x

    return GeneralizedUNet(config)
