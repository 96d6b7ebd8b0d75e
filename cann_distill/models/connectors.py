"""Connectors: map a student feature tap onto the teacher tap's shape so feature losses can compare them.

A connector is trained with the student (its parameters join the student's optimizer) and
dropped at export: the deployed student never contains it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Connector(nn.Module):
    """1x1 conv + BatchNorm2d from student to teacher channels, then bilinear resize to the teacher's H x W.

    FitNets' regressor in its common lightweight form. `size=None` is for vector taps [B, C]
    (pooled features), where the 1x1 conv is a linear map.
    """

    def __init__(self, in_channels: int, out_channels: int, size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            return self.bn(self.conv(x[:, :, None, None]))[:, :, 0, 0]
        y = self.bn(self.conv(x))
        if self.size is not None and tuple(y.shape[-2:]) != self.size:
            y = F.interpolate(y, size=self.size, mode="bilinear", align_corners=False)
        return y


def build_connector(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> nn.Module:
    """Connector for one tap pair, from per-sample shapes (C, H, W) or (C,); Identity when they match.

    Both shapes must have the same rank: a map (C, H, W) and a vector (C,) carry different
    kinds of information (where vs. what), and no 1x1 conv or resize can turn one into the
    other without inventing or discarding the spatial layout. Tap a pooled feature on both
    sides, or maps on both sides.
    """
    s, t = tuple(student_shape), tuple(teacher_shape)
    for role, shape in (("student", s), ("teacher", t)):
        if len(shape) not in (1, 3) or not all(isinstance(n, int) and n > 0 for n in shape):
            raise ValueError(f"{role} tap shape {shape}: expected positive (C, H, W) for a map or (C,) for a vector")
    if len(s) != len(t):
        raise ValueError(
            f"cannot connect student tap {s} to teacher tap {t}: one is a feature map (C, H, W) and the "
            "other a vector (C,); tap maps on both sides or pooled vectors on both sides"
        )
    if s == t:
        return nn.Identity()
    return Connector(s[0], t[0], size=(t[1], t[2]) if len(t) == 3 else None)
