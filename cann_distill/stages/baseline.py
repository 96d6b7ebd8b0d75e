"""baseline: the recipe's student trained with cross-entropy only, the reference the report's transfer metrics need.

Same student (architecture, initial weights: the seed is set before building it exactly as distill
does), same data and augmentation (mixing included: CE on the mixed labels), same training budget
(distill's optimizer, lr, warmup, EMA, best-epoch selection, and as many optimizer steps: with a critical
subset or curriculum, fewer full-set epochs than distill.epochs); only the losses, the
critical-sample plan and the teacher are left out. It needs no upstream artifact.

It runs when `report.baseline` is true. Its fingerprint holds only what it depends on (data, student,
seed and distill's training budget, not the distillation losses), so a recipe that changes only how it
distills keeps its baseline. Finished baselines are also kept in the shared cache
(`<cache_dir>/baselines/<key>.pt` + a verifying sidecar, see cache.py): another recipe, in another run
dir, that shares the student, data, seed and budget reuses it instead of training it again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from cann_distill.core.files import atomic_path, sha256_file
from cann_distill.core.paths import resolve_cache_dir
from cann_distill.core.recipe import Recipe, TrainConfig, distill_epoch_equivalents
from cann_distill.data.loading import data_fingerprint, load_splits
from cann_distill.data.transforms import channels_of, make_mixup
from cann_distill.models.build import build_model, count_params, save_checkpoint
from cann_distill.runtime.terminal import ui
from cann_distill.stages.base import Context, Stage, _checkpoint_hashes, register_stage
from cann_distill.stages.teacher import headline
from cann_distill.store.cache import KeyedEntries, cache_key, produced_by
from cann_distill.teaching.losses import LOSSES
from cann_distill.training.live import EpochLog
from cann_distill.training.loop import accuracy, fit, predict, seed_everything

CHECKPOINT = "baseline/student.pt"
METRICS = "baseline/metrics.json"


def training_budget(recipe: Recipe) -> TrainConfig:
    """distill's training settings (the TrainConfig part of the distill section), nothing about the losses, with the
    epochs that give it distill's number of optimizer steps (a subset or curriculum trains fewer than its epochs)."""
    cfg = TrainConfig.model_validate({k: getattr(recipe.distill, k) for k in TrainConfig.model_fields})
    if recipe.distill.critical.mode in ("subset", "curriculum"):
        cfg = cfg.model_copy(update={"epochs": max(1, round(distill_epoch_equivalents(recipe)))})
    return cfg


def ce_arguments(recipe: Recipe) -> dict[str, Any]:
    """The keyword arguments of the recipe's CE term (the first `ce` in distill.losses; none: plain CE), so the
    baseline trains with the same cross-entropy as the distilled student (label smoothing included)."""
    return next((spec.kwargs() for spec in recipe.distill.losses if spec.kind == "ce"), {})


