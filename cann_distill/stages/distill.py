"""distill: train the student from the teacher (cached logits, or online feature taps) and the critical-sample index.

The teacher runs (eval mode, no grad) only when a loss reads a teacher feature tap or the teacher
expects another input normalisation than the data's; otherwise its logits come from select's cache.
Connectors and loss-balance parameters train with the student and are dropped at export:
distill/student.pt holds the plain timm student. A resumable state is saved after every epoch and
on Ctrl-C to <run_dir>/.distill.resume.pt (outside the staging folder); `--resume` continues it.

Temperature, per epoch e of E (the choice when select.temperature.per_sample is off is deliberate:
a recipe that asks for neither per-sample nor scheduled temperatures gets classic KD):

- per-sample on:   T_i(e) = clip(T_i * schedule(e) / schedule(0), t_min, t_max), T_i from the index;
- per-sample off, `distill.temperature_schedule` set (not the bare default): T(e) = schedule(e) for all;
- per-sample off, default schedule: no temperature is fed; kd/dkd use their own `temperature`.
"""

from __future__ import annotations

import contextlib
import csv
import json
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch

from cann_distill.cache import OutputCache, checkpoint_weights_fingerprint, resolve_cache_dir
from cann_distill.data import Split, channels_of, load_splits, loader, make_mixup
from cann_distill.distiller import Distiller, teacher_feature_taps
from cann_distill.errors import ArtifactError
from cann_distill.losses import LOSSES
from cann_distill.models import build_model, count_params, save_checkpoint, teacher_input
from cann_distill.recipe import Recipe
from cann_distill.rundir import RunDir
from cann_distill.stages.base import Context, Stage, _checkpoint_hashes, register_stage
from cann_distill.stages.select import INDEX, INDEX_FIELDS, LOGITS, SUMMARY, teacher_output_parts
from cann_distill.stages.teacher import CHECKPOINT as TEACHER_CKPT, headline
from cann_distill.temperature import SCHEDULES, temperature_at
from cann_distill.train import Checkpointing, SubsetSampler, accuracy, fit, predict, seed_everything
from cann_distill.ui import ui

CHECKPOINT = "distill/student.pt"
METRICS = "distill/metrics.json"
RESUME = ".distill.resume.pt"  # in the run dir, outside the staging folder, so an interrupted run keeps it

_resume: ContextVar[bool] = ContextVar("cann_distill_distill_resume", default=False)


@contextlib.contextmanager
def resuming(enabled: bool = True) -> Iterator[None]:
    """Within this block the distill stage continues from its resume checkpoint when there is one."""
    token = _resume.set(enabled)
    try:
        yield
    finally:
        _resume.reset(token)


def resume_path(run: RunDir) -> Path:
    return run.root / RESUME


@dataclass
class CriticalIndex:
    critical: np.ndarray  # bool [N], split order
    temperature: np.ndarray  # float [N], split order


