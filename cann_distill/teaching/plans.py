"""distill's policies: the temperature each epoch feeds the tempered losses, and which samples each epoch trains on.

Temperature, per epoch e of E (the choice when select.temperature.per_sample is off is deliberate:
a recipe that asks for neither per-sample nor scheduled temperatures gets classic KD):

- per-sample on:   T_i(e) = clip(T_i * schedule(e) / schedule(0), t_min, t_max), T_i from the index;
- per-sample off, `distill.temperature_schedule` set (not the bare default): T(e) = schedule(e) for all;
- per-sample off, default schedule: no temperature is fed; kd/dkd use their own `temperature`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch

from cann_distill.core.recipe import DistillConfig, LossSpec, Recipe, curriculum_epochs
from cann_distill.teaching.distiller import Term
from cann_distill.teaching.temperature import SCHEDULES, temperature_at
from cann_distill.training.loop import SubsetSampler


@dataclass
class CriticalIndex:
    critical: np.ndarray  # bool [N], split order
    temperature: np.ndarray  # float [N], split order


class TemperaturePlan:
    """The temperature the tempered losses (those that declare one) get in each epoch; see this module's docstring."""

    def __init__(
        self, cfg: DistillConfig, terms: Sequence[Term], index_temperature: np.ndarray, select_temperature: dict[str, Any]
    ) -> None:
        self.spec, self.epochs = cfg.temperature_schedule, cfg.epochs
        self.schedule = SCHEDULES.build(self.spec.kind, **self.spec.kwargs())
        self.source = "per_sample" if select_temperature["per_sample"] else ("loss" if self.spec.is_default else "schedule")
        self.index_temperature = index_temperature
        self.bounds = (select_temperature["t_min"], select_temperature["t_max"])
        tempered = [t for t in terms if t.loss.temperature is not None]
        self.tempered = [t.name for t in tempered]
        self.own = float(tempered[0].loss.temperature) if tempered else None  # type: ignore[arg-type]

    def replaced(self, specs: Sequence[LossSpec]) -> Optional[str]:
        """The message when the recipe sets a loss's temperature that a schedule or per-sample map replaces."""
        overridden = [f"{s.kind}.temperature={s.kwargs()['temperature']}" for s in specs if "temperature" in s.kwargs()]
        if self.source == "loss" or not overridden:
            return None
        by = {
            "per_sample": "per-sample temperatures from select (select.temperature.per_sample=false keeps it)",
            "schedule": f"the '{self.spec.kind}' temperature schedule",
        }[self.source]
        return f"distill: {', '.join(overridden)} replaced by {by}"

    def at(self, epoch: int) -> Optional[np.ndarray]:
        """Per-sample temperatures [N] for `epoch`, or None when the losses keep their own."""
        if self.source == "per_sample":
            return np.clip(temperature_at(self.schedule, epoch, self.epochs, self.index_temperature), *self.bounds)
        if self.source == "schedule":
            return np.full(len(self.index_temperature), temperature_at(self.schedule, epoch, self.epochs))
        return None

    def row(self, temps: Optional[np.ndarray], active: Sequence[int]) -> dict[str, float]:
        if temps is not None:
            t = temps[list(active)]
            return {"temperature_mean": float(t.mean()), "temperature_min": float(t.min()), "temperature_max": float(t.max())}
        if self.own is not None:
            return {"temperature_mean": self.own, "temperature_min": self.own, "temperature_max": self.own}
        return {}

    def end_epoch(self, row: dict[str, float]) -> None:
        if self.tempered:
            self.schedule.update(sum(row[name] for name in self.tempered))

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "schedule": self.spec.kind, **self.spec.kwargs()}


class CriticalPlan:
    """Which samples each epoch trains on and how much each weighs (`distill.critical`)."""

    def __init__(self, recipe: Recipe, index: CriticalIndex) -> None:
        cfg = recipe.distill
        self.mode = cfg.critical.mode
        self.all = list(range(len(index.critical)))
        self.critical = np.flatnonzero(index.critical).tolist()
        self.warmup = curriculum_epochs(recipe) if self.mode == "curriculum" else (cfg.epochs if self.mode == "subset" else 0)
        self.sampler = SubsetSampler(self.critical, seed=recipe.seed) if self.mode in ("subset", "curriculum") else None
        self.weight = cfg.critical.weight
        self.update(index.critical)

    def update(self, mask: np.ndarray) -> None:
        """A new critical set (select.refresh_every re-mined it)."""
        self.critical = np.flatnonzero(mask).tolist()
        self.sample_weight = torch.ones(len(self.all))
        if self.mode == "weight":
            self.sample_weight[torch.from_numpy(np.asarray(mask, dtype=bool))] = self.weight

    def select(self, epoch: int) -> tuple[list[int], bool]:
        """The samples of `epoch` (the sampler follows) and whether they are the critical ones only."""
        critical_only = epoch < self.warmup
        active = self.critical if critical_only else self.all
        if self.sampler is not None:
            self.sampler.indices = active
        return active, critical_only
