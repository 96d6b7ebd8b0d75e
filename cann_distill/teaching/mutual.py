"""Mutual learning (`distill.mode: mutual`): peers that train together, each distilling from the others.

Deep Mutual Learning (Zhang, Xiang, Hospedales & Lu, CVPR 2018): every peer i minimises the recipe's losses
(CE, and KD when a fixed teacher is in the loop) plus the `dml` term, the mean over the other peers j of
KL(p_j ‖ p_i), where p_j are peer j's outputs on the same batch, detached (a peer is a teacher of the others, never
pulled by them through its own targets). The paper alternates the peers' updates; here their losses are summed
and one optimizer steps all of them, which with detached targets gives each peer the same gradient as its own
update on that batch (the simultaneous form most implementations use). After training, every peer is evaluated on
val (and test) and the best on val (the first on a tie) is the exported student.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from cann_distill.data.loading import Splits
from cann_distill.runtime.devices import CPU, Runtime
from cann_distill.teaching.distiller import Distiller
from cann_distill.teaching.steps import DistillStep
from cann_distill.training.loop import Batch, accuracy, predict

PEERS_KEY = "peers.logits"  # [P - 1, B, C]: the other peers' logits on the batch, detached


class PeerModels(nn.Module):
    """What the optimizer trains: every peer's student with its connectors and loss-balance parameters."""

    def __init__(self, distillers: Sequence[Distiller]) -> None:
        super().__init__()
        self.peers = nn.ModuleList([d.model for d in distillers])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.peers[0](x)


class PeerStudents(nn.Module):
    """The peers' plain students: what fit averages (EMA) and evaluates per epoch (the first peer's logits)."""

    def __init__(self, distillers: Sequence[Distiller]) -> None:
        super().__init__()
        self.students = nn.ModuleList([d.student for d in distillers])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.students[0](x)


class MutualStep(DistillStep):
    """One batch for every peer: its outputs, the teacher's targets and labels, and the other peers' detached logits;
    the peers' losses summed. History keys: the first peer's terms as named, peer i's as `peer<i>.<term>`."""

    def __init__(self, distillers: Sequence[Distiller], sample_weight: torch.Tensor, unlabelled: bool = False) -> None:
        super().__init__(distillers[0], sample_weight, unlabelled)
        self.distillers = list(distillers)

    def __call__(self, model: nn.Module, batch: Batch, teacher: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        x, y, idx = batch
        outs = [d.student_outputs(x) for d in self.distillers]
        logits = torch.stack([o["student.logits"] for o in outs])
        shared: dict[str, torch.Tensor] = {**teacher, "targets": y}
        if self.unlabelled:
            shared["labelled"] = y >= 0
        if self.temperature is not None:
            shared["temperature"] = self.temperature[idx]
        total: Any = 0.0
        parts: dict[str, float] = {}
        for i, (d, out) in enumerate(zip(self.distillers, outs)):
            others = torch.cat([logits[:i], logits[i + 1 :]]).detach()
            loss, own = d.loss({**out, **shared, PEERS_KEY: others}, self.sample_weight[idx])
            total = total + loss
            parts.update({(k if i == 0 else f"peer{i}.{k}"): v for k, v in own.items()})
        return total, parts


def evaluate_peers(
    distillers: Sequence[Distiller], archs: Sequence[str], splits: Splits, runtime: Runtime = CPU
) -> tuple[int, list[dict[str, Any]]]:
    """(the peer best on val, the first on a tie; each peer's arch, size and val / test accuracy)."""
    rows = []
    for i, (d, arch) in enumerate(zip(distillers, archs)):
        row: dict[str, Any] = {"index": i, "arch": arch, "params": sum(p.numel() for p in d.student.parameters())}
        for split in (s for s in (splits.val, splits.test) if s is not None):
            row[f"{split.name}_acc"] = accuracy(predict(d.student, split, desc=f"peer {i} {split.name}", runtime=runtime), split.targets)
        rows.append(row)
    best = int(np.argmax([row["val_acc"] for row in rows]))  # numpy's argmax: the first maximum
    for row in rows:
        row["exported"] = row["index"] == best
    return best, rows
