"""Logit-level losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cann_distill.losses.base import LOSSES, Loss, Outputs


@LOSSES.register("ce")
class CrossEntropy(Loss):
    """Cross-entropy of the student against the labels (optional label smoothing)."""

    requires = ("student.logits", "targets")

    def __init__(self, label_smoothing: float = 0.0) -> None:
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError("label_smoothing must be in [0, 1)")
        self.label_smoothing = label_smoothing

    def __call__(self, outputs: Outputs) -> torch.Tensor:
        return F.cross_entropy(
            outputs["student.logits"], outputs["targets"], reduction="none", label_smoothing=self.label_smoothing
        )


@LOSSES.register("kd")
class HintonKD(Loss):
    """Hinton et al., "Distilling the Knowledge in a Neural Network" (2015).

    KL(softmax(t/T) || softmax(s/T)) * T^2, so the gradient scale does not shrink with T.
    A per-sample temperature (`outputs["temperature"]`, shape [B]) overrides the fixed one.
    """

    requires = ("student.logits", "teacher.logits")

    def __init__(self, temperature: float = 4.0) -> None:
        if not temperature > 0:
            raise ValueError("temperature must be > 0")
        self.temperature = temperature

    def __call__(self, outputs: Outputs) -> torch.Tensor:
        s = outputs["student.logits"]
        t = outputs["teacher.logits"].to(s.dtype)
        temp = outputs.get("temperature")
        if temp is None:
            temp = torch.full((s.shape[0],), self.temperature, dtype=s.dtype, device=s.device)
        temp = temp.to(s.dtype).unsqueeze(1)
        log_p_s = F.log_softmax(s / temp, dim=1)
        log_p_t = F.log_softmax(t / temp, dim=1)
        kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(dim=1)
        return kl * temp.squeeze(1) ** 2
