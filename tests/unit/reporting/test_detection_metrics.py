"""COCO box metrics through pycocotools on hand-made ground truth: values that follow from COCO's definitions."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("pycocotools", reason="task: detect's metrics need pycocotools (the detect and test extras)")

from cann_distill.reporting.detection_metrics import coco_metrics, percent  # noqa: E402


def gt(boxes: list[list[float]], crowd: tuple[int, ...] = (), size: int = 200) -> dict[str, Any]:
    anns = [
        {"id": i + 1, "image_id": 1, "category_id": 1, "bbox": b, "area": b[2] * b[3], "iscrowd": int(i in crowd)}
        for i, b in enumerate(boxes)
    ]
    return {"images": [{"id": 1, "width": size, "height": size}], "annotations": anns, "categories": [{"id": 1, "name": "a"}]}


def det(box: list[float], score: float = 0.9) -> dict[str, Any]:
    return {"image_id": 1, "category_id": 1, "bbox": box, "score": score}


def test_perfect_detections_score_one_and_sizes_without_ground_truth_are_none() -> None:
    m = coco_metrics(gt([[10, 10, 20, 20]]), [det([10, 10, 20, 20])])  # area 400: small
    assert m["mAP"] == pytest.approx(1.0) and m["AP50"] == pytest.approx(1.0) and m["AP_small"] == pytest.approx(1.0)
    assert m["AP_medium"] is None and m["AP_large"] is None and m["AR100"] == pytest.approx(1.0)


def test_one_box_at_iou_0_62_counts_at_three_of_ten_thresholds() -> None:
    # a 100x100 box and one shifted right by 23.5: IoU = 76.5 / 123.5 = 0.619 -> true positive at .50, .55, .60 only
    m = coco_metrics(gt([[0, 0, 100, 100]]), [det([23.5, 0, 100, 100])])
    assert m["AP50"] == pytest.approx(1.0) and m["AP75"] == pytest.approx(0.0)
    assert m["mAP"] == pytest.approx(0.3)
    assert m["AP_medium"] is None and m["AP_large"] == pytest.approx(0.3)  # area 10,000 > 96^2


def test_a_detection_on_a_crowd_region_is_no_false_positive() -> None:
    truth = gt([[0, 0, 40, 40], [100, 100, 80, 80]], crowd=(1,))
    alone = coco_metrics(truth, [det([0, 0, 40, 40], 0.5)])
    with_crowd_hit = coco_metrics(truth, [det([0, 0, 40, 40], 0.5), det([110, 110, 30, 30], 0.99)])
    assert alone["mAP"] == pytest.approx(1.0) and with_crowd_hit["mAP"] == pytest.approx(1.0)
    # the same higher-scored detection away from the crowd region is a false positive ranked first
    miss = coco_metrics(truth, [det([0, 0, 40, 40], 0.5), det([60, 0, 30, 30], 0.99)])
    assert miss["mAP"] < 1.0


def test_no_detections_score_zero_and_no_ground_truth_gives_none() -> None:
    m = coco_metrics(gt([[10, 10, 20, 20], [0, 0, 150, 150]]), [])
    assert m["mAP"] == 0.0 and m["AP_small"] == 0.0 and m["AP_large"] == 0.0 and m["AP_medium"] is None
    assert all(v is None for v in coco_metrics(gt([]), [det([0, 0, 5, 5])]).values())
    assert percent(0.4567) == "45.7" and percent(None) == "-"


def test_metrics_print_nothing_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    coco_metrics(gt([[10, 10, 20, 20]]), [det([10, 10, 20, 20])])
    assert capsys.readouterr().out == ""  # --json owns stdout
