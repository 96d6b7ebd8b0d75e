"""Built-in mining strategies that need only the cached teacher logits."""

from __future__ import annotations

import numpy as np

from cann_distill.selectors.base import SELECTORS, Selector


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@SELECTORS.register("margin")
class Margin(Selector):
    """score = 1 - (p_top1 - p_top2): samples near the teacher's decision boundary score high."""

    def score(self, logits: np.ndarray, targets: np.ndarray, seed: int = 0) -> np.ndarray:
        p = np.sort(softmax(logits), axis=1)
        return 1.0 - (p[:, -1] - p[:, -2])


@SELECTORS.register("entropy")
class Entropy(Selector):
    """score = H(p) / log(C): normalised entropy of the teacher's prediction."""

    def score(self, logits: np.ndarray, targets: np.ndarray, seed: int = 0) -> np.ndarray:
        p = softmax(logits)
        h = -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=1)
        return h / np.log(p.shape[1])


@SELECTORS.register("loss")
class TeacherLoss(Selector):
    """score = -log p_teacher(y): teacher cross-entropy against the label (also flags label noise)."""

    def score(self, logits: np.ndarray, targets: np.ndarray, seed: int = 0) -> np.ndarray:
        p = softmax(logits)
        return -np.log(np.clip(p[np.arange(len(targets)), targets], 1e-12, None))


@SELECTORS.register("random")
class Random(Selector):
    """score ~ U(0, 1) from the recipe seed: the baseline every strategy must beat."""

    def score(self, logits: np.ndarray, targets: np.ndarray, seed: int = 0) -> np.ndarray:
        return np.random.default_rng(seed).random(len(targets))
