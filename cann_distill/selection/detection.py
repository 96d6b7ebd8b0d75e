"""Critical-image scores for `task: detect` (docs/guides/detection.md): one float per training image, higher = more
critical, from its ground-truth boxes and, when a selector declares it, the teacher's and a student probe's detections.

The selectors sit in their own registry, `DETECTION_SELECTORS` (a classification selector reads logits [N, C], these
read boxes): `select.strategy` names one of them when `task: detect`. Which images are kept is the selection policy's
job (`cann_distill.selection.policy`), as for classification.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from numpy.typing import ArrayLike

from cann_distill.core import registries
from cann_distill.core.registry import Registry


@dataclass(frozen=True)
class Boxes:
    """One image's detections (or ground truth): boxes [D, 4] x1 y1 x2 y2 in input pixels, class indices [D], scores [D]
    (1 for ground truth)."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray

    @classmethod
    def of(cls, boxes: ArrayLike, labels: ArrayLike, scores: Optional[ArrayLike] = None) -> "Boxes":
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        s = np.ones(len(b)) if scores is None else np.asarray(scores, dtype=np.float64)
        return cls(b, np.asarray(labels, dtype=np.int64).reshape(-1), s)

    def above(self, threshold: float) -> "Boxes":
        keep = self.scores >= threshold
        return Boxes(self.boxes[keep], self.labels[keep], self.scores[keep])


@dataclass
class DetectionEvidence:
    """What the select stage gathered for the selector: the ground truth of every training image (in the detector's
    input pixels, after the resize to `image_size`) and, when declared, the teacher's and the probe's detections."""

    image_size: int
    truth: list[Boxes]
    teacher: Optional[list[Boxes]] = None
    student: Optional[list[Boxes]] = None


class DetectionSelector:
    """Scores every training image of a detection set; declares what it reads beyond the ground truth.

    `needs_teacher`: the teacher's detections on every training image; `needs_student`: a student probe's (the
    recipe's student trained `select.probe_epochs` epochs on the boxes alone, as classification's probe is on the
    labels), both post-NMS as evaluation makes them.
    """

    name: str = ""
    needs_teacher: bool = False
    needs_student: bool = False
    min_probe_epochs: int = 0
    default_probe_epochs: int = 0

    def score(self, evidence: DetectionEvidence) -> np.ndarray:
        """Criticality per image, shape [N]; higher means more critical."""
        raise NotImplementedError


DETECTION_SELECTORS: Registry[type[DetectionSelector]] = registries.DETECTION_SELECTORS


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of `a` [A, 4] with every box of `b` [B, 4] (x1 y1 x2 y2): [A, B]."""
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clip(0).prod(axis=2)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def agreement(a: Boxes, b: Boxes) -> float:
    """Mean, over the boxes of both sets, of each box's best IoU with a box of the same class in the other set.

    1 when both sets hold the same boxes (or both are empty: they agree there is nothing), 0 when one is empty and
    the other is not, or when no box overlaps a box of its class. Symmetric: a box only one side found counts 0 on
    its side, whichever side that is (a miss and a false alarm weigh the same).
    """
    if len(a.boxes) == 0 and len(b.boxes) == 0:
        return 1.0
    if len(a.boxes) == 0 or len(b.boxes) == 0:
        return 0.0
    iou = box_iou(a.boxes, b.boxes) * (a.labels[:, None] == b.labels[None, :])
    best = np.concatenate([iou.max(axis=1), iou.max(axis=0)])
    return float(best.mean())


def _areas(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)


@DETECTION_SELECTORS.register("small_objects")
class SmallObjects(DetectionSelector):
    """score = the image's number of ground-truth boxes smaller than `area_below` (in the detector's input pixels,
    after the resize to detect.data.image_size; default 32² as COCO's "small") plus half their share of its boxes
    (a tie-break below 1 that never crosses an integer); `by: fraction`: the share alone. Label-based: no teacher
    pass, no probe. Small objects are what a small student loses first (COCO's AP_small is the lowest AP of every
    detector), so images dense in them have the most to learn from the teacher."""

    def __init__(self, area_below: float = 1024.0, by: str = "count") -> None:
        if not area_below > 0:
            raise ValueError(f"area_below must be > 0, got {area_below}")
        if by not in ("count", "fraction"):
            raise ValueError(f"by must be 'count' or 'fraction', got {by!r}")
        self.area_below, self.by = float(area_below), by

    def score(self, evidence: DetectionEvidence) -> np.ndarray:
        out = np.zeros(len(evidence.truth))
        for i, truth in enumerate(evidence.truth):
            if len(truth.boxes) == 0:
                continue
            small = float((_areas(truth.boxes) < self.area_below).sum())
            share = small / len(truth.boxes)
            out[i] = share if self.by == "fraction" else small + share / 2
        return out


@DETECTION_SELECTORS.register("box_disagreement")
class BoxDisagreement(DetectionSelector):
    """score = 1 − `agreement` of the teacher's and a student probe's detections scored at least `score_threshold`:
    per box of either side, its best IoU with a same-class box of the other side, averaged (0: they find the same
    boxes; 1: nothing in common). The detection form of classification's `disagreement`: the images where the
    student still detects differently from the teacher are the ones distillation has left to teach. The probe is the
    recipe's student trained `select.probe_epochs` epochs (default 2) on the boxes: at initialisation FCOS's class
    prior keeps every score under any useful threshold, so an untrained student would disagree wherever the teacher
    finds anything."""

    needs_teacher = True
    needs_student = True
    min_probe_epochs = 1
    default_probe_epochs = 2

    def __init__(self, score_threshold: float = 0.3) -> None:
        if not 0 <= score_threshold < 1:
            raise ValueError(f"score_threshold must be in [0, 1), got {score_threshold}")
        self.threshold = float(score_threshold)

    def score(self, evidence: DetectionEvidence) -> np.ndarray:
        teacher, student = evidence.teacher, evidence.student
        if teacher is None or student is None:
            raise ValueError("selector 'box_disagreement' needs the teacher's and the student probe's detections, got None")
        if len(teacher) != len(evidence.truth) or len(student) != len(evidence.truth):
            raise ValueError(f"selector 'box_disagreement': detections for {len(teacher)} / {len(student)} of {len(evidence.truth)} images")
        return np.array([1.0 - agreement(t.above(self.threshold), s.above(self.threshold)) for t, s in zip(teacher, student)])


def dominant_classes(truth: Sequence[Boxes], n_classes: int) -> np.ndarray:
    """The class each image counts for in select's per-class quotas: the one with most boxes in it (ties: the lower
    index), -1 for an image without boxes (no class: a class-balanced policy never picks it)."""
    out = np.full(len(truth), -1, dtype=np.int64)
    for i, t in enumerate(truth):
        if len(t.labels):
            out[i] = int(np.bincount(t.labels, minlength=n_classes).argmax())
    return out


__all__ = [
    "DETECTION_SELECTORS",
    "Boxes",
    "DetectionEvidence",
    "DetectionSelector",
    "agreement",
    "box_iou",
    "dominant_classes",
]