class CeStep:
    """fit's step for the baseline: the recipe's CE term alone (hard labels, or mixed soft targets as distill's CE)."""

    def __init__(self, arguments: dict[str, Any]) -> None:
        self.ce = LOSSES.build("ce", **arguments)

    def __call__(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        x, y, _ = batch
        loss = self.ce({"student.logits": model(x), "targets": y}).mean()
        return loss, {"ce": loss.item()}


def baseline_parts(recipe: Recipe, version: int) -> dict[str, Any]:
    """What a baseline is a function of: its cache key and the 'extra' part of the stage fingerprint (the CE term's
    arguments only when it has any, so a plain-CE baseline keeps the key it always had)."""
    ce = ce_arguments(recipe)
    return {
        "kind": "baseline",
        "stage_version": version,
        "data": data_fingerprint(recipe.data),
        "student": recipe.section("student"),
        "train": training_budget(recipe).model_dump(mode="json"),
        "seed": recipe.seed,
        "checkpoint": _checkpoint_hashes(recipe)["student"],
        **({"ce": ce} if ce else {}),
    }


class BaselineCache(KeyedEntries):
    """Finished baselines keyed by `baseline_parts`, shared by every run dir using the same cache dir."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, "baselines", ".pt")

    def load(self, parts: dict[str, Any]) -> tuple[Optional[Path], Optional[dict[str, Any]], Optional[str]]:
        """(checkpoint, metrics, None) on a verified hit; (None, None, why) when unusable; all None when absent."""
        key = cache_key(parts)
        ckpt, side = self.paths(key)
        if self.absent(key):
            return None, None, None
        meta, problem = self.sidecar(key, parts)
        if meta is None:
            return None, None, problem
        if not ckpt.is_file() or sha256_file(ckpt) != meta.get("sha256"):
            return None, None, f"{ckpt}: missing or its sha256 does not match its sidecar"
        if not isinstance(meta.get("metrics"), dict):
            return None, None, f"{side} holds no metrics"
        return ckpt, meta["metrics"], None

    def store(self, parts: dict[str, Any], ckpt: Path, metrics: dict[str, Any]) -> None:
        key = cache_key(parts)
        dst, _ = self.paths(key)
        with atomic_path(dst) as tmp:
            shutil.copyfile(ckpt, tmp)
        self.write_sidecar(key, {"sha256": sha256_file(dst), "produced_by": produced_by(parts), "metrics": metrics})


class BaselineStage(Stage):
    name = "baseline"
    version = 1
    sections = ("data", "student", "seed")

    def enabled(self, recipe: Recipe) -> bool:
        return recipe.report.baseline

    def extra_inputs(self, recipe: Recipe) -> dict[str, Any]:
        return baseline_parts(recipe, self.version)

    def execute(self, ctx: Context) -> dict[str, Any]:
        r = ctx.recipe
        parts = baseline_parts(r, self.version)
        cache = BaselineCache(resolve_cache_dir(r.select.cache_dir))
        ckpt, metrics, problem = cache.load(parts)
        if problem:
            ui.warn(f"baseline cache: {problem}; training it again")
        if ckpt is not None and metrics is not None:
            ui.info(f"[dim]baseline: reusing {ckpt} (same student, data, seed and training budget)[/dim]")
            shutil.copyfile(ckpt, ctx.out / "student.pt")
            metrics = {**metrics, "reused_from": str(ckpt)}
        else:
            metrics = self._train(ctx)
            try:
                cache.store(parts, ctx.out / "student.pt", metrics)
            except OSError as exc:
                ui.warn(f"baseline cache: could not write {cache.dir} ({exc.strerror or exc}); continuing without it")
        (ctx.out / "metrics.json").write_text(json.dumps(metrics, indent=2))
        return {k: v for k, v in metrics.items() if k != "history"}

    def _train(self, ctx: Context) -> dict[str, Any]:
        r, rt = ctx.recipe, ctx.runtime
        cfg = training_budget(r)
        splits = load_splits(r.data)
        train, val, test = splits.train, splits.val, splits.test
        seed_everything(r.seed)  # as distill does before building its student: the same initial weights
        student = build_model(r.student, len(train.classes), channels_of(r.data), role="student", classes=train.classes)
        history = fit(
            student,
            train,
            cfg,
            cfg.batch_size or r.data.batch_size,
            CeStep(ce_arguments(r)),
            r.seed,
            "baseline",
            val=val,
            runtime=rt,
            transform=splits.train_transform,
            mix=make_mixup(r.data, len(train.classes)),
            on_epoch_end=EpochLog(ctx.run.root, self.name, cfg.epochs),
        )
        val_acc = accuracy(predict(student, val, desc="baseline eval", runtime=rt), val.targets)
        test_acc = accuracy(predict(student, test, desc="baseline test", runtime=rt), test.targets) if test is not None else None
        save_checkpoint(ctx.out / "student.pt", student, r.student.arch, len(train.classes), channels_of(r.data), classes=train.classes)
        return {
            "arch": r.student.arch,
            "params": count_params(student),
            "losses": ["ce"],
            "ce": ce_arguments(r),  # the CE term's arguments, as in distill.losses (e.g. label_smoothing)
            "epochs": cfg.epochs,
            "val_acc": val_acc,
            "test_acc": test_acc,
            "headline": headline(val_acc, test_acc),
            "best_epoch": history.best_epoch,
            "weights": history.selected,
            "stopped_early": history.stopped_early,
            "augmented": splits.augmented,
            "mixup": r.data.augment.mixes,
            "history": list(history),
        }


register_stage(BaselineStage())
