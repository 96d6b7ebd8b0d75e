"""The detection report's pictures: teacher, distilled student (and baseline) detections on the same few val images.

Which images: the ones where teacher and distilled student disagree most (`selection.detection.agreement`, the box
matching `box_disagreement` scores with), half of them, then the first val images not already shown, so the figure
shows where they differ and what a typical image looks like. Deterministic: ties go to the lower index. The
detections are evaluation's own (`training.detect.predict_boxes`: the same decoding and NMS as the COCO metrics).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from cann_distill.core.recipe_detect import DetectConfig
from cann_distill.data.coco import DetectionDataset
from cann_distill.runtime.devices import CPU, Runtime
from cann_distill.selection.detection import Boxes, agreement
from cann_distill.training.detect import predict_boxes

SHOWN_IMAGES = 6
POOL = 128
"""The disagreement is measured on the first POOL val images: two forward passes each, not two more passes over a
COCO-sized val split."""
ROLES = (("teacher", "teacher"), ("distill", "student (distilled)"), ("baseline", "student (ground truth only)"))


@dataclass
class Picture:
    """One val image as the detectors saw it, its ground truth and each model's detections (all of them: the figure
    draws those scored at least its `min_score`)."""

    index: int  # position in the val split
    image_id: int
    pixels: np.ndarray  # uint8 [S, S, 3], the detector's input
    truth: Boxes
    found: dict[str, Boxes]  # role -> detections
    disagreement: float  # 1 - agreement of teacher and distilled student, at min_score
    picked: str  # "disagreement" or "first"


def disagreement(teacher: Boxes, student: Boxes, min_score: float) -> float:
    """1 − the class-aware IoU agreement of the two sets' boxes scored at least `min_score` (0: the same boxes)."""
    return 1.0 - agreement(teacher.above(min_score), student.above(min_score))


def pick_images(
    teacher: Sequence[Boxes], student: Sequence[Boxes], k: int = SHOWN_IMAGES, min_score: float = 0.3
) -> tuple[list[int], list[int]]:
    """(indices where teacher and student disagree most, most first; the first other indices): k in all, at most half
    of them by disagreement, and only images where they disagree at all (> 0). Ties go to the lower index."""
    if len(teacher) != len(student):
        raise ValueError(f"detections for {len(teacher)} and {len(student)} images")
    scores = np.array([disagreement(t, s, min_score) for t, s in zip(teacher, student)])
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    worst = [i for i in order if scores[i] > 0][: k // 2]
    first = [i for i in range(len(scores)) if i not in worst][: k - len(worst)]
    return worst, first


def _boxes(found: dict[str, np.ndarray]) -> Boxes:
    return Boxes.of(found["boxes"], found["labels"], found["scores"])


def gather(
    models: dict[str, Any],
    dataset: DetectionDataset,
    cfg: DetectConfig,
    batch_size: int,
    runtime: Runtime = CPU,
    k: int = SHOWN_IMAGES,
    pool: int = POOL,
    min_score: float = 0.3,
) -> list[Picture]:
    """The pictures: `models` has "teacher" and "distill" (torch detectors), optionally "baseline"; the teacher and the
    distilled student run on the first `pool` val images, the baseline only on the ones picked."""
    candidates = list(range(min(pool, len(dataset))))

    def run(role: str, indices: list[int]) -> list[Boxes]:
        found = predict_boxes(models[role], dataset, cfg, batch_size, f"report: {role} detections", runtime, indices=indices)
        return [_boxes(f) for f in found]

    teacher, student = run("teacher", candidates), run("distill", candidates)
    worst, first = pick_images(teacher, student, k, min_score)
    chosen = worst + first
    others = {role: run(role, chosen) for role in models if role not in ("teacher", "distill")}
    out = []
    for j, i in enumerate(chosen):
        found = {"teacher": teacher[i], "distill": student[i], **{role: boxes[j] for role, boxes in others.items()}}
        out.append(
            Picture(
                index=i,
                image_id=int(dataset.split.images[i].id),
                pixels=dataset.pixels(i),
                truth=Boxes.of(dataset.input_boxes(i).numpy(), dataset.split.images[i].labels),
                found=found,
                disagreement=disagreement(teacher[i], student[i], min_score),
                picked="disagreement" if i in worst else "first",
            )
        )
    return out


def describe(pictures: Sequence[Picture], min_score: float, pool: int, file: Optional[str]) -> dict[str, Any]:
    """report.json's `pictures`: what the figure shows, per image its id, why it was picked and the boxes drawn."""
    return {
        "file": file,
        "split": "val",
        "min_score": min_score,
        "pool": pool,
        "rule": "half of the images where teacher and distilled student disagree most (1 - class-aware IoU agreement "
        f"of their boxes scored >= {min_score}, among the first {pool} val images), then the first val images",
        "models": [role for role, _ in ROLES if pictures and role in pictures[0].found],
        "images": [
            {
                "index": p.index,
                "image_id": p.image_id,
                "picked": p.picked,
                "disagreement": round(p.disagreement, 4),
                "truth_boxes": len(p.truth.boxes),
                "boxes": {role: int((b.scores >= min_score).sum()) for role, b in p.found.items()},
            }
            for p in pictures
        ],
    }
