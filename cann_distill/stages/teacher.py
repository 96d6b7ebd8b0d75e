"""teacher: load (checkpoint / pretrained) and/or train the teacher on the training split."""

from __future__ import annotations

import json
from typing import Any

from cann_distill.core.recipe import Recipe
from cann_distill.data.loading import Splits, data_fingerprint, load_splits
from cann_distill.data.transforms import channels_of, make_mixup
from cann_distill.models.build import build_model, count_params, save_checkpoint, with_teacher_input
from cann_distill.stages.base import Context, Stage, _checkpoint_hashes, register_stage
from cann_distill.training.live import EpochLog
from cann_distill.training.loop import accuracy, ce_step, fit, predict, seed_everything


def headline(val_acc: float, test_acc: float | None) -> dict[str, object]:
    """The number to quote and the split it comes from: test when there is one (val chose the epoch)."""
    return {"split": "test", "acc": test_acc} if test_acc is not None else {"split": "val", "acc": val_acc}


def data_skipped(splits: Splits) -> dict[str, int]:
    """Bad images left out per split (data.on_bad_image: skip)."""
    return {s.name: len(s.skipped) for s in (splits.train, splits.val, splits.test) if s is not None and s.skipped}


CHECKPOINT = "teacher/teacher.pt"
METRICS = "teacher/metrics.json"


class TeacherStage(Stage):
    name = "teacher"
    version = 4
    all_ranks = True  # under torchrun: DDP training / a sharded teacher pass (cann_distill.runtime.distributed)
    sections = ("data", "teacher", "seed")

    def extra_inputs(self, recipe: Recipe) -> dict[str, Any]:
        return {"data": data_fingerprint(recipe.data), "checkpoint": _checkpoint_hashes(recipe)["teacher"]}

    def execute(self, ctx: Context) -> dict[str, Any]:
        r = ctx.recipe
        cfg = r.teacher
        splits = load_splits(r.data)
        train, val, rt = splits.train, splits.val, ctx.runtime
        in_chans = channels_of(r.data)
        seed_everything(r.seed)  # the initial weights too
        model = build_model(cfg, len(train.classes), in_chans, role="teacher", classes=train.classes)
        epochs = cfg.train.epochs if (cfg.checkpoint is None or cfg.train_when_checkpoint) else 0
        source = "checkpoint" if cfg.checkpoint else ("pretrained" if cfg.pretrained else "scratch")
        history: list[Any] = []
        net = with_teacher_input(model, r.data, cfg)  # a pretrained teacher sees inputs normalised its own way
        if epochs:
            tcfg = cfg.train.model_copy(update={"epochs": epochs})
            history = fit(
                net,
                train,
                tcfg,
                tcfg.batch_size or r.data.batch_size,
                ce_step,
                r.seed,
                "teacher train",
                val=val,
                runtime=rt,
                transform=splits.train_transform,
                mix=make_mixup(r.data, len(train.classes)),
                on_epoch_end=EpochLog(ctx.run.root, self.name, epochs),
            )
        val_acc = accuracy(predict(net, val, desc="teacher eval", runtime=rt), val.targets)
        test = splits.test
        test_acc = accuracy(predict(net, test, desc="teacher test", runtime=rt), test.targets) if test is not None else None
        save_checkpoint(ctx.out / "teacher.pt", model, cfg.arch, len(train.classes), in_chans, classes=train.classes)
        summary = {
            "arch": cfg.arch,
            "source": source,
            "epochs": epochs,
            "params": count_params(model),
            "val_acc": val_acc,
            "test_acc": test_acc,
            "headline": headline(val_acc, test_acc),
            "num_train": len(train),
            "num_val": len(val),
            "num_test": len(test) if test is not None else 0,
            "skipped_images": data_skipped(splits),
            "classes": train.classes,
            "runtime": rt.describe(),
            "stopped_early": getattr(history, "stopped_early", None),
        }
        (ctx.out / "metrics.json").write_text(json.dumps({**summary, "history": history}, indent=2))
        return summary


register_stage(TeacherStage())
