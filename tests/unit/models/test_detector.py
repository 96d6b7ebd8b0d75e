"""The detector: timm backbone levels under torchvision's FPN and FCOS head; FCOS assignment and decoding by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from cann_distill.core.errors import ArtifactError, StageError
from cann_distill.core.recipe_detect import DetectConfig
from cann_distill.models.build import save_checkpoint
from cann_distill.models.detector import (
    Detector,
    assign,
    decode,
    detections,
    load_detector,
    locations,
    save_detector,
    scale_ranges,
)

CFG = DetectConfig(strides=[8, 16, 32], fpn_channels=32, head_convs=1)


def test_the_detector_gives_pyramid_levels_and_dense_predictions() -> None:
    torch.manual_seed(0)
    model = Detector("test_resnet", 5, CFG).eval()
    out = model(torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape) for f in out["fpn"]] == [(2, 32, 8, 8), (2, 32, 4, 4), (2, 32, 2, 2)]
    n = 64 + 16 + 4
    assert out["cls"].shape == (2, n, 5) and out["reg"].shape == (2, n, 4) and out["ctr"].shape == (2, n)
    assert (out["reg"] >= 0).all()  # distances: relu'd, scaled by each level's stride
    # torchvision's FCOS head starts every class at the prior 0.01
    assert torch.sigmoid(out["cls"]).mean().item() == pytest.approx(0.01, rel=0.2)


def test_a_stride_the_backbone_lacks_is_one_line() -> None:
    with pytest.raises(StageError, match=r"test_resnet: no feature map of stride 64 \(its strides: \[2, 4, 8, 16, 32\]\)"):
        Detector("test_resnet", 5, DetectConfig(strides=[16, 64]))
    with pytest.raises(StageError, match="unknown timm architecture 'resnet_18'.*did you mean"):
        Detector("resnet_18", 5, CFG)


def test_locations_are_cell_centres_level_by_level() -> None:
    points, strides = locations([(2, 2), (1, 1)], [8, 16])
    assert points.tolist() == [[4, 4], [12, 4], [4, 12], [12, 12], [8, 8]]
    assert strides.tolist() == [8, 8, 8, 8, 16]


def test_scale_ranges_follow_fcos() -> None:
    assert scale_ranges([8, 16, 32, 64, 128], 8.0) == [(0.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, 512.0), (512.0, math.inf)]
    assert scale_ranges([4], 2.0) == [(0.0, math.inf)]


def test_assign_on_a_hand_made_case() -> None:
    # level 8: 4x4 centres at 4, 12, 20, 28; level 16: 2x2 centres at 8, 24 (a 32-px image)
    points, strides = locations([(4, 4), (2, 2)], [8, 16])
    boxes = torch.tensor([[[0.0, 0.0, 16.0, 16.0], [0.0, 0.0, 32.0, 32.0], [0.0, 0.0, 0.0, 0.0]]])
    labels = torch.tensor([[3, 1, -1]])  # the third box is padding
    # factor 1, ranges (0, 8] and (8, inf): the small box reaches 12 from its level-8 centres and exactly 8 from (8, 8):
    # no location takes it; the large one reaches 24 from every level-16 centre
    t = assign(points, strides, scale_ranges([8, 16], 1.0), boxes, labels, radius=1.5)
    assert t.labels[0].tolist() == [-1] * 16 + [1, 1, 1, 1]
    assert (t.boxes[0, 16:] == torch.tensor([0.0, 0.0, 32.0, 32.0])).all()
    # factor 2, ranges (0, 16] and (16, inf): level 8 takes the small box at (4, 4), (12, 4), (4, 12), (12, 12)
    t = assign(points, strides, scale_ranges([8, 16], 2.0), boxes, labels, radius=1.5)
    assert t.labels[0].tolist() == [3, 3, -1, -1, 3, 3, -1, -1] + [-1] * 8 + [1, 1, 1, 1]
    assert (t.boxes[0, 0] == torch.tensor([0.0, 0.0, 16.0, 16.0])).all()


def test_the_smaller_box_wins_a_location_both_claim() -> None:
    points, strides = locations([(1, 1)], [8])  # one location, at (4, 4)
    boxes = torch.tensor([[[0.0, 0.0, 8.0, 8.0], [0.0, 0.0, 8.0, 7.0]]])
    t = assign(points, strides, scale_ranges([8], 8.0), boxes, torch.tensor([[0, 1]]))
    assert t.labels.tolist() == [[1]] and t.boxes.tolist() == [[[0.0, 0.0, 8.0, 7.0]]]


def test_centre_sampling_keeps_only_locations_near_the_box_centre() -> None:
    points, strides = locations([(1, 8)], [8])  # centres x = 4, 12, ..., 60 at y = 4
    boxes = torch.tensor([[[0.0, 0.0, 64.0, 8.0]]])
    t = assign(points, strides, scale_ranges([8], 8.0), boxes, torch.tensor([[0]]), radius=1.5)
    # centre x = 32: within 12 px -> 24 < x < 44 -> 28, 36 (20 and 44 are exactly 12 away: not strictly inside)
    assert t.labels[0].tolist() == [-1, -1, -1, 0, 0, -1, -1, -1]


def test_decode_turns_distances_into_boxes() -> None:
    boxes = decode(torch.tensor([[10.0, 20.0]]), torch.tensor([[[1.0, 2.0, 3.0, 4.0]]]))
    assert boxes.tolist() == [[[9.0, 18.0, 13.0, 24.0]]]


def test_detections_score_clip_and_suppress_duplicates() -> None:
    cfg = DetectConfig(strides=[8], score_threshold=0.1, nms_iou=0.5, max_detections=10)
    k = 2
    cls = torch.full((1, 4, k), -10.0)
    cls[0, 0, 0] = cls[0, 1, 0] = 10.0  # two locations see class 0 on the same object
    cls[0, 3, 1] = 10.0  # another class elsewhere
    ctr = torch.full((1, 4), 10.0)
    reg = torch.tensor([[[4.0, 4.0, 8.0, 8.0], [12.0, 4.0, 0.0, 8.0], [1.0, 1.0, 1.0, 1.0], [20.0, 20.0, 20.0, 20.0]]])
    out = {"fpn": [torch.zeros(1, 1, 2, 2)], "cls": cls, "reg": reg, "ctr": ctr}
    (det,) = detections(out, cfg, image_size=16)
    assert sorted(det["labels"].tolist()) == [0, 1]
    boxes = {int(label): b for label, b in zip(det["labels"], det["boxes"].tolist())}
    assert boxes[0] == [0.0, 0.0, 12.0, 12.0]  # (4, 4) - (4, 4) .. + (8, 8); its twin (IoU 1) suppressed
    assert boxes[1] == [0.0, 0.0, 16.0, 16.0]  # clipped to the 16-px image
    assert det["scores"].min().item() == pytest.approx(1.0, abs=1e-4)  # sqrt(sigmoid(10) * sigmoid(10))


def test_detector_checkpoints_round_trip_and_refuse_what_is_not_theirs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Detector("test_efficientnet", 3, CFG).eval()
    save_detector(tmp_path / "d.pt", model, ["a", "b", "c"], [1, 2, 3], CFG)
    back = load_detector(tmp_path / "d.pt", "test_efficientnet", 3, CFG, [1, 2, 3], "d.pt").eval()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(back(x)["cls"], model(x)["cls"])
    with pytest.raises(ArtifactError, match="trained on other categories"):
        load_detector(tmp_path / "d.pt", "test_efficientnet", 3, CFG, [1, 2, 4], "d.pt")
    with pytest.raises(ArtifactError, match="is for arch 'test_efficientnet', not 'test_resnet'"):
        load_detector(tmp_path / "d.pt", "test_resnet", 3, CFG, [1, 2, 3], "d.pt")
    save_checkpoint(tmp_path / "cls.pt", torch.nn.Linear(2, 2), "test_efficientnet", 3, 3)
    with pytest.raises(ArtifactError, match="not a cann-distill detector checkpoint"):
        load_detector(tmp_path / "cls.pt", "test_efficientnet", 3, CFG, [1, 2, 3], "cls.pt")
