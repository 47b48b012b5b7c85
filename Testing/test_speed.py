"""Inference speed machinery (segmentation.speed) and the fast paths it serves: they must not change results.

- the ported lesion U-Net's fast forward (in-place residual adds, a one-channel shortcut as a per-channel
  scale) against its plain, layer-recording forward, on real weights;
- `inference()`: thread setting, re-entrance, restoration; the liverlesion tiler gives the same
  probabilities inside and outside it.
"""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from HCCFusionLib.segmentation import speed  # noqa: E402
from HCCFusionLib.segmentation.liverlesion_models import load_liverlesion, predict_volume  # noqa: E402
from HCCFusionLib.segmentation.unet_generalized import grid_plan  # noqa: E402


@pytest.fixture(scope="module")
def lesion():
    return load_liverlesion("lesion")


def _liver_like(shape, seed):
    """CT-normalised values (-0.5..0.5): a smooth blob with a darker spot, plus noise."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    r = np.sqrt((grid ** 2).sum(0))
    spot = np.sqrt(((grid - 0.25) ** 2).sum(0))
    vol = np.where(r < 0.8, 0.25, -0.3) - 0.3 * (spot < 0.2) + rng.normal(0, 0.03, shape)
    return np.clip(vol, -0.5, 0.5).astype(np.float32)


def test_fast_forward_equals_the_plain_layer_by_layer_forward(lesion):
    bundle, net = lesion
    plans = bundle.plans
    size = grid_plan(plans["network"], [12, 12, 2])["input_size"]
    x = torch.from_numpy(_liver_like(size, 0))[None, None].contiguous(memory_format=torch.channels_last_3d)
    roles = {s["role"] for s in net.specs}
    assert "down1.shortcut" in roles and "down2.shortcut" in roles  # 1 -> 40 and 40 -> 80 channel shortcuts
    with torch.inference_mode():
        taps = []
        plain = net(x, taps).numpy()  # recording: the plain ops (conv shortcut, out-of-place adds)
        with speed.inference():
            fast = net(x).numpy()
    assert any(kind == "add" for kind, _, _ in taps)
    assert np.abs(fast - plain).max() <= 5e-5  # float32 sums in another order (5e-6 measured with AVX-512)
    np.testing.assert_array_equal(fast > 0.5, plain > 0.5)
    assert plain.std() > 1e-3  # a varying output was compared


def test_tiler_inside_and_outside_the_inference_context_agree(lesion, monkeypatch):
    bundle, net = lesion
    plans = dict(bundle.plans, output_segment_size=[12, 12, 2],
                 input_segment_size=grid_plan(bundle.plans["network"], [12, 12, 2])["input_size"])
    vol = _liver_like((20, 12, 2), 1)  # two tiles
    inside = predict_volume(net, vol, plans)
    monkeypatch.setattr(speed, "_LIBC", None)  # no allocator change: torch.inference_mode and threads only
    plain = predict_volume(net, vol, plans)
    np.testing.assert_array_equal(inside, plain)


def test_inference_sets_threads_nests_and_restores(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv(speed.THREADS_ENV, "1")
    with speed.inference():
        assert torch.get_num_threads() == 1 and torch.is_inference_mode_enabled()
        with speed.inference(threads=2):
            assert torch.get_num_threads() == 2 and speed._depth == 2
        assert torch.get_num_threads() == 1 and speed._depth == 1
    assert torch.get_num_threads() == before and speed._depth == 0
    assert not torch.is_inference_mode_enabled()
    monkeypatch.setenv(speed.THREADS_ENV, "two")
    assert speed.threads_setting() is None
    monkeypatch.delenv(speed.THREADS_ENV)
    assert speed.threads_setting() is None and speed.threads_setting(3) == 3
    with pytest.raises(RuntimeError, match="boom"), speed.inference():
        raise RuntimeError("boom")
    assert speed._depth == 0
