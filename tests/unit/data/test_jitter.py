"""FastColorJitter: torchvision's ColorJitter on PIL images, the same pixels and the same RNG draws."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from cann_distill.data.jitter import FastColorJitter, blend, fast_jitter, luma


def test_blend_is_pillows_for_every_pair_of_8bit_values() -> None:
    a, b = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8))
    for f in (0.0, 0.37, 0.9, 1.0, 1.1, 1.7, 0.99999994, 1.0000001):
        assert np.array_equal(blend(a, b, f), np.asarray(Image.blend(Image.fromarray(a), Image.fromarray(b), f))), f


def test_luma_is_pillows_rgb_to_l() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    rgb[0, :8] = [[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [1, 2, 3], [128, 128, 128], [254, 1, 200]]
    assert np.array_equal(luma(rgb), np.asarray(Image.fromarray(rgb).convert("L")))


@pytest.mark.parametrize("mode", ["L", "RGB"])
@pytest.mark.parametrize("strength", [0.1, 0.4, 0.9])
def test_same_views_as_torchvision_under_the_same_seed(mode: str, strength: float) -> None:
    rng = np.random.default_rng(1)
    slow = T.ColorJitter(strength, strength, strength)
    fast = FastColorJitter(slow)
    for seed in range(40):
        shape = (9 + seed % 5, 11) if mode == "L" else (9 + seed % 5, 11, 3)
        img = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
        torch.manual_seed(seed)
        want = np.asarray(slow(img))
        torch.manual_seed(seed)
        got = fast(img)
        assert got.mode == mode and np.array_equal(np.asarray(got), want), seed
    torch.manual_seed(7)
    slow(img)
    after_slow = torch.rand(1)
    torch.manual_seed(7)
    fast(img)
    assert torch.equal(after_slow, torch.rand(1))  # the same RNG draws


def test_hue_on_rgb_and_other_inputs_go_to_torchvision() -> None:
    jitter = T.ColorJitter(0.2, 0.2, 0.2, hue=0.1)
    img = Image.fromarray(np.random.default_rng(2).integers(0, 256, (8, 8, 3), dtype=np.uint8))
    torch.manual_seed(3)
    want = np.asarray(jitter(img))
    torch.manual_seed(3)
    assert np.array_equal(np.asarray(FastColorJitter(jitter)(img)), want)
    composed = fast_jitter(T.Compose([T.CenterCrop(4), T.ColorJitter(0.1)]))
    assert [type(t) for t in composed.transforms] == [T.CenterCrop, FastColorJitter]


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_before_timms_pil_to_tensor_it_hands_over_the_same_tensor(mode: str) -> None:
    from timm.data.transforms import MaybePILToTensor

    slow = T.Compose([T.ColorJitter(0.4, 0.4, 0.4), MaybePILToTensor()])
    fast = fast_jitter(T.Compose([T.ColorJitter(0.4, 0.4, 0.4), MaybePILToTensor()]))
    assert fast.transforms[0].to_tensor
    img = Image.fromarray(np.random.default_rng(4).integers(0, 256, (7, 9) if mode == "L" else (7, 9, 3), dtype=np.uint8), mode)
    torch.manual_seed(0)
    want = slow(img)
    torch.manual_seed(0)
    got = fast(img)
    assert got.dtype == torch.uint8 and got.is_contiguous() and torch.equal(got, want)
