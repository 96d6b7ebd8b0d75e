"""teacher: load (checkpoint / pretrained) and/or train the teacher on the training split.

With several teachers (`teachers:`), each is loaded / trained and evaluated in turn with its own artifacts:
the first writes `teacher/teacher.pt` and `teacher/metrics.json` as a single teacher does (what validate and
the report compare the student with), teacher k >= 1 `teacher/teacher_<k>.pt` and `teacher/metrics_<k>.json`;
teacher k is seeded with seed + k, so two teachers of one arch are not the same network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cann_distill.core.recipe import Recipe, TeacherConfig
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


def teacher_checkpoint(k: int) -> str:
    """Teacher k's checkpoint artifact (k = 0: the one a single teacher writes)."""
    return CHECKPOINT if k == 0 else f"teacher/teacher_{k}.pt"


def teacher_metrics(k: int) -> str:
    return METRICS if k == 0 else f"teacher/metrics_{k}.json"


def extra_teachers(recipe: Recipe) -> tuple[str, ...]:
    """The checkpoints of teachers 1.. (none with one teacher): what a stage that reads every teacher adds to its needs."""
    return tuple(teacher_checkpoint(k) for k in range(1, len(recipe.teachers or ())))


class TeacherStage(Stage):
    name = "teacher"
    version = 4
    all_ranks = True  # under torchrun: DDP training / a sharded teacher pass (cann_distill.runtime.distributed)
    sections = ("data", "teacher", "seed")
    ignore = ("data.unlabeled",)  # teachers learn from labelled images only

    def extra_inputs(self, recipe: Recipe) -> dict[str, Any]:
        inputs: dict[str, Any] = {
            "data": data_fingerprint(recipe.data, ignore=frozenset({"unlabeled"})),
            "checkpoint": _checkpoint_hashes(recipe)["teacher"],
        }
        if recipe.teachers:  # several teachers: every one's section and checkpoint
            inputs["teachers"] = [
                {**t.model_dump(mode="json", exclude={"weight"}), "checkpoint_sha256": _file_hash(t.checkpoint)} for t in recipe.teachers
            ]
        return inputs

    def execute(self, ctx: Context) -> dict[str, Any]:
        r = ctx.recipe
        splits = load_splits(r.data)
        if not r.teachers:
            return self._one(ctx, splits, r.teacher, 0)
        summaries = [self._one(ctx, splits, t.section(), k) for k, t in enumerate(r.teachers)]
        teachers = [
            {"index": k, "weight": t.weight, **{key: s[key] for key in ("arch", "source", "epochs", "params", "val_acc", "test_acc")}}
            for k, (t, s) in enumerate(zip(r.teachers, summaries))
        ]
        first = json.loads((ctx.out / "metrics.json").read_text())
        (ctx.out / "metrics.json").write_text(json.dumps({**first, "teachers": teachers}, indent=2))
        return {**summaries[0], "teachers": teachers}

    def _one(self, ctx: Context, splits: Splits, cfg: TeacherConfig, k: int) -> dict[str, Any]:
        """Load and/or train teacher k, evaluate it, write its checkpoint and metrics; its summary."""
        r, rt = ctx.recipe, ctx.runtime
        train, val = splits.train, splits.val
        in_chans = channels_of(r.data)
        seed = r.seed + k
        seed_everything(seed)  # the initial weights too
        model = build_model(cfg, len(train.classes), in_chans, role="teacher" if k == 0 else f"teachers[{k}]", classes=train.classes)
        epochs = cfg.train.epochs if (cfg.checkpoint is None or cfg.train_when_checkpoint) else 0
        source = "checkpoint" if cfg.checkpoint else ("pretrained" if cfg.pretrained else "scratch")
        history: list[Any] = []
        net = with_teacher_input(model, r.data, cfg)  # a pretrained teacher sees inputs normalised its own way
        label = "teacher" if k == 0 else f"teacher {k}"
        if epochs:
            tcfg = cfg.train.model_copy(update={"epochs": epochs})
            history = fit(
                net,
                train,
                tcfg,
                tcfg.batch_size or r.data.batch_size,
                ce_step,
                seed,
                f"{label} train",
                val=val,
                runtime=rt,
                transform=splits.train_transform,
                mix=make_mixup(r.data, len(train.classes)),
                on_epoch_end=EpochLog(ctx.run.root, self.name if k == 0 else f"{self.name}_{k}", epochs),
            )
        val_acc = accuracy(predict(net, val, desc=f"{label} eval", runtime=rt), val.targets)
        test = splits.test
        test_acc = accuracy(predict(net, test, desc=f"{label} test", runtime=rt), test.targets) if test is not None else None
        out = ctx.out / Path(teacher_checkpoint(k)).name
        save_checkpoint(out, model, cfg.arch, len(train.classes), in_chans, classes=train.classes)
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
        (ctx.out / Path(teacher_metrics(k)).name).write_text(json.dumps({**summary, "history": history}, indent=2))
        return summary


def _file_hash(path: str | None) -> str | None:
    from cann_distill.core.files import sha256_file

    return sha256_file(Path(path)) if path and Path(path).is_file() else None


register_stage(TeacherStage())
