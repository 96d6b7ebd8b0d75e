"""Logit-level losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cann_distill.teaching.losses.base import LOSSES, Loss, Outputs


def _temperature(outputs: Outputs, default: float, like: torch.Tensor) -> torch.Tensor:
    """Per-sample temperature [B, 1]: `outputs["temperature"]` when given, else `default`."""
    temp = outputs.get("temperature")
    if temp is None:
        return torch.full((like.shape[0], 1), default, dtype=like.dtype, device=like.device)
    return temp.to(like.dtype).reshape(-1, 1)


def _logit_pair(outputs: Outputs, loss: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Student and teacher logits [B, C >= 2] of the same shape (teacher cast to the student's dtype), else a one-line error."""
    s = outputs["student.logits"]
    t = outputs["teacher.logits"].to(s.dtype)
    if s.shape != t.shape or s.dim() != 2 or s.shape[1] < 2:
        raise ValueError(
            f"{loss} needs 'student.logits' and 'teacher.logits' of the same shape [B, C >= 2], got {tuple(s.shape)} and {tuple(t.shape)}"
        )
    return s, t


def standardized(logits: torch.Tensor) -> torch.Tensor:
    """Per-sample z-scores over the classes (dim 1): (z - mean) / (std + 1e-7), std unbiased, as Sun et al.'s code."""
    return (logits - logits.mean(dim=1, keepdim=True)) / (logits.std(dim=1, keepdim=True) + 1e-7)


@LOSSES.register("ce")
class CrossEntropy(Loss):
    """Cross-entropy of the student against the labels (optional label smoothing).

    Takes soft targets too (mixup/cutmix: class probabilities [B, C], already smoothed by timm's Mixup).
    """

    requires = ("student.logits", "targets")
    soft_targets = True

    def __init__(self, label_smoothing: float = 0.0) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError("label_smoothing must be in [0, 1)")
        self.label_smoothing = label_smoothing

    def __call__(self, outputs: Outputs) -> torch.Tensor:
        s, y = outputs["student.logits"], outputs["targets"]
        soft = y.dim() == 2  # probabilities: smoothing was applied when they were mixed
        return F.cross_entropy(s, y.to(s.dtype) if soft else y, reduction="none", label_smoothing=0.0 if soft else self.label_smoothing)


@LOSSES.register("kd")
class HintonKD(Loss):
    """Hinton et al., "Distilling the Knowledge in a Neural Network" (2015).

    KL(softmax(t/T) || softmax(s/T)) * T^2, so the gradient scale does not shrink with T.
    A per-sample temperature (`outputs["temperature"]`, shape [B]) overrides the fixed one.

    `standardize: true` is logit standardization (Sun et al., "Logit Standardization in Knowledge
    Distillation", CVPR 2024): each sample's student and teacher logits are z-scored over the classes
    (mean 0, standard deviation 1, as the authors' code: unbiased std + 1e-7) before the division by T, so
    the student matches the teacher's ranking of the classes rather than its logit range; the paper pairs
    it with T = 2 and a KD weight of 9 against CE 0.1.

    `teacher.logits` may be log-probabilities: T then applies to them, softmax(log p / T), which for a
    full distribution is exactly softmax(t / T) (and, standardized, exactly the standardized logits). Replayed targets (`distill.teacher_targets: replay`,
    FKD, Shen & Xing, ECCV 2022) arrive so: the teacher's top-k probabilities of the view with the
    remaining mass spread uniformly over the other classes, as FKD does (`cann_distill.teaching.targets`).
    """

    requires = ("student.logits", "teacher.logits")
    teacher_logits = "distribution"

    def __init__(self, temperature: float = 4.0, standardize: bool = False) -> None:
        if not temperature > 0:
            raise ValueError("temperature must be > 0")
        if not isinstance(standardize, bool):
            raise ValueError("standardize must be true or false")
        self.temperature = temperature
        self.standardize = standardize

    def __call__(self, outputs: Outputs) -> torch.Tensor:
        s, t = _logit_pair(outputs, "kd")
        if self.standardize:
            s, t = standardized(s), standardized(t)
        temp = _temperature(outputs, self.temperature, s)
        log_p_s = F.log_softmax(s / temp, dim=1)
        log_p_t = F.log_softmax(t / temp, dim=1)
        kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)
        return kl * temp.squeeze(1) ** 2


