"""How large is the KD term's gradient next to cross-entropy's at the start of distillation?

Loads a recipe's data (training transform: the augmented views distill sees) and a trained teacher,
creates the student as distill does (fresh weights, training mode) and reports, on one batch of
augmented views, the L1 norm of the gradient w.r.t. the student logits and the L2 norm of the
gradient w.r.t. the student's parameters for CE and for Hinton KD (T² · KL) at several temperatures.
No optimizer step is taken.

Example:
  python scripts/bench/kd_gradient_scale.py --recipe RECIPE.yaml --teacher RUN_DIR/teacher/teacher.pt --seeds 0,1
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F

from cann_distill.core.recipe_load import load_recipe
from cann_distill.data.loading import SplitDataset, load_splits
from cann_distill.models.build import build_model


def grad_norm(model: torch.nn.Module, loss: torch.Tensor) -> float:
    model.zero_grad()
    loss.backward(retain_graph=True)
    return float(torch.sqrt(sum((p.grad**2).sum() for p in model.parameters() if p.grad is not None)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[-1]
    )
    ap.add_argument("--recipe", required=True)
    ap.add_argument("--teacher", required=True, help="teacher checkpoint (a teacher stage's teacher/teacher.pt)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--seeds", default="0,1", help="student initialisations (default %(default)s)")
    ap.add_argument("--temperatures", default="1,2,4,8")
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    r = load_recipe(args.recipe, args.overrides)
    splits = load_splits(r.data)
    n_classes, in_chans = len(splits.train.classes), (r.data.channels or 3)
    teacher = build_model(r.teacher, n_classes, in_chans, checkpoint=args.teacher).eval()
    ds = SplitDataset(splits.train, splits.train_transform, seed=0)
    idx = np.random.default_rng(0).choice(len(ds), min(args.batch, len(ds)), replace=False)
    x = torch.stack([ds[int(i)][0] for i in idx])
    y = torch.tensor([int(splits.train.targets[int(i)]) for i in idx])
    x = splits.train.norm(x) if splits.train.norm is not None else x
    with torch.no_grad():
        t = teacher(x)
    out = {"recipe": args.recipe, "batch": len(idx), "teacher_acc_on_views": float((t.argmax(1) == y).float().mean()), "seeds": []}
    for seed in (int(s) for s in args.seeds.split(",")):
        torch.manual_seed(seed)
        student = build_model(r.student, n_classes, in_chans).train()
        s = student(x)
        row = {
            "seed": seed,
            "ce": {
                "logit_l1": float((s.detach().softmax(1) - F.one_hot(y, n_classes)).abs().sum(1).mean()),
                "param_l2": grad_norm(student, F.cross_entropy(s, y)),
            },
            "kd": {},
        }
        for temp in (float(v) for v in args.temperatures.split(",")):
            kd = F.kl_div(F.log_softmax(s / temp, 1), F.softmax(t / temp, 1), reduction="batchmean") * temp * temp
            row["kd"][f"{temp:g}"] = {
                "logit_l1": float((temp * (F.softmax(s.detach() / temp, 1) - F.softmax(t / temp, 1))).abs().sum(1).mean()),
                "param_l2": grad_norm(student, kd),
            }
        out["seeds"].append(row)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
