"""Loss interface: losses know nothing about models, only named outputs."""

from __future__ import annotations

from typing import Mapping

import torch

from cann_distill.registry import Registry

Outputs = Mapping[str, torch.Tensor]
"""Named tensors for one batch: `student.logits`, `teacher.logits`, `targets`, ..."""


class Loss:
    """A loss term. `requires` lists the output names it reads (checked before training)."""

    name: str = ""
    requires: tuple[str, ...] = ()
    elementwise: bool = False
    """True when student and teacher maps are compared element by element, so the student tap
    goes through a connector (1x1 conv + BN + resize) onto the teacher tap's shape."""
    soft_targets: bool = False
    """True when the loss accepts `targets` as class probabilities [B, C] (mixup/cutmix) as well as
    labels [B]. Only matters for losses that read `targets`; the recipe check refuses the others."""

    def __call__(self, outputs: Outputs) -> torch.Tensor:
        """Per-sample loss, shape [B]; the trainer applies sample weights and reduces."""
        raise NotImplementedError


LOSSES: Registry[type[Loss]] = Registry("loss")