@LOSSES.register("dkd")
class DecoupledKD(Loss):
    """Zhao et al., "Decoupled Knowledge Distillation" (CVPR 2022).

    Splits KD into target-class KD (TCKD: KL between the binary distributions
    [p_target, 1 - p_target]) and non-target-class KD (NCKD: KL between the
    distributions renormalised over the non-target classes), so the two can be
    weighted independently: ``(alpha * TCKD + beta * NCKD) * T^2`` per sample.
    This is the authors' batch loss without the division by B (the trainer
    averages). NCKD is computed with the target class masked out exactly rather
    than the reference code's ``- 1000`` logit shift. A per-sample temperature
    (`outputs["temperature"]`, shape [B]) overrides the fixed one, as in `kd`, and
    `teacher.logits` may be log-probabilities (top-k replayed targets), as in `kd`.
    """

    teacher_logits = "distribution"

    def __init__(self, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0) -> None:
        if not temperature > 0:
            raise ValueError("temperature must be > 0")
        if alpha < 0 or beta < 0:
            raise ValueError("alpha and beta must be >= 0")
        self.alpha = alpha
        self.beta = beta
        self.temperature = temperature
        self.requires = ("student.logits", "teacher.logits", "targets")

    def __call__(self, outputs: Outputs) -> torch.Tensor:
        s, t = _logit_pair(outputs, "dkd")
        temp = _temperature(outputs, self.temperature, s)
        target = F.one_hot(outputs["targets"].long(), s.shape[1]).bool()
        zs, zt = s / temp, t / temp
        # log-probabilities of the target class and of "any other class", from logsumexps (stable)
        lse_s, lse_t = zs.logsumexp(1), zt.logsumexp(1)
        zs_nt, zt_nt = zs.masked_fill(target, float("-inf")), zt.masked_fill(target, float("-inf"))
        lse_s_nt, lse_t_nt = zs_nt.logsumexp(1), zt_nt.logsumexp(1)
        log_bs = torch.stack([zs[target] - lse_s, lse_s_nt - lse_s], dim=1)
        log_bt = torch.stack([zt[target] - lse_t, lse_t_nt - lse_t], dim=1)
        tckd = (log_bt.exp() * (log_bt - log_bs)).sum(1)
        # distributions over the non-target classes; the masked entry contributes 0
        log_qs = (zs_nt - lse_s_nt.unsqueeze(1)).masked_fill(target, 0.0)
        log_qt = (zt_nt - lse_t_nt.unsqueeze(1)).masked_fill(target, 0.0)
        nckd = (log_qt.exp().masked_fill(target, 0.0) * (log_qt - log_qs)).sum(1)
        return (self.alpha * tckd + self.beta * nckd) * temp.squeeze(1) ** 2


def _pearson(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Row-wise Pearson correlation of [N, M] matrices, as DIST's code (cosine of the centred rows + eps)."""
    a, b = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


@LOSSES.register("dist")
class DIST(Loss):
    """Huang, You, Wang, Qian & Xu, "Knowledge Distillation from A Stronger Teacher" (DIST, NeurIPS 2022).

    Matches relations instead of probabilities: with p = softmax(z / T), the inter-class term is
    1 - pearson(p_s[i], p_t[i]) per sample (the teacher's ranking of the classes for each image), the
    intra-class term 1 - pearson(p_s[:, c], p_t[:, c]) averaged over the classes (how the batch's images rank
    for each class); the loss is T^2 * (beta * inter + gamma * intra). Sample i gets its inter term plus the
    batch's intra term, so the batch mean is the authors' loss (`relational`: under torchrun it reads the
    global batch). The paper's ImageNet setting is T = 1, beta = gamma = 1; CIFAR's T = 4, beta = gamma = 2.
    """

    requires = ("student.logits", "teacher.logits")
    teacher_logits = "distribution"
    relational = True

    def __init__(self, beta: float = 1.0, gamma: float = 1.0, temperature: float = 1.0) -> None:
        if not temperature > 0:
            raise ValueError("temperature must be > 0")
        if beta < 0 or gamma < 0:
            raise ValueError("beta and gamma must be >= 0")
        self.beta, self.gamma, self.temperature = beta, gamma, temperature

    def __call__(self, outputs: Outputs) -> torch.Tensor:
        s, t = _logit_pair(outputs, "dist")
        temp = _temperature(outputs, self.temperature, s)
        p_s, p_t = F.softmax(s / temp, dim=1), F.softmax(t / temp, dim=1)
        t2 = temp.squeeze(1) ** 2
        inter = 1 - _pearson(p_s, p_t)
        intra = (1 - _pearson(p_s.T, p_t.T)).mean() if s.shape[0] > 1 else s.new_zeros(())
        return t2 * (self.beta * inter + self.gamma * intra)


@LOSSES.register("dml")
class MutualKL(Loss):
    """Zhang, Xiang, Hospedales & Lu, "Deep Mutual Learning" (CVPR 2018).

    The mean over the other peers j of KL(softmax(z_j / T) ‖ softmax(s / T)) * T², with `peers.logits` [P - 1, B, C]
    the other peers' logits on the batch (detached by the stage: `distill.mode: mutual`). T = 1 is the paper's; a
    per-sample or scheduled temperature (`outputs["temperature"]`, [B]) overrides it, as in `kd`.
    """

    requires = ("student.logits", "peers.logits")

    def __init__(self, temperature: float = 1.0) -> None:
        if not temperature > 0:
            raise ValueError("temperature must be > 0")
        self.temperature = temperature

    def __call__(self, outputs: Outputs) -> torch.Tensor:
        s = outputs["student.logits"]
        peers = outputs["peers.logits"].to(s.dtype)
        if peers.dim() != 3 or peers.shape[1:] != s.shape:
            raise ValueError(f"dml needs 'peers.logits' [P, B, C] for 'student.logits' {tuple(s.shape)}, got {tuple(peers.shape)}")
        temp = _temperature(outputs, self.temperature, s)
        log_p_s = F.log_softmax(s / temp, dim=1)
        log_p_j = F.log_softmax(peers / temp.unsqueeze(0), dim=2)
        kl = (log_p_j.exp() * (log_p_j - log_p_s.unsqueeze(0))).sum(2).mean(0)
        return kl * temp.squeeze(1) ** 2
