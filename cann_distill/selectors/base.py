"""Selector interface."""

from __future__ import annotations

import numpy as np

from cann_distill.registry import Registry


class Selector:
    """Scores every training sample from the teacher's logits and the labels.

    Strategies that compare teacher and student set `needs_student = True` and read
    `student_logits` (same shape as `logits`); the others ignore it.
    """

    name: str = ""
    needs_student: bool = False

    def score(
        self,
        logits: np.ndarray,
        targets: np.ndarray,
        seed: int = 0,
        student_logits: np.ndarray | None = None,
    ) -> np.ndarray:
        """Criticality per sample, shape [N]; higher means more critical."""
        raise NotImplementedError


SELECTORS: Registry[type[Selector]] = Registry("selector")
