"""Measure the mixup/cutmix approximation of replayed (and cached) teacher targets.

With `distill.teacher_targets: replay` (or `cached`) and mixup/cutmix on, distill cannot run the
teacher on the mixed image; it mixes the teacher's distributions of the two images with the batch's
λ and partner instead (timm batch mode: sample i with sample B-1-i; `cann_distill.teaching.targets`).
`online` runs the teacher on the mixed image. This script trains the recipe's teacher once, takes
`--batches` training batches (the views of epoch 0), mixes each with mixup only and with cutmix only,
and compares the teacher's distribution on the mixed image (`online`) with:

  replay        λ·p(view i) + (1-λ)·p(view B-1-i), the teacher's full distributions of the two views
  replay_topk   the same from top-k probabilities, the rest spread uniformly (what replay stores)
  cached        the same from the evaluation views (resize + center crop) instead of the training views
  unmixed       p(view i) alone: what ignoring the mixing would give (a scale for the numbers above)

Reported per kind and approximation: mean KL(online || approximation) in nats at T = 1 and at KD's
temperature (`--temperature`, applied to log-probabilities as kd does), and the share of samples
whose top-1 class agrees.

Example:
    .venv/bin/python scripts/replay_mixup_gap.py --teacher-epochs 5 --out runs/replay_mixup_gap.json
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cann_distill.api import run_stages
from cann_distill.core.recipe import resource_dir
from cann_distill.core.recipe_load import load_recipe
from cann_distill.data.loading import load_splits, loader
from cann_distill.data.transforms import BatchMixup, channels_of, mix_distributions
from cann_distill.models.build import build_model, with_teacher_input
from cann_distill.teaching.targets import log_probs, topk_distribution

KINDS = {"mixup": {"mixup_alpha": 0.8, "cutmix_alpha": 0.0}, "cutmix": {"mixup_alpha": 0.0, "cutmix_alpha": 1.0}}


def kl(p: torch.Tensor, q: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(p || q) per sample after tempering both (softmax(log p / T)), as kd compares them."""
    log_p, log_q = F.log_softmax(log_probs(p) / temperature, 1), F.log_softmax(log_probs(q) / temperature, 1)
    return (log_p.exp() * (log_p - log_q)).sum(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", type=Path, default=resource_dir("recipes") / "resnet10t_from_resnet18_digits.yaml")
    ap.add_argument("--teacher-epochs", type=int, default=None, help="teacher training epochs (default: the recipe's)")
    ap.add_argument("--batches", type=int, default=8, help="training batches measured per kind (at most one epoch's)")
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--temperature", type=float, default=4.0)
    ap.add_argument("--work-dir", type=Path, default=None, help="the teacher's run dir goes here (default: a temp dir)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    started = time.time()

    overrides = [f"teacher.train.epochs={args.teacher_epochs}"] if args.teacher_epochs is not None else []
    recipe = load_recipe(args.recipe, overrides)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="replay_mixup_gap_"))
    teacher_summary = run_stages(recipe, ["teacher"], run_dir=work / "teacher_run")[0].summary
    splits = load_splits(recipe.data)
    train = splits.train
    n_classes = len(train.classes)
    teacher = build_model(
        recipe.teacher,
        n_classes,
        channels_of(recipe.data),
        checkpoint=work / "teacher_run" / "teacher" / "teacher.pt",
        classes=train.classes,
    )
    teacher = with_teacher_input(teacher, recipe.data, recipe.teacher).eval()
    batch_size = recipe.distill.batch_size or recipe.data.batch_size
    batches = loader(train, batch_size, train=True, seed=recipe.seed, transform=splits.train_transform)

    results: dict[str, Any] = {}
    for kind, alphas in KINDS.items():
        mixer = BatchMixup(prob=1.0, mode="batch", label_smoothing=0.0, num_classes=n_classes, **alphas)
        np.random.seed(recipe.seed)
        sums: dict[str, dict[str, list[float]]] = {}
        lams: list[float] = []
        with torch.no_grad():
            for b, (x, y, idx) in enumerate(batches):
                if b == args.batches:
                    break
                p_view = teacher(x).softmax(1)
                p_eval = teacher(torch.stack([train.fetch(int(i)) for i in idx])).softmax(1)
                top = p_view.topk(args.top_k, dim=1)
                p_topk = topk_distribution(top.values.half(), top.indices, n_classes)
                mixed, _, lam = mixer.mix_batch(x.clone(), y)
                lams.append(lam)
                online = teacher(mixed).softmax(1)
                approx = {
                    "replay": mix_distributions(p_view, lam),
                    "replay_topk": mix_distributions(p_topk, lam),
                    "cached": mix_distributions(p_eval, lam),
                    "unmixed": p_view,
                }
                for name, a in approx.items():
                    s = sums.setdefault(name, {"kl_t1": [], "kl_t": [], "top1_agree": []})
                    s["kl_t1"] += kl(online, a, 1.0).tolist()
                    s["kl_t"] += kl(online, a, args.temperature).tolist()
                    s["top1_agree"] += (online.argmax(1) == a.argmax(1)).float().tolist()
        results[kind] = {
            "lambda_mean": float(np.mean(lams)),
            **{name: {k: float(np.mean(v)) for k, v in s.items()} for name, s in sums.items()},
        }

    out = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "recipe": str(args.recipe),
        "teacher": recipe.teacher.arch,
        "teacher_val_acc": teacher_summary["val_acc"],
        "teacher_epochs": teacher_summary["epochs"],
        "samples_per_kind": len(sums["replay"]["kl_t1"]),
        "batches": len(lams),
        "top_k": args.top_k,
        "temperature": args.temperature,
        "kl": "mean KL(online || approximation), nats",
        "seconds": time.time() - started,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"teacher {recipe.teacher.arch}: val {100 * teacher_summary['val_acc']:.2f}%; {out['samples_per_kind']} samples per kind")
    print(f"{'kind':8} {'approximation':13} {'KL T=1':>8} {f'KL T={args.temperature:g}':>8} {'top-1 agree':>11}")
    for kind, r in results.items():
        for name in ("replay", "replay_topk", "cached", "unmixed"):
            m = r[name]
            print(f"{kind:8} {name:13} {m['kl_t1']:8.4f} {m['kl_t']:8.4f} {100 * m['top1_agree']:10.1f}%")


if __name__ == "__main__":
    main()
