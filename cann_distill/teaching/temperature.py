"""Dynamic distillation temperature: per-sample (by difficulty) times a per-epoch schedule.

Two independent pieces, combined multiplicatively:

- `per_sample_temperature(difficulty)` gives each sample a temperature T_i from its
  difficulty rank: easy samples get sharper targets (~2.1), hard ones softer (~4.7),
  the median sample gets `base` (3.0).
- A schedule from `SCHEDULES` (`constant`, `linear`, `cosine`, `adaptive`) gives the
  scheduled temperature `value(epoch, epochs)`; `multiplier(epoch, epochs)` is that value
  relative to the schedule's start, value(epoch) / value(0).

`temperature_at` combines them:

    T_i(epoch) = T_i * value(epoch) / value(0)     with per-sample temperatures
    T(epoch)   = value(epoch)                      without

so the schedule shapes how temperatures move over training while the per-sample map
keeps their spread across samples. The per-sample clip to [t_min, t_max] happens before
the multiplier; clip again after `temperature_at` if hard bounds must hold every epoch.

Epochs are 0-based: `epoch` runs over 0 .. epochs-1, and the last epoch reaches `end`.
The training loop calls `schedule.update(kd_loss)` once per epoch; only `adaptive` reacts.
"""

from __future__ import annotations

import math
from typing import overload

import numpy as np

from cann_distill.core import registries
from cann_distill.core.registry import Registry


def rank_percentile(x: np.ndarray) -> np.ndarray:
    """u_i = (r_i - 1) / (N - 1) in [0, 1], r_i the 1-based rank with ties averaged; N = 1 → 0.5."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"difficulty must be 1-D (one score per sample), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("difficulty contains NaN or inf")
    n = len(x)
    if n <= 1:
        return np.full(n, 0.5)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # 0-based rank of each distinct value's first occurrence
    avg_rank = first + (counts - 1) / 2.0
    return avg_rank[inverse] / (n - 1)


def per_sample_temperature(
    difficulty: np.ndarray,
    base: float = 3.0,
    t_min: float = 1.0,
    t_max: float = 8.0,
    t_easy: float = 2.1,
    t_hard: float = 4.7,
) -> np.ndarray:
    """Temperature per sample from its difficulty (any score, higher = harder).

    With u the rank percentile of the difficulty (ties averaged, one sample → 0.5):

        T(u) = base * (t_easy / base) ** (1 - 2u)   for u < 0.5
        T(u) = base * (t_hard / base) ** (2u - 1)   for u >= 0.5
        T_i  = clip(T(u_i), t_min, t_max)

    a geometric interpolation, so T(0) = t_easy, T(0.5) = base, T(1) = t_hard exactly and
    T is non-decreasing in difficulty. Ranks rather than raw scores make the map
    independent of the selector's scale.
    """
    if t_min > t_max:
        raise ValueError(f"t_min ({t_min}) must be <= t_max ({t_max})")
    for label, t in (("t_min", t_min), ("t_max", t_max), ("base", base), ("t_easy", t_easy), ("t_hard", t_hard)):
        if not t > 0:
            raise ValueError(f"{label} must be > 0, got {t}")
    if not t_min <= base <= t_max:
        raise ValueError(f"base ({base}) must lie in [t_min, t_max] = [{t_min}, {t_max}]")
    if not t_easy <= base <= t_hard:
        raise ValueError(f"need t_easy <= base <= t_hard, got {t_easy}, {base}, {t_hard}")
    u = rank_percentile(difficulty)
    s = 2.0 * u - 1.0  # in [-1, 1]
    temps = np.where(s < 0, base * (t_easy / base) ** -s, base * (t_hard / base) ** s)
    return np.clip(temps, t_min, t_max)


def progress(epoch: int, epochs: int) -> float:
    """t = epoch / (epochs - 1) in [0, 1]; 0 for a single-epoch run."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if not 0 <= epoch < epochs:
        raise ValueError(f"epoch must be in [0, {epochs - 1}], got {epoch}")
    return 0.0 if epochs == 1 else epoch / (epochs - 1)


def _check_positive(**values: float) -> None:
    for label, v in values.items():
        if not v > 0:
            raise ValueError(f"{label} must be > 0, got {v}")


