"""Teacher targets for distill: where the teacher's outputs for a training batch come from.

`distill.teacher_targets` picks one of three sources behind one interface (`TeacherTargets`):

- `cached`: select's logits, the teacher on the evaluation view, one vector per image. With
  augmentation the student sees another view than the one the teacher labelled (the distill summary
  says so); with mixup/cutmix the cached distributions are mixed like the images (`mix_distributions`).
- `online`: the teacher (eval mode, no grad, under the training's autocast) on the exact batch the
  student sees, after mixup/cutmix; feature taps work only here.
- `replay` (FKD, Shen & Xing, ECCV 2022): select labels K augmented views per sample (view d of
  sample i is the training view keyed (d, i), `cann_distill.data.loading`) and stores the teacher's top-k
  log-probabilities in fp16 (`cann_distill.teaching.replay`; probabilities in fp16 would underflow in the tail
  that KD's temperature softens); epoch e trains on view e mod K of every sample, whose label is
  read back, so distill runs no teacher forward. Targets are the top-k probabilities with the
  remaining mass spread uniformly over the other classes (as FKD does), fed to the losses as
  log-probabilities: KD's temperature applies to them, softmax(log p / T). Mixup/cutmix mixes the
  replayed distributions with the batch's λ and partner: an approximation of the teacher's output on
  the mixed image, not that output.

Default: `online` when training views are random (augmentation on) or a loss reads teacher
features, else `cached`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from cann_distill.core.errors import RecipeError
from cann_distill.core.recipe import Recipe
from cann_distill.data.loading import Split, count_classes, draw_loader
from cann_distill.data.transforms import Transform, mix_distributions
from cann_distill.runtime import distributed
from cann_distill.runtime.devices import CPU, Runtime
from cann_distill.teaching.distiller import Distiller, teacher_feature_taps
from cann_distill.teaching.ensemble import KEY as TEACHERS_KEY
from cann_distill.teaching.losses import LOSSES
from cann_distill.teaching.replay import ReplayDraws, index_dtype
from cann_distill.teaching.teachers import chain_errors, teacher_input_errors
from cann_distill.training.loop import Batch

MODES = ("cached", "online", "replay")
Outputs = dict[str, torch.Tensor]


# ----------------------------------------------------------------------------- recipe policy


def random_views(recipe: Recipe) -> bool:
    """True when a training image's pixels change from epoch to epoch (augmentation, with or without mixing)."""
    return recipe.data.augment.enabled


def resolve_mode(recipe: Recipe) -> str:
    """The recipe's `distill.teacher_targets`, or its default."""
    chosen = recipe.distill.teacher_targets
    if chosen is not None:
        return chosen
    reads_teacher = any(
        k.startswith("teacher.") for s in recipe.distill.losses if s.kind in LOSSES for k in LOSSES.build(s.kind, **s.kwargs()).requires
    )
    if not reads_teacher:  # e.g. CE only: no loss needs the teacher, so it never runs
        return "cached"
    return "online" if random_views(recipe) or teacher_feature_taps(recipe.distill.losses) else "cached"


def why_online(recipe: Recipe) -> list[str]:
    """Why the teacher runs in distill (empty when it does not)."""
    if resolve_mode(recipe) != "online":
        return []
    if recipe.distill.teacher_targets == "online":
        return ["distill.teacher_targets: online"]
    return [
        why
        for why, on in (("feature taps", bool(teacher_feature_taps(recipe.distill.losses))), ("augmented views", random_views(recipe)))
        if on
    ]


@dataclass(frozen=True)
class ReplaySpec:
    draws: int  # K labelled views per sample
    top_k: int  # probabilities kept per view


DEFAULT_DRAWS = 10
"""Replay views labelled per sample when the recipe does not say: epoch e replays view e mod 10, so a patient
schedule (5x the epochs) costs the teacher no more forwards than a 10-epoch run."""


def replay_spec(recipe: Recipe, num_classes: int) -> ReplaySpec:
    """K (default min(distill.epochs, 10); 1 when views are not random, every draw would be the same) and top-k (default min(10, C))."""
    cfg = recipe.distill.replay
    draws = (cfg.draws or min(DEFAULT_DRAWS, max(1, recipe.distill.epochs))) if random_views(recipe) else 1
    return ReplaySpec(draws, cfg.top_k or min(10, num_classes))


