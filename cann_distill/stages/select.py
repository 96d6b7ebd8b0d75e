"""select: teacher logits (from the shared cache when possible), critical samples and their temperatures;
with `distill.teacher_targets: replay`, also the teacher's top-k labels of K augmented views per sample."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from cann_distill import distributed
from cann_distill.cache import CacheStatus, OutputCache, cache_key, checkpoint_weights_fingerprint, resolve_cache_dir
from cann_distill.data import Split, Splits, channels_of, count_classes, data_fingerprint, load_splits, norm_stats
from cann_distill.devices import CPU, Runtime
from cann_distill.errors import StageError
from cann_distill.models import build_model, with_teacher_input
from cann_distill.recipe import AugmentConfig, Recipe, SelectConfig, SelectTemperatureConfig, TrainConfig
from cann_distill.replay import ReplayStore, index_dtype
from cann_distill.rundir import sha256_file
from cann_distill.selectors import SELECTORS
from cann_distill.stages.base import Context, Stage, _checkpoint_hashes, register_stage
from cann_distill.stages.teacher import CHECKPOINT as TEACHER_CKPT
from cann_distill.targets import ReplaySpec, check_recipe, label_draws, replay_spec, resolve_mode
from cann_distill.temperature import per_sample_temperature
from cann_distill.train import accuracy, ce_step, fit, predict, predict_all, seed_everything
from cann_distill.ui import ui

LOGITS = "select/teacher_logits.npy"
INDEX = "select/index.csv"
SUMMARY = "select/summary.json"
INDEX_FIELDS = ("id", "target", "score", "rank", "critical", "temperature")
HIST_BINS = 10


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


def index_temperatures(scores: np.ndarray, cfg: SelectTemperatureConfig) -> np.ndarray:
    """Per-sample temperature by difficulty, or `base` for every sample when per_sample is off."""
    if not cfg.per_sample:
        return np.full(len(scores), cfg.base)
    return per_sample_temperature(scores, base=cfg.base, t_min=cfg.t_min, t_max=cfg.t_max, t_easy=cfg.t_easy, t_hard=cfg.t_hard)


def histogram(values: np.ndarray, bins: int = HIST_BINS) -> dict[str, list[float]]:
    counts, edges = np.histogram(values, bins=bins)
    return {"counts": counts.tolist(), "edges": [float(e) for e in edges]}


def probe_config(recipe: Recipe) -> TrainConfig:
    """How the student probe trains: distill's optimizer settings for `select.probe_epochs` epochs."""
    d = recipe.distill
    return TrainConfig(epochs=recipe.select.probe_epochs, optimizer=d.optimizer, lr=d.lr, momentum=d.momentum,
                       weight_decay=d.weight_decay, batch_size=d.batch_size)


def probe_logits(recipe: Recipe, train: Split, runtime: Runtime = CPU) -> np.ndarray:
    """Student logits over the training split: the recipe's student, seeded, CE-trained `probe_epochs` epochs."""
    cfg = probe_config(recipe)
    seed_everything(recipe.seed)
    student = build_model(recipe.student, len(train.classes), channels_of(recipe.data), role="student")
    if cfg.epochs:
        fit(student, train, cfg, cfg.batch_size or recipe.data.batch_size, ce_step, recipe.seed, "student probe", runtime=runtime)
    return predict(student, train, batch_size=recipe.select.batch_size, desc="student probe logits", runtime=runtime).astype(np.float32)


def teacher_output_parts(recipe: Recipe, train: Split, teacher_weights: str, outputs: str, **extra: Any) -> dict[str, Any]:
    """What a teacher output over the training split is computed from (logits here, channel sensitivity in distill).

    Arch, weights, the teacher's input normalisation, samples and preprocessing (not the batch
    size), plus `extra` (e.g. the tap). The cache keys entries by it and checks it on every hit.
    """
    mean, std = norm_stats(recipe.data)
    return {
        "outputs": outputs, "arch": recipe.teacher.arch, "weights": teacher_weights,
        "teacher_input": {"mean": recipe.teacher.mean or mean, "std": recipe.teacher.std or std},
        "data": data_fingerprint(recipe.data, ignore=frozenset({"batch_size", "augment"})),
        "ids": hashlib.sha256("\n".join(train.ids).encode()).hexdigest(), **extra,
    }


