"""Do a trained student's BatchNorm running statistics cost it accuracy? Each checkpoint is evaluated on an
ImageFolder tree's val and test splits as trained, then with its BatchNorm statistics recomputed over the
whole training split (cumulative average, every layer reset first): once through the evaluation transform
(un-augmented training images), once through the training transform (timm's default augmentation, one pass).

A gain from the recomputed statistics would say the running averages of the last training batches were the
problem (the "precise BN" question); no gain says the accuracy is in the weights. Results as JSON lines.

Example (the distilled students of a defaults grid):
  python scripts/bench/bn_stats.py --root runs/photo_sets/ubuntu15 --out runs/bn_stats.jsonl \\
      runs/grid/s0_warm1/distill/student.pt runs/grid/s1_warm1/distill/student.pt
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # the photo recipes' normalisation


def batches(
    root: Path, split: str, transform: Callable[[Any], torch.Tensor], shuffle: bool = False
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    from torchvision.datasets import ImageFolder

    g = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(ImageFolder(str(root / split), transform), batch_size=64, shuffle=shuffle, generator=g)
    return list(loader)


def accuracy(model: nn.Module, data: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    model.eval()
    right = total = 0
    with torch.no_grad():
        for x, y in data:
            right += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return 100.0 * right / max(total, 1)


def recompute_bn(model: nn.Module, data: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Every BatchNorm layer's running mean and variance as the cumulative average over `data`."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for x, _ in data:
            model(x)
    model.eval()


def load(path: Path) -> nn.Module:
    from cann_distill.models.build import create_model, load_weights, read_checkpoint

    ckpt = read_checkpoint(path)
    model = create_model(ckpt["arch"], ckpt["num_classes"], ckpt.get("in_chans", 3))
    load_weights(model, ckpt, ckpt["arch"], str(path))
    return model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[-1]
    )
    ap.add_argument("checkpoints", nargs="+", type=Path, help="student.pt files (a distill or baseline stage's)")
    ap.add_argument("--root", type=Path, required=True, help="ImageFolder tree with train/, val/ and test/")
    ap.add_argument("--size", type=int, default=32, help="input size in px (default %(default)s)")
    ap.add_argument("--out", type=Path, required=True, help="JSON lines, appended to")
    args = ap.parse_args(argv)
    if missing := [str(p) for p in args.checkpoints if not p.is_file()]:
        ap.error(f"no such checkpoint: {', '.join(missing)}")
    from timm.data import create_transform

    torch.set_num_threads(1)
    torch.manual_seed(0)
    common: dict[str, Any] = {"interpolation": "bicubic", "mean": MEAN, "std": STD}
    eval_tf = create_transform(args.size, is_training=False, crop_pct=1.0, **common)
    train_tf = create_transform(args.size, is_training=True, scale=(0.08, 1.0), hflip=0.5, color_jitter=0.4, **common)
    val, test = batches(args.root, "val", eval_tf), batches(args.root, "test", eval_tf)
    plain_train = batches(args.root, "train", eval_tf, shuffle=True)  # shuffled: a batch of one class has its own statistics
    augmented_train = batches(args.root, "train", train_tf, shuffle=True)
    for path in args.checkpoints:
        row: dict[str, Any] = {"checkpoint": str(path)}
        for name, stats in (("as_trained", None), ("train_eval_transform", plain_train), ("train_augmented", augmented_train)):
            model = load(path)
            if stats is not None:
                recompute_bn(model, stats)
            row[name] = {"val": round(accuracy(model, val), 2), "test": round(accuracy(model, test), 2)}
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
