"""Per-sample CPU cost of the data path, one thread: N samples through the training and evaluation
loaders (workers 0: fetch, collate, batch normalisation), and a worker's share (fetch a batch of
keys + collate). Short by design (~10 s); run it on an idle machine and compare two checkouts.

Example:
    PYTHONPATH=. .venv/bin/python scripts/bench_sample_cost.py --samples 2000
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from torch.utils.data import default_collate

from cann_distill.core.recipe import resource_dir
from cann_distill.core.recipe_load import load_recipe
from cann_distill.data.loading import SplitDataset, load_splits, loader


def loader_cost(train: Any, transform: Any, samples: int) -> float:
    start, n = time.perf_counter(), 0
    for epoch in range(samples // len(train) + 2):
        batches = loader(train, 64, train=transform is not None, seed=0, transform=transform)
        if transform is not None:
            batches.sampler.set_epoch(epoch)
        for x, _, _ in batches:
            n += len(x)
            if n >= samples:
                return (time.perf_counter() - start) / n * 1e6
    return (time.perf_counter() - start) / n * 1e6


def worker_cost(train: Any, transform: Any, samples: int, rep: int) -> float:
    ds = SplitDataset(train, transform, 0)
    fetch = getattr(ds, "__getitems__", None) or (lambda keys: [ds[k] for k in keys])
    info = torch.utils.data.get_worker_info
    torch.utils.data.get_worker_info = lambda: object()  # type: ignore[assignment]  # as in a worker: no RNG save/restore
    try:
        start = time.perf_counter()
        for b in range(samples // 64):
            default_collate(fetch([(rep, (b * 64 + j) % len(train)) for j in range(64)]))
        return (time.perf_counter() - start) / (samples // 64 * 64) * 1e6
    finally:
        torch.utils.data.get_worker_info = info  # type: ignore[assignment]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: PYTHONPATH=. .venv/bin/python scripts/bench_sample_cost.py --samples 2000",
    )
    ap.add_argument("--recipe", default=str(resource_dir("recipes") / "mobilenetv3_small_050_from_resnet18_digits.yaml"))
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    splits = load_splits(load_recipe(args.recipe, ["data.num_workers=0"]).data)
    rows = {
        "train loader": lambda r: loader_cost(splits.train, splits.train_transform, args.samples),
        "eval loader": lambda r: loader_cost(splits.train, None, args.samples),
        "worker fetch+collate": lambda r: worker_cost(splits.train, splits.train_transform, args.samples, r),
    }
    for name, fn in rows.items():
        runs = [fn(r) for r in range(args.repeats)]
        print(f"{name:22s} {statistics.mean(runs):7.1f} ± {statistics.stdev(runs) if len(runs) > 1 else 0:5.1f} µs/sample")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
