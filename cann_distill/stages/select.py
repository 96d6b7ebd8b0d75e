"""select: teacher logits (from the shared cache when possible), critical samples and their temperatures;
with `distill.teacher_targets: replay`, also the teacher's top-k labels of K augmented views per sample."""

from __future__ import annotations

import csv
import functools
import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from cann_distill.core.errors import StageError
from cann_distill.core.files import sha256_file
from cann_distill.core.paths import resolve_cache_dir
from cann_distill.core.recipe import (
    AugmentConfig,
    Recipe,
    SelectTemperatureConfig,
    TeacherConfig,
    TrainConfig,
    refresh_epochs,
    selection_policy,
    teacher_specs,
)
from cann_distill.core.recipe_load import selectors_of
from cann_distill.data.loading import Split, Splits, count_classes, data_fingerprint, draw_loader, load_splits
from cann_distill.data.transforms import Transform, build_transforms, channels_of, norm_stats
from cann_distill.models.build import build_model, checkpoint_weights_fingerprint, with_teacher_input
from cann_distill.runtime import distributed
from cann_distill.runtime.devices import CPU, Runtime
from cann_distill.runtime.terminal import ui
from cann_distill.selection import SELECTORS, Selector
from cann_distill.selection.pick import pick_critical, report_selection
from cann_distill.selection.policy import Selection
from cann_distill.stages.base import Context, Stage, _checkpoint_hashes, register_stage
from cann_distill.stages.teacher import CHECKPOINT as TEACHER_CKPT
from cann_distill.stages.teacher import extra_teachers, teacher_checkpoint
from cann_distill.store.cache import CacheStatus, OutputCache, cache_key
from cann_distill.teaching.ensemble import combined_logits
from cann_distill.teaching.replay import ReplayStore, index_dtype
from cann_distill.teaching.targets import ReplaySpec, check_recipe, label_draws, replay_spec, resolve_mode
from cann_distill.teaching.temperature import per_sample_temperature
from cann_distill.training.loop import accuracy, ce_step, fit, predict, predict_all, seed_everything

LOGITS = "select/teacher_logits.npy"
INDEX = "select/index.csv"
SUMMARY = "select/summary.json"
INDEX_FIELDS = ("id", "target", "score", "rank", "critical", "temperature")
HIST_BINS = 10


def index_temperatures(scores: np.ndarray, cfg: SelectTemperatureConfig) -> np.ndarray:
    """Per-sample temperature by difficulty, or `base` for every sample when per_sample is off."""
    if not cfg.per_sample:
        return np.full(len(scores), cfg.base)
    return per_sample_temperature(scores, base=cfg.base, t_min=cfg.t_min, t_max=cfg.t_max, t_easy=cfg.t_easy, t_hard=cfg.t_hard)


def histogram(values: np.ndarray, bins: int = HIST_BINS) -> dict[str, list[float]]:
    counts, edges = np.histogram(values, bins=bins)
    return {"counts": counts.tolist(), "edges": [float(e) for e in edges]}


def probe_epochs(recipe: Recipe) -> int:
    """select.probe_epochs, or the strategy's default when the recipe leaves it open."""
    cfg, selectors = recipe.select, selectors_of(recipe)
    if cfg.probe_epochs is not None:
        return cfg.probe_epochs
    return selectors.get(cfg.strategy).default_probe_epochs if cfg.strategy in selectors else 0


def probe_config(recipe: Recipe) -> TrainConfig:
    """How the student probe trains: distill's optimizer settings for `probe_epochs(recipe)` epochs."""
    d = recipe.distill
    return TrainConfig(
        epochs=probe_epochs(recipe),
        optimizer=d.optimizer,
        lr=d.lr,
        momentum=d.momentum,
        weight_decay=d.weight_decay,
        batch_size=d.batch_size,
    )


