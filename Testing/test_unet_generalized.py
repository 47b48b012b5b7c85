"""Ported pyliverlesionseg U-Nets: every layer against an independent NumPy reference of the Keras model
(channels-last, Keras kernel layout, float64) run from the stored weights; conversion reproducibility from
the pinned wheel; strict HDF5 mapping; bundle integrity; DeepVoxNet tiling geometry."""
from __future__ import annotations

import importlib.util
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from safetensors.numpy import load_file  # noqa: E402

from HCCFusionLib.errors import IntegrityError, ModelError  # noqa: E402
from HCCFusionLib.segmentation.bundle import load_bundle  # noqa: E402
from HCCFusionLib.segmentation.liverlesion_models import (  # noqa: E402
    MODELS, bundle_path, load_liverlesion, predict_volume, tile_layout)
from HCCFusionLib.segmentation.unet_generalized import build_unet, grid_plan  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WHEEL = ROOT / ".cache" / "pyliverlesionseg-0.3-py3-none-any.whl"
TOL = 1e-5  # max |torch - reference| <= TOL * max(1, max |reference|), per layer
SMALL_INPUT = {"liver": (54, 54, 27), "lesion": (92, 92, 46)}  # smallest sizes with outputs > 1 in-plane


def converter():
    spec = importlib.util.spec_from_file_location("convert_pyliverlesionseg",
                                                  ROOT / "scripts" / "convert_pyliverlesionseg.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------- NumPy reference of the Keras graph
class KerasReference:
    """create_unet_like_model's forward pass, channels-last, written from the Keras layer semantics."""

    def __init__(self, config: dict, weights: dict, forced: "list | None" = None):
        """forced: torch taps; each layer is then computed from torch's inputs (isolated layer check)."""
        self.c = config
        self.forced = iter(forced) if forced is not None else None
        self.kernels = {name[len("convs."):-len(".weight")]: (w.transpose(2, 3, 4, 1, 0).astype(np.float64),
                                                             weights[name[:-len("weight")] + "bias"].astype(np.float64))
                        for name, w in weights.items() if name.endswith(".weight")}
        self.count = 0
        self.layers = []

    def rec(self, kind, y, name=""):
        self.layers.append((kind, name, y))
        if self.forced is None:
            return y
        _, _, t = next(self.forced)
        return t[0].permute(1, 2, 3, 0).numpy().astype(np.float64)

    def conv(self, x):  # Keras Conv3D: cross-correlation, 'same' pads (k - 1) / 2 zeros per side
        self.count += 1
        name = f"conv3d_{self.count}"
        kernel, bias = self.kernels[name]
        kx, ky, kz = kernel.shape[:3]
        if self.c["padding"] == "same":
            x = np.pad(x, [(kx // 2, kx // 2), (ky // 2, ky // 2), (kz // 2, kz // 2), (0, 0)])
        out_shape = (x.shape[0] - kx + 1, x.shape[1] - ky + 1, x.shape[2] - kz + 1)
        y = np.broadcast_to(bias, out_shape + bias.shape).copy()
        for a, b, d in itertools.product(range(kx), range(ky), range(kz)):
            y += x[a:a + out_shape[0], b:b + out_shape[1], d:d + out_shape[2]] @ kernel[a, b, d]
        return self.rec("conv", y, name)

    def norm_act(self, x):
        m = x.mean(axis=(0, 1, 2), keepdims=True)
        s = np.sqrt(((x - m) ** 2).mean(axis=(0, 1, 2), keepdims=True))
        x = self.rec("instance_norm", (x - m) / (s + 1e-7))
        return self.rec("lrelu", np.where(x > 0, x, 0.01 * x))

    def crop(self, x, like):
        c = [(a - b) // 2 for a, b in zip(x.shape[:3], like.shape[:3])]
        return self.rec("crop", x[c[0]:x.shape[0] - c[0], c[1]:x.shape[1] - c[1], c[2]:x.shape[2] - c[2]])

    def block(self, x, kernels, first_raw):
        shortcut = x
        for j, _ in enumerate(kernels):
            if not (first_raw and j == 0):
                x = self.norm_act(x)
            x = self.conv(x)
        if self.c["residual_connections"] and kernels:
            shortcut = self.crop(shortcut, x)
            if shortcut.shape[-1] != x.shape[-1]:
                shortcut = self.conv(shortcut)
            x = self.rec("add", x + shortcut)
        return x

    def __call__(self, volume):
        x = volume[..., None].astype(np.float64)
        sfs = [np.array(s) for s in self.c["subsample_factors_per_pathway"]]
        kss = self.c["kernel_sizes_per_pathway"]
        lefts, prev = [], np.ones(3, int)
        for p, sf in enumerate(sfs):
            f = sf // prev
            prev = sf
            if (f > 1).any():  # MaxPooling3D(f, f), 'valid'
                n = [s // k for s, k in zip(x.shape[:3], f)]
                x = x[:n[0] * f[0], :n[1] * f[1], :n[2] * f[2]]
                x = self.rec("max_pool", x.reshape(n[0], f[0], n[1], f[1], n[2], f[2], -1).max(axis=(1, 3, 5)))
            x = self.block(x, kss[p][0], p == 0)
            lefts.append(x)
        for p in reversed(range(len(sfs))):
            if p < len(sfs) - 1:
                x = self.rec("concat", np.concatenate([self.crop(lefts[p], x), x], axis=-1))
            x = self.block(x, kss[p][1], False)
            f = sfs[p] // (sfs[p - 1] if p else np.ones(3, int))
            if (f > 1).any():  # UpSampling3D: repeat; 'linear' adds AveragePooling3D(f, strides=1)
                for axis in range(3):
                    x = np.repeat(x, f[axis], axis=axis)
                x = self.rec("upsample_copy", x)
                if self.c["upsampling"] == "linear":
                    win = np.lib.stride_tricks.sliding_window_view(x, tuple(f), axis=(0, 1, 2))
                    x = self.rec("avg_pool_stride1", win.mean(axis=(-3, -2, -1)))
        x = self.conv(self.norm_act(x))
        return self.rec("sigmoid", 1 / (1 + np.exp(-x)))[..., 0]


def layer_by_layer(kind):
    """(isolated reference layers, torch taps, chained reference output, torch output)."""
    bundle, net = load_liverlesion(kind)
    weights = load_file(str(bundle.path / "weights.safetensors"))
    x = np.random.default_rng(7).uniform(-0.5, 0.5, SMALL_INPUT[kind]).astype(np.float32)
    taps = []
    with torch.inference_mode():
        got = net(torch.from_numpy(x)[None, None], taps)[0, 0].numpy()
        plain = net(torch.from_numpy(x)[None, None])[0, 0].numpy()  # unrecorded path: in-place activations
    assert float(np.abs(plain - got).max()) <= TOL  # in-place vs recorded ops: oneDNN may order sums apart
    isolated = KerasReference(bundle.plans["network"], weights, forced=taps)
    isolated(x)
    return isolated.layers, taps, KerasReference(bundle.plans["network"], weights)(x), got


@pytest.mark.parametrize("kind", ["liver", "lesion"])
def test_every_layer_matches_numpy_reference(kind):
    ref_layers, taps, expected, got = layer_by_layer(kind)
    assert [(k, n) for k, n, _ in ref_layers] == [(k, n) for k, n, _ in taps]
    kinds = {k for k, _, _ in taps}
    assert {"conv", "instance_norm", "lrelu", "max_pool", "crop", "concat", "upsample_copy", "sigmoid"} <= kinds
    assert ("add" in kinds) == (kind == "lesion") and ("avg_pool_stride1" in kinds) == (kind == "liver")
    worst = {}
    for (k, name, r), (_, _, t) in zip(ref_layers, taps):
        t = t[0].permute(1, 2, 3, 0).numpy()
        assert t.shape == r.shape, (k, name)
        err = float(np.abs(t - r).max()) / max(1.0, float(np.abs(r).max()))
        worst[k] = max(worst.get(k, 0.0), err)
        assert err <= TOL, (kind, k, name, err)
    assert got.shape == expected.shape
    assert float(np.abs(got - expected).max()) <= TOL
    print(kind, {k: f"{v:.1e}" for k, v in worst.items()}, "output", f"{float(np.abs(got - expected).max()):.1e}")


# ------------------------------------------------------------------------- conversion
def keras_hdf5(path: Path, weights: dict, extra: "dict | None" = None, voxel_size=(3.0, 3.0, 3.0)):
    """A Keras-2.2 save_weights file (layer_names / weight_names attributes) holding `weights`."""
    import h5py

    convs = sorted({k.split(".")[1] for k in weights}, key=lambda n: int(n.split("_")[1]))
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"input_1"] + [n.encode() for n in convs])
        f.create_group("input_1").attrs["weight_names"] = np.array([], dtype="S1")
        for name in convs:
            g = f.create_group(name)
            g.attrs["weight_names"] = np.array([f"{name}/kernel:0".encode(), f"{name}/bias:0".encode()])
            g.create_dataset(f"{name}/kernel:0", data=weights[f"convs.{name}.weight"].transpose(2, 3, 4, 1, 0))
            g.create_dataset(f"{name}/bias:0", data=weights[f"convs.{name}.bias"])
        for key, value in (extra or {}).items():
            f.create_dataset(key, data=value)
        f.create_dataset("header/voxel_size", data=np.array(voxel_size))


def test_hdf5_mapping_roundtrip_and_strictness(tmp_path):
    conv = converter()
    weights = load_file(str(bundle_path("lesion") / "weights.safetensors"))
    config = MODELS["lesion"]["network"]
    keras_hdf5(tmp_path / "ok.h5", weights, voxel_size=(1.0, 1.0, 3.0))
    state, voxel = conv.hdf5_state_dict((tmp_path / "ok.h5").read_bytes(), config)
    assert voxel == [1.0, 1.0, 3.0] and set(state) == set(weights)
    assert all(np.array_equal(state[k].numpy(), weights[k]) for k in weights)
    keras_hdf5(tmp_path / "extra.h5", weights, extra={"conv3d_99/conv3d_99/kernel:0": np.zeros(3, np.float32)})
    with pytest.raises(ModelError, match="not mapped"):
        conv.hdf5_state_dict((tmp_path / "extra.h5").read_bytes(), config)
    swapped = dict(weights)
    swapped["convs.conv3d_1.weight"], swapped["convs.conv3d_3.weight"] = (weights["convs.conv3d_3.weight"],
                                                                          weights["convs.conv3d_1.weight"])
    keras_hdf5(tmp_path / "swapped.h5", swapped)
    with pytest.raises(ModelError, match="conv3d_1"):
        conv.hdf5_state_dict((tmp_path / "swapped.h5").read_bytes(), config)


def test_wheel_with_wrong_checksum_is_refused(tmp_path):
    fake = tmp_path / "pyliverlesionseg-0.3-py3-none-any.whl"
    fake.write_bytes(b"PK\x05\x06" + bytes(18))
    with pytest.raises(IntegrityError, match="SHA-256"):
        converter().read_wheel(fake)


@pytest.mark.skipif(not WHEEL.is_file(), reason=f"{WHEEL.name} not in .cache/ (run `make {WHEEL.relative_to(ROOT)}`)")
def test_conversion_from_wheel_is_bit_identical(tmp_path):
    folders = converter().convert(WHEEL, tmp_path)
    for kind, folder in folders.items():
        shipped = bundle_path(kind)
        for name in ("weights.safetensors", "plans.json", "dataset.json"):
            assert (folder / name).read_bytes() == (shipped / name).read_bytes(), (kind, name)
        card, shipped_card = (json.loads((f / "model_card.json").read_text()) for f in (folder, shipped))
        assert card["source"] == shipped_card["source"]


# ----------------------------------------------------------------------------- bundles
def test_bundles_load_verified_and_tampering_is_refused(tmp_path):
    for kind in MODELS:
        bundle, net = load_liverlesion(kind)
        plans = bundle.plans
        assert plans["architecture"] == "unet_generalized" and not net.training
        assert plans["target_spacing"] == ([3.0, 3.0, 3.0] if kind == "liver" else [1.0, 1.0, 3.0])
        assert grid_plan(plans["network"], plans["output_segment_size"])["input_size"] == plans["input_segment_size"]
        card = bundle.card
        assert card["licence"] == "Apache-2.0" and "04800-3" in card["paper"]
        assert len(card["source"]["hdf5_sha256"]) == 64 and card["source"]["wheel_sha256"].startswith("ffe1576a")
        assert "NOTICE (Apache License 2.0)" in (bundle.path / "model_card.md").read_text()
    copy = tmp_path / "liverlesion_liver"
    shutil.copytree(bundle_path("liver"), copy)
    raw = bytearray((copy / "weights.safetensors").read_bytes())
    raw[-5] ^= 1
    (copy / "weights.safetensors").write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="does not match its SHA-256"):
        load_bundle(copy)


# ---------------------------------------------------------------------------- tiling
def delta_net(padding: str, upsampling: str):
    """A real GeneralizedUNet whose output voxel equals the input voxel under it (weights: centre taps)."""
    config = {"number_input_features": 1, "subsample_factors_per_pathway": [[1, 1, 1], [3, 3, 3]],
              "kernel_sizes_per_pathway": [[[[3, 3, 1]], [[3, 3, 3]]], [[[3, 3, 3]], []]],
              "number_features_per_pathway": [[[1], [1]], [[1], []]], "kernel_sizes_common_pathway": [[1, 1, 1]],
              "number_features_common_pathway": [1], "padding": padding, "pooling": "max",
              "upsampling": upsampling, "activation": "linear", "activation_final_layer": "linear",
              "instance_normalization": False, "residual_connections": False}
    net = build_unet(config).eval()
    with torch.no_grad():
        for name, conv in net.convs.items():
            conv.weight.zero_()
            conv.bias.zero_()
            k = conv.weight.shape[2:]
            if name == "conv3d_3":  # up1.0 sees [left skip, upsampled bottom]: pass the skip through
                conv.weight[0, 0, k[0] // 2, k[1] // 2, k[2] // 2] = 1
            elif name != "conv3d_2":  # the bottom pathway contributes nothing
                conv.weight[0, 0, k[0] // 2, k[1] // 2, k[2] // 2] = 1
    return net, config


@pytest.mark.parametrize("padding,upsampling,out", [("valid", "copy", (4, 7, 4)), ("same", "linear", (4, 7, 10))])
@pytest.mark.parametrize("center", [False, True])
def test_tiles_put_every_output_voxel_on_its_input_voxel(padding, upsampling, out, center):
    net, config = delta_net(padding, upsampling)
    grid = grid_plan(config, out)
    plans = {"input_segment_size": grid["input_size"], "output_segment_size": list(out), "center_sampling": center}
    vol = np.random.default_rng(1).normal(size=(17, 11, 10)).astype(np.float32)
    got = predict_volume(net, vol, plans)
    if not center:
        np.testing.assert_allclose(got, vol, atol=1e-6)
    else:  # one tile at the centre; uncovered voxels take the nearest covered value
        tile = tile_layout(vol.shape, grid["input_size"], out, True)
        assert len(tile) == 1
        covered = tile[0][1]
        np.testing.assert_allclose(got[covered], vol[covered], atol=1e-6)
        assert got.shape == vol.shape and np.isfinite(got).all()


def test_tile_layout_follows_deepvoxnet_start_list():
    # lesion model on a 200 x 170 x 57 liver crop: starts range(0, n, out) + [n - out] per axis
    tiles = tile_layout((200, 170, 57), [180, 172, 86], [92, 84, 42], False)
    xs = sorted({(t[1][0].start, t[1][0].stop) for t in tiles})
    assert xs == [(0, 92), (92, 184), (108, 200), (184, 200)]
    assert {t[0][0] for t in tiles} == {46, 138, 230, 154}
    from HCCFusionLib.segmentation.liverlesion_models import needed_tiles
    kept = needed_tiles(tiles, (200, 170, 57))
    assert len(tiles) == 48 and len(kept) == 18
    assert all(t[1][0].start != 184 for t in kept)


def test_roi_skips_tiles_without_roi_and_masks_the_output():
    net, config = delta_net("valid", "copy")
    out = (4, 7, 4)
    grid = grid_plan(config, out)
    plans = {"input_segment_size": grid["input_size"], "output_segment_size": list(out), "center_sampling": False}
    vol = np.random.default_rng(2).normal(size=(17, 11, 10)).astype(np.float32)
    roi = np.zeros(vol.shape, bool)
    roi[2:5, 3:6, 1:3] = True
    calls = []
    net.register_forward_hook(lambda *_: calls.append(1))
    np.testing.assert_allclose(predict_volume(net, vol, plans, roi=roi), vol * roi, atol=1e-6)
    n_all = len(tile_layout(vol.shape, grid["input_size"], out, False))
    assert 0 < len(calls) < n_all
