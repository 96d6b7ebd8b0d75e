"""Loss interface: losses know nothing about models, only named outputs."""

from __future__ import annotations

from typing import Literal, Mapping, Optional

import torch

from cann_distill.core import registries
from cann_distill.core.registry import Registry

Outputs = Mapping[str, torch.Tensor]
"""Named tensors for one batch: `student.logits`, `teacher.logits`, `targets`, ..."""


class Loss:
    """A loss term. `requires` lists the output names it reads (checked before training); the other
    attributes declare what else the stage must feed it, so the stage reads declarations, never probes."""

    name: str = ""
    requires: tuple[str, ...] = ()
    elementwise: bool = False
    """True when student and teacher maps are compared element by element, so the student tap
    goes through a connector (1x1 conv + BN + resize) onto the teacher tap's shape."""
    soft_targets: bool = False
    """True when the loss accepts `targets` as class probabilities [B, C] (mixup/cutmix) as well as
    labels [B]. Only matters for losses that read `targets`; the recipe check refuses the others."""
    temperature: Optional[float] = None
    """The loss's own distillation temperature when it applies one (kd, dkd), else None. Such a loss
    takes a per-sample or scheduled temperature [B] as `outputs["temperature"]` instead when the
    stage feeds one, and an `adaptive` temperature schedule follows its value."""
    teacher_logits: Literal["raw", "distribution"] = "raw"
    """How a loss that reads `teacher.logits` uses them. "distribution": only softmax(teacher.logits / T)
    matters, so log-probabilities serve as well (replayed top-k targets and mixed cached targets arrive
    so, `cann_distill.teaching.targets`). "raw": the logit vectors themselves (relation losses compare them)."""
    channel_weights: Optional[str] = None
    """The teacher tap whose per-channel sensitivity the loss reads (as `teacher.chw.<tap>`, [C]),
    computed once by the stage with the teacher; None when it reads none."""

    def __call__(self, outputs: Outputs) -> torch.Tensor:
        """Per-sample loss, shape [B]; the trainer applies sample weights and reduces."""
        raise NotImplementedError


LOSSES: Registry[type[Loss]] = registries.LOSSES  # defined in core so the recipe schema can name it
