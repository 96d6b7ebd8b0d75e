"""distill: train the student from cached teacher logits and the critical-sample index."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cann_distill.data import Split, channels_of, load_splits
from cann_distill.errors import ArtifactError
from cann_distill.losses import LOSSES, Loss
from cann_distill.models import build_model, count_params, save_checkpoint
from cann_distill.recipe import Recipe
from cann_distill.stages.base import Context, Stage, _checkpoint_hashes, register_stage
from cann_distill.stages.select import INDEX, INDEX_FIELDS, LOGITS
from cann_distill.train import accuracy, fit, predict, seed_everything

CHECKPOINT = "distill/student.pt"
METRICS = "distill/metrics.json"


def read_index(path: Path, train: Split) -> np.ndarray:
    """Critical mask in split order; the index must have been made for this very split."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != INDEX_FIELDS:
            raise ArtifactError(f"{path}: not a critical-sample index (columns {reader.fieldnames})")
        rows = list(reader)
    ids = [row["id"] for row in rows]
    if ids != train.ids:
        raise ArtifactError(f"{path}: index was made for a different dataset than the recipe names; rerun `cann-distill select --force`")
    return np.array([row["critical"] == "1" for row in rows])


class DistillStage(Stage):
    name = "distill"
    sections = ("data", "student", "distill", "seed")
    needs = (LOGITS, INDEX)

    def extra_inputs(self, recipe: Recipe) -> dict[str, Any]:
        return {"checkpoint": _checkpoint_hashes(recipe)["student"]}

    def execute(self, ctx: Context) -> dict[str, Any]:
        r = ctx.recipe
        cfg = r.distill
        train, val = load_splits(r.data)
        teacher_logits = torch.from_numpy(np.load(ctx.artifacts[LOGITS], allow_pickle=False))
        if teacher_logits.shape != (len(train), len(train.classes)):
            raise ArtifactError(f"{ctx.artifacts[LOGITS]}: shape {tuple(teacher_logits.shape)} does not fit {len(train)} samples × {len(train.classes)} classes")
        critical = torch.from_numpy(read_index(ctx.artifacts[INDEX], train))
        losses: list[tuple[str, float, Loss]] = [(s.kind, s.weight, LOSSES.build(s.kind, **s.kwargs())) for s in cfg.losses]
        sample_w = torch.ones(len(train))
        sampler = None
        if cfg.critical.mode == "weight":
            sample_w[critical] = cfg.critical.weight
        elif cfg.critical.mode == "subset":
            sampler = torch.utils.data.SubsetRandomSampler(
                torch.flatnonzero(critical).tolist(), generator=torch.Generator().manual_seed(r.seed)
            )

        def step(model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
            x, y, idx = batch
            outputs = {"student.logits": model(x), "teacher.logits": teacher_logits[idx], "targets": y}
            w = sample_w[idx]
            total = torch.zeros(())
            parts = {}
            for kind, weight, loss in losses:
                value = (loss(outputs) * w).sum() / w.sum()
                parts[kind] = value.item()
                total = total + weight * value
            return total, parts

        seed_everything(r.seed)
        model = build_model(r.student, len(train.classes), channels_of(r.data), role="student")
        history = fit(model, train, cfg, cfg.batch_size or r.data.batch_size, step, r.seed, "distill", val=val, sampler=sampler)
        val_acc = accuracy(predict(model, val, desc="student eval"), val.targets)
        save_checkpoint(ctx.out / "student.pt", model, r.student.arch, len(train.classes), channels_of(r.data), classes=train.classes)
        summary = {
            "arch": r.student.arch, "params": count_params(model), "epochs": cfg.epochs, "val_acc": val_acc,
            "losses": [s.model_dump() for s in cfg.losses], "critical_mode": cfg.critical.mode,
            "num_critical": int(critical.sum()),
        }
        (ctx.out / "metrics.json").write_text(json.dumps({**summary, "history": history}, indent=2))
        return summary


register_stage(DistillStage())
