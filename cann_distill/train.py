"""One training loop, shared by the teacher and distill stages."""

from __future__ import annotations

import math
import random
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from cann_distill.data import Split, loader
from cann_distill.errors import StageError
from cann_distill.recipe import TrainConfig
from cann_distill.ui import ui

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
StepFn = Callable[[nn.Module, Batch], tuple[torch.Tensor, dict[str, float]]]


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
) -> list[dict[str, float]]:
    """SGD/AdamW with cosine decay; per-epoch history of mean loss components and val accuracy."""
    seed_everything(seed)
    opt = make_optimizer(model, cfg)
    batches = loader(train, batch_size, shuffle=True, seed=seed, sampler=sampler)
    total = max(1, cfg.epochs * len(batches))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    history: list[dict[str, float]] = []
    with ui.progress() as prog:
        task = prog.add_task(desc, total=total, status="") if prog else None
        for epoch in range(cfg.epochs):
            model.train()
            sums: dict[str, float] = {}
            n = 0
            for bi, batch in enumerate(batches):
                loss, parts = step(model, batch)
                if not torch.isfinite(loss):
                    raise StageError(f"{desc}: loss is {loss.item()} at epoch {epoch + 1} step {bi + 1} ({parts}); lower the learning rate")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                bs = batch[0].shape[0]
                n += bs
                for k, v in {"loss": loss.item(), **parts}.items():
                    sums[k] = sums.get(k, 0.0) + v * bs
                if prog is not None and task is not None:
                    prog.update(task, advance=1, status=f"epoch {epoch + 1}/{cfg.epochs} loss {sums['loss'] / n:.4f}")
            row = {"epoch": epoch + 1, "lr": sched.get_last_lr()[0], **{k: v / max(n, 1) for k, v in sums.items()}}
            if val is not None:
                row["val_acc"] = accuracy(predict(model, val, desc=f"{desc} eval"), val.targets)
            history.append(row)
        if prog is not None and task is not None:
            prog.remove_task(task)
    model.eval()
    return history
