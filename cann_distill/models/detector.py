"""A dense one-stage detector from library parts: a timm backbone (`features_only`, the levels named by their
stride), torchvision's FeaturePyramidNetwork and torchvision's FCOS head (Tian et al., ICCV 2019).

Written here: only the glue — which backbone levels feed the pyramid, the location grid, FCOS's target
assignment (scale ranges and centre sampling) and the decoding of distances into boxes. Box ops and NMS are
torchvision's (`torchvision.ops`); the losses are in `cann_distill.teaching.losses.detection`.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from cann_distill.core.errors import ArtifactError, StageError
from cann_distill.core.recipe_detect import DetectConfig
from cann_distill.core.registry import suggest
from cann_distill.models.build import count_params, load_weights, read_checkpoint, save_checkpoint

FORMAT = "cann-distill detector 1"


def backbone_levels(arch: str, strides: Sequence[int], pretrained: bool = False) -> nn.Module:
    """timm's `features_only` model returning the feature maps of the given strides, finest first."""
    import timm

    from cann_distill.core.recipe import timm_archs

    if arch not in timm_archs():
        raise StageError(f"unknown timm architecture '{arch}'{suggest(arch, sorted(timm_archs()))}")
    try:
        probe = timm.create_model(arch, features_only=True)
    except Exception as exc:  # timm raises RuntimeError / AssertionError for models without a feature API
        raise StageError(f"{arch}: timm cannot build it with features_only ({str(exc).splitlines()[0][:120]})") from None
    info: Any = probe.feature_info
    reductions = list(info.reduction())
    missing = [s for s in strides if s not in reductions]
    if missing:
        raise StageError(f"{arch}: no feature map of stride {missing[0]} (its strides: {reductions}); set detect.strides to some of these")
    out = tuple(max(i for i, r in enumerate(reductions) if r == s) for s in strides)  # the deepest map of each stride
    try:
        return timm.create_model(arch, features_only=True, out_indices=out, pretrained=pretrained)
    except Exception as exc:  # network / hub failures for pretrained=True
        raise StageError(f"could not create '{arch}' (pretrained={pretrained}): {str(exc).splitlines()[0][:200]}") from None


class Detector(nn.Module):
    """Backbone -> pyramid -> FCOS head. `forward` gives what the losses read (see `DetectorOutputs`)."""

    def __init__(self, arch: str, num_classes: int, cfg: DetectConfig, pretrained: bool = False) -> None:
        super().__init__()
        from torchvision.models.detection.fcos import FCOSHead
        from torchvision.ops import FeaturePyramidNetwork

        self.arch, self.num_classes, self.strides = arch, num_classes, list(cfg.strides)
        self.backbone = backbone_levels(arch, cfg.strides, pretrained)
        info: Any = self.backbone.feature_info
        self.fpn = FeaturePyramidNetwork(list(info.channels()), cfg.fpn_channels)
        self.head = FCOSHead(cfg.fpn_channels, num_anchors=1, num_classes=num_classes, num_convs=cfg.head_convs)

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.backbone(x)
        return list(self.fpn(OrderedDict((str(i), f) for i, f in enumerate(feats))).values())

    def forward(self, x: torch.Tensor) -> dict[str, Any]:
        """{"fpn": [B, C, H_l, W_l] per level, "cls": [B, N, K] logits, "reg": [B, N, 4] distances (l, t, r, b) in input
        pixels, "ctr": [B, N] centre-ness logits}; N runs over the levels, row-major within each (`locations`)."""
        fpn = self.pyramid(x)
        cls = self.head.classification_head(fpn)
        reg, ctr = self.head.regression_head(fpn)
        scale = torch.cat([torch.full((f.shape[-2] * f.shape[-1],), float(s), device=x.device) for f, s in zip(fpn, self.strides)])
        return {"fpn": fpn, "cls": cls, "reg": reg * scale[None, :, None], "ctr": ctr.squeeze(-1)}


