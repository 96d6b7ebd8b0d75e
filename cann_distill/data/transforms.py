"""What a sample goes through on its way to the model: channels and normalisation, the timm train/eval
transforms, batch pixel normalisation and Mixup/CutMix."""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch
from timm.data import Mixup
from timm.data.mixup import mixup_target

from cann_distill.core.recipe import AugmentConfig, DataConfig
from cann_distill.data.jitter import fast_jitter

Transform = Callable[[Any], torch.Tensor]


class PixelNorm:
    """uint8 pixels [..., C, H, W] to the model's input: x / 255, minus mean, over std, in float32.

    The operations (and so the rounding) of torchvision's ToTensor + Normalize, run once per batch
    instead of per sample; the divisors are tensors, so no device swaps a division for a multiply by
    the reciprocal and every device gets the same bits. Float input is already normalised and is
    returned unchanged (training with random erasing, or a caller's own transform).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self._consts: dict[torch.device, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def _on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if device not in self._consts:
            shape = (-1, 1, 1)
            self._consts[device] = (
                torch.tensor([255.0], device=device),
                torch.tensor(self.mean, device=device).view(shape),
                torch.tensor(self.std, device=device).view(shape),
            )
        return self._consts[device]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8:
            return x
        scale, mean, std = self._on(x.device)
        return x.to(torch.float32).div_(scale).sub_(mean).div_(std)  # `to` keeps channels_last

    def __getstate__(self) -> dict[str, Any]:  # workers get the numbers, not device tensors
        return {"mean": self.mean, "std": self.std, "_consts": {}}

    def __repr__(self) -> str:
        return f"PixelNorm(mean={self.mean}, std={self.std})"


def pil_mode(cfg: DataConfig) -> str:
    return "L" if channels_of(cfg) == 1 else "RGB"


def channels_of(cfg: DataConfig) -> int:
    return cfg.channels or (1 if cfg.source == "digits" else 3)


def norm_stats(cfg: DataConfig) -> tuple[list[float], list[float]]:
    c = channels_of(cfg)
    return (cfg.mean or [0.5] * c), (cfg.std or [0.5] * c)


def pixel_norm(cfg: DataConfig) -> PixelNorm:
    """The batch normalisation for the recipe's (resolved) mean/std."""
    return PixelNorm(*norm_stats(cfg))


def build_transforms(cfg: DataConfig) -> tuple[Optional[Transform], Transform]:
    """(training transform or None when augmentation is off, evaluation transform), both from timm.

    Both stop at uint8 CHW tensors (timm's `use_prefetcher`: no per-sample float conversion or
    normalisation; `pixel_norm` does that per batch), and colour jitter runs as `jitter.FastColorJitter`
    (the same pixels and RNG draws as torchvision's, a fifth of the time), except a training transform with random
    erasing: timm's prefetcher would erase whole batches outside our per-sample seeding, so that one
    keeps timm's per-sample ToTensor + Normalize + RandomErasing and returns normalised floats.
    """
    from timm.data import create_transform

    mean, std = norm_stats(cfg)
    size = int(cfg.image_size or 32)
    common = {"interpolation": cfg.interpolation or "bilinear", "mean": tuple(mean), "std": tuple(std)}
    eval_tf = create_transform(size, is_training=False, crop_pct=cfg.crop_pct or 1.0, use_prefetcher=True, **common)
    aug: AugmentConfig = cfg.augment
    if not aug.enabled:
        return None, eval_tf
    train_tf = create_transform(
        size,
        is_training=True,
        scale=tuple(aug.scale),
        ratio=tuple(aug.ratio),
        hflip=aug.hflip,
        vflip=aug.vflip,
        color_jitter=aug.color_jitter,
        auto_augment=aug.auto_augment,
        re_prob=aug.re_prob,
        use_prefetcher=aug.re_prob == 0,
        **common,
    )
    return fast_jitter(train_tf), eval_tf


def make_mixup(cfg: DataConfig, num_classes: int) -> Optional["BatchMixup"]:
    """timm's Mixup/CutMix for a training batch, or None when the recipe does not mix."""
    aug = cfg.augment
    if not aug.mixes:
        return None
    return BatchMixup(
        mixup_alpha=aug.mixup_alpha,
        cutmix_alpha=aug.cutmix_alpha,
        prob=aug.mix_prob,
        switch_prob=aug.mix_switch_prob,
        mode="batch",
        label_smoothing=aug.label_smoothing,
        num_classes=num_classes,
    )


class BatchMixup(Mixup):
    """timm's batch-mode Mixup that also says how it mixed: `mix_batch` returns λ with the batch.

    Batch mode mixes every sample i with the same partner, sample B-1-i (`x.flip(0)`), by one λ per
    batch (for cutmix, the pasted box's area corrected λ). Teacher targets that cannot see the mixed
    image (cached, replayed) are mixed with the same λ and partner (`mix_distributions`).
    """

    def mix_batch(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """Mix `x` in place; (x, soft targets [B, C], λ). Draws exactly what timm's __call__ draws."""
        assert self.mode == "batch" and len(x) % 2 == 0, "batch-mode mixup needs an even batch"
        lam = float(self._mix_batch(x))
        return x, mixup_target(target, self.num_classes, lam, self.label_smoothing), lam

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, _ = self.mix_batch(x, target)
        return x, y


def mix_distributions(p: torch.Tensor, lam: float) -> torch.Tensor:
    """Class distributions [B, C] mixed as `BatchMixup` mixed their images: λ·p_i + (1 − λ)·p_(B−1−i)."""
    return p if lam == 1.0 else lam * p + (1.0 - lam) * p.flip(0)
