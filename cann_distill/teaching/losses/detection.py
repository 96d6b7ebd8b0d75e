"""Detection losses (`task: detect`): read named outputs of a dense detector and return a per-image loss [B].

Outputs they read (`cann_distill.training.detect` fills them for each batch):

- `student.fpn.<i>` / `teacher.fpn.<i>`: pyramid level i, [B, C, H_i, W_i] (the same C for both: `detect.fpn_channels`);
- `student.cls` / `teacher.cls`: class logits per location [B, N, K] (N runs over every level, row-major);
- `student.reg`: distances (l, t, r, b) [B, N, 4] in input pixels; `student.ctr`: centre-ness logits [B, N];
- `targets.labels` [B, N] (class, -1 background) and `targets.boxes` [B, N, 4] (x1, y1, x2, y2 in input pixels):
  FCOS's assignment of the ground truth to locations; `locations` [N, 2]: each location's centre (x, y);
- `gt.boxes` [B, M, 4]: the ground-truth boxes (x1, y1, x2, y2) as fractions of the image's width and height,
  `gt.labels` [B, M] (-1: padding).

They sit in their own registry, `DETECTION_LOSSES` (a classification loss reads logits [B, C], these read maps and
boxes): `distill.losses[].kind` names one of them when `task: detect`.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from cann_distill.core import registries
from cann_distill.core.registry import Registry
from cann_distill.teaching.losses.base import Loss, Outputs

DETECTION_LOSSES: Registry[type["DetectionLoss"]] = registries.DETECTION_LOSSES


class DetectionLoss(Loss):
    """A detection loss term (see the module doc for the outputs it may read)."""

    learnable: bool = False
    """True when the loss has parameters of its own (`net`), built on its first call from the shapes it sees: the
    stage calls it once on a sample batch, then trains `net` together with the student (FGD's global blocks)."""

    net: Optional[nn.Module] = None


def _positive(name: str, value: float) -> float:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def _non_negative(name: str, value: float) -> float:
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


# ----------------------------------------------------------------------------- ground truth


@DETECTION_LOSSES.register("det")
class FCOSLoss(DetectionLoss):
    """The detector's own loss against the ground truth: Tian et al., "FCOS: Fully Convolutional One-Stage Object
    Detection" (ICCV 2019), as torchvision's FCOS computes it: sigmoid focal loss over every location and class
    (Lin et al., ICCV 2017), GIoU loss of the positive locations' boxes (Rezatofighi et al., CVPR 2019) and
    centre-ness BCE at the positives, each divided by the batch's number of positives. Per image: its sums times
    B / positives, so the batch mean is FCOS's loss."""

    requires = ("student.cls", "student.reg", "student.ctr", "targets.labels", "targets.boxes", "locations")

    def __init__(self, focal_alpha: float = 0.25, focal_gamma: float = 2.0, box_weight: float = 1.0, ctr_weight: float = 1.0) -> None:
        if not 0 <= focal_alpha <= 1:
            raise ValueError(f"focal_alpha must be in [0, 1], got {focal_alpha}")
        self.alpha, self.gamma = focal_alpha, _non_negative("focal_gamma", focal_gamma)
        self.box_weight, self.ctr_weight = _non_negative("box_weight", box_weight), _non_negative("ctr_weight", ctr_weight)

    def __call__(self, outputs: Outputs) -> torch.Tensor:
        from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

        cls, reg, ctr = outputs["student.cls"], outputs["student.reg"], outputs["student.ctr"]
        labels, boxes, points = outputs["targets.labels"], outputs["targets.boxes"].to(reg.dtype), outputs["locations"].to(reg.dtype)
        b, n, k = cls.shape
        pos = labels >= 0
        onehot = F.one_hot(labels.clamp_min(0), k).to(cls.dtype) * pos[..., None]
        cls_loss = sigmoid_focal_loss(cls, onehot, alpha=self.alpha, gamma=self.gamma, reduction="none").sum(dim=(1, 2))
        pts = points[None].expand(b, n, 2)
        pred = torch.cat([pts - reg[..., :2], pts + reg[..., 2:]], dim=-1)
        giou = torch.zeros_like(cls_loss)
        ctr_loss = torch.zeros_like(cls_loss)
        if pos.any():
            per_pos = generalized_box_iou_loss(pred[pos], boxes[pos], reduction="none")
            giou = giou.index_add(0, pos.nonzero()[:, 0], per_pos)
            ltrb = torch.cat([pts[pos] - boxes[pos][:, :2], boxes[pos][:, 2:] - pts[pos]], dim=-1).clamp_min(1e-6)
            lr, tb = ltrb[:, [0, 2]], ltrb[:, [1, 3]]
            target = torch.sqrt((lr.min(-1).values / lr.max(-1).values) * (tb.min(-1).values / tb.max(-1).values))
            per_ctr = F.binary_cross_entropy_with_logits(ctr[pos], target, reduction="none")
            ctr_loss = ctr_loss.index_add(0, pos.nonzero()[:, 0], per_ctr)
        positives = pos.sum().clamp_min(1).to(cls.dtype)
        return (cls_loss + self.box_weight * giou + self.ctr_weight * ctr_loss) * (b / positives)


# ----------------------------------------------------------------------------- prediction mimicking


@DETECTION_LOSSES.register("pred_kd")
class PredictionKD(DetectionLoss):
    """Prediction mimicking on the classification maps: Hinton et al.'s KD ("Distilling the Knowledge in a Neural
    Network", 2015) per location and class, in the Bernoulli form a sigmoid head needs (as in Chen et al., "Learning
    Efficient Object Detection Models with Knowledge Distillation", NeurIPS 2017, for the classification output):
    T^2 * KL(Bern(sigmoid(t / T)) || Bern(sigmoid(s / T))) summed over the classes, averaged over the locations."""

    requires = ("student.cls", "teacher.cls")

    def __init__(self, temperature: float = 1.0) -> None:
        self.tau = _positive("temperature", temperature)

    def __call__(self, outputs: Outputs) -> torch.Tensor:
        s, t = outputs["student.cls"], outputs["teacher.cls"].to(outputs["student.cls"].dtype)
        if s.shape != t.shape:
            raise ValueError(f"'student.cls' {tuple(s.shape)} and 'teacher.cls' {tuple(t.shape)} must have the same shape")
        T = self.tau
        p = torch.sigmoid(t / T)
        cross = F.binary_cross_entropy_with_logits(s / T, p, reduction="none")
        entropy = F.binary_cross_entropy_with_logits(t / T, p, reduction="none")
        return (cross - entropy).sum(-1).mean(-1) * T * T


# ----------------------------------------------------------------------------- FGD


def fgd_masks(boxes: torch.Tensor, labels: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """FGD's foreground and background masks [B, H, W] on an H x W map from boxes as fractions of the image [B, M, 4].

    A box covers the cells from floor(x1 * W) to ceil(x2 * W) (rows likewise), both ends included, as FGD's code
    does; each covered cell gets 1 / (the box's cell count), the largest where boxes overlap (small objects weigh as
    much as large ones). The background mask is 1 / (number of uncovered cells) outside every box, 0 inside.
    """
    rows = torch.arange(h, device=boxes.device)[None, None, :, None]
    cols = torch.arange(w, device=boxes.device)[None, None, None, :]
    x1, y1 = torch.floor(boxes[..., 0] * w), torch.floor(boxes[..., 1] * h)
    x2, y2 = torch.ceil(boxes[..., 2] * w), torch.ceil(boxes[..., 3] * h)
    area = 1.0 / ((y2 + 1 - y1) * (x2 + 1 - x1))  # [B, M]
    inside = (rows >= y1[..., None, None]) & (rows <= y2[..., None, None]) & (cols >= x1[..., None, None]) & (cols <= x2[..., None, None])
    inside &= (labels >= 0)[..., None, None]
    fg = torch.where(inside, area[..., None, None], torch.zeros((), device=boxes.device)).amax(dim=1) if boxes.shape[1] else None
    if fg is None:
        fg = torch.zeros(boxes.shape[0], h, w, device=boxes.device)
    bg = (fg == 0).to(fg.dtype)
    bg = bg / bg.sum(dim=(1, 2), keepdim=True).clamp_min(1)
    return fg, bg


def fgd_attention(f: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """FGD's spatial attention [B, H, W] (H*W * softmax over positions of the channel-mean |f| / T) and channel
    attention [B, C] (C * softmax over channels of the position-mean |f| / T)."""
    b, c, h, w = f.shape
    a = f.abs()
    spatial = h * w * F.softmax((a.mean(dim=1) / temperature).reshape(b, -1), dim=1).reshape(b, h, w)
    channel = c * F.softmax(a.mean(dim=(2, 3)) / temperature, dim=1)
    return spatial, channel


class GlobalBlock(nn.Module):
    """GcBlock (Cao et al., "GCNet", 2019) as FGD uses it: attention-pooled context through a bottleneck, added to
    every position. The last conv starts at zero, so the block starts as the identity (FGD's initialisation)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mask = nn.Conv2d(channels, 1, kernel_size=1, bias=False)  # a bias would only shift the softmax
        nn.init.kaiming_normal_(self.mask.weight, mode="fan_in", nonlinearity="relu")
        last = nn.Conv2d(channels // 2, channels, kernel_size=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)  # type: ignore[arg-type]
        self.add = nn.Sequential(
            nn.Conv2d(channels, channels // 2, kernel_size=1),
            nn.LayerNorm([channels // 2, 1, 1]),
            nn.ReLU(inplace=True),
            last,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        weights = F.softmax(self.mask(x).reshape(b, 1, h * w), dim=2)  # [B, 1, HW]
        context = torch.bmm(x.reshape(b, c, h * w), weights.transpose(1, 2)).reshape(b, c, 1, 1)
        return x + self.add(context)


@DETECTION_LOSSES.register("fgd")
class FGD(DetectionLoss):
    """Yang et al., "Focal and Global Knowledge Distillation for Detectors" (CVPR 2022), on each pyramid level.

    Focal: the squared difference of student and teacher maps, weighted by the teacher's spatial and channel
    attention and split by the ground-truth masks (`fgd_masks`) into a foreground term (alpha) and a background
    term (beta); an attention term (gamma) makes the student's attention follow the teacher's (L1). Global: a
    GcBlock on each side (`GlobalBlock`, trained with the student) and the squared difference of their outputs
    (lambda_). Sums per image, as FGD's code (which divides the batch's sum by the batch size); the default weights and
    temperature are FGD's FCOS setting. `levels`: the first `levels` pyramid levels, each with its own blocks.
    """

    learnable = True

    def __init__(
        self,
        alpha: float = 0.0016,
        beta: float = 0.0008,
        gamma: float = 0.0008,
        lambda_: float = 0.000008,
        temperature: float = 0.8,
        levels: int = 3,
    ) -> None:
        self.alpha, self.beta = _non_negative("alpha", alpha), _non_negative("beta", beta)
        self.gamma, self.lambda_ = _non_negative("gamma", gamma), _non_negative("lambda_", lambda_)
        self.tau = _positive("temperature", temperature)
        if not isinstance(levels, int) or isinstance(levels, bool) or not 1 <= levels <= 8:
            raise ValueError(f"levels must be an integer in [1, 8], got {levels!r}")
        self.levels = levels
        self.requires = (
            *(f"student.fpn.{i}" for i in range(levels)),
            *(f"teacher.fpn.{i}" for i in range(levels)),
            "gt.boxes",
            "gt.labels",
        )
        self.blocks = nn.ModuleDict()
        self.net = self.blocks

    def _blocks(self, level: int, channels: int, device: torch.device) -> nn.ModuleDict:
        key = str(level)
        if key not in self.blocks:
            self.blocks[key] = nn.ModuleDict({"student": GlobalBlock(channels), "teacher": GlobalBlock(channels)}).to(device)
        found = self.blocks[key]
        assert isinstance(found, nn.ModuleDict)
        return found

    def level(
        self, s: torch.Tensor, t: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, blocks: Optional[nn.ModuleDict]
    ) -> torch.Tensor:
        """The loss [B] of one level (blocks None: the global term is left out)."""
        if s.shape != t.shape:
            raise ValueError(f"fgd: student map {tuple(s.shape)} and teacher map {tuple(t.shape)} must have the same shape")
        fg, bg = fgd_masks(boxes, labels, s.shape[2], s.shape[3])
        s_sp, s_ch = fgd_attention(s, self.tau)
        t_sp, t_ch = fgd_attention(t, self.tau)
        weighted = (s - t).pow(2) * t_sp[:, None] * t_ch[..., None, None]
        fg_loss = (weighted * fg[:, None]).sum(dim=(1, 2, 3))
        bg_loss = (weighted * bg[:, None]).sum(dim=(1, 2, 3))
        mask_loss = (s_ch - t_ch).abs().sum(1) + (s_sp - t_sp).abs().sum(dim=(1, 2))
        total = self.alpha * fg_loss + self.beta * bg_loss + self.gamma * mask_loss
        if blocks is not None:
            total = total + self.lambda_ * (blocks["student"](s) - blocks["teacher"](t)).pow(2).sum(dim=(1, 2, 3))
        return total

    def __call__(self, outputs: Outputs) -> torch.Tensor:
        boxes, labels = outputs["gt.boxes"], outputs["gt.labels"]
        total: Optional[torch.Tensor] = None
        for i in range(self.levels):
            s = outputs[f"student.fpn.{i}"]
            t = outputs[f"teacher.fpn.{i}"].to(s.dtype)
            part = self.level(s, t, boxes.to(s.dtype), labels, self._blocks(i, s.shape[1], s.device))
            total = part if total is None else total + part
        assert total is not None
        return total
