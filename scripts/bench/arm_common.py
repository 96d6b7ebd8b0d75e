"""What every arm runner shares: the spec it is given, threads and seeds, timm models and transforms,
the loop timer, test accuracy and the result file. torch, torchvision and timm only, so it runs in
the project environment and in the benchmark environment (torchdistill) alike.

An arm runner is started as `PYTHON scripts/bench/arm_<name>.py --spec SPEC.json --out RESULT.json`
by `bench.py`; SPEC holds everything the arm must do the same way as the others.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch

DECODE = "decode"
"""The data path that reads and decodes every image file every epoch (what ImageFolder does; `bench.SPEED_DATA_PATH`)."""


def parse_args(description: str) -> tuple[dict[str, Any], Path]:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--spec", type=Path, required=True, help="the arm's spec (JSON, written by bench.py)")
    ap.add_argument("--out", type=Path, required=True, help="where to write the arm's result (JSON)")
    args = ap.parse_args()
    return json.loads(args.spec.read_text()), args.out


def setup(spec: dict[str, Any]) -> None:
    """Same thread count and global seeds in every arm."""
    torch.set_num_threads(int(spec["threads"]))
    seed = int(spec["seed"])
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def versions(*packages: str) -> dict[str, Optional[str]]:
    """Versions of the packages as this arm's interpreter sees them (None: not installed)."""
    out: dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def transforms(spec: dict[str, Any]) -> tuple[Callable[[Any], torch.Tensor], Callable[[Any], torch.Tensor]]:
    """(training, evaluation) transforms from timm's `create_transform` with the spec's keyword arguments.

    The training transform is the evaluation one when the spec turns augmentation off.
    """
    from timm.data import create_transform

    tf = spec["transforms"]
    eval_tf = create_transform(**tf["eval"])
    return (create_transform(**tf["train"]) if spec["augment"] else eval_tf), eval_tf


def state_dict_of(obj: Any) -> dict[str, torch.Tensor]:
    """The weights in a cann-distill checkpoint ({"state_dict": ...}), a torchdistill one ({"model": ...}) or a bare state dict."""
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            return obj[key]
    return obj


def create_model(arch: str, num_classes: int, in_chans: int, checkpoint: Optional[str] = None) -> torch.nn.Module:
    import timm

    model = timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_chans)
    if checkpoint:
        model.load_state_dict(state_dict_of(torch.load(checkpoint, map_location="cpu", weights_only=True)), strict=True)
    return model


def model_from_spec(spec: dict[str, Any], role: str) -> torch.nn.Module:
    m = spec[role]
    return create_model(m["arch"], spec["num_classes"], spec["in_chans"], m.get("checkpoint"))


class TimedLoader:
    """Wraps a training DataLoader and times each pass over it, from `iter()` until it is used up.

    The time between two batches is the loop body (teacher, student, backward, step), so one pass
    is one epoch of the training loop, data loading included and evaluation excluded.
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.epochs: list[dict[str, float]] = []

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        if name == "loader":  # not set yet (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[Any]:
        start = time.perf_counter()
        samples = steps = 0
        for batch in self.loader:
            samples += int(batch[0].shape[0])
            steps += 1
            yield batch
        self.epochs.append({"seconds": time.perf_counter() - start, "samples": samples, "steps": steps})


def lr_factor(epoch_progress: float, epochs: int, warmup: float = 0.0, step: float = 0.0) -> float:
    """Linear warmup over the first `warmup` epochs, then cosine decay: cann-distill's `train.lr_factor`.

    Written out here (not imported) because the torchdistill arm runs where cann-distill is not installed.
    """
    if warmup > 0 and epoch_progress < warmup:
        return min(1.0, (epoch_progress + step) / warmup)
    if epochs <= warmup:
        return 1.0
    progress = min(max((epoch_progress - warmup) / (epochs - warmup), 0.0), 1.0)
    return 0.5 * (1 + math.cos(math.pi * progress))


class StepSchedule:
    """`LambdaLR`'s factor for optimizer step `k`: `lr_factor` at k / steps_per_epoch, as cann-distill sets it before each step."""

    def __init__(self, epochs: int, steps_per_epoch: int, warmup_epochs: float = 0.0) -> None:
        self.epochs, self.steps, self.warmup = epochs, max(int(steps_per_epoch), 1), float(warmup_epochs)

    def __call__(self, k: int) -> float:
        return lr_factor(k / self.steps, self.epochs, self.warmup, 1 / self.steps)


def make_optimizer(params: Any, opt: dict[str, Any]) -> torch.optim.Optimizer:
    """SGD (Nesterov when momentum > 0) or AdamW, weight decay on every parameter, as cann-distill's `make_optimizer`."""
    if opt.get("name", "sgd") == "adamw":
        return torch.optim.AdamW(params, lr=opt["lr"], weight_decay=opt["weight_decay"])
    return torch.optim.SGD(params, lr=opt["lr"], momentum=opt["momentum"], weight_decay=opt["weight_decay"], nesterov=opt["nesterov"])


@torch.no_grad()
def predictions(model: torch.nn.Module, loader: Any, norm: Any = None) -> tuple[list[int], list[int]]:
    """(top-1 class, target) per image of a loader of (images, targets, ...) batches in its order, in eval mode;
    `norm` (e.g. cann-distill's per-batch `PixelNorm`) runs on each image batch first."""
    model.eval()
    pred: list[int] = []
    target: list[int] = []
    for batch in loader:
        x, y = batch[0], batch[1]
        pred += model(norm(x) if norm is not None else x).argmax(1).tolist()
        target += [int(v) for v in y]
    return pred, target


def accuracy(model: torch.nn.Module, loader: Any) -> float:
    """Top-1 over a loader of (images, targets, ...) batches, in eval mode."""
    pred, target = predictions(model, loader)
    return sum(p == t for p, t in zip(pred, target)) / max(len(target), 1)


def test_fields(pred: list[int], target: list[int]) -> dict[str, Any]:
    """The result fields for the test split: top-1, and the per-image predictions (ImageFolder order:
    sorted classes, sorted files) that the report pairs across arms with the exact McNemar test."""
    return {"test_acc": sum(p == t for p, t in zip(pred, target)) / max(len(target), 1), "test_pred": pred, "test_target": target}


def write_result(out: Path, spec: dict[str, Any], started: float, **fields: Any) -> None:
    result = {
        "arm": spec["arm"],
        "status": "done",
        "seed": spec["seed"],
        "pid": os.getpid(),
        **fields,
        "wall_seconds": time.perf_counter() - started,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
