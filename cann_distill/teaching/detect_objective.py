"""The detection objective (`task: detect`): the named outputs a batch gives the detection losses
(`cann_distill.teaching.losses.detection`) and the recipe's weighted sum of them."""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import nn

from cann_distill.core.errors import RecipeError
from cann_distill.core.recipe import LossSpec
from cann_distill.core.recipe_detect import DetectConfig
from cann_distill.core.registries import DETECTION_LOSSES
from cann_distill.models.detector import assign, locations, scale_ranges

DetBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""(images [B, 3, S, S], boxes [B, M, 4] in input pixels, labels [B, M] with -1 padding, dataset indices [B])."""


def named(role: str, out: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A detector's outputs under the names the losses read (`role.fpn.<i>`, `role.cls`, `role.reg`, `role.ctr`)."""
    names = {f"{role}.fpn.{i}": f for i, f in enumerate(out["fpn"])}
    return {**names, f"{role}.cls": out["cls"], f"{role}.reg": out["reg"], f"{role}.ctr": out["ctr"]}


def ground_truth(batch: DetBatch, out: dict[str, Any], cfg: DetectConfig) -> dict[str, torch.Tensor]:
    """`locations`, FCOS's per-location `targets.*` and the boxes as fractions of the image (`gt.*`) for a batch."""
    images, boxes, labels, _ = batch
    h, w = images.shape[-2:]
    points, strides = locations([f.shape[-2:] for f in out["fpn"]], cfg.strides, images.device)
    t = assign(points, strides, scale_ranges(cfg.strides, cfg.scale_factor), boxes, labels, cfg.center_radius)
    scale = torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
    return {"locations": points, "targets.labels": t.labels, "targets.boxes": t.boxes, "gt.boxes": boxes / scale, "gt.labels": labels}


class Objective:
    """The recipe's weighted detection losses: sum of weight * batch mean, and each term's value for the history.

    With per-image weights (`distill.critical.mode: weight`), each term's batch mean is the weighted mean
    sum(w_i * l_i) / sum(w_i), as classification's distiller weighs its samples: a critical image counts w times.
    """

    def __init__(self, specs: Sequence[LossSpec]) -> None:
        self.specs = list(specs)
        self.losses = [DETECTION_LOSSES.build(s.kind, **s.kwargs()) for s in self.specs]
        counts: dict[str, int] = {}
        for s in self.specs:
            counts[s.kind] = counts.get(s.kind, 0) + 1
        seen: dict[str, int] = {}
        self.names = []
        for s in self.specs:
            i = seen.get(s.kind, 0)
            seen[s.kind] = i + 1
            self.names.append(s.kind if counts[s.kind] == 1 else f"{s.kind}[{i}]")

    @property
    def reads_teacher(self) -> bool:
        return any(k.startswith("teacher.") for loss in self.losses for k in loss.requires)

    def nets(self) -> nn.ModuleDict:
        """The losses' own parameters (FGD's blocks), trained with the student; call after `prepare`."""
        return nn.ModuleDict({n: loss.net for n, loss in zip(self.names, self.losses) if loss.learnable and loss.net is not None})

    def prepare(self, outputs: dict[str, torch.Tensor]) -> None:
        """One call on a sample batch: learnable losses build their parameters from the shapes they see."""
        with torch.no_grad():
            for n, loss in zip(self.names, self.losses):
                missing = [k for k in loss.requires if k not in outputs]
                if missing:
                    raise RecipeError(f"distill.losses: '{n}' reads {missing[0]}, which the detector does not give")
                if loss.learnable:
                    loss(outputs)

    def __call__(self, outputs: dict[str, torch.Tensor], weight: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, dict[str, float]]:
        """The weighted sum of the terms over a batch; `weight` [B]: each image's weight (None: all 1)."""
        total: Optional[torch.Tensor] = None
        parts: dict[str, float] = {}
        for spec, name, loss in zip(self.specs, self.names, self.losses):
            per_image = loss(outputs)
            value = per_image.mean() if weight is None else (per_image * weight.to(per_image.dtype)).sum() / weight.sum()
            parts[name] = float(value.detach())
            total = spec.weight * value if total is None else total + spec.weight * value
        assert total is not None
        return total, parts
