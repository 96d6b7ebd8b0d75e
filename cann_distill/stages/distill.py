"""distill: train the student from cached teacher logits and the critical-sample index.

Temperature, per epoch e of E (the choice when select.temperature.per_sample is off is deliberate:
a recipe that asks for neither per-sample nor scheduled temperatures gets classic KD):

- per-sample on:   T_i(e) = clip(T_i * schedule(e) / schedule(0), t_min, t_max), T_i from the index;
- per-sample off, `distill.temperature_schedule` set (not the bare default): T(e) = schedule(e) for all;
- per-sample off, default schedule: no temperature is fed; kd/dkd use their own `temperature`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from cann_distill.data import Split, channels_of, load_splits
from cann_distill.errors import ArtifactError
from cann_distill.losses import LOSSES, Loss
from cann_distill.models import build_model, count_params, save_checkpoint
from cann_distill.recipe import Recipe
from cann_distill.stages.base import Context, Stage, _checkpoint_hashes, register_stage
from cann_distill.stages.select import INDEX, INDEX_FIELDS, LOGITS, SUMMARY
from cann_distill.temperature import SCHEDULES, temperature_at
from cann_distill.train import SubsetSampler, accuracy, fit, predict, seed_everything
from cann_distill.ui import ui

CHECKPOINT = "distill/student.pt"
METRICS = "distill/metrics.json"


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
    version = 3
    sections = ("data", "student", "distill", "seed")
    needs = (LOGITS, INDEX, SUMMARY)

    def extra_inputs(self, recipe: Recipe) -> dict[str, Any]:
        return {"checkpoint": _checkpoint_hashes(recipe)["student"]}

    def execute(self, ctx: Context) -> dict[str, Any]:
        r = ctx.recipe
        cfg = r.distill
        train, val = load_splits(r.data)
        n = len(train)
        teacher_logits = torch.from_numpy(np.load(ctx.artifacts[LOGITS], allow_pickle=False))
        if teacher_logits.shape != (n, len(train.classes)):
            raise ArtifactError(f"{ctx.artifacts[LOGITS]}: shape {tuple(teacher_logits.shape)} does not fit {n} samples × {len(train.classes)} classes")
        index = read_index(ctx.artifacts[INDEX], train)
        temp_cfg = read_temperature_config(ctx.artifacts[SUMMARY])
        critical = torch.from_numpy(index.critical)
        losses: list[tuple[str, float, Loss]] = [(s.kind, s.weight, LOSSES.build(s.kind, **s.kwargs())) for s in cfg.losses]
        tempered = [kind for kind, _, loss in losses if hasattr(loss, "temperature")]
        spec = cfg.temperature_schedule
        schedule = SCHEDULES.build(spec.kind, **spec.kwargs())
        source = "per_sample" if temp_cfg["per_sample"] else ("loss" if spec.is_default else "schedule")
        own_temperature = next((float(loss.temperature) for _, _, loss in losses if hasattr(loss, "temperature")), None)
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
            state["temperature"] = None if temps is None else torch.from_numpy(temps).float()
            row: dict[str, float] = {"samples": len(active), "critical_only": int(critical_only)}
            if temps is not None:
                t = temps[active]
                row.update(temperature_mean=float(t.mean()), temperature_min=float(t.min()), temperature_max=float(t.max()))
            elif own_temperature is not None:
                row.update(temperature_mean=own_temperature, temperature_min=own_temperature, temperature_max=own_temperature)
            return row

        def on_epoch_end(epoch: int, row: dict[str, float]) -> None:
            if tempered:
                schedule.update(sum(row[kind] for kind in tempered))

        def step(model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
            x, y, idx = batch
            outputs = {"student.logits": model(x), "teacher.logits": teacher_logits[idx], "targets": y}
            if state["temperature"] is not None:
                outputs["temperature"] = state["temperature"][idx]
            w = sample_w[idx]
            total = torch.zeros(())
            parts = {}
            for kind, weight, loss in losses:
                value = (loss(outputs) * w).sum() / w.sum()
                parts[kind] = value.item()
                total = total + weight * value
            return total, parts

        seed_everything(r.seed)
        model = build_model(r.student, len(train.classes), channels_of(r.data), role="student")
        history = fit(model, train, cfg, cfg.batch_size or r.data.batch_size, step, r.seed, "distill", val=val, sampler=sampler,
                      on_epoch_start=on_epoch_start, on_epoch_end=on_epoch_end)
        val_acc = accuracy(predict(model, val, desc="student eval"), val.targets)
        save_checkpoint(ctx.out / "student.pt", model, r.student.arch, len(train.classes), channels_of(r.data), classes=train.classes)
        summary = {
            "arch": r.student.arch, "params": count_params(model), "epochs": cfg.epochs, "val_acc": val_acc,
            "losses": [s.model_dump() for s in cfg.losses], "critical_mode": mode,
            "num_critical": int(critical.sum()), "critical_only_epochs": min(warmup, cfg.epochs),
            "temperature": {"source": source, "schedule": spec.kind, **spec.kwargs()},
        }
        (ctx.out / "metrics.json").write_text(json.dumps({**summary, "history": history}, indent=2))
        return summary


register_stage(DistillStage())
