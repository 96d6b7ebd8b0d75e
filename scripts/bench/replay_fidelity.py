"""Replay fidelity: the teacher run on the training loader's views of an epoch (what `online` computes) against
the top-k log-probabilities `select` stored for that epoch's draw (what `replay` trains on).

Reads a run directory whose select made replay draws (`distill.teacher_targets: replay`), rebuilds its training
loader exactly as distill does (same seed, transform, key period) and, for the first --batches batches of each
epoch in --epochs, compares the two target distributions (replay's as distill builds it: the top-k, the rest of
the mass spread over the other classes): the largest absolute probability difference, the
largest KL(online || replay) at the KD temperature, and whether the top class agrees. Prints one JSON object.

Example (a replay run of the accuracy benchmark):
    .venv/bin/python scripts/bench/replay_fidelity.py runs/bench/accuracy_final/accuracy/round0/replay.run
"""

from __future__ import annotations

import argparse
import glob
import json
import sys
from pathlib import Path

import numpy as np
import torch

from cann_distill.core.recipe_load import load_recipe
from cann_distill.data.loading import load_splits, loader
from cann_distill.stages.select import teacher_loader
from cann_distill.teaching.targets import log_probs, topk_distribution


def fidelity(run: Path, epochs: list[int], batches: int, temperature: float) -> dict:
    recipe = load_recipe(run / "recipe.resolved.yaml")
    splits = load_splits(recipe.data)
    entries = glob.glob(str(run / "cache" / "teacher_replay" / "*" / "values.npy")) or glob.glob(
        str(Path(recipe.select.cache_dir or "") / "teacher_replay" / "*" / "values.npy")
    )
    if len(entries) != 1:
        raise SystemExit(f"error: expected one replay entry under {run}/cache/teacher_replay, found {len(entries)}")
    values = np.load(entries[0], mmap_mode="r")
    indices = np.load(entries[0].replace("values.npy", "indices.npy"), mmap_mode="r")
    teacher = teacher_loader(recipe, splits.train, run / "teacher" / "teacher.pt")().eval()
    data = loader(
        splits.train,
        recipe.distill.batch_size or recipe.data.batch_size,
        train=True,
        seed=recipe.seed,
        transform=splits.train_transform,
        period=values.shape[0],
    )
    max_dp, max_kl, agree, views = 0.0, 0.0, 0, 0
    with torch.no_grad():
        for epoch in epochs:
            data.sampler.set_epoch(epoch)
            d = epoch % values.shape[0]
            for b, (x, _, idx) in enumerate(data):
                if b >= batches:
                    break
                online = teacher(x).float().log_softmax(1)
                rows = idx.numpy()
                # what distill trains on: the stored top-k, the rest of the mass spread over the other classes
                stored = log_probs(
                    topk_distribution(
                        torch.from_numpy(np.asarray(values[d][rows])).float().exp(),
                        torch.from_numpy(np.asarray(indices[d][rows])),
                        online.shape[1],
                    )
                )
                max_dp = max(max_dp, (stored.exp() - online.exp()).abs().max().item())
                p, q = (online / temperature).softmax(1), (stored / temperature).softmax(1)
                max_kl = max(max_kl, (p * (p.log() - q.log())).sum(1).max().item())
                agree += int((online.argmax(1) == stored.argmax(1)).sum())
                views += len(rows)
    return {
        "run": str(run),
        "draws": int(values.shape[0]),
        "top_k": int(values.shape[2]),
        "epochs": epochs,
        "views": views,
        "max_abs_prob_diff": max_dp,
        "max_kl_at_T": max_kl,
        "temperature": temperature,
        "top1_agreement": agree / max(views, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: .venv/bin/python scripts/bench/replay_fidelity.py runs/bench/accuracy_final/accuracy/round0/replay.run",
    )
    ap.add_argument("run", type=Path, help="run directory of a replay run (select made the draws)")
    ap.add_argument("--epochs", default="0,1", help="comma-separated epochs to check (default %(default)s)")
    ap.add_argument("--batches", type=int, default=4, help="batches per epoch (default %(default)s)")
    ap.add_argument("--temperature", type=float, default=4.0, help="KD temperature of the KL (default %(default)s)")
    args = ap.parse_args(argv)
    if not (args.run / "recipe.resolved.yaml").is_file():
        ap.error(f"{args.run}: not a run directory (no recipe.resolved.yaml)")
    torch.set_num_threads(2)
    print(json.dumps(fidelity(args.run, [int(e) for e in args.epochs.split(",")], args.batches, args.temperature)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