def probe_logits(recipe: Recipe, train: Split, runtime: Runtime = CPU, history: Optional[list[np.ndarray]] = None) -> np.ndarray:
    """Student logits over the training split: the recipe's student, seeded, CE-trained `probe_epochs` epochs.

    With `history`, the logits over the training split after every probe epoch are appended to it
    (training-dynamics scores: el2n, forgetting).
    """
    cfg = probe_config(recipe)
    seed_everything(recipe.seed)
    student = build_model(recipe.student, len(train.classes), channels_of(recipe.data), role="student")

    def record(epoch: int, row: dict[str, float]) -> None:
        if history is not None:
            history.append(
                predict(student, train, batch_size=recipe.select.batch_size, desc="student probe logits", runtime=runtime).astype(
                    np.float32
                )
            )
            student.train()

    if cfg.epochs:
        fit(
            student,
            labelled_rows(train),
            cfg,
            cfg.batch_size or recipe.data.batch_size,
            ce_step,
            recipe.seed,
            "student probe",
            runtime=runtime,
            on_epoch_end=record,
        )
    if history:  # the last epoch's logits were just recorded: the probe's final weights
        return history[-1]
    return predict(student, train, batch_size=recipe.select.batch_size, desc="student probe logits", runtime=runtime).astype(np.float32)


def labelled_rows(train: Split) -> Split:
    """The labelled part of a training split (unlabelled images of `data.unlabeled` follow the labelled ones)."""
    n = int((train.targets >= 0).sum())
    return train if n == len(train) else train.rows(0, n)


