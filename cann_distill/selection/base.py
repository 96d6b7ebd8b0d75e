"""Selector interface."""

from __future__ import annotations

import numpy as np

from cann_distill.core import registries
from cann_distill.core.registry import Registry


class Selector:
    """Scores every training sample from the teacher's logits and the labels.

    Strategies that compare teacher and student set `needs_student = True` and read
    `student_logits` (same shape as `logits`); the others ignore it. A strategy declares what
    else it reads, and the select stage computes only that and passes it as a keyword:
    `needs_views` → `view_logits` [V, N, C], the teacher on V augmented views of every sample;
    `needs_history` → `student_history` [E, N, C], a short student probe's logits after each epoch.
    `needs_labels`: the score reads the labels (`targets`), so it cannot score unlabelled images (`data.unlabeled`).
    """

    name: str = ""
    needs_student: bool = False
    needs_views: bool = False
    needs_history: bool = False
    needs_labels: bool = False
    min_probe_epochs: int = 0  # the probe epochs the score needs to mean anything
    default_probe_epochs: int = 0  # select.probe_epochs when the recipe leaves it open

    def score(
        self,
        logits: np.ndarray,
        targets: np.ndarray,
        seed: int = 0,
        student_logits: np.ndarray | None = None,
    ) -> np.ndarray:
        """Criticality per sample, shape [N]; higher means more critical."""
        raise NotImplementedError


SELECTORS: Registry[type[Selector]] = registries.SELECTORS  # defined in core so the recipe schema can name it
