"""Selector interface."""

from __future__ import annotations

import numpy as np

from cann_distill.registry import Registry


class Selector:
    """Scores every training sample from the teacher's logits and the labels."""

    name: str = ""

    def score(self, logits: np.ndarray, targets: np.ndarray, seed: int = 0) -> np.ndarray:
        """Criticality per sample, shape [N]; higher means more critical."""
        raise NotImplementedError


SELECTORS: Registry[type[Selector]] = Registry("selector")
