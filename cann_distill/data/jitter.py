"""torchvision's ColorJitter on 8-bit PIL images, bit for bit, in a few numpy operations.

timm's training transform jitters colour with torchvision's `ColorJitter`, which on a PIL image runs
Pillow's `ImageEnhance`: it builds a degenerate image per factor, computes the contrast mean with a
Python loop over a 256-bin histogram, and on a grayscale image blends the image with itself for
saturation (a no-op). Measured on this 2-core CPU at 32 px: 80 µs a sample, the largest single
cost of the training data path (the crop is 19 µs). The same arithmetic on the pixel array:

- `Image.blend(a, b, f)` is `trunc(a + f * (b - a))` clipped to 0..255, in float32 (Pillow's
  ImagingBlend takes `float alpha`); checked equal for every (a, b) pair of 8-bit values;
- `convert("L")` is ITU-R 601 luma in 16-bit fixed point, `(19595 R + 38470 G + 7471 B + 2^15) >> 16`;
- the contrast degenerate is the rounded mean of that luma, `int(sum / n + 0.5)` (ImageStat's double).

The factors and their order come from `ColorJitter.get_params`, so the RNG draws are the same too:
a seeded sample gets the same view as before. Hue on an RGB image (not reachable from a recipe,
which sets one strength for brightness, contrast and saturation) and other modes go to torchvision.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

_LUMA = np.array([19595, 38470, 7471], dtype=np.int32)


def blend(degenerate: Any, image: np.ndarray, factor: float) -> np.ndarray:
    """Pillow's `Image.blend(degenerate, image, factor)` on uint8 arrays (or a scalar degenerate)."""
    a = np.asarray(degenerate, dtype=np.float32)
    out = image.astype(np.float32)
    out -= a
    out *= np.float32(factor)
    out += a
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)  # float -> uint8 truncates, as Pillow's cast does


def luma(rgb: np.ndarray) -> np.ndarray:
    """Pillow's RGB -> L conversion of a uint8 [H, W, 3] array."""
    return ((rgb.astype(np.int32) @ _LUMA + 0x8000) >> 16).astype(np.uint8)


class FastColorJitter:
    """A drop-in for a torchvision `ColorJitter` (kept as `.jitter`) on 8-bit L and RGB PIL images.

    `to_tensor`: return the uint8 CHW tensor timm's `MaybePILToTensor` would make (it passes tensors
    through), skipping a PIL round trip, when that is the next step."""

    def __init__(self, jitter: T.ColorJitter, to_tensor: bool = False) -> None:
        self.jitter, self.to_tensor = jitter, to_tensor

    def __call__(self, img: Any) -> Any:
        j = self.jitter
        if not isinstance(img, Image.Image) or img.mode not in ("L", "RGB") or (j.hue is not None and img.mode == "RGB"):
            return j(img)
        order, b, c, s, _ = T.ColorJitter.get_params(j.brightness, j.contrast, j.saturation, j.hue)
        x = np.asarray(img)
        for fn in order.tolist():
            if fn == 0 and b is not None:
                x = blend(0, x, b)
            elif fn == 1 and c is not None:
                gray = x if x.ndim == 2 else luma(x)
                x = blend(int(int(gray.sum(dtype=np.int64)) / gray.size + 0.5), x, c)
            elif fn == 2 and s is not None and x.ndim == 3:  # grayscale: blended with itself, unchanged
                x = blend(luma(x)[..., None], x, s)
            # fn 3 (hue) leaves grayscale images alone; RGB with hue went to torchvision above
        if self.to_tensor:
            return torch.from_numpy(np.ascontiguousarray(x[None] if x.ndim == 2 else x.transpose(2, 0, 1)))
        return Image.fromarray(x, img.mode)

    def __repr__(self) -> str:
        return f"Fast{self.jitter!r}"


def fast_jitter(transform: Any) -> Any:
    """`transform` (a torchvision Compose) with each ColorJitter swapped for a FastColorJitter, in place."""
    from timm.data.transforms import MaybePILToTensor

    steps = getattr(transform, "transforms", None)
    if steps is not None:
        nexts = [*steps[1:], None]
        transform.transforms = [
            FastColorJitter(t, to_tensor=type(n) is MaybePILToTensor) if type(t) is T.ColorJitter else t for t, n in zip(steps, nexts)
        ]
    return transform
