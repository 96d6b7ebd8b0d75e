"""teacher: load (checkpoint / pretrained) and/or train the teacher on the training split."""

from __future__ import annotations

import json
from typing import Any

from cann_distill.data import channels_of, data_fingerprint, load_splits
from cann_distill.models import build_model, count_params, save_checkpoint, with_teacher_input
from cann_distill.recipe import Recipe
from cann_distill.stages.base import Context, Stage, _checkpoint_hashes, register_stage
from cann_distill.train import accuracy, ce_step, fit, predict, seed_everything

CHECKPOINT = "teacher/teacher.pt"
METRICS = "teacher/metrics.json"


class TeacherStage(Stage):
    name = "teacher"
    version = 3
    sections = ("data", "teacher", "seed")

    def extra_inputs(self, recipe: Recipe) -> dict[str, Any]:
        return {"data": data_fingerprint(recipe.data), "checkpoint": _checkpoint_hashes(recipe)["teacher"]}

    def execute(self, ctx: Context) -> dict[str, Any]:
        r = ctx.recipe
        cfg = r.teacher
        train, val = load_splits(r.data)
        in_chans = channels_of(r.data)
        seed_everything(r.seed)  # the initial weights too
        model = build_model(cfg, len(train.classes), in_chans, role="teacher")
        epochs = cfg.train.epochs if (cfg.checkpoint is None or cfg.train_when_checkpoint) else 0
        source = "checkpoint" if cfg.checkpoint else ("pretrained" if cfg.pretrained else "scratch")
        history = []
        net = with_teacher_input(model, r.data, cfg)  # a pretrained teacher sees inputs normalised its own way
        if epochs:
            tcfg = cfg.train.model_copy(update={"epochs": epochs})
            history = fit(net, train, tcfg, tcfg.batch_size or r.data.batch_size, ce_step, r.seed, "teacher train", val=val)
        val_acc = accuracy(predict(net, val, desc="teacher eval"), val.targets)
        save_checkpoint(ctx.out / "teacher.pt", model, cfg.arch, len(train.classes), in_chans, classes=train.classes)
        summary = {
            "arch": cfg.arch, "source": source, "epochs": epochs, "params": count_params(model),
            "val_acc": val_acc, "num_train": len(train), "num_val": len(val), "classes": train.classes,
        }
        (ctx.out / "metrics.json").write_text(json.dumps({**summary, "history": history}, indent=2))
        return summary


register_stage(TeacherStage())
