"""select: run the teacher once over the training split, cache its logits, mine critical samples."""

from __future__ import annotations

import csv
import json
from typing import Any

import numpy as np

from cann_distill.data import channels_of, data_fingerprint, load_splits
from cann_distill.models import build_model
from cann_distill.recipe import Recipe, SelectConfig
from cann_distill.selectors import SELECTORS
from cann_distill.stages.base import Context, Stage, register_stage
from cann_distill.stages.teacher import CHECKPOINT as TEACHER_CKPT
from cann_distill.train import accuracy, predict

LOGITS = "select/teacher_logits.npy"
INDEX = "select/index.csv"
SUMMARY = "select/summary.json"
INDEX_FIELDS = ("id", "target", "score", "rank", "critical")


def pick_critical(scores: np.ndarray, targets: np.ndarray, cfg: SelectConfig) -> np.ndarray:
    """Boolean mask of the top `top_k_ratio` scores (per class in proportion when class_balanced)."""
    n = len(scores)
    mask = np.zeros(n, dtype=bool)
    if cfg.class_balanced:
        for c in np.unique(targets):
            idx = np.flatnonzero(targets == c)
            k = max(1, int(round(cfg.top_k_ratio * len(idx))))
            mask[idx[np.argsort(-scores[idx], kind="stable")[:k]]] = True
    else:
        k = max(1, int(round(cfg.top_k_ratio * n)))
        mask[np.argsort(-scores, kind="stable")[:k]] = True
    return mask


class SelectStage(Stage):
    name = "select"
    sections = ("data", "select", "seed")
    needs = (TEACHER_CKPT,)

    def extra_inputs(self, recipe: Recipe) -> dict[str, Any]:
        return {"data": data_fingerprint(recipe.data)}

    def execute(self, ctx: Context) -> dict[str, Any]:
        r = ctx.recipe
        train, _ = load_splits(r.data)
        teacher = build_model(r.teacher, len(train.classes), channels_of(r.data), checkpoint=ctx.artifacts[TEACHER_CKPT])
        logits = predict(teacher, train, batch_size=r.select.batch_size, desc="teacher logits").astype(np.float32)
        np.save(ctx.out / "teacher_logits.npy", logits)
        scores = SELECTORS.build(r.select.strategy).score(logits, train.targets, seed=r.seed)
        critical = pick_critical(scores, train.targets, r.select)
        order = np.argsort(-scores, kind="stable")
        rank = np.empty(len(scores), dtype=np.int64)
        rank[order] = np.arange(1, len(scores) + 1)
        with open(ctx.out / "index.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(INDEX_FIELDS)
            for i, sid in enumerate(train.ids):
                w.writerow([sid, int(train.targets[i]), f"{scores[i]:.6g}", int(rank[i]), int(critical[i])])
        per_class = {train.classes[c]: int(critical[train.targets == c].sum()) for c in range(len(train.classes))}
        summary = {
            "strategy": r.select.strategy, "num_samples": len(train), "num_critical": int(critical.sum()),
            "ratio": float(critical.mean()), "per_class_critical": per_class,
            "teacher_train_acc": accuracy(logits, train.targets),
            "score_mean": float(scores.mean()), "score_critical_min": float(scores[critical].min()),
        }
        (ctx.out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary


register_stage(SelectStage())