def replay_inputs(recipe: Recipe, num_classes: int) -> dict[str, Any]:
    """What replayed views and their labels depend on beyond the teacher and the samples: the per-image
    augmentation (mixing happens later, in distill), K, top-k, the seed that keys every view, the
    teacher's autocast, and the libraries that draw the views (another timm may crop differently)."""
    import timm
    import torchvision

    spec = replay_spec(recipe, num_classes)
    return {"augment": recipe.data.augment.model_dump(mode="json", exclude=set(AugmentConfig.MIXING)), "draws": spec.draws, "top_k": spec.top_k,
            "seed": recipe.seed, "amp": recipe.distill.amp,
            "libraries": {"timm": timm.__version__, "torchvision": torchvision.__version__, "torch": torch.__version__}}


def make_replay(recipe: Recipe, splits: Splits, teacher_path: Path, weights: str, runtime: Runtime) -> tuple[dict[str, Any], CacheStatus]:
    """The teacher's top-k labels of K views per training sample, from the shared cache or computed into it."""
    train = splits.train
    n_classes = len(train.classes)
    spec: ReplaySpec = replay_spec(recipe, n_classes)
    key = cache_key(teacher_output_parts(recipe, train, weights, "replay", classes=train.classes, **replay_inputs(recipe, n_classes)))
    shape = (spec.draws, len(train), spec.top_k)

    def fill(values: np.ndarray, indices: np.ndarray) -> None:
        teacher = build_model(recipe.teacher, n_classes, channels_of(recipe.data), checkpoint=teacher_path, classes=train.classes)
        label_draws(with_teacher_input(teacher, recipe.data, recipe.teacher), train, splits.train_transform, recipe.seed, spec,
                    values, indices, batch_size=recipe.select.batch_size, runtime=runtime, amp=recipe.distill.amp,
                    progress=lambda it, total: ui.track(it, f"teacher replay labels ({spec.draws} views)", total=total))

    store = ReplayStore(resolve_cache_dir(recipe.select.cache_dir))
    _, status = store.get_or_compute(key, shape, n_classes, fill, info={"outputs": "replay", "arch": recipe.teacher.arch,
                                                                         "samples": len(train), "draws": spec.draws, "top_k": spec.top_k})
    entry = {"key": key, "shape": list(shape), "draws": spec.draws, "top_k": spec.top_k, "index_dtype": index_dtype(n_classes).name}
    return entry, status


