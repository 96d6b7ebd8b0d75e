"""The stages of `task: detect` (docs/guides/detection.md): teacher, distill and baseline train detectors
(`cann_distill.models.detector`) on COCO boxes and measure COCO mAP on the validation split. select is in
`detect_select`, validate in `detect_validate`, the report in `detect_report`. They run under the same names, write the
same files (`teacher/teacher.pt`, `select/index.csv`, `distill/student.pt`, `*/metrics.json`) and follow the same stage
contract as the classification stages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from cann_distill.core.errors import StageError
from cann_distill.core.paths import resolve_cache_dir
from cann_distill.core.recipe import LossSpec, ModelConfig, Recipe, TrainConfig
from cann_distill.data.coco import DetectionDataset, detection_fingerprint, detection_loader, load_detection
from cann_distill.models.detector import Detector, count_params, load_detector, save_detector
from cann_distill.reporting.detection_metrics import coco_metrics, cocoeval_modules, percent
from cann_distill.runtime.devices import Runtime, worker_count
from cann_distill.runtime.terminal import ui
from cann_distill.stages.base import Context, Stage, _checkpoint_hashes, register_stage
from cann_distill.stages.baseline import training_budget
from cann_distill.stages.distill_inputs import read_index_of
from cann_distill.stages.select import INDEX as SELECT_INDEX
from cann_distill.stages.select import SUMMARY as SELECT_SUMMARY
from cann_distill.teaching.detect_objective import DetBatch, Objective, ground_truth, named
from cann_distill.training.detect import fit_detector, predict_coco
from cann_distill.training.live import EpochLog
from cann_distill.training.loop import seed_everything

TEACHER_CKPT, TEACHER_METRICS = "teacher/teacher.pt", "teacher/metrics.json"
STUDENT_CKPT, DISTILL_METRICS = "distill/student.pt", "distill/metrics.json"
BASELINE_CKPT, BASELINE_METRICS = "baseline/student.pt", "baseline/metrics.json"
VALIDATE_ONLY = ("detect.int8_head",)
"""detect keys that only change validate's INT8 model: the training stages leave them out of their fingerprints."""


class Data:
    """The recipe's checked splits as torch datasets, and what was found in them."""

    def __init__(self, recipe: Recipe) -> None:
        cocoeval_modules()  # no metrics without pycocotools: say so before any training
        d = recipe.detect
        self.train_set, self.val_set = load_detection(d.data, resolve_cache_dir(recipe.select.cache_dir))
        for note in self.train_set.notes:
            ui.info(f"detect data: {note}")
        for split in (self.train_set, self.val_set):
            skipped = {k: v for k, v in split.counts.items() if k.startswith(("bad_", "annotations_of_skipped"))}
            if skipped:
                ui.warn(f"detect data: {split.name}: skipped {skipped} (detect.data.on_bad: skip)")
        self.train = DetectionDataset(self.train_set, d.data.image_size, d.mean, d.std)
        self.val = DetectionDataset(self.val_set, d.data.image_size, d.mean, d.std)
        self.classes = self.train_set.classes
        self.workers = worker_count(recipe.data.num_workers, in_memory=True)

    def loader(self, batch_size: int, seed: int, indices: Optional[Sequence[int]] = None) -> Any:
        return detection_loader(self.train, batch_size, train=True, seed=seed, workers=self.workers, indices=indices)

    def ids(self) -> list[str]:
        """The training images' ids as select's index.csv lists them (the COCO image ids, split order)."""
        return [str(im.id) for im in self.train_set.images]

    def describe(self) -> dict[str, Any]:
        return {
            "num_train": len(self.train_set),
            "num_val": len(self.val_set),
            "classes": self.classes,
            "category_ids": self.train_set.category_ids,
            "data": {s.name: s.counts for s in (self.train_set, self.val_set)},
            "notes": self.train_set.notes,
        }


def data_inputs(recipe: Recipe) -> dict[str, Any]:
    """What every detect stage's outputs depend on beyond its recipe sections."""
    return {"task": "detect", "data": detection_fingerprint(recipe.detect.data), "batch_size": recipe.data.batch_size}


def evaluate(model: nn.Module, data: Data, recipe: Recipe, runtime: Runtime, desc: str) -> dict[str, Optional[float]]:
    """COCO metrics of `model` on the validation split."""
    results = predict_coco(model, data.val, recipe.detect, recipe.data.batch_size, desc, runtime)
    return coco_metrics(data.val_set.gt, results)


def build(cfg: ModelConfig, data: Data, recipe: Recipe, role: str) -> Detector:
    """A fresh detector for `cfg`'s arch, or the detector checkpoint it names."""
    if cfg.checkpoint:
        return load_detector(
            Path(cfg.checkpoint), cfg.arch, len(data.classes), recipe.detect, data.train_set.category_ids, f"{role}.checkpoint"
        )
    return Detector(cfg.arch, len(data.classes), recipe.detect, pretrained=cfg.pretrained)