def recipe_errors(recipe: Recipe, num_classes: Optional[int] = None) -> list[str]:
    """What the chosen target source cannot give the recipe's losses, each with its key path."""
    mode = resolve_mode(recipe)
    if mode == "online":
        return []
    errors: list[str] = []
    distribution_only = mode == "replay" or recipe.data.augment.mixes
    for i, spec in enumerate(recipe.distill.losses):
        if spec.kind not in LOSSES:
            continue  # the recipe check reports it
        loss = LOSSES.build(spec.kind, **spec.kwargs())
        if teacher_feature_taps([spec]):
            errors.append(
                f"distill.losses[{i}] ({spec.kind}): reads teacher features, which only distill.teacher_targets: online "
                f"computes ('{mode}' has the teacher's {'logits' if mode == 'cached' else 'top-k probabilities'} only)"
            )
        elif "teacher.logits" in loss.requires and loss.teacher_logits == "raw" and distribution_only:
            why = "replayed targets are top-k probabilities" if mode == "replay" else "mixup/cutmix mixes the cached distributions"
            errors.append(
                f"distill.losses[{i}] ({spec.kind}): needs the teacher's raw logits, but {why}; use distill.teacher_targets: online"
            )
    if mode == "replay":
        classes = count_classes(recipe.data) if num_classes is None else num_classes
        top_k = recipe.distill.replay.top_k
        if top_k is not None and classes and top_k > classes:
            errors.append(f"distill.replay.top_k: {top_k} is more than the {classes} classes")
    return errors


def check_recipe(recipe: Recipe, num_classes: Optional[int] = None) -> None:
    """Raise one RecipeError (exit 2) listing what the target source cannot do, and what the teachers' checkpoints
    cannot give (several teachers), an unlabelled folder that is empty or holds val/test images, and a teacher-assistant
    chain that does not shrink, before any work."""
    errors = recipe_errors(recipe, num_classes) + teacher_input_errors(recipe) + unlabeled_errors(recipe) + chain_errors(recipe)
    if errors:
        raise RecipeError("; ".join(errors))


def unlabeled_errors(recipe: Recipe) -> list[str]:
    """`data.unlabeled` holds no image, or images of val/test (`cann_distill.data.unlabeled`)."""
    folder = recipe.data.unlabeled
    if folder is None or not Path(folder).is_dir():
        return []  # unset, or reported by the recipe check
    from cann_distill.core.paths import default_cache_dir
    from cann_distill.data.loading import held_out_keys
    from cann_distill.data.unlabeled import input_errors

    cache = default_cache_dir()
    return input_errors(recipe.data, lambda: held_out_keys(recipe.data, cache), cache)


# ----------------------------------------------------------------------------- math


