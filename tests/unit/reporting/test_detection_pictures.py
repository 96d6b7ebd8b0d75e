"""Which val images the detection report draws (hand-made boxes), and the figure drawn from them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from cann_distill.reporting import charts
from cann_distill.reporting.detection_pictures import ROLES, Picture, describe, disagreement, pick_images
from cann_distill.selection.detection import Boxes

SAME = Boxes.of([[0, 0, 10, 10]], [1], [0.9])
EMPTY = Boxes.of(np.zeros((0, 4)), [], [])


def shifted(dx: float, label: int = 1, score: float = 0.9) -> Boxes:
    return Boxes.of([[dx, 0, dx + 10, 10]], [label], [score])


def test_disagreement_is_one_minus_the_box_agreement_above_the_score() -> None:
    assert disagreement(SAME, SAME, 0.3) == 0.0
    assert disagreement(SAME, EMPTY, 0.3) == 1.0
    assert disagreement(SAME, shifted(0, label=2), 0.3) == 1.0  # same place, other class
    assert disagreement(SAME, shifted(5), 0.3) == pytest.approx(1 - 50 / 150)  # IoU 1/3 on both sides
    assert disagreement(SAME, shifted(0, score=0.2), 0.3) == 1.0  # the student's box is under the threshold


def test_half_by_disagreement_most_first_then_the_first_images() -> None:
    teacher = [SAME] * 8
    student = [SAME, shifted(5), SAME, EMPTY, shifted(2), SAME, EMPTY, SAME]  # 3 and 6 tie at 1.0
    worst, first = pick_images(teacher, student, k=6)
    assert worst == [3, 6, 1]  # disagreement 1.0, 1.0 (tie: lower index first), then 0.67
    assert first == [0, 2, 4]  # the first images not already picked
    assert pick_images(teacher, student, k=6) == (worst, first)  # deterministic


def test_images_in_agreement_are_never_picked_for_disagreement() -> None:
    worst, first = pick_images([SAME] * 5, [SAME, SAME, EMPTY, SAME, SAME], k=4)
    assert worst == [2] and first == [0, 1, 3]
    worst, first = pick_images([SAME] * 3, [SAME] * 3, k=6)  # fewer images than k: all of them
    assert worst == [] and first == [0, 1, 2]
    with pytest.raises(ValueError, match="detections for 2 and 1 images"):
        pick_images([SAME, SAME], [SAME])


def test_the_grid_has_a_row_per_model_below_the_truth_and_says_what_it_shows() -> None:
    rng = np.random.default_rng(0)
    pics = [
        Picture(i, 10 + i, (rng.random((64, 64, 3)) * 255).astype(np.uint8), SAME, {"teacher": SAME, "distill": shifted(3)}, 0.4, "first")
        for i in range(3)
    ]
    fig = charts.detection_grid(pics, ROLES, ["a", "b$x$"], 0.3, "val")
    assert len(fig.axes) == 3 * 3  # truth, teacher, distilled student; no baseline row without its detections
    assert [ax.get_ylabel() for ax in fig.axes[::3]] == ["ground truth", "teacher", "student (distilled)"]
    assert fig.axes[0].texts[0].get_text() == "b\\$x\\$"  # a class name from data is text, not mathtext
    png = charts.png_bytes(fig)
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG" and 500 <= im.width <= 1400 and 500 <= im.height <= 1000
    info = describe(pics, 0.3, 128, "detections.png")
    assert info["models"] == ["teacher", "distill"] and [p["image_id"] for p in info["images"]] == [10, 11, 12]
    assert info["images"][0]["boxes"] == {"teacher": 1, "distill": 1} and info["images"][0]["truth_boxes"] == 1