def gt_specs(recipe: Recipe) -> list[LossSpec]:
    """The ground-truth loss as distill weighs it (its `det` entries), for the teacher and the baseline: weight 1."""
    dets = [s.model_copy(update={"weight": 1.0}) for s in recipe.distill.losses if s.kind == "det"]
    return dets[:1] or [LossSpec(kind="det")]


@dataclass
class Critical:
    """How distill uses select's critical images (`distill.critical.mode`): `subset` trains on `indices` only,
    `weight` weighs every loss term of a critical image by `distill.critical.weight` (`weights`, one per image)."""

    mode: str
    indices: list[int]
    weights: Optional[torch.Tensor] = None

    @classmethod
    def read(cls, recipe: Recipe, index: Path, ids: Sequence[str]) -> "Critical":
        mask = read_index_of(index, ids).critical
        indices = np.flatnonzero(mask).tolist()
        if not indices:
            raise StageError(
                f"{index}: select marked no training image critical (with select.class_balanced, images without boxes "
                "count for no class); set select.class_balanced: false or distill.critical.mode: none"
            )
        weights = None
        if recipe.distill.critical.mode == "weight":
            weights = torch.ones(len(mask))
            weights[torch.from_numpy(mask.astype(bool))] = recipe.distill.critical.weight
        return cls(recipe.distill.critical.mode, indices, weights)

    def describe(self, recipe: Recipe) -> dict[str, Any]:
        weight = recipe.distill.critical.weight if self.mode == "weight" else None
        return {"critical_mode": self.mode, "num_critical": len(self.indices), "critical_weight": weight}


def train(
    model: Detector,
    objective: Objective,
    teacher: Optional[nn.Module],
    data: Data,
    cfg: TrainConfig,
    ctx: Context,
    stage: str,
    critical: Optional[Critical] = None,
    live: bool = True,
) -> list[dict[str, float]]:
    """`fit_detector` with the objective's outputs: the student's, the ground truth's, the teacher's when read;
    `critical`: only the critical images (subset) or each image's loss weight (weight). `live`: the dashboard's log."""
    r, rt = ctx.recipe, ctx.runtime
    model.to(rt.device)
    if teacher is not None:
        teacher.to(rt.device).eval()
    weights = critical.weights.to(rt.device) if critical is not None and critical.weights is not None else None

    def outputs(batch: DetBatch) -> dict[str, torch.Tensor]:
        out = model(batch[0])
        found = {**named("student", out), **ground_truth(batch, out, r.detect)}
        if teacher is not None and objective.reads_teacher:
            with torch.no_grad():
                found.update(named("teacher", teacher(batch[0])))
        return found

    subset = critical.indices if critical is not None and critical.mode == "subset" else None
    loader = data.loader(cfg.batch_size or r.data.batch_size, r.seed, subset)
    first = next(iter(loader))
    seed_everything(r.seed)
    with torch.no_grad():
        objective.prepare(outputs(tuple(t.to(rt.device) for t in first)))  # type: ignore[arg-type]
    return fit_detector(
        model,
        objective.nets(),
        loader,
        cfg,
        lambda batch: objective(outputs(batch), weights[batch[3]] if weights is not None else None),
        r.seed,
        stage,
        rt,
        on_epoch_end=EpochLog(ctx.run.root, stage, cfg.epochs) if live else None,
    )


def summary_of(arch: str, model: nn.Module, metrics: dict[str, Optional[float]], data: Data, **extra: Any) -> dict[str, Any]:
    return {
        "task": "detect",
        "arch": arch,
        "params": count_params(model),
        "val": metrics,
        "map": metrics["mAP"],
        "key": f"{arch} val mAP {percent(metrics['mAP'])} (AP50 {percent(metrics['AP50'])})",
        **extra,
        **data.describe(),
    }


def write(ctx: Context, summary: dict[str, Any], history: list[dict[str, float]]) -> dict[str, Any]:
    (ctx.out / "metrics.json").write_text(json.dumps({**summary, "history": history}, indent=2))
    return summary