def topk_distribution(values: torch.Tensor, indices: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Full distributions [B, C] from top-k probabilities [B, k] at class `indices` [B, k]: the
    remaining mass 1 − Σ top-k is spread uniformly over the other C − k classes (FKD), then each row
    is renormalised to sum to one (fp16 rounding can leave Σ top-k a little off one)."""
    top = values.float().clamp_min(0)
    b, k = top.shape
    rest = (1.0 - top.sum(1, keepdim=True)).clamp_min(0) / max(num_classes - k, 1)
    full = rest.expand(b, num_classes).clone() if num_classes > k else top.new_zeros(b, num_classes)
    full.scatter_(1, indices.long(), top)
    return full / full.sum(1, keepdim=True).clamp_min(torch.finfo(full.dtype).tiny)


def log_probs(p: torch.Tensor) -> torch.Tensor:
    """log p with zeros (fp16 underflow) clamped to the smallest normal float: finite through softmax(log p / T)."""
    return p.clamp_min(torch.finfo(torch.float32).tiny).log()


def mixed_log_probs(logits: torch.Tensor, lam: Optional[float]) -> torch.Tensor:
    return logits if lam is None else log_probs(mix_distributions(logits.float().softmax(1), lam))


# ----------------------------------------------------------------------------- the sources


class TeacherTargets:
    """Teacher outputs for each training batch, by name (`teacher.logits`, `teacher.feat.<tap>`)."""

    mode: str = ""
    runs_teacher: bool = False  # a teacher forward per training batch
    period: Optional[int] = None  # training views repeat every `period` epochs (replay: K)

    def prepare(self, runtime: Runtime) -> None:
        """Move what the source holds to the training device."""

    def for_batch(self, batch: Batch, epoch: int, lam: Optional[float] = None) -> Outputs:
        """Outputs for `batch` (x, y, index; on the device, mixed with λ `lam` when not None) in `epoch`."""
        raise NotImplementedError

    def __call__(self, batch: Batch, epoch: int, lam: Optional[float] = None) -> Outputs:
        return self.for_batch(batch, epoch, lam)

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError


class CachedTargets(TeacherTargets):
    mode = "cached"

    def __init__(self, logits: torch.Tensor, augmented: bool) -> None:
        self.logits, self.augmented = logits, augmented

    def prepare(self, runtime: Runtime) -> None:
        self.logits = runtime.to(self.logits)

    def for_batch(self, batch: Batch, epoch: int, lam: Optional[float] = None) -> Outputs:
        return {"teacher.logits": mixed_log_probs(self.logits[batch[2]], lam)}

    def describe(self) -> dict[str, Any]:
        view = "the evaluation view (resize + center crop), one vector per image, from select's logits"
        return {
            "source": "cached",
            "teacher_view": view,
            "views_differ": self.augmented,
            "note": (
                "teacher and student see different views: the student trains on augmented views, the teacher labelled the evaluation view"
                if self.augmented
                else "teacher and student see the same (evaluation) view"
            ),
        }


class OnlineTargets(TeacherTargets):
    mode = "online"
    runs_teacher = True

    def __init__(self, distiller: Distiller) -> None:
        self.distiller = distiller
        self.forwards = 0

    def prepare(self, runtime: Runtime) -> None:
        assert self.distiller.teacher is not None
        runtime.model(self.distiller.teacher)
        runtime.model(self.distiller.teacher_input)

    def for_batch(self, batch: Batch, epoch: int, lam: Optional[float] = None) -> Outputs:
        self.forwards += 1
        return self.distiller.teacher_outputs(batch[0])

    def describe(self) -> dict[str, Any]:
        return {
            "source": "online",
            "teacher_view": "the student's batch, after mixup/cutmix (eval mode, no grad, the training's autocast)",
            "views_differ": False,
            "teacher_forwards": self.forwards,
        }


class ReplayTargets(TeacherTargets):
    mode = "replay"

    def __init__(self, draws: ReplayDraws, num_classes: int) -> None:
        self.draws, self.num_classes = draws, num_classes
        self.period = draws.shape[0]
        self.device = torch.device("cpu")

    def prepare(self, runtime: Runtime) -> None:
        self.device = runtime.device

    def for_batch(self, batch: Batch, epoch: int, lam: Optional[float] = None) -> Outputs:
        d = epoch % self.period  # the view KeyedSampler(period=K) handed the dataset
        idx = batch[2].cpu().numpy()
        log_values = torch.from_numpy(np.asarray(self.draws.values[d][idx])).to(self.device)
        indices = torch.from_numpy(np.asarray(self.draws.indices[d][idx])).to(self.device)
        p = topk_distribution(log_values.float().exp(), indices, self.num_classes)
        return {"teacher.logits": log_probs(p if lam is None else mix_distributions(p, lam))}

    def describe(self) -> dict[str, Any]:
        k, _, top = self.draws.shape
        return {
            "source": "replay",
            "teacher_view": f"the student's view: epoch e replays view e mod {k} that select labelled",
            "views_differ": False,
            "draws": k,
            "top_k": top,
            "cache_key": self.draws.key,
            "teacher_forwards": 0,
            "targets": (
                f"the teacher's top-{top} probabilities, the remaining mass spread uniformly over the other "
                f"{self.num_classes - top} classes (FKD), as log-probabilities: T applies to them"
            ),
        }


class ModelTargets(TeacherTargets):
    """One of several teachers run online: its logits on the student's batch (eval mode, no grad, the training's
    autocast), through its own input re-normalisation (the model given includes it)."""

    mode = "online"
    runs_teacher = True

    def __init__(self, model: nn.Module) -> None:
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.forwards = 0

    def prepare(self, runtime: Runtime) -> None:
        runtime.model(self.model).eval()

    def for_batch(self, batch: Batch, epoch: int, lam: Optional[float] = None) -> Outputs:
        self.forwards += 1
        with torch.no_grad():
            return {"teacher.logits": self.model(batch[0])}

    describe = OnlineTargets.describe  # the same view and counter as one teacher run online


class EnsembleTargets(TeacherTargets):
    """Several teachers, one source each (all of the recipe's mode): every teacher's `teacher.logits` stacked as
    `teachers.logits` [K, B, C] for the ensemble (`cann_distill.teaching.ensemble`) to combine per loss."""

    def __init__(self, sources: list[TeacherTargets]) -> None:
        self.sources = sources
        self.mode = sources[0].mode
        self.runs_teacher = sources[0].runs_teacher
        self.period = sources[0].period

    def prepare(self, runtime: Runtime) -> None:
        for source in self.sources:
            source.prepare(runtime)

    def for_batch(self, batch: Batch, epoch: int, lam: Optional[float] = None) -> Outputs:
        each = [source.for_batch(batch, epoch, lam)["teacher.logits"] for source in self.sources]
        return {TEACHERS_KEY: torch.stack([t.float() for t in each])}

    def describe(self) -> dict[str, Any]:
        each = [source.describe() for source in self.sources]
        out = {k: v for k, v in each[0].items() if k not in ("cache_key", "teacher_forwards")}
        if self.runs_teacher:
            out["teacher_forwards"] = sum(int(d.get("teacher_forwards", 0)) for d in each)
        if self.mode == "replay":
            out["cache_keys"] = [d["cache_key"] for d in each]
        return out


def describe_mixing(targets: TeacherTargets, mixes: bool) -> Optional[str]:
    """How the source follows mixup/cutmix (None when the recipe does not mix)."""
    if not mixes:
        return None
    if targets.runs_teacher:
        return "exact: the teacher sees the mixed batch"
    return (
        "approximate: the teacher's distributions of the two images are mixed with the batch's λ and partner "
        "(timm batch mode: sample i with sample B-1-i), not the teacher's output on the mixed image"
    )


# ----------------------------------------------------------------------------- producing replay draws


@torch.no_grad()
def label_draws(
    teacher: nn.Module,
    train: Split,
    transform: Optional[Transform],
    seed: int,
    spec: ReplaySpec,
    values: Optional[np.ndarray],
    indices: Optional[np.ndarray],
    *,
    batch_size: int,
    runtime: Runtime = CPU,
    amp: str = "none",
    progress: Callable[[Any, int], Any] = lambda it, total: it,
) -> None:
    """Run the teacher on views 0..K-1 of every training sample and write its top-k log-probabilities.

    The views come from `draw_loader` with the training transform and seed, so view d of sample i is
    bit for bit the one distill's loader shows in epoch d (and d + K, d + 2K, ...). Under torchrun each
    rank labels whole batches of the K × n views (the batches one process would run) and rank 0 writes
    them all into `values` / `indices` (None on the other ranks): the same bytes as one process for a
    deterministic teacher.
    """
    n_views = spec.draws * len(train)
    counts = distributed.shard_counts(n_views, batch_size)
    lo, hi = distributed.shard_range(n_views, batch_size)
    flat_v, flat_i = (a.reshape(-1, spec.top_k) if a is not None else None for a in (values, indices))
    if flat_v is not None and flat_i is not None:  # one process, or rank 0: its rows straight into the entry
        local_v, local_i = flat_v[lo:hi], flat_i[lo:hi]
    else:
        local_v = np.zeros((hi - lo, spec.top_k), np.float16)
        local_i = np.zeros((hi - lo, spec.top_k), index_dtype(len(train.classes)))
    if hi > lo:
        label_views(
            teacher,
            train,
            transform,
            seed,
            spec,
            local_v,
            local_i,
            (lo, hi),
            batch_size=batch_size,
            runtime=runtime,
            amp=amp,
            progress=progress,
        )
    distributed.gather_to_main(flat_v, local_v, counts)
    distributed.gather_to_main(flat_i, local_i, counts)


@torch.no_grad()
def label_views(
    teacher: nn.Module,
    train: Split,
    transform: Optional[Transform],
    seed: int,
    spec: ReplaySpec,
    values: np.ndarray,
    indices: np.ndarray,
    rows: tuple[int, int],
    *,
    batch_size: int,
    runtime: Runtime,
    amp: str,
    progress: Callable[[Any, int], Any],
) -> None:
    """The teacher's top-k log-probabilities of views at positions [lo, hi) of the (draw, sample) order into `values` / `indices`."""
    runtime.check_amp(amp)
    runtime.model(teacher).eval()
    batches = draw_loader(train, batch_size, spec.draws, seed=seed, transform=transform, runtime=runtime, rows=rows)
    at = 0
    for x, _, _ in progress(batches, len(batches)):
        with runtime.autocast(amp):
            logits = teacher(x)  # draw_loader batches arrive on the device
        top = logits.float().log_softmax(1).topk(spec.top_k, dim=1)  # log-probabilities: fp16 keeps the tail KD softens
        b = x.shape[0]
        values[at : at + b] = top.values.cpu().numpy().astype(np.float16)
        indices[at : at + b] = top.indices.cpu().numpy().astype(indices.dtype)
        at += b
    assert at == values.shape[0], f"labelled {at} views, expected {values.shape[0]}"
