"""Scores that look past the teacher's clean-image confidence: the teacher on augmented views, and a
short student probe's training dynamics.

A teacher that memorised its training set is near-certain on every clean training image, so its
margin there says little. On augmented views (the ones the student will train on) its uncertainty
comes back; and a student probe shows which samples the *student* finds hard.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from cann_distill.selection.base import SELECTORS, Selector
from cann_distill.selection.strategies import softmax


def _check(name: str, what: str, arr: Optional[np.ndarray], n: int, c: int) -> np.ndarray:
    if arr is None:
        raise ValueError(f"selector '{name}' needs {what}, got None")
    if arr.ndim != 3 or arr.shape[1:] != (n, c) or arr.shape[0] < 1:
        raise ValueError(f"selector '{name}': {what} of shape {arr.shape}, expected [*, {n}, {c}]")
    return arr


def error_l2(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """||softmax(z) − onehot(y)||₂ per sample (the EL2N error), in [0, √2]."""
    p = softmax(logits)
    p[np.arange(len(targets)), targets] -= 1.0
    return np.sqrt((p**2).sum(axis=1))


def mean_error_l2(history: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """EL2N: `error_l2` averaged over the probe's epochs (history [E, N, C])."""
    return np.mean([error_l2(h, targets) for h in history], axis=0)


@SELECTORS.register("view_loss")
class ViewLoss(Selector):
    """score = mean over V augmented views of −log p_teacher(y | view): the teacher's loss on what the student will see."""

    needs_labels = True
    needs_views = True

    def score(
        self,
        logits: np.ndarray,
        targets: np.ndarray,
        seed: int = 0,
        student_logits: Optional[np.ndarray] = None,
        view_logits: Optional[np.ndarray] = None,
        **_: Any,
    ) -> np.ndarray:
        views = _check("view_loss", "view_logits", view_logits, *logits.shape)
        rows = np.arange(len(targets))
        losses = [-np.log(np.clip(softmax(v)[rows, targets], 1e-12, None)) for v in views]
        return np.mean(losses, axis=0)


@SELECTORS.register("view_margin")
class ViewMargin(Selector):
    """score = (1 − (p̄_y − max_{c≠y} p̄_c)) / 2, p̄ = the teacher's softmax averaged over V augmented views.

    The label margin of the teacher's expected prediction under augmentation, mapped to [0, 1]:
    0 = certain and right on every view, 1 = certain and wrong.
    """

    needs_labels = True
    needs_views = True

    def score(
        self,
        logits: np.ndarray,
        targets: np.ndarray,
        seed: int = 0,
        student_logits: Optional[np.ndarray] = None,
        view_logits: Optional[np.ndarray] = None,
        **_: Any,
    ) -> np.ndarray:
        views = _check("view_margin", "view_logits", view_logits, *logits.shape)
        p = np.mean([softmax(v) for v in views], axis=0)
        rows = np.arange(len(targets))
        p_y = p[rows, targets].copy()
        p[rows, targets] = -np.inf
        return (1.0 - (p_y - p.max(axis=1))) / 2.0


@SELECTORS.register("el2n")
class EL2N(Selector):
    """score = mean over the probe's epochs of ||softmax(z_student) − onehot(y)||₂.

    EL2N (Paul et al., "Deep Learning on a Data Diet: Finding Important Examples Early in Training",
    NeurIPS 2021): the student's error early in training ranks examples by how much they matter;
    the paper averages over seeds, this averages over the probe's epochs (`select.probe_epochs`).
    """

    needs_labels = True
    needs_history = True
    min_probe_epochs = 1
    default_probe_epochs = 2

    def score(
        self,
        logits: np.ndarray,
        targets: np.ndarray,
        seed: int = 0,
        student_logits: Optional[np.ndarray] = None,
        student_history: Optional[np.ndarray] = None,
        **_: Any,
    ) -> np.ndarray:
        return mean_error_l2(_check("el2n", "student_history", student_history, *logits.shape), targets)


@SELECTORS.register("forgetting")
class Forgetting(Selector):
    """score = forgetting events + EL2N / 2 (tie-break), from the probe's per-epoch predictions.

    Toneva et al., "An Empirical Study of Example Forgetting during Deep Neural Network Learning",
    ICLR 2019: a forgetting event is an epoch where a sample the student classified right becomes
    wrong; samples never learned count as forgotten E times (more than any learned one can be), as in
    the paper. Most samples tie at 0 events over a short probe, so the mean EL2N (< √2 / 2 < 1)
    orders them without crossing an integer.
    """

    needs_labels = True
    needs_history = True
    min_probe_epochs = 2
    default_probe_epochs = 3

    def score(
        self,
        logits: np.ndarray,
        targets: np.ndarray,
        seed: int = 0,
        student_logits: Optional[np.ndarray] = None,
        student_history: Optional[np.ndarray] = None,
        **_: Any,
    ) -> np.ndarray:
        history = _check("forgetting", "student_history", student_history, *logits.shape)
        right = np.stack([h.argmax(axis=1) == targets for h in history])  # [E, N]
        events = (right[:-1] & ~right[1:]).sum(axis=0).astype(np.float64)
        events[~right.any(axis=0)] = len(history)
        return events + mean_error_l2(history, targets) / 2.0