class DetectTeacherStage(Stage):
    name = "teacher"
    version = 1
    sections = ("detect", "teacher", "seed")
    ignore = VALIDATE_ONLY

    def extra_inputs(self, recipe: Recipe) -> dict[str, Any]:
        return {
            **data_inputs(recipe),
            "checkpoint": _checkpoint_hashes(recipe)["teacher"],
            "gt_loss": [s.model_dump() for s in gt_specs(recipe)],
        }

    def execute(self, ctx: Context) -> dict[str, Any]:
        r = ctx.recipe
        cfg = r.teacher
        data = Data(r)
        seed_everything(r.seed)
        model = build(cfg, data, r, "teacher")
        epochs = cfg.train.epochs if (cfg.checkpoint is None or cfg.train_when_checkpoint) else 0
        history: list[dict[str, float]] = []
        if epochs:
            tcfg = cfg.train.model_copy(update={"epochs": epochs})
            history = train(model, Objective(gt_specs(r)), None, data, tcfg, ctx, "teacher")
        metrics = evaluate(model, data, r, ctx.runtime, "teacher eval")
        save_detector(ctx.out / "teacher.pt", model, data.classes, data.train_set.category_ids, r.detect)
        source = "checkpoint" if cfg.checkpoint else ("pretrained" if cfg.pretrained else "scratch")
        return write(ctx, summary_of(cfg.arch, model, metrics, data, source=source, epochs=epochs, runtime=ctx.runtime.describe()), history)


class DetectDistillStage(Stage):
    """The student distilled from the teacher; with `distill.critical.mode` weight or subset, select's critical images
    (`select/index.csv`) weigh more or are the only ones trained on."""

    name = "distill"
    version = 2  # 2: select's critical images (distill.critical.mode weight / subset)
    sections = ("detect", "student", "distill", "seed")
    ignore = VALIDATE_ONLY
    needs = (TEACHER_CKPT,)

    def needs_for(self, recipe: Recipe) -> tuple[str, ...]:
        return self.needs + ((SELECT_INDEX, SELECT_SUMMARY) if recipe.distill.critical.mode != "none" else ())

    def extra_inputs(self, recipe: Recipe) -> dict[str, Any]:
        return {**data_inputs(recipe), "checkpoint": _checkpoint_hashes(recipe)["student"]}

    def execute(self, ctx: Context) -> dict[str, Any]:
        r = ctx.recipe
        data = Data(r)
        critical = Critical.read(r, ctx.artifacts[SELECT_INDEX], data.ids()) if SELECT_INDEX in ctx.artifacts else None
        teacher = load_detector(
            ctx.artifacts[TEACHER_CKPT], r.teacher.arch, len(data.classes), r.detect, data.train_set.category_ids, TEACHER_CKPT
        )
        seed_everything(r.seed)
        student = build(r.student, data, r, "student")
        objective = Objective(r.distill.losses)
        cfg = TrainConfig.model_validate({k: getattr(r.distill, k) for k in TrainConfig.model_fields})
        history = train(student, objective, teacher, data, cfg, ctx, "distill", critical)
        metrics = evaluate(student, data, r, ctx.runtime, "distill eval")
        save_detector(ctx.out / "student.pt", student, data.classes, data.train_set.category_ids, r.detect)
        losses = [{"kind": s.kind, "weight": s.weight, **s.kwargs()} for s in r.distill.losses]
        used = critical.describe(r) if critical is not None else {"critical_mode": "none"}
        return write(ctx, summary_of(r.student.arch, student, metrics, data, losses=losses, epochs=cfg.epochs, **used), history)


class DetectBaselineStage(Stage):
    """The student trained on the ground truth alone (distill's `det` loss, budget and seed), when `report.baseline`;
    with `distill.critical.mode: subset`, for the epochs that give it distill's number of optimizer steps."""

    name = "baseline"
    version = 1
    sections = ("detect", "student", "seed")
    ignore = VALIDATE_ONLY

    def enabled(self, recipe: Recipe) -> bool:
        return recipe.report.baseline

    def extra_inputs(self, recipe: Recipe) -> dict[str, Any]:
        budget = training_budget(recipe)
        return {
            **data_inputs(recipe),
            "checkpoint": _checkpoint_hashes(recipe)["student"],
            "train": budget.model_dump(mode="json"),
            "gt_loss": [s.model_dump() for s in gt_specs(recipe)],
        }

    def execute(self, ctx: Context) -> dict[str, Any]:
        r = ctx.recipe
        data = Data(r)
        seed_everything(r.seed)  # as distill does before building its student: the same initial weights
        student = build(r.student, data, r, "student")
        cfg = training_budget(r)  # distill's optimizer steps: fewer epochs when distill trains on a subset
        history = train(student, Objective(gt_specs(r)), None, data, cfg, ctx, "baseline")
        metrics = evaluate(student, data, r, ctx.runtime, "baseline eval")
        save_detector(ctx.out / "student.pt", student, data.classes, data.train_set.category_ids, r.detect)
        return write(ctx, summary_of(r.student.arch, student, metrics, data, losses=["det"], epochs=cfg.epochs), history)


register_stage(DetectTeacherStage(), task="detect")
register_stage(DetectDistillStage(), task="detect")
register_stage(DetectBaselineStage(), task="detect")
