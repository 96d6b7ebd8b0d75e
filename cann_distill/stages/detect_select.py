"""select for `task: detect`: score every training image with the recipe's detection selector
(`cann_distill.selection.detection`), pick the critical ones with the selection policy, and write the same files as
classification's select (`select/index.csv`, `select/summary.json`), which distill reads with `distill.critical.mode`
weight or subset. No teacher outputs are cached (docs/guides/detection.md): the size they would take is measured and
said instead."""

from __future__ import annotations

import json
from typing import Any, Optional

import numpy as np

from cann_distill.core.errors import StageError
from cann_distill.core.recipe import Recipe, TrainConfig, selection_policy
from cann_distill.core.registries import DETECTION_SELECTORS
from cann_distill.models.detector import Detector, load_detector, output_bytes
from cann_distill.runtime.terminal import ui
from cann_distill.selection.detection import Boxes, DetectionEvidence, DetectionSelector, dominant_classes
from cann_distill.selection.pick import pick_critical, report_selection
from cann_distill.selection.policy import Selection
from cann_distill.stages.base import Context, Stage, _checkpoint_hashes, register_stage
from cann_distill.stages.detect import TEACHER_CKPT, VALIDATE_ONLY, Data, build, data_inputs, gt_specs, train
from cann_distill.stages.select import histogram, probe_epochs, write_index
from cann_distill.teaching.detect_objective import Objective
from cann_distill.training.detect import predict_boxes
from cann_distill.training.loop import seed_everything


def selector_of(recipe: Recipe) -> DetectionSelector:
    return DETECTION_SELECTORS.build(recipe.select.strategy, **recipe.select.strategy_args)


def probe_train_config(recipe: Recipe) -> TrainConfig:
    """The student probe's training: distill's settings (optimizer, clipping, warmup) for `probe_epochs` epochs."""
    return TrainConfig.model_validate({**{k: getattr(recipe.distill, k) for k in TrainConfig.model_fields}, "epochs": probe_epochs(recipe)})


def truth_of(data: Data) -> list[Boxes]:
    """Every training image's ground-truth boxes in the detector's input pixels (no image is decoded)."""
    return [Boxes.of(data.train.input_boxes(i).tolist(), im.labels.tolist()) for i, im in enumerate(data.train_set.images)]


def detected(model: Any, data: Data, recipe: Recipe, ctx: Context, desc: str) -> list[Boxes]:
    """The model's post-NMS detections on every training image, as evaluation makes them."""
    found = predict_boxes(model, data.train, recipe.detect, recipe.data.batch_size, desc, ctx.runtime)
    return [Boxes.of(d["boxes"], d["labels"], d["scores"]) for d in found]


def probe_detections(ctx: Context, data: Data) -> list[Boxes]:
    """A student probe's detections: the recipe's student, seeded as distill seeds it, trained on the boxes alone."""
    r = ctx.recipe
    cfg = probe_train_config(r)
    seed_everything(r.seed)
    student = build(r.student, data, r, "student")
    if cfg.epochs:
        train(student, Objective(gt_specs(r)), None, data, cfg, ctx, "select probe", live=False)
    return detected(student, data, r, ctx, "student probe detections")


def teacher_outputs(teacher: Optional[Detector], recipe: Recipe, data: Data) -> dict[str, Any]:
    """What caching the teacher's outputs would cost: bytes per image (measured on one forward pass) and for the split."""
    model = teacher if teacher is not None else Detector(recipe.teacher.arch, len(data.classes), recipe.detect)
    per_image = output_bytes(model, recipe.detect.data.image_size)
    n = len(data.train_set)
    return {
        "bytes_per_image": per_image,
        "train_images": n,
        "bytes_train_split": per_image["total"] * n,
        "cached": False,
        "why": "float32 pyramid levels and head maps per training image; the teacher runs online in distill",
    }