class TemperatureSchedule:
    """Scheduled temperature per epoch; `start` is its value at epoch 0."""

    start: float

    def value(self, epoch: int, epochs: int) -> float:
        """Scheduled temperature at `epoch` (0-based) of `epochs`."""
        raise NotImplementedError

    def multiplier(self, epoch: int, epochs: int) -> float:
        """value(epoch) / value(0): the factor applied to per-sample temperatures."""
        return self.value(epoch, epochs) / self.start

    def update(self, kd_loss: float) -> None:
        """Called once per epoch with the epoch's KD loss; a no-op for fixed schedules."""


SCHEDULES: Registry[type[TemperatureSchedule]] = registries.SCHEDULES  # defined in core so the recipe schema can name it


@SCHEDULES.register("constant")
class Constant(TemperatureSchedule):
    """T(epoch) = temperature: the classic fixed-temperature KD."""

    def __init__(self, temperature: float = 3.0) -> None:
        _check_positive(temperature=temperature)
        self.start = temperature

    def value(self, epoch: int, epochs: int) -> float:
        progress(epoch, epochs)
        return self.start


class _Anneal(TemperatureSchedule):
    """A schedule that moves from `start` to `end` over the run."""

    def __init__(self, start: float, end: float) -> None:
        _check_positive(start=start, end=end)
        self.start = start
        self.end = end


@SCHEDULES.register("linear")
class Linear(_Anneal):
    """T = start + (end - start) * t, t = epoch / (epochs - 1): soft targets early, sharp late."""

    def value(self, epoch: int, epochs: int) -> float:
        return self.start + (self.end - self.start) * progress(epoch, epochs)


@SCHEDULES.register("cosine")
class Cosine(_Anneal):
    """T = end + (start - end) * (1 + cos(pi * t)) / 2: like `linear`, but flat at both ends."""

    def value(self, epoch: int, epochs: int) -> float:
        t = progress(epoch, epochs)
        return self.end + (self.start - self.end) * (1.0 + math.cos(math.pi * t)) / 2.0


@SCHEDULES.register("adaptive")
class Adaptive(TemperatureSchedule):
    """Reduce-on-plateau: T <- max(T * factor, min_value) after `patience` epochs without progress.

    An epoch makes progress when kd_loss < best * (1 - threshold) (relative improvement);
    sharpening the targets once the student stops catching up on the soft ones. The value
    depends on the losses seen through `update`, not on `epoch`.
    """

    def __init__(
        self,
        start: float,
        min_value: float,
        patience: int = 2,
        factor: float = 0.8,
        threshold: float = 1e-3,
    ) -> None:
        _check_positive(start=start, min_value=min_value)
        if min_value > start:
            raise ValueError(f"min_value ({min_value}) must be <= start ({start})")
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        if threshold < 0:
            raise ValueError(f"threshold must be >= 0, got {threshold}")
        self.start = start
        self.min_value = min_value
        self.patience = patience
        self.factor = factor
        self.threshold = threshold
        self.current = start
        self.best = math.inf
        self.stale_epochs = 0

    def value(self, epoch: int, epochs: int) -> float:
        progress(epoch, epochs)
        return self.current

    def update(self, kd_loss: float) -> None:
        """Track the best KD loss; decay the temperature after `patience` stale epochs."""
        if not math.isfinite(kd_loss):
            raise ValueError(f"kd_loss must be finite, got {kd_loss}")
        if self.best == math.inf or kd_loss < self.best - self.threshold * abs(self.best):
            self.best = kd_loss
            self.stale_epochs = 0
            return
        self.stale_epochs += 1
        if self.stale_epochs >= self.patience:
            self.current = max(self.current * self.factor, self.min_value)
            self.stale_epochs = 0


@overload
def temperature_at(schedule: TemperatureSchedule, epoch: int, epochs: int, per_sample: None = None) -> float: ...
@overload
def temperature_at(schedule: TemperatureSchedule, epoch: int, epochs: int, per_sample: np.ndarray) -> np.ndarray: ...
def temperature_at(schedule: TemperatureSchedule, epoch: int, epochs: int, per_sample: np.ndarray | None = None) -> float | np.ndarray:
    """T_i * value(epoch) / value(0) with per-sample temperatures, else value(epoch)."""
    if per_sample is None:
        return schedule.value(epoch, epochs)
    return np.asarray(per_sample) * schedule.multiplier(epoch, epochs)