def quota_classes(targets: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """The class each sample counts for in the per-class quotas: its label, else the teacher's top-1 class."""
    return targets if bool((targets >= 0).all()) else np.where(targets >= 0, targets, logits.argmax(1))


def view_transform(recipe: Recipe) -> Transform:
    """The training augmentation (data.augment), even when training itself runs without it: the views the teacher scores."""
    data = recipe.data.model_copy(update={"augment": recipe.data.augment.model_copy(update={"enabled": True})})
    transform, _ = build_transforms(data)
    assert transform is not None
    return transform


def view_inputs(recipe: Recipe) -> dict[str, Any]:
    """What the teacher's view logits depend on beyond the teacher and the samples."""
    import timm
    import torchvision

    return {
        "views": recipe.select.views,
        "seed": recipe.seed,
        "augment": recipe.data.augment.model_dump(mode="json", exclude=set(AugmentConfig.MIXING) | {"enabled"}),
        "libraries": {"timm": timm.__version__, "torchvision": torchvision.__version__, "torch": torch.__version__},
    }


@torch.no_grad()
def view_logits(
    teacher: torch.nn.Module, train: Split, transform: Transform, views: int, seed: int, batch_size: int, runtime: Runtime = CPU
) -> np.ndarray:
    """The teacher's logits on `views` augmented views of every training sample, [V, N, C] (view d of sample i keyed (d, i))."""
    runtime.model(teacher).eval()
    batches = draw_loader(train, batch_size, views, seed=seed, transform=transform, runtime=runtime)
    out = [teacher(x).float().cpu() for x, _, _ in ui.track(batches, f"teacher on {views} augmented views", total=len(batches))]
    return torch.cat(out).numpy().reshape(views, len(train), -1)


def teacher_output_parts(
    recipe: Recipe, train: Split, teacher_weights: str, outputs: str, teacher: Optional[TeacherConfig] = None, **extra: Any
) -> dict[str, Any]:
    """What a teacher output over the training split is computed from (logits here, channel sensitivity in distill).

    Arch, weights, the teacher's input normalisation, samples and preprocessing (not the batch
    size), plus `extra` (e.g. the tap). The cache keys entries by it and checks it on every hit.
    `teacher`: one of several teachers (default: the recipe's teacher), so each has entries of its own.
    """
    mean, std = norm_stats(recipe.data)
    cfg = teacher or recipe.teacher
    return {
        "outputs": outputs,
        "arch": cfg.arch,
        "weights": teacher_weights,
        "teacher_input": {"mean": cfg.mean or mean, "std": cfg.std or std},
        "data": data_fingerprint(recipe.data, ignore=frozenset({"batch_size", "augment"})),
        "ids": hashlib.sha256("\n".join(train.ids).encode()).hexdigest(),
        **extra,
    }


def replay_inputs(recipe: Recipe, num_classes: int) -> dict[str, Any]:
    """What replayed views and their labels depend on beyond the teacher and the samples: the per-image
    augmentation (mixing happens later, in distill), K, top-k, the seed that keys every view, the
    teacher's autocast, and the libraries that draw the views (another timm may crop differently)."""
    import timm
    import torchvision

    spec = replay_spec(recipe, num_classes)
    return {
        "augment": recipe.data.augment.model_dump(mode="json", exclude=set(AugmentConfig.MIXING)),
        "draws": spec.draws,
        "top_k": spec.top_k,
        "values": "log_probs",  # entries written before this stored probabilities: never read as log-probabilities
        "seed": recipe.seed,
        "amp": recipe.distill.amp,
        "libraries": {"timm": timm.__version__, "torchvision": torchvision.__version__, "torch": torch.__version__},
    }


def teacher_loader(
    recipe: Recipe, train: Split, checkpoint: Path, teacher: Optional[TeacherConfig] = None
) -> Callable[[], torch.nn.Module]:
    """The teacher from its checkpoint (input adapter included), built at the first call and shared by every
    pass select makes with it (logits, spot check, augmented views, replay draws)."""
    cfg = teacher or recipe.teacher
    return functools.cache(
        lambda: with_teacher_input(
            build_model(cfg, len(train.classes), channels_of(recipe.data), checkpoint=checkpoint, classes=train.classes),
            recipe.data,
            cfg,
        )
    )


@dataclass
class TeacherRef:
    """One teacher as select uses it: its section, weights fingerprint, lazy model and ensemble weight."""

    cfg: TeacherConfig
    weights: str
    load: Callable[[], torch.nn.Module]
    weight: float = 1.0


def teacher_refs(ctx: Context, train: Split, cache_root: Path) -> list[TeacherRef]:
    """The recipe's teachers (one, or every entry of `teachers:`) from the teacher stage's checkpoints."""
    r = ctx.recipe
    refs = []
    for k, spec in enumerate(teacher_specs(r)):
        rel = teacher_checkpoint(k)
        path = ctx.artifacts[rel]
        cfg = r.teacher if not r.teachers else spec.section()
        weights = checkpoint_weights_fingerprint(cache_root, path, ctx.hashes.get(rel) or sha256_file(path))
        refs.append(TeacherRef(cfg, weights, teacher_loader(r, train, path, cfg), spec.weight))
    return refs


def make_replay(
    recipe: Recipe,
    splits: Splits,
    teacher: Callable[[], torch.nn.Module],
    weights: str,
    runtime: Runtime,
    cfg: Optional[TeacherConfig] = None,
) -> tuple[dict[str, Any], CacheStatus]:
    """The teacher's top-k labels of K views per training sample, from the shared cache or computed into it
    (`cfg`: which of several teachers; each has an entry of its own)."""
    train = splits.train
    n_classes = len(train.classes)
    spec: ReplaySpec = replay_spec(recipe, n_classes)
    arch = (cfg or recipe.teacher).arch
    key = cache_key(
        teacher_output_parts(recipe, train, weights, "replay", teacher=cfg, classes=train.classes, **replay_inputs(recipe, n_classes))
    )
    shape = (spec.draws, len(train), spec.top_k)

    def label(values: Optional[np.ndarray], indices: Optional[np.ndarray]) -> None:
        label_draws(
            teacher(),
            train,
            splits.train_transform,
            recipe.seed,
            spec,
            values,
            indices,
            batch_size=recipe.select.batch_size,
            runtime=runtime,
            amp=recipe.distill.amp,
            progress=lambda it, total: ui.track(it, f"teacher replay labels ({spec.draws} views)", total=total),
        )

    def get_or_create(announce: Callable[[], None]) -> tuple[Any, CacheStatus]:
        def fill(values: np.ndarray, indices: np.ndarray) -> None:
            announce()  # under torchrun: a miss, every rank labels its shard of the views
            label(values, indices)

        store = ReplayStore(resolve_cache_dir(recipe.select.cache_dir))
        return store.get_or_compute(
            key,
            shape,
            n_classes,
            fill,
            info={"outputs": "replay", "arch": arch, "samples": len(train), "draws": spec.draws, "top_k": spec.top_k},
        )

    # rank 0 alone opens and writes the entry; on a miss the other ranks label their shards and send them to it
    found, filled = distributed.follow_entry(get_or_create, lambda: label(None, None))
    status: CacheStatus = found[1] if found is not None else ("miss" if filled else "hit")
    entry = {"key": key, "shape": list(shape), "draws": spec.draws, "top_k": spec.top_k, "index_dtype": index_dtype(n_classes).name}
    return entry, status


def score_inputs(
    r: Recipe, selector: Selector, train: Split, cache: OutputCache, teachers: Sequence[TeacherRef], runtime: Runtime
) -> tuple[Optional[np.ndarray], dict[str, Any], Optional[CacheStatus]]:
    """What the strategy declared it reads beyond the teacher's logits: the student probe (final logits and,
    for training-dynamics scores, its per-epoch history) and the teacher's logits on augmented views (cached;
    several teachers: each one's, combined as their logits are)."""
    cfg, n, n_classes = r.select, len(train), len(train.classes)
    evidence: dict[str, Any] = {}
    history: Optional[list[np.ndarray]] = [] if selector.needs_history else None
    student_logits: Optional[np.ndarray] = None
    if selector.needs_student or selector.needs_history:
        student_logits = probe_logits(r, train, runtime, history)
    if history is not None:
        evidence["student_history"] = np.stack(history) if history else student_logits[None]  # type: ignore[index]
    status: Optional[CacheStatus] = None
    if selector.needs_views:
        views = []
        for ref in teachers:

            def compute(load: Callable[[], torch.nn.Module] = ref.load) -> np.ndarray:
                return view_logits(load(), train, view_transform(r), cfg.views, r.seed, cfg.batch_size, runtime)

            parts = teacher_output_parts(
                r, train, ref.weights, "view_logits", teacher=ref.cfg if r.teachers else None, classes=train.classes, **view_inputs(r)
            )
            arr, status = cache.shared(parts, (cfg.views, n, n_classes), compute)  # rank 0 reads and writes
            views.append(np.asarray(arr))
        evidence["view_logits"] = (
            views[0]
            if len(views) == 1
            else np.stack([combined_logits([v[d] for v in views], [t.weight for t in teachers]) for d in range(cfg.views)])
        )
    return student_logits, evidence, status


class SelectStage(Stage):
    name = "select"
    version = 6
    all_ranks = True  # under torchrun: DDP training / a sharded teacher pass (cann_distill.runtime.distributed)
    sections = ("data", "select", "seed")
    needs = (TEACHER_CKPT,)
    ignore = ("data.augment",)  # the teacher labels un-augmented training images here (replayed views: see extra_inputs)

    def extra_inputs(self, recipe: Recipe) -> dict[str, Any]:
        inputs: dict[str, Any] = {"data": data_fingerprint(recipe.data, ignore=frozenset({"augment"}))}
        strategy = SELECTORS.get(recipe.select.strategy) if recipe.select.strategy in SELECTORS else None
        if strategy is not None and (strategy.needs_student or strategy.needs_history):
            inputs["probe"] = {
                "student": recipe.section("student"),
                "train": probe_config(recipe).model_dump(mode="json"),
                "checkpoint": _checkpoint_hashes(recipe)["student"],
            }
        if strategy is not None and strategy.needs_views:
            inputs["views"] = view_inputs(recipe)
        if resolve_mode(recipe) == "replay":
            inputs["replay"] = replay_inputs(recipe, count_classes(recipe.data))
        # the defaults follow distill.critical.mode (not a section of this stage)
        inputs["selection"] = {"policy": selection_policy(recipe), "refresh_every": refresh_epochs(recipe)}
        if recipe.teachers:  # several teachers: how each sees its inputs and how much it counts
            inputs["teachers"] = [{"arch": t.arch, "mean": t.mean, "std": t.std, "weight": t.weight} for t in recipe.teachers]
        return inputs

    def needs_for(self, recipe: Recipe) -> tuple[str, ...]:
        return self.needs + extra_teachers(recipe)

    def execute(self, ctx: Context) -> dict[str, Any]:
        r = ctx.recipe
        cfg = r.select
        splits = load_splits(r.data, unlabeled=True)
        train = splits.train
        n, n_classes = len(train), len(train.classes)
        replaying = resolve_mode(r) == "replay"
        if replaying:
            check_recipe(r, n_classes)
        cache = OutputCache(resolve_cache_dir(cfg.cache_dir))
        teachers = teacher_refs(ctx, train, cache.root)
        logits, each = self._logits(ctx, train, cache, teachers)
        np.save(ctx.out / "teacher_logits.npy", logits, allow_pickle=False)

        selector = SELECTORS.build(cfg.strategy, **cfg.strategy_args)
        student_logits, evidence, views_status = score_inputs(r, selector, train, cache, teachers, ctx.runtime)
        scores = np.asarray(selector.score(logits, train.targets, seed=r.seed, student_logits=student_logits, **evidence), dtype=np.float64)
        if scores.shape != (n,):
            raise StageError(f"select.strategy '{cfg.strategy}': {scores.shape} scores for {n} samples")
        if not np.all(np.isfinite(scores)):
            raise StageError(f"select.strategy '{cfg.strategy}': scores contain NaN or inf")
        selection = pick_critical(scores, quota_classes(train.targets, logits), r, train.classes, seed=r.seed)
        report_selection(selection)
        temps = index_temperatures(scores, cfg.temperature)
        write_index(ctx.out / "index.csv", train.ids, train.targets, scores, selection.mask, temps)
        summary = _summary(r, selector, train, logits, scores, selection, temps, each[0]["cache_key"])
        statuses: dict[str, Any] = {"cache": each[0]["cache"]}
        if views_status is not None:
            statuses["views_cache"] = views_status
        if replaying:  # replay draws: sharded across ranks under torchrun, written by rank 0
            for k, ref in enumerate(teachers):
                each[k]["replay"], each[k]["replay_cache"] = make_replay(
                    r, splits, ref.load, ref.weights, ctx.runtime, ref.cfg if r.teachers else None
                )
            summary["replay"], statuses["replay_cache"] = each[0]["replay"], each[0]["replay_cache"]
        if r.teachers:  # per teacher: what it labelled (summary.json) and how the cache served it (manifest)
            summary["teachers"] = [{k: v for k, v in t.items() if not k.endswith("cache")} for t in each]
            statuses["teacher_caches"] = [{k: v for k, v in t.items() if k.endswith("cache")} for t in each]
        hists = {"score_histogram": histogram(scores), "temperature_histogram": histogram(temps)}
        # summary.json holds only what the recipe and data determine, so an identical rerun leaves distill up to date
        (ctx.out / "summary.json").write_text(json.dumps({**summary, **hists}, indent=2))
        cached = ["logits", *(["views"] if views_status is not None else []), *(["replay"] if replaying else [])]
        return {**summary, **statuses, "cached": cached, "cache_dir": str(cache.dir)}

    def _logits(
        self, ctx: Context, train: Split, cache: OutputCache, teachers: Sequence[TeacherRef]
    ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """The teacher's logits on the training split; several teachers: each one's (saved as teacher_logits_<k>.npy,
        what cached distill targets read) and their weighted mean distribution as log-probabilities (what scores read)."""
        r = ctx.recipe
        every, each = [], []
        for k, ref in enumerate(teachers):
            parts = teacher_output_parts(r, train, ref.weights, "logits", teacher=ref.cfg if r.teachers else None, classes=train.classes)
            logits, status = _teacher_logits(ctx, train, cache, parts, ref.load)
            every.append(logits)
            each.append({"index": k, "arch": ref.cfg.arch, "weight": ref.weight, "cache_key": cache_key(parts), "cache": status})
        if not r.teachers:
            return every[0], each
        for k, logits in enumerate(every):
            np.save(ctx.out / Path(teacher_logits(k)).name, logits, allow_pickle=False)
            each[k]["train_acc"] = labelled_accuracy(logits, train.targets)
        return combined_logits(every, [t.weight for t in teachers]), each


def teacher_logits(k: int) -> str:
    """Teacher k's logits over the training split, with several teachers."""
    return f"select/teacher_logits_{k}.npy"


def _teacher_logits(
    ctx: Context, train: Split, cache: OutputCache, parts: dict[str, Any], teacher: Callable[[], torch.nn.Module]
) -> tuple[np.ndarray, CacheStatus]:
    """The teacher's logits on the training split, from the verified cache or computed (sharded under torchrun)."""
    cfg = ctx.recipe.select

    def teacher_forward(split: Split = train, desc: str = "teacher logits", sharded: bool = False) -> np.ndarray:
        forward = predict_all if sharded else predict  # sharded: whole batches per rank under torchrun
        return forward(teacher(), split, batch_size=cfg.batch_size, desc=desc, runtime=ctx.runtime).astype(np.float32)

    def spot_check(rows: Sequence[int]) -> np.ndarray:
        some = replace(
            train,
            ids=[train.ids[i] for i in rows],
            targets=train.targets[list(rows)],
            images=lambda i: train.images(rows[i]),
            skipped={},
        )
        return teacher_forward(some, "teacher spot check")

    # under torchrun rank 0 alone reads and writes the cache; on a miss every rank labels its shard
    return cache.shared(parts, (len(train), len(train.classes)), lambda: teacher_forward(sharded=True), spot_check=spot_check)


def labelled_accuracy(logits: np.ndarray, targets: np.ndarray) -> float:
    """Top-1 accuracy over the samples that have a label (all of them without `data.unlabeled`)."""
    labelled = targets >= 0
    return accuracy(logits, targets) if bool(labelled.all()) else accuracy(logits[labelled], targets[labelled])


def write_index(path: Path, ids: Sequence[str], targets: np.ndarray, scores: np.ndarray, critical: np.ndarray, temps: np.ndarray) -> None:
    """index.csv: one row per training sample (split order) with its score, rank, criticality and temperature."""
    n = len(ids)
    order = np.argsort(-scores, kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(1, n + 1)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(INDEX_FIELDS)
        for i, sid in enumerate(ids):
            w.writerow([sid, int(targets[i]), f"{scores[i]:.6g}", int(rank[i]), int(critical[i]), f"{temps[i]:.6g}"])


def _summary(
    r: Recipe,
    selector: Selector,
    train: Split,
    logits: np.ndarray,
    scores: np.ndarray,
    selection: Selection,
    temps: np.ndarray,
    key: str,
) -> dict[str, Any]:
    """summary.json without the histograms: what was selected, how, and the temperatures."""
    cfg, critical, n_classes = r.select, selection.mask, len(train.classes)
    t = cfg.temperature
    return {
        "strategy": cfg.strategy,
        "strategy_args": cfg.strategy_args,
        "num_samples": len(train),
        "num_critical": int(critical.sum()),
        "ratio": float(critical.mean()),
        "per_class_critical": {train.classes[c]: int(critical[train.targets == c].sum()) for c in range(n_classes)},
        **({"num_unlabelled": int((train.targets < 0).sum())} if r.data.unlabeled is not None else {}),
        "selection": {
            **selection.describe(),
            "class_balanced": cfg.class_balanced,
            "mix": cfg.mix.model_dump() if cfg.mix is not None else None,
            "scarce_below": cfg.scarce_below,
        },
        "refresh_every": refresh_epochs(r),
        "refresh_by": cfg.refresh_by if refresh_epochs(r) is not None else None,
        "probe_epochs": probe_epochs(r) if (selector.needs_student or selector.needs_history) else None,
        "views": cfg.views if selector.needs_views else None,
        "teacher_train_acc": labelled_accuracy(logits, train.targets),
        "score_mean": float(scores.mean()),
        "score_critical_min": float(scores[critical].min()),
        "temperature": {
            "per_sample": t.per_sample,
            "base": t.base,
            "t_min": t.t_min,
            "t_max": t.t_max,
            "mean": float(temps.mean()),
            "min": float(temps.min()),
            "max": float(temps.max()),
        },
        "cache_key": key,
    }


register_stage(SelectStage())
