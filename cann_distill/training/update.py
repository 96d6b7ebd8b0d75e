"""The optimizer side of a training step: the lr schedule (linear warmup, then cosine), AMP loss
scaling, gradient clipping and an exponential moving average (EMA) of the weights."""

from __future__ import annotations

import copy
import math
from typing import Any, Optional, Sequence

import torch
from torch import nn

from cann_distill.core.recipe import TrainConfig


def make_optimizer(model: nn.Module, cfg: TrainConfig, no_decay: Sequence[str] = ()) -> torch.optim.Optimizer:
    """Parameters whose name starts with a `no_decay` prefix get no weight decay (e.g. loss-balance log-variances)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    plain = [p for n, p in named if not n.startswith(tuple(no_decay))] if no_decay else [p for _, p in named]
    exempt = [p for n, p in named if n.startswith(tuple(no_decay))] if no_decay else []
    groups: list[dict[str, Any]] = [{"params": plain}] + ([{"params": exempt, "weight_decay": 0.0}] if exempt else [])
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)


def cosine_factor(progress: float) -> float:
    """Learning-rate factor 0.5 * (1 + cos(pi * progress)), progress in [0, 1] over the whole run."""
    return 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def lr_factor(epoch_progress: float, epochs: int, warmup: float = 0.0, step: float = 0.0) -> float:
    """Linear warmup over the first `warmup` epochs, then cosine decay over the rest.

    `epoch_progress` counts epochs (2.5 = halfway through the third). During warmup the factor is
    that of the end of the current step (`step` = one batch in epochs), so the first step does not
    run at lr 0.
    """
    if warmup > 0 and epoch_progress < warmup:
        return min(1.0, (epoch_progress + step) / warmup)
    if epochs <= warmup:
        return 1.0
    return cosine_factor((epoch_progress - warmup) / (epochs - warmup))


class EmaWeights:
    """Exponential moving average of a module's floating-point state (parameters and BN statistics).

    ema = d * ema + (1 - d) * current after each optimizer step; integer buffers are copied. The decay warms up,
    d = min(decay, (1 + n) / (10 + n)) at the n-th update (TensorFlow's `ExponentialMovingAverage(num_updates=...)`),
    so the initial weights and BatchNorm statistics leave the average within a few dozen steps instead of
    1 / (1 - decay) steps: without it a 30-epoch run (2,250 steps, decay 0.998) still averaged the initial running
    variance of 1 into channels whose variance had fallen far below 1, and the average stayed 10 pt under the raw
    weights on val (docs/defaults.md, "Distillation loss").
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(module).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next update applies."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        decay = self.current_decay()
        self.updates += 1
        current = module.state_dict()
        for name, avg in self.module.state_dict().items():
            value = current[name].detach()
            if avg.dtype.is_floating_point:
                avg.mul_(decay).add_(value.to(avg.dtype), alpha=1 - decay)
            else:
                avg.copy_(value)


class Update:
    """One optimizer update per batch; the schedule follows epoch progress, not a step count."""

    def __init__(
        self, model: nn.Module, deploy: nn.Module, cfg: TrainConfig, opt: torch.optim.Optimizer, ema: Optional[EmaWeights], scaler: Any
    ) -> None:
        self.deploy, self.cfg, self.opt, self.ema, self.scaler = deploy, cfg, opt, ema, scaler
        self.base_lrs = [g["lr"] for g in opt.param_groups]
        self.params = [p for p in model.parameters() if p.requires_grad]

    def set_lr(self, progress: float, step_size: float = 0.0) -> float:
        factor = lr_factor(progress, self.cfg.epochs, self.cfg.warmup(), step_size)
        for g, lr in zip(self.opt.param_groups, self.base_lrs):
            g["lr"] = lr * factor
        return self.base_lrs[0] * factor

    def backward(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def __call__(self, parts: dict[str, float]) -> dict[str, float]:
        """Clip, step, scale and average; the caller holds Ctrl-C so the update and its bookkeeping stay together."""
        scaler, opt = self.scaler, self.opt
        if scaler is not None:
            scaler.unscale_(opt)
        if self.cfg.grad_clip is not None:
            parts = {**parts, "grad_norm": float(torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip))}
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        if self.ema is not None:
            self.ema.update(self.deploy)
        return parts