def locations(shapes: Sequence[tuple[int, int]], strides: Sequence[int], device: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres [N, 2] (x, y) of every location of every level, in input pixels, and each one's stride [N]."""
    points, per = [], []
    for (h, w), s in zip(shapes, strides):
        ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        points.append(torch.stack([(xs.reshape(-1) + 0.5) * s, (ys.reshape(-1) + 0.5) * s], dim=1).float())
        per.append(torch.full((h * w,), float(s), device=device))
    return torch.cat(points), torch.cat(per)


def scale_ranges(strides: Sequence[int], factor: float) -> list[tuple[float, float]]:
    """(low, high] of the largest centre-to-side distance each level learns: high = factor * stride, low the previous
    level's high; 0 below the first level, infinity above the last (FCOS: factor 8 gives 64, 128, 256, ...)."""
    highs = [factor * s for s in strides]
    return [(0.0 if i == 0 else highs[i - 1], math.inf if i == len(strides) - 1 else highs[i]) for i in range(len(strides))]


@dataclass
class Targets:
    """Per-location training targets: class index or -1 (background) [B, N], and the assigned box [B, N, 4]."""

    labels: torch.Tensor
    boxes: torch.Tensor


def assign(
    points: torch.Tensor,
    strides: torch.Tensor,
    ranges: Sequence[tuple[float, float]],
    boxes: torch.Tensor,
    labels: torch.Tensor,
    radius: float = 1.5,
) -> Targets:
    """FCOS assignment: a location is positive for a box when it lies inside it, within `radius` strides of its centre,
    and the box's largest distance from it is in its level's range; among several, the smallest box wins.

    `boxes` [B, M, 4] (x1, y1, x2, y2) and `labels` [B, M] (-1: padding) are in input pixels, as are `points` [N, 2].
    """
    level_strides = sorted(set(strides.tolist()))
    lo = torch.zeros_like(strides)
    hi = torch.zeros_like(strides)
    for s, (a, b) in zip(level_strides, ranges):
        lo[strides == s], hi[strides == s] = a, b
    px, py = points[None, :, None, 0], points[None, :, None, 1]  # [1, N, 1]
    x1, y1, x2, y2 = (boxes[:, None, :, i] for i in range(4))  # [B, 1, M]
    ltrb = torch.stack([px - x1, py - y1, x2 - px, y2 - py], dim=-1)  # [B, N, M, 4]
    inside = ltrb.min(dim=-1).values > 0
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    rad = (radius * strides)[None, :, None]
    near = ((px - cx).abs() < rad) & ((py - cy).abs() < rad)
    reach = ltrb.max(dim=-1).values
    in_range = (reach > lo[None, :, None]) & (reach <= hi[None, :, None])
    ok = inside & near & in_range & (labels[:, None, :] >= 0)
    area = ((x2 - x1) * (y2 - y1)).expand_as(ok)
    area = torch.where(ok, area, torch.full_like(area, math.inf))
    best, idx = area.min(dim=-1)  # [B, N]
    positive = torch.isfinite(best)
    picked_labels = torch.gather(labels, 1, idx)
    picked_boxes = torch.gather(boxes, 1, idx[..., None].expand(-1, -1, 4))
    return Targets(torch.where(positive, picked_labels, torch.full_like(picked_labels, -1)), picked_boxes)


def decode(points: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """Distances (l, t, r, b) [..., N, 4] from `points` [N, 2] -> boxes (x1, y1, x2, y2)."""
    return torch.cat([points - reg[..., :2], points + reg[..., 2:]], dim=-1)


@torch.no_grad()
def detections(out: dict[str, Any], cfg: DetectConfig, image_size: int, candidates: int = 1000) -> list[dict[str, torch.Tensor]]:
    """Per image {"boxes" [D, 4] in input pixels, "scores" [D], "labels" [D]}: score sqrt(class * centre-ness) as
    torchvision's FCOS, the `candidates` best over `score_threshold`, clipped, class-wise NMS, `max_detections` kept.
    The level sizes come from `out["fpn"]`, or from `out["shapes"]` (an ONNX session's outputs have no pyramid)."""
    from torchvision.ops import batched_nms, clip_boxes_to_image

    shapes = out["shapes"] if "shapes" in out else [f.shape[-2:] for f in out["fpn"]]
    points, _ = locations(shapes, cfg.strides, out["cls"].device)
    boxes_all = decode(points, out["reg"].float())
    scores_all = torch.sqrt(torch.sigmoid(out["cls"].float()) * torch.sigmoid(out["ctr"].float())[..., None])
    k = out["cls"].shape[-1]
    result = []
    for scores, boxes in zip(scores_all, boxes_all):
        flat = scores.flatten()
        keep = torch.nonzero(flat > cfg.score_threshold).squeeze(1)
        keep = keep[flat[keep].topk(min(candidates, len(keep))).indices]
        loc, label = keep // k, keep % k
        b = clip_boxes_to_image(boxes[loc], (image_size, image_size))
        s = flat[keep]
        kept = batched_nms(b, s, label, cfg.nms_iou)[: cfg.max_detections]
        result.append({"boxes": b[kept], "scores": s[kept], "labels": label[kept]})
    return result


@torch.no_grad()
def output_bytes(model: nn.Module, image_size: int) -> dict[str, int]:
    """Bytes one image's outputs take as float32: the pyramid levels (what `fgd` reads) and the head's maps (class
    logits, box distances, centre-ness: what `pred_kd` reads), measured on one forward pass of a blank image. What a
    cache of the teacher's outputs would have to store per training image."""
    model.eval()
    out = model(torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device))
    fpn = sum(f[0].numel() for f in out["fpn"]) * 4
    head = sum(out[k][0].numel() for k in ("cls", "reg", "ctr")) * 4
    return {"fpn": int(fpn), "head": int(head), "total": int(fpn + head)}


def save_detector(path: Path, model: Detector, classes: list[str], category_ids: list[int], cfg: DetectConfig) -> None:
    save_checkpoint(
        path,
        model,
        model.arch,
        model.num_classes,
        3,
        format=FORMAT,
        classes=classes,
        category_ids=category_ids,
        strides=list(cfg.strides),
        fpn_channels=cfg.fpn_channels,
        head_convs=cfg.head_convs,
    )


def load_detector(path: Path, arch: str, num_classes: int, cfg: DetectConfig, category_ids: list[int], source: str) -> Detector:
    """A detector saved by `save_detector` for this arch, these categories and this pyramid; one line if not."""
    ckpt = read_checkpoint(path)
    meta = ckpt.get("meta") or {}
    if meta.get("format") != FORMAT:
        raise ArtifactError(f"{source}: not a cann-distill detector checkpoint (a classifier's, or another format)")
    if meta.get("category_ids") != list(category_ids):
        raise ArtifactError(f"{source}: checkpoint was trained on other categories ({meta.get('category_ids')} vs {list(category_ids)})")
    model = Detector(arch, num_classes, cfg)
    load_weights(model, ckpt, arch, source)
    return model


__all__ = [
    "Detector",
    "Targets",
    "assign",
    "count_params",
    "decode",
    "detections",
    "load_detector",
    "locations",
    "output_bytes",
    "save_detector",
    "scale_ranges",
]