class SelectStage(Stage):
    name = "select"
    version = 5
    all_ranks = True  # under torchrun: DDP training / a sharded teacher pass (cann_distill.distributed)
    sections = ("data", "select", "seed")
    needs = (TEACHER_CKPT,)
    ignore = ("data.augment",)  # the teacher labels un-augmented training images here (replayed views: see extra_inputs)

    def extra_inputs(self, recipe: Recipe) -> dict[str, Any]:
        inputs: dict[str, Any] = {"data": data_fingerprint(recipe.data, ignore=frozenset({"augment"}))}
        if recipe.select.strategy in SELECTORS and SELECTORS.get(recipe.select.strategy).needs_student:
            inputs["probe"] = {"student": recipe.section("student"), "train": probe_config(recipe).model_dump(mode="json"),
                               "checkpoint": _checkpoint_hashes(recipe)["student"]}
        if resolve_mode(recipe) == "replay":
            inputs["replay"] = replay_inputs(recipe, count_classes(recipe.data))
        return inputs

    def execute(self, ctx: Context) -> dict[str, Any]:
        r = ctx.recipe
        cfg = r.select
        splits = load_splits(r.data)
        train = splits.train
        n, n_classes = len(train), len(train.classes)
        replaying = resolve_mode(r) == "replay"
        if replaying:
            check_recipe(r, n_classes)
        teacher_path = ctx.artifacts[TEACHER_CKPT]
        cache = OutputCache(resolve_cache_dir(cfg.cache_dir))
        file_sha = ctx.hashes.get(TEACHER_CKPT) or sha256_file(teacher_path)
        weights = checkpoint_weights_fingerprint(cache.root, teacher_path, file_sha)
        parts = teacher_output_parts(r, train, weights, "logits", classes=train.classes)
        key = cache_key(parts)

        def teacher_forward(split: Split = train, desc: str = "teacher logits", sharded: bool = False) -> np.ndarray:
            teacher = build_model(r.teacher, n_classes, channels_of(r.data), checkpoint=teacher_path, classes=train.classes)
            teacher = with_teacher_input(teacher, r.data, r.teacher)
            forward = predict_all if sharded else predict  # sharded: whole batches per rank under torchrun
            return forward(teacher, split, batch_size=cfg.batch_size, desc=desc, runtime=ctx.runtime).astype(np.float32)

        def spot_check(rows: Sequence[int]) -> np.ndarray:
            some = replace(train, ids=[train.ids[i] for i in rows], targets=train.targets[list(rows)],
                           images=lambda i: train.images(rows[i]), skipped={})
            return teacher_forward(some, "teacher spot check")

        # under torchrun rank 0 alone reads and writes the cache; on a miss every rank labels its shard
        logits, cache_status = distributed.follow_cache(
            lambda compute: cache.get_or_compute(parts, (n, n_classes), compute, spot_check=spot_check),
            lambda: teacher_forward(sharded=True))
        np.save(ctx.out / "teacher_logits.npy", logits, allow_pickle=False)

        selector = SELECTORS.build(cfg.strategy, **cfg.strategy_args)
        student_logits: Optional[np.ndarray] = probe_logits(r, train, ctx.runtime) if selector.needs_student else None
        scores = np.asarray(selector.score(logits, train.targets, seed=r.seed, student_logits=student_logits), dtype=np.float64)
        if scores.shape != (n,):
            raise StageError(f"select.strategy '{cfg.strategy}': {scores.shape} scores for {n} samples")
        if not np.all(np.isfinite(scores)):
            raise StageError(f"select.strategy '{cfg.strategy}': scores contain NaN or inf")
        critical = pick_critical(scores, train.targets, cfg)
        temps = index_temperatures(scores, cfg.temperature)
        order = np.argsort(-scores, kind="stable")
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(1, n + 1)
        with open(ctx.out / "index.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(INDEX_FIELDS)
            for i, sid in enumerate(train.ids):
                w.writerow([sid, int(train.targets[i]), f"{scores[i]:.6g}", int(rank[i]), int(critical[i]), f"{temps[i]:.6g}"])

        t = cfg.temperature
        summary = {
            "strategy": cfg.strategy, "strategy_args": cfg.strategy_args, "num_samples": n,
            "num_critical": int(critical.sum()), "ratio": float(critical.mean()),
            "per_class_critical": {train.classes[c]: int(critical[train.targets == c].sum()) for c in range(n_classes)},
            "teacher_train_acc": accuracy(logits, train.targets),
            "score_mean": float(scores.mean()), "score_critical_min": float(scores[critical].min()),
            "temperature": {"per_sample": t.per_sample, "base": t.base, "t_min": t.t_min, "t_max": t.t_max,
                            "mean": float(temps.mean()), "min": float(temps.min()), "max": float(temps.max())},
            "cached": "logits", "cache_key": key,
        }
        statuses: dict[str, Any] = {"cache": cache_status}
        if replaying and distributed.is_main():  # replay draws: rank 0 alone (not sharded yet)
            summary["replay"], statuses["replay_cache"] = make_replay(r, splits, teacher_path, weights, ctx.runtime)
        hists = {"score_histogram": histogram(scores), "temperature_histogram": histogram(temps)}
        # summary.json holds only what the recipe and data determine, so an identical rerun leaves distill up to date
        (ctx.out / "summary.json").write_text(json.dumps({**summary, **hists}, indent=2))
        return {**summary, **statuses, "cache_dir": str(cache.dir)}


register_stage(SelectStage())