def summary_of(recipe: Recipe, data: Data, scores: np.ndarray, targets: np.ndarray, selection: Selection) -> dict[str, Any]:
    """summary.json: what was selected and how (the keys of classification's select that apply to detection)."""
    cfg, critical = recipe.select, selection.mask
    t = cfg.temperature
    n_critical = int(critical.sum())
    selector = selector_of(recipe)
    return {
        "task": "detect",
        "strategy": cfg.strategy,
        "strategy_args": cfg.strategy_args,
        "num_samples": len(scores),
        "num_critical": n_critical,
        "ratio": float(critical.mean()),
        "per_class_critical": {name: int(critical[targets == c].sum()) for c, name in enumerate(data.classes)},
        "without_boxes_critical": int(critical[targets < 0].sum()),
        "selection": {
            **selection.describe(),
            "class_balanced": cfg.class_balanced,
            "class_of_image": "the class with most boxes in it (ties: the lower index); images without boxes: none",
            "mix": cfg.mix.model_dump() if cfg.mix is not None else None,
            "scarce_below": cfg.scarce_below,
        },
        "refresh_every": None,
        "probe_epochs": probe_epochs(recipe) if selector.needs_student else None,
        "score_mean": float(scores.mean()),
        "score_critical_min": float(scores[critical].min()) if n_critical else None,
        "temperature": {"per_sample": False, "base": t.base, "t_min": t.t_min, "t_max": t.t_max, "read": False},
        "key": f"{n_critical} of {len(scores)} training images critical: {cfg.strategy} scores, policy {selection.resolved}",
    }


class DetectSelectStage(Stage):
    name = "select"
    version = 1
    sections = ("detect", "select", "seed")
    ignore = VALIDATE_ONLY

    def needs_for(self, recipe: Recipe) -> tuple[str, ...]:
        return (TEACHER_CKPT,) if selector_of(recipe).needs_teacher else ()

    def extra_inputs(self, recipe: Recipe) -> dict[str, Any]:
        inputs: dict[str, Any] = {
            **data_inputs(recipe),
            "selection": {"policy": selection_policy(recipe)},
            "teacher_arch": recipe.teacher.arch,  # the measured size of its outputs is in the summary
        }
        if selector_of(recipe).needs_student:
            inputs["probe"] = {
                "student": recipe.section("student"),
                "train": probe_train_config(recipe).model_dump(mode="json"),
                "checkpoint": _checkpoint_hashes(recipe)["student"],
                "losses": [s.model_dump() for s in gt_specs(recipe)],
            }
        return inputs

    def execute(self, ctx: Context) -> dict[str, Any]:
        r = ctx.recipe
        data = Data(r)
        selector = selector_of(r)
        evidence = DetectionEvidence(r.detect.data.image_size, truth_of(data))
        teacher = None
        if selector.needs_teacher:
            teacher = load_detector(
                ctx.artifacts[TEACHER_CKPT], r.teacher.arch, len(data.classes), r.detect, data.train_set.category_ids, TEACHER_CKPT
            ).to(ctx.runtime.device)
            evidence.teacher = detected(teacher, data, r, ctx, "teacher detections")
        if selector.needs_student:
            evidence.student = probe_detections(ctx, data)
        scores = np.asarray(selector.score(evidence), dtype=np.float64)
        if scores.shape != (len(data.train_set),) or not np.all(np.isfinite(scores)):
            raise StageError(
                f"select.strategy '{r.select.strategy}': {scores.shape} scores for {len(data.train_set)} images, or not finite"
            )
        targets = dominant_classes(evidence.truth, len(data.classes))
        selection = pick_critical(scores, targets, r, data.classes, seed=r.seed)
        report_selection(selection)
        temps = np.full(len(scores), r.select.temperature.base)
        write_index(ctx.out / "index.csv", data.ids(), targets, scores, selection.mask, temps)
        summary = summary_of(r, data, scores, targets, selection)
        summary["teacher_outputs"] = sizes = teacher_outputs(teacher, r, data)
        per = sizes["bytes_per_image"]
        ui.info(
            f"select: the teacher's outputs take {per['total']:,} bytes per image ({per['fpn']:,} pyramid + {per['head']:,} head maps), "
            f"{sizes['bytes_train_split'] / 1e6:,.1f} MB for {sizes['train_images']} training images: not cached, the teacher runs online"
        )
        (ctx.out / "summary.json").write_text(json.dumps({**summary, "score_histogram": histogram(scores)}, indent=2))
        return summary


register_stage(DetectSelectStage(), task="detect")
