"""Relation losses: match how samples of a batch relate to each other, not the samples themselves.

These are batch losses by nature. Convention for the per-sample vector: sample i gets the
part of the batch loss that belongs to its row (its similarities / distances / angles at
vertex i), scaled so that the plain mean over the batch equals the paper's batch loss.
Student and teacher may have different feature sizes; only the batch sizes must agree.
They declare `relational`: under torchrun they see the global batch, gathered from every rank
(`rank_rows`), so the loss and its gradient are the one-process ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cann_distill.teaching.losses.base import LOSSES, Loss, Outputs
from cann_distill.teaching.losses.feature import check_tap_name, feat_key


def tap_key(role: str, name: str) -> str:
    """`"logits"` names `<role>.logits`; any other name a feature tap `<role>.feat.<name>`."""
    return f"{role}.logits" if name == "logits" else feat_key(role, name)


class _RelationPair(Loss):
    relational = True

    def __init__(self, student: str, teacher: str) -> None:
        self.student_key = tap_key("student", check_tap_name("student", student))
        self.teacher_key = tap_key("teacher", check_tap_name("teacher", teacher))
        self.requires = (self.student_key, self.teacher_key)

    def _pair(self, outputs: Outputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Both taps flattened to [B, D] (D may differ between them)."""
        s = outputs[self.student_key]
        t = outputs[self.teacher_key].to(s.dtype)
        if s.dim() < 2 or t.dim() < 2 or s.shape[0] != t.shape[0]:
            raise ValueError(
                f"'{self.student_key}' {tuple(s.shape)} and '{self.teacher_key}' {tuple(t.shape)} "
                "must be batched tensors [B, ...] with the same batch size"
            )
        return s.flatten(1), t.flatten(1)


@LOSSES.register("sp")
class SimilarityPreserving(_RelationPair):
    """Tung & Mori, "Similarity-Preserving Knowledge Distillation" (ICCV 2019).

    G = Q Q^T for the flattened batch Q [B, D], rows L2-normalised; the paper's batch loss
    is ||G_t - G_s||_F^2 / B^2. Sample i gets its row: ||G_t[i] - G_s[i]||^2 / B, so the
    mean over the batch is the paper's loss. Taps are feature maps (`student="3"`) or
    `"logits"`.
    """

    def __init__(self, student: str, teacher: str) -> None:
        super().__init__(student, teacher)

    def __call__(self, outputs: Outputs) -> torch.Tensor:
        s, t = self._pair(outputs)
        g_s = F.normalize(s @ s.T, dim=1)
        g_t = F.normalize(t @ t.T, dim=1)
        return (g_t - g_s).pow(2).sum(dim=1) / s.shape[0]


def _pairwise_distances(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Euclidean distances [B, B]; the diagonal is exactly 0 and sqrt never sees 0 (finite grads)."""
    d = (x.unsqueeze(1) - x.unsqueeze(0)).pow(2).sum(dim=2).clamp_min(eps).sqrt()
    return d * (1 - torch.eye(x.shape[0], dtype=x.dtype, device=x.device))


def _angles(x: torch.Tensor) -> torch.Tensor:
    """cos of the angle at vertex i between j and k: a[i, j, k] = <e_ij, e_ik>, e_ij = unit(x_j - x_i).

    Degenerate triplets (j == i or k == i) have a zero vector and give 0, as in the authors' code.
    """
    e = F.normalize(x.unsqueeze(0) - x.unsqueeze(1), dim=2)  # e[i, j] = unit(x_j - x_i)
    return e @ e.transpose(1, 2)


@LOSSES.register("rkd")
class RelationalKD(_RelationPair):
    """Park et al., "Relational Knowledge Distillation" (CVPR 2019).

    Distance term: Huber (smooth L1) between pairwise distances, each side divided by its
    mean over distinct pairs. Angle term: Huber between the cosines of all triplet angles.
    Loss = w_dist * distance + w_angle * angle, the paper's weights 25 and 50. As in the
    authors' code, each term is the mean over all B^2 pairs / B^3 triplets; sample i gets the
    mean over its row (pairs (i, j) / angles at vertex i), so the batch mean is the batch loss.
    Defaults to logits; name feature taps (flattened) with `student=` / `teacher=` (the angle
    term holds a [B, B, D] tensor, so prefer pooled or small taps).
    A batch of one sample has no relations and gives 0.
    """

    def __init__(self, student: str = "logits", teacher: str = "logits", w_dist: float = 25.0, w_angle: float = 50.0) -> None:
        super().__init__(student, teacher)
        if w_dist < 0 or w_angle < 0:
            raise ValueError("w_dist and w_angle must be >= 0")
        self.w_dist = w_dist
        self.w_angle = w_angle

    def __call__(self, outputs: Outputs) -> torch.Tensor:
        s, t = self._pair(outputs)
        b = s.shape[0]
        if b < 2:
            return s.sum(dim=1) * 0.0
        loss = s.new_zeros(b)
        if self.w_dist:
            d_s, d_t = _pairwise_distances(s), _pairwise_distances(t)
            n_pairs = b * (b - 1)
            d_s = d_s / (d_s.sum() / n_pairs).clamp_min(1e-12)
            d_t = d_t / (d_t.sum() / n_pairs).clamp_min(1e-12)
            loss = loss + self.w_dist * F.smooth_l1_loss(d_s, d_t, reduction="none").mean(dim=1)
        if self.w_angle:
            angle = F.smooth_l1_loss(_angles(s), _angles(t), reduction="none")
            loss = loss + self.w_angle * angle.flatten(1).mean(dim=1)
        return loss
