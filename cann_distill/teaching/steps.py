"""distill's math per batch: the fused loss of one student (`DistillStep`), or of peers that learn from each
other (`MutualStep`, deep mutual learning), from their outputs, the teacher's targets, the labels and the epoch's
temperatures, weighted per sample."""

from __future__ import annotations

from typing import Optional

import torch

from cann_distill.teaching.distiller import Distiller
from cann_distill.training.loop import Batch


class DistillStep:
    """One batch's fused loss: student outputs, the teacher's targets, labels and the epoch's temperatures, weighted per sample."""

    def __init__(self, distiller: Distiller, sample_weight: torch.Tensor, unlabelled: bool = False) -> None:
        self.distiller, self.sample_weight, self.unlabelled = distiller, sample_weight, unlabelled
        self.temperature: Optional[torch.Tensor] = None  # [N] for the current epoch, None: the losses' own

    def __call__(self, model: torch.nn.Module, batch: Batch, teacher: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        x, y, idx = batch
        outputs = {**self.distiller.student_outputs(x), **teacher, "targets": y}
        if self.unlabelled:  # data.unlabeled: label -1 marks the images without one
            outputs["labelled"] = y >= 0
        if self.temperature is not None:
            outputs["temperature"] = self.temperature[idx]
        return self.distiller.loss(outputs, self.sample_weight[idx])
