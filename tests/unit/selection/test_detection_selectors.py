"""Detection selectors on hand-made boxes: small-object density and teacher–student box disagreement."""

from __future__ import annotations

import numpy as np
import pytest

from cann_distill.selection.detection import (
    DETECTION_SELECTORS,
    Boxes,
    DetectionEvidence,
    agreement,
    box_iou,
    dominant_classes,
)

EMPTY = Boxes.of([], [])


def test_small_objects_counts_boxes_under_the_area_with_half_their_share_as_tie_break() -> None:
    truth = [
        Boxes.of([[0, 0, 10, 10], [0, 0, 40, 40]], [0, 1]),  # one small (100 px²) of two
        Boxes.of([[0, 0, 31, 31], [5, 5, 20, 20]], [0, 0]),  # two small of two (961, 225 px²)
        Boxes.of([[0, 0, 32, 32]], [2]),  # 1024 px²: not under 32²
        EMPTY,
    ]
    evidence = DetectionEvidence(64, truth)
    counted = DETECTION_SELECTORS.build("small_objects").score(evidence)
    np.testing.assert_allclose(counted, [1 + 0.5 / 2, 2 + 1.0 / 2, 0.0, 0.0])
    shares = DETECTION_SELECTORS.build("small_objects", by="fraction").score(evidence)
    np.testing.assert_allclose(shares, [0.5, 1.0, 0.0, 0.0])
    bigger = DETECTION_SELECTORS.build("small_objects", area_below=2000.0).score(evidence)
    assert bigger[0] == pytest.approx(2.5) and bigger[2] == pytest.approx(1.5)  # 1600 and 1024 px² are small under 2000


@pytest.mark.parametrize(("kwargs", "message"), [({"area_below": 0.0}, "area_below must be > 0"), ({"by": "share"}, "by must be")])
def test_small_objects_refuses_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DETECTION_SELECTORS.build("small_objects", **kwargs)


def test_box_iou_and_class_aware_agreement_on_hand_made_boxes() -> None:
    a = np.array([[0.0, 0, 10, 10]])
    b = np.array([[5.0, 0, 15, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(box_iou(a, b), [[50 / 150, 0.0]])
    same = Boxes.of([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 2])
    assert agreement(same, same) == pytest.approx(1.0)
    assert agreement(EMPTY, EMPTY) == 1.0 and agreement(same, EMPTY) == 0.0 and agreement(EMPTY, same) == 0.0
    other_class = Boxes.of([[0, 0, 10, 10], [20, 20, 30, 30]], [2, 1])
    assert agreement(same, other_class) == 0.0  # the same places, the other classes: no agreement
    shifted = Boxes.of([[5, 0, 15, 10]], [1])
    # same's two boxes: 1/3 (the shifted one) and 0 (nothing of class 2); shifted's one box: 1/3
    assert agreement(same, shifted) == pytest.approx((1 / 3 + 0 + 1 / 3) / 3)
    assert agreement(same, shifted) == pytest.approx(agreement(shifted, same))


def test_box_disagreement_scores_one_minus_agreement_above_the_score_threshold() -> None:
    teacher = [
        Boxes.of([[0, 0, 10, 10]], [0], [0.9]),
        Boxes.of([[0, 0, 10, 10]], [0], [0.9]),
        Boxes.of([[0, 0, 10, 10]], [0], [0.9]),
        Boxes.of([], [], []),
    ]
    student = [
        Boxes.of([[0, 0, 10, 10]], [0], [0.8]),  # the same box: agree
        Boxes.of([[0, 0, 10, 10]], [0], [0.1]),  # the same box, under the threshold: as if absent
        Boxes.of([[0, 0, 10, 10], [30, 30, 40, 40]], [0, 3], [0.8, 0.6]),  # one box more (a false alarm)
        Boxes.of([], [], []),  # both find nothing: agree
    ]
    evidence = DetectionEvidence(64, [EMPTY] * 4, teacher, student)
    scores = DETECTION_SELECTORS.build("box_disagreement", score_threshold=0.3).score(evidence)
    np.testing.assert_allclose(scores, [0.0, 1.0, 1 - 2 / 3, 0.0])
    with pytest.raises(ValueError, match="needs the teacher's and the student probe's detections"):
        DETECTION_SELECTORS.build("box_disagreement").score(DetectionEvidence(64, [EMPTY]))
    selector = DETECTION_SELECTORS.get("box_disagreement")
    assert selector.needs_teacher and selector.needs_student and selector.min_probe_epochs == 1


def test_an_image_counts_for_the_class_with_most_boxes_and_an_empty_one_for_none() -> None:
    truth = [Boxes.of([[0, 0, 1, 1]] * 3, [2, 1, 1]), Boxes.of([[0, 0, 1, 1]] * 2, [3, 0]), EMPTY]
    assert dominant_classes(truth, 4).tolist() == [1, 0, -1]
