"""One training loop, shared by the teacher and distill stages."""

from __future__ import annotations

import math
import random
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cann_distill.data import Split, loader
from cann_distill.errors import StageError
from cann_distill.recipe import TrainConfig
from cann_distill.ui import ui

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
StepFn = Callable[[nn.Module, Batch], tuple[torch.Tensor, dict[str, float]]]
EpochStart = Callable[[int], dict[str, float]]
"""Called before epoch `e` (0-based); returns extra fields for that epoch's history row."""
EpochEnd = Callable[[int, dict[str, float]], None]
"""Called after epoch `e` with its finished history row."""


def ce_step(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
    """Plain cross-entropy against the labels (teacher training, student probes)."""
    x, y, _ = batch
    loss = F.cross_entropy(model(x), y)
    return loss, {"ce": loss.item()}


class SubsetSampler(torch.utils.data.Sampler[int]):
    """Shuffled subset of the split whose indices may change between epochs (subset / curriculum training)."""

    def __init__(self, indices: Sequence[int], seed: int) -> None:
        self.indices = list(indices)
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(len(self.indices), generator=self.generator).tolist()
        return iter([self.indices[i] for i in order])

    def __len__(self) -> int:
        return len(self.indices)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)


@torch.no_grad()
def predict(model: nn.Module, split: Split, batch_size: int = 256, desc: str = "predict") -> np.ndarray:
    """Logits for every sample of a split, in split order."""
    model.eval()
    out = []
    batches = loader(split, batch_size)
    for x, _, _ in ui.track(batches, desc, total=len(batches)):
        out.append(model(x).float().cpu())
    return torch.cat(out).numpy()


def accuracy(logits: np.ndarray, targets: np.ndarray) -> float:
    return float((logits.argmax(1) == targets).mean())


def cosine_factor(progress: float) -> float:
    """Learning-rate factor 0.5 * (1 + cos(pi * progress)), progress in [0, 1] over the whole run."""
    return 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def fit(
    model: nn.Module,
    train: Split,
    cfg: TrainConfig,
    batch_size: int,
    step: StepFn,
    seed: int,
    desc: str,
    val: Optional[Split] = None,
    sampler: Optional[torch.utils.data.Sampler] = None,
    on_epoch_start: Optional[EpochStart] = None,
    on_epoch_end: Optional[EpochEnd] = None,
) -> list[dict[str, float]]:
    """SGD/AdamW with cosine decay; per-epoch history of mean loss components and val accuracy.

    The cosine follows epoch progress rather than a step count, so an epoch hook may change
    the sampler (and so the epoch length) without bending the schedule.
    """
    seed_everything(seed)
    opt = make_optimizer(model, cfg)
    base_lrs = [g["lr"] for g in opt.param_groups]
    batches = loader(train, batch_size, shuffle=True, seed=seed, sampler=sampler)

    def set_lr(progress: float) -> float:
        factor = cosine_factor(progress)
        for g, lr in zip(opt.param_groups, base_lrs):
            g["lr"] = lr * factor
        return base_lrs[0] * factor

    history: list[dict[str, float]] = []
    with ui.progress() as prog:
        task = prog.add_task(desc, total=max(1, cfg.epochs * len(batches)), status="") if prog else None
        done = 0
        for epoch in range(cfg.epochs):
            extra = on_epoch_start(epoch) if on_epoch_start is not None else {}
            n_batches = len(batches)
            if prog is not None and task is not None:
                prog.update(task, total=max(1, done + (cfg.epochs - epoch) * n_batches))
            model.train()
            sums: dict[str, float] = {}
            n = 0
            for bi, batch in enumerate(batches):
                set_lr((epoch + bi / n_batches) / cfg.epochs)
                loss, parts = step(model, batch)
                if not torch.isfinite(loss):
                    raise StageError(f"{desc}: loss is {loss.item()} at epoch {epoch + 1} step {bi + 1} ({parts}); lower the learning rate")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                bs = batch[0].shape[0]
                n += bs
                done += 1
                for k, v in {"loss": loss.item(), **parts}.items():
                    sums[k] = sums.get(k, 0.0) + v * bs
                if prog is not None and task is not None:
                    prog.update(task, advance=1, status=f"epoch {epoch + 1}/{cfg.epochs} loss {sums['loss'] / n:.4f}")
            row = {"epoch": epoch + 1, "lr": set_lr((epoch + 1) / cfg.epochs), **extra, **{k: v / max(n, 1) for k, v in sums.items()}}
            if val is not None:
                row["val_acc"] = accuracy(predict(model, val, desc=f"{desc} eval"), val.targets)
            history.append(row)
            if on_epoch_end is not None:
                on_epoch_end(epoch, row)
        if prog is not None and task is not None:
            prog.remove_task(task)
    model.eval()
    return history
