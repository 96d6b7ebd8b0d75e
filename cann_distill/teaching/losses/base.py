"""Loss interface: losses know nothing about models, only named outputs."""

from __future__ import annotations

from typing import Literal, Mapping, Optional

import torch

from cann_distill.core import registries
from cann_distill.core.registry import Registry
from cann_distill.runtime import distributed

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
    relational: bool = False
    """True when a sample's loss depends on the other samples of the batch (sp, rkd). Under torchrun
    such a loss is fed the global batch, gathered from every rank (`rank_rows`), not this rank's slice."""

    def __call__(self, outputs: Outputs) -> torch.Tensor:
        """Per-sample loss, shape [B]; the trainer applies sample weights and reduces."""
        raise NotImplementedError


LOSSES: Registry[type[Loss]] = registries.LOSSES  # defined in core so the recipe schema can name it


def rank_rows(loss: Loss, outputs: Outputs) -> torch.Tensor:
    """`loss(outputs)` for this rank's samples [b]. A relational loss under torchrun reads the global batch: the
    tensors it requires are gathered from every rank (gradients flow back to each rank's own rows, see
    `distributed.gather_batch`) and this rank's rows of its per-sample result are kept, so the ranks' rows together
    are the one-process loss of the whole batch. Anything else, and one process: `loss(outputs)` itself."""
    if not loss.relational or not distributed.active():
        return loss(outputs)
    counts = distributed.batch_counts(len(outputs[loss.requires[0]]))
    gathered, mine = {}, slice(0)
    for key in loss.requires:
        gathered[key], mine = distributed.gather_batch(outputs[key], counts)
    return loss({**outputs, **gathered})[mine]
