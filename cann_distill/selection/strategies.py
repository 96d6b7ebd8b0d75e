"""Built-in mining strategies: teacher logits (and, for `disagreement`, student logits) → score."""

from __future__ import annotations

import numpy as np

from cann_distill.selection.base import SELECTORS, Selector


def log_softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """log softmax(z / T) along the class axis, shifted by the row max for stability."""
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """softmax(z / T) along the class axis."""
    return np.exp(log_softmax(logits, temperature))


def normalised_entropy(p: np.ndarray) -> np.ndarray:
    """H(p) / log(C) in [0, 1]: 0 for a one-hot prediction, 1 for a uniform one."""
    h = -(p * np.log(np.clip(p, 1e-12, None))).sum(axis=1)
    return h / np.log(p.shape[1])


def checked_student_logits(name: str, why: str, logits: np.ndarray, student_logits: np.ndarray | None) -> np.ndarray:
    """`student_logits` for a strategy that compares the student with the teacher: present, and shaped as the teacher's."""
    if student_logits is None:
        raise ValueError(f"selector '{name}' needs student_logits ({why}), got None")
    if student_logits.shape != logits.shape:
        raise ValueError(
            f"selector '{name}': student_logits shape {student_logits.shape} does not match teacher logits shape {logits.shape}"
        )
    return student_logits


@SELECTORS.register("margin")
class Margin(Selector):
    """score = 1 - (p_top1 - p_top2): samples near the teacher's decision boundary score high."""

    def score(
        self,
        logits: np.ndarray,
        targets: np.ndarray,
        seed: int = 0,
        student_logits: np.ndarray | None = None,
    ) -> np.ndarray:
        p = np.sort(softmax(logits), axis=1)
        return 1.0 - (p[:, -1] - p[:, -2])


@SELECTORS.register("entropy")
class Entropy(Selector):
    """score = H(p) / log(C), H(p) = -sum_c p_c log p_c: normalised entropy of the teacher's prediction."""

    def score(
        self,
        logits: np.ndarray,
        targets: np.ndarray,
        seed: int = 0,
        student_logits: np.ndarray | None = None,
    ) -> np.ndarray:
        return normalised_entropy(softmax(logits))


@SELECTORS.register("loss")
class TeacherLoss(Selector):
    """score = -log p_teacher(y): teacher cross-entropy against the label (also flags label noise)."""

    needs_labels = True

    def score(
        self,
        logits: np.ndarray,
        targets: np.ndarray,
        seed: int = 0,
        student_logits: np.ndarray | None = None,
    ) -> np.ndarray:
        p = softmax(logits)
        return -np.log(np.clip(p[np.arange(len(targets)), targets], 1e-12, None))


@SELECTORS.register("random")
class Random(Selector):
    """score ~ U(0, 1) from the recipe seed: the baseline every strategy must beat."""

    def score(
        self,
        logits: np.ndarray,
        targets: np.ndarray,
        seed: int = 0,
        student_logits: np.ndarray | None = None,
    ) -> np.ndarray:
        return np.random.default_rng(seed).random(len(targets))


@SELECTORS.register("confidence_entropy_balance")
class ConfidenceEntropyBalance(Selector):
    """score = alpha * (1 - p_max) + (1 - alpha) * H(p) / log(C).

    Low top-1 confidence and a spread-out distribution both mark a hard sample; `alpha`
    trades one against the other (1 → pure confidence, 0 → the `entropy` strategy).
    Both terms lie in [0, 1], so the score does too.
    """

    def __init__(self, alpha: float = 0.5) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha

    def score(
        self,
        logits: np.ndarray,
        targets: np.ndarray,
        seed: int = 0,
        student_logits: np.ndarray | None = None,
    ) -> np.ndarray:
        p = softmax(logits)
        return self.alpha * (1.0 - p.max(axis=1)) + (1.0 - self.alpha) * normalised_entropy(p)


@SELECTORS.register("disagreement")
class Disagreement(Selector):
    """score = KL(p_t || p_s) = sum_c p_t,c (log p_t,c - log p_s,c), p = softmax(z / T).

    Samples where the student still disagrees with the teacher are the ones distillation
    has left to teach. The same temperature T softens both distributions.
    """

    needs_student = True

    def __init__(self, temperature: float = 1.0) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def score(
        self,
        logits: np.ndarray,
        targets: np.ndarray,
        seed: int = 0,
        student_logits: np.ndarray | None = None,
    ) -> np.ndarray:
        student_logits = checked_student_logits("disagreement", "teacher–student KL", logits, student_logits)
        log_p_t = log_softmax(logits, self.temperature)
        log_p_s = log_softmax(student_logits, self.temperature)
        return (np.exp(log_p_t) * (log_p_t - log_p_s)).sum(axis=1)


@SELECTORS.register("reducible_loss")
class ReducibleLoss(Selector):
    """score = −log p_s(y) − (−log p_t(y)): the student's loss on the label minus the teacher's.

    RHO-LOSS (Mindermann et al., "Prioritized training on points that are learnable, worth
    learning, and not yet learnt", ICML 2022) with the teacher as the irreducible-loss model: a
    sample the student still gets wrong scores high, unless the teacher gets it wrong too — a
    mislabelled or ambiguous sample scores low, where teacher–student disagreement would keep
    choosing it (the student, pulled to the wrong label by CE, disagrees with the teacher there).
    """

    needs_labels = True
    needs_student = True

    def score(
        self,
        logits: np.ndarray,
        targets: np.ndarray,
        seed: int = 0,
        student_logits: np.ndarray | None = None,
    ) -> np.ndarray:
        student_logits = checked_student_logits("reducible_loss", "student CE − teacher CE", logits, student_logits)
        rows = np.arange(len(targets))
        return log_softmax(logits)[rows, targets] - log_softmax(student_logits)[rows, targets]
