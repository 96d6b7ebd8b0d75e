"""Critical samples during distillation: re-mining them from the current student, and what a subset saves.

`select.refresh_every: N` re-scores the training split every N epochs from the current student on
the evaluation view and the teacher's logits from select — by `select.refresh_by`: teacher–student
disagreement KL(p_teacher ‖ p_student), or the reducible loss CE_student(y) − CE_teacher(y) — and
re-applies the recipe's selection policy, so "critical" follows what the student still gets wrong
rather than what the teacher found hard once.
"""

from __future__ import annotations

import time
from typing import Any, Optional, Sequence

import numpy as np
import torch

from cann_distill.core.recipe import Recipe, refresh_epochs
from cann_distill.data.loading import Split
from cann_distill.runtime import distributed
from cann_distill.runtime.devices import CPU, Runtime
from cann_distill.selection.base import SELECTORS
from cann_distill.selection.pick import pick_critical, report_selection
from cann_distill.selection.policy import Selection
from cann_distill.training.loop import predict


class Refresher:
    """Every `select.refresh_every` epochs: the current student scored against the teacher (`select.refresh_by`) → a new critical mask."""

    def __init__(
        self,
        recipe: Recipe,
        student: torch.nn.Module,
        train: Split,
        teacher_logits: np.ndarray,
        current: np.ndarray,
        runtime: Runtime = CPU,
    ) -> None:
        every = refresh_epochs(recipe)
        if every is None:
            raise ValueError("Refresher needs select.refresh_every")
        self.recipe, self.every, self.cfg, self.seed = recipe, every, recipe.select, recipe.seed
        self.student, self.train, self.teacher_logits, self.runtime = student, train, teacher_logits, runtime
        self.current = np.asarray(current, dtype=bool)
        self.first: Optional[int] = None
        self.records: list[dict[str, Any]] = []

    def due(self, epoch: int) -> bool:
        """At epochs N, 2N, …; and at the first epoch of a resumed run that is past one (the student moved on since)."""
        first, self.first = self.first is None, epoch if self.first is None else self.first
        return epoch > 0 and (epoch % self.every == 0 or (first and epoch >= self.every))

    def __call__(self, epoch: int) -> Selection:
        t0 = time.perf_counter()
        student_logits = predict(
            self.student, self.train, batch_size=self.cfg.batch_size, desc="re-mining critical samples", runtime=self.runtime
        )
        scores = SELECTORS.get(self.cfg.refresh_by)().score(self.teacher_logits, self.train.targets, student_logits=student_logits)
        selection = pick_critical(scores, self.train.targets, self.recipe, self.train.classes, seed=self.seed + epoch)
        if distributed.active():  # rank 0's choice on every rank: a float tie decided otherwise must not split the ranks' subsets
            selection.mask = distributed.broadcast_array(selection.mask)
        report_selection(selection, f"distill epoch {epoch + 1}")
        changed = int((selection.mask != self.current).sum())
        self.records.append(
            {
                "epoch": epoch + 1,
                "critical": int(selection.mask.sum()),
                "swapped_in": int((selection.mask & ~self.current).sum()),
                "changed": changed,
                "student_train_acc": float((student_logits.argmax(1) == self.train.targets).mean()),
                "score": self.cfg.refresh_by,
                "mean_score": float(scores.mean()),
                "seconds": time.perf_counter() - t0,
            }
        )
        self.current = selection.mask
        return selection

    @property
    def seconds(self) -> float:
        return float(sum(r["seconds"] for r in self.records))


def steps_in_epoch(samples: int, batch_size: int) -> int:
    """Optimizer steps of an epoch over `samples` (training drops the last partial batch when there is more than one)."""
    return samples // batch_size if samples > batch_size else 1


def training_cost(history: Sequence[dict[str, Any]], num_train: int, batch_size: int, epochs: int, extra_s: float = 0.0) -> dict[str, Any]:
    """Steps and training time of this run against the same epochs over the full training set.

    The full set's time is estimated from this run's time per step (the same loop, batch and device);
    `extra_s` is time spent outside the steps (re-mining), added to this run's side.
    """
    rows = [r for r in history if "samples" in r]
    steps = sum(steps_in_epoch(int(r["samples"]), batch_size) for r in rows)
    full_steps = epochs * steps_in_epoch(num_train, batch_size)
    train_s = float(sum(r.get("train_s", 0.0) for r in rows))
    per_step = train_s / steps if steps else 0.0
    full_s = per_step * full_steps
    spent = train_s + extra_s
    return {
        "steps": steps,
        "full_set_steps": full_steps,
        "step_fraction": steps / full_steps if full_steps else 1.0,
        "train_s": train_s,
        "refresh_s": extra_s,
        "full_set_train_s_estimate": full_s,
        "time_fraction_estimate": spent / full_s if full_s else 1.0,
        "saved_steps": full_steps - steps,
        "saved_s_estimate": full_s - spent,
        "how": "full-set time = this run's seconds per step × the full set's steps (same loop, batch and device)",
    }