def read_index(path: Path, train: Split) -> CriticalIndex:
    """Critical mask and temperatures in split order; the index must have been made for this very split."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != INDEX_FIELDS:
            raise ArtifactError(f"{path}: not a critical-sample index (columns {reader.fieldnames}, expected {list(INDEX_FIELDS)}); "
                                "rerun `cann-distill select --force`")
        rows = list(reader)
    ids = [row["id"] for row in rows]
    if ids != train.ids:
        raise ArtifactError(f"{path}: index was made for a different dataset than the recipe names; rerun `cann-distill select --force`")
    try:
        temperature = np.array([float(row["temperature"]) for row in rows])
    except (TypeError, ValueError):
        raise ArtifactError(f"{path}: temperature column is not numeric; rerun `cann-distill select --force`") from None
    if not (np.all(np.isfinite(temperature)) and np.all(temperature > 0)):
        raise ArtifactError(f"{path}: temperatures must be finite and > 0; rerun `cann-distill select --force`")
    return CriticalIndex(np.array([row["critical"] == "1" for row in rows]), temperature)


def read_temperature_config(path: Path) -> dict[str, Any]:
    """select.temperature as select recorded it in its summary."""
    try:
        temp = json.loads(path.read_text()).get("temperature")
    except (json.JSONDecodeError, AttributeError):
        temp = None
    if not isinstance(temp, dict) or not {"per_sample", "t_min", "t_max"} <= set(temp):
        raise ArtifactError(f"{path}: no temperature settings in the select summary; rerun `cann-distill select --force`")
    return temp


def curriculum_epochs(recipe: Recipe) -> int:
    c = recipe.distill.critical
    return c.curriculum_epochs if c.curriculum_epochs is not None else recipe.distill.epochs // 2


class DistillStage(Stage):
    name = "distill"
    version = 5
    sections = ("data", "student", "distill", "seed")
    needs = (LOGITS, INDEX, SUMMARY, TEACHER_CKPT)

    def extra_inputs(self, recipe: Recipe) -> dict[str, Any]:
        return {"checkpoint": _checkpoint_hashes(recipe)["student"],
                "teacher_input": {"arch": recipe.teacher.arch, "mean": recipe.teacher.mean, "std": recipe.teacher.std}}

    def execute(self, ctx: Context) -> dict[str, Any]:
        r = ctx.recipe
        cfg = r.distill
        splits = load_splits(r.data)
        train, val, rt = splits.train, splits.val, ctx.runtime
        n = len(train)
        n_classes, in_chans = len(train.classes), channels_of(r.data)
        cached_logits = torch.from_numpy(np.load(ctx.artifacts[LOGITS], allow_pickle=False))
        if cached_logits.shape != (n, n_classes):
            raise ArtifactError(f"{ctx.artifacts[LOGITS]}: shape {tuple(cached_logits.shape)} does not fit {n} samples × {n_classes} classes")
        index = read_index(ctx.artifacts[INDEX], train)
        temp_cfg = read_temperature_config(ctx.artifacts[SUMMARY])
        critical = torch.from_numpy(index.critical)

        # models, taps and connectors first: a bad tap fails before any training
        seed_everything(r.seed)
        student = build_model(r.student, n_classes, in_chans, role="student", classes=train.classes)
        renorm = teacher_input(r.data, r.teacher)
        # cached logits label the un-augmented image: with augmentation the teacher labels each view online
        reads_teacher = any(k.startswith("teacher.") for s in cfg.losses for k in LOSSES.build(s.kind, **s.kwargs()).requires)
        needs_teacher = reads_teacher and (bool(teacher_feature_taps(cfg.losses)) or not renorm.identity or splits.augmented)
        teacher = (build_model(r.teacher, n_classes, in_chans, checkpoint=ctx.artifacts[TEACHER_CKPT], classes=train.classes)
                   if needs_teacher else None)
        sample = torch.stack([train.fetch(i) for i in range(min(2, n))])
        distiller = Distiller(cfg.losses, student, student_arch=r.student.arch, sample=sample, teacher=teacher,
                              teacher_arch=r.teacher.arch, teacher_input=renorm, balance=cfg.loss_balance, force_teacher=needs_teacher)
        if teacher is not None:
            rt.model(teacher)
            rt.model(distiller.teacher_input)
        sensitivity = self._channel_sensitivity(ctx, distiller, train)
        distiller.constants = {k: rt.to(v) for k, v in distiller.constants.items()}
        cached_logits = rt.to(cached_logits)

        terms = distiller.terms
        tempered = [t.name for t in terms if hasattr(t.loss, "temperature")]
        spec = cfg.temperature_schedule
        schedule = SCHEDULES.build(spec.kind, **spec.kwargs())
        source = "per_sample" if temp_cfg["per_sample"] else ("loss" if spec.is_default else "schedule")
        own_temperature = next((float(t.loss.temperature) for t in terms if hasattr(t.loss, "temperature")), None)
        overridden = [f"{s.kind}.temperature={s.kwargs()['temperature']}" for s in cfg.losses if "temperature" in s.kwargs()]
        if source != "loss" and overridden:
            by = {"per_sample": "per-sample temperatures from select (select.temperature.per_sample=false keeps it)",
                  "schedule": f"the '{spec.kind}' temperature schedule"}[source]
            ui.info(f"[dim]distill: {', '.join(overridden)} replaced by {by}[/dim]")

        mode = cfg.critical.mode
        all_idx = list(range(n))
        critical_idx = np.flatnonzero(index.critical).tolist()
        warmup = curriculum_epochs(r) if mode == "curriculum" else (cfg.epochs if mode == "subset" else 0)
        sampler = SubsetSampler(critical_idx, seed=r.seed) if mode in ("subset", "curriculum") else None
        sample_w = torch.ones(n)
        if mode == "weight":
            sample_w[critical] = cfg.critical.weight
        sample_w = rt.to(sample_w)
        state: dict[str, Optional[torch.Tensor]] = {"temperature": None}  # read by `step`, set per epoch

        def epoch_temperature(epoch: int) -> Optional[np.ndarray]:
            if source == "per_sample":
                return np.clip(temperature_at(schedule, epoch, cfg.epochs, index.temperature), temp_cfg["t_min"], temp_cfg["t_max"])
            if source == "schedule":
                return np.full(n, temperature_at(schedule, epoch, cfg.epochs))
            return None

        def on_epoch_start(epoch: int) -> dict[str, float]:
            critical_only = epoch < warmup
            active = critical_idx if critical_only else all_idx
            if sampler is not None:
                sampler.indices = active
            temps = epoch_temperature(epoch)
            state["temperature"] = None if temps is None else rt.to(torch.from_numpy(temps).float())
            row: dict[str, float] = {"samples": len(active), "critical_only": int(critical_only)}
            if temps is not None:
                t = temps[active]
                row.update(temperature_mean=float(t.mean()), temperature_min=float(t.min()), temperature_max=float(t.max()))
            elif own_temperature is not None:
                row.update(temperature_mean=own_temperature, temperature_min=own_temperature, temperature_max=own_temperature)
            return row

        def on_epoch_end(epoch: int, row: dict[str, float]) -> None:
            if tempered:
                schedule.update(sum(row[name] for name in tempered))

        def step(model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
            x, y, idx = batch
            outputs = distiller.outputs(x)
            if not distiller.runs_teacher:
                outputs["teacher.logits"] = cached_logits[idx]
            outputs["targets"] = y
            if state["temperature"] is not None:
                outputs["temperature"] = state["temperature"][idx]
            return distiller.loss(outputs, sample_w[idx])

        resume = Checkpointing(resume_path(ctx.run), ctx.fingerprint, resume=_resume.get(),
                               command="cann-distill distill RECIPE --resume")
        history = fit(distiller.model, train, cfg, cfg.batch_size or r.data.batch_size, step, r.seed, "distill", val=val,
                      sampler=sampler, on_epoch_start=on_epoch_start, on_epoch_end=on_epoch_end,
                      deploy=student, checkpoint=resume, no_decay=("balance.",), runtime=rt,
                      transform=splits.train_transform, mix=make_mixup(r.data, n_classes))
        val_acc = accuracy(predict(student, val, desc="student eval", runtime=rt), val.targets)
        test = splits.test
        test_acc = accuracy(predict(student, test, desc="student test", runtime=rt), test.targets) if test is not None else None
        save_checkpoint(ctx.out / "student.pt", student, r.student.arch, n_classes, in_chans, classes=train.classes)
        summary = {
            "arch": r.student.arch, "params": count_params(student), "epochs": cfg.epochs, "val_acc": val_acc,
            "test_acc": test_acc, "headline": headline(val_acc, test_acc), "stopped_early": history.stopped_early,
            "augmented": splits.augmented, "mixup": splits.augmented and r.data.augment.mixes, "runtime": rt.describe(),
            "best_epoch": history.best_epoch, "weights": history.selected if not cfg.ema_decay else f"ema ({history.selected})",
            "losses": [s.model_dump() for s in cfg.losses], "loss_balance": cfg.loss_balance, "critical_mode": mode,
            "num_critical": int(critical.sum()), "critical_only_epochs": min(warmup, cfg.epochs),
            "temperature": {"source": source, "schedule": spec.kind, **spec.kwargs()},
            "teacher": {"forward": distiller.runs_teacher, "logits": "online" if distiller.runs_teacher else "cached",
                        "why_online": [why for why, on in (("feature taps", bool(distiller.teacher_taps)), ("re-normalised input", not renorm.identity),
                                                           ("augmented views", splits.augmented)) if on and distiller.runs_teacher],
                        "renormalized": not renorm.identity, "taps": distiller.teacher_taps},
            "student_taps": distiller.student_taps,
            "connectors": {k: {"params": count_params(m)} for k, m in distiller.model.connectors.items()},
            "tap_shapes": {k: v for k, v in distiller.shapes.items() if ".feat." in k},
            "channel_sensitivity": sensitivity,
        }
        if history.resumed_from:
            summary["resumed_from"] = history.resumed_from
        (ctx.out / "metrics.json").write_text(json.dumps({**summary, "history": history}, indent=2))
        resume.path.unlink(missing_ok=True)  # the stage's outputs supersede it
        return summary

    def _channel_sensitivity(self, ctx: Context, distiller: Distiller, train: Split) -> dict[str, str]:
        """Teacher channel sensitivity for every cw_mse tap: computed once per teacher + data + tap, kept in select's cache."""
        taps = list(dict.fromkeys(t.loss.weights_key.split(".", 2)[2] for t in distiller.terms if hasattr(t.loss, "weights_key")))
        if not taps:
            return {}
        r = ctx.recipe
        cache = OutputCache(resolve_cache_dir(r.select.cache_dir))
        teacher_path = ctx.artifacts[TEACHER_CKPT]
        weights = checkpoint_weights_fingerprint(cache.root, teacher_path, ctx.hashes[TEACHER_CKPT])
        status = {}
        for tap in taps:
            channels = distiller.shapes[f"teacher.feat.{tap}"][0]
            batches = loader(train, r.select.batch_size, runtime=ctx.runtime)
            on_device = ((ctx.runtime.batch(b[0]),) for b in batches)
            arr, status[tap] = cache.get_or_compute(
                teacher_output_parts(r, train, weights, "channel_sensitivity", tap=tap), (channels,),
                lambda: distiller.channel_sensitivity(tap, ui.track(on_device, f"teacher sensitivity {tap}", total=len(batches))))
            distiller.constants[f"teacher.chw.{tap}"] = torch.from_numpy(np.asarray(arr, dtype=np.float32))
        return status


register_stage(DistillStage())
