"""Detection losses on hand-made feature maps, boxes and score maps: FGD (masks, attention, focal and global terms),
prediction mimicking, and the FCOS ground-truth loss; the registry and the recipe checks that name them."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from cann_distill.core.registries import DETECTION_LOSSES, LOSSES
from cann_distill.teaching.detect_objective import Objective
from cann_distill.teaching.losses.detection import FGD, fgd_attention, fgd_masks

LN2 = math.log(2)


def test_detection_losses_have_their_own_registry() -> None:
    assert set(DETECTION_LOSSES.names()) == {"det", "fgd", "pred_kd"}
    assert not set(DETECTION_LOSSES.names()) & set(LOSSES.names())  # a classification recipe cannot name them
    assert DETECTION_LOSSES.check_kwargs("fgd", {"levels": 2, "lambda_": 0.0}) == []
    assert DETECTION_LOSSES.build("fgd", levels=2).requires == (
        "student.fpn.0",
        "student.fpn.1",
        "teacher.fpn.0",
        "teacher.fpn.1",
        "gt.boxes",
        "gt.labels",
    )
    for kind, kwargs, message in (
        ("fgd", {"levels": 0}, "levels must be an integer in"),
        ("fgd", {"temperature": 0.0}, "temperature must be > 0"),
        ("pred_kd", {"temperature": -1.0}, "temperature must be > 0"),
        ("det", {"focal_alpha": 2.0}, r"focal_alpha must be in \[0, 1\]"),
    ):
        with pytest.raises(ValueError, match=message):
            DETECTION_LOSSES.build(kind, **kwargs)


# ---------------------------------------------------------------- FGD


def test_fgd_masks_on_a_hand_made_case() -> None:
    # 4x4 map; box a covers cells 1..2 (floor(1), ceil(2)), box b cells 0..3; the third is padding
    boxes = torch.tensor([[[0.25, 0.25, 0.5, 0.5], [0.0, 0.0, 0.75, 0.75], [0.0, 0.0, 1.0, 1.0]]])
    fg, bg = fgd_masks(boxes, torch.tensor([[0, 1, -1]]), 4, 4)
    expected = torch.full((4, 4), 1 / 16)  # box b: 16 cells, each 1/16
    expected[1:3, 1:3] = 1 / 4  # box a: 4 cells, 1/4 wins where they overlap
    torch.testing.assert_close(fg[0], expected)
    assert bg.sum().item() == 0  # every cell is foreground: no background term
    fg, bg = fgd_masks(boxes[:, :1], torch.tensor([[0]]), 4, 4)
    assert fg.sum().item() == pytest.approx(1.0)  # a box's cells sum to 1, whatever its size
    assert bg[0, 0, 0].item() == pytest.approx(1 / 12) and bg[0, 1, 1].item() == 0 and bg.sum().item() == pytest.approx(1.0)


def test_fgd_attention_on_a_hand_made_map() -> None:
    f = torch.tensor([[[[1.0, 3.0]], [[1.0, -1.0]]]])  # C=2, H=1, W=2
    spatial, channel = fgd_attention(f, 1.0)
    # channel-mean |f| per position [1, 2] -> 2 * softmax; position-mean |f| per channel [2, 1] -> 2 * softmax
    e = math.exp(1)
    torch.testing.assert_close(spatial[0, 0], torch.tensor([2 / (1 + e), 2 * e / (1 + e)]))
    torch.testing.assert_close(channel[0], torch.tensor([2 * e / (1 + e), 2 / (1 + e)]))


def fgd_outputs(s: torch.Tensor, t: torch.Tensor, boxes: list[list[float]]) -> dict[str, torch.Tensor]:
    return {
        "student.fpn.0": s,
        "teacher.fpn.0": t,
        "gt.boxes": torch.tensor([boxes] * s.shape[0]),
        "gt.labels": torch.zeros(s.shape[0], len(boxes), dtype=torch.long),
    }


def student_attention_gap(s: torch.Tensor) -> float:
    """sum |S_s - 1| + sum |C_s - 1| for a student map against a zero teacher (uniform attention 1), T = 1, by hand."""
    c, h, w = s.shape[1:]
    pos = s.abs().mean(1).flatten()
    chan = s.abs().mean((2, 3)).flatten()
    sp = [h * w * math.exp(v) / sum(math.exp(u) for u in pos.tolist()) for v in pos.tolist()]
    ch = [c * math.exp(v) / sum(math.exp(u) for u in chan.tolist()) for v in chan.tolist()]
    return sum(abs(v - 1) for v in sp) + sum(abs(v - 1) for v in ch)


@pytest.mark.parametrize(("cell", "fg", "bg"), [((1, 1), 4 * 0.25, 0.0), ((3, 3), 0.0, 4 / 12)], ids=["inside", "outside"])
def test_fgd_focal_terms_on_a_hand_made_map(cell: tuple[int, int], fg: float, bg: float) -> None:
    # a zero teacher: its spatial and channel attention are 1 everywhere, so the weighted difference is (s - t)^2 = 4
    # at the one cell where the student is 2; inside the box (4 cells: mask 1/4) or outside (12 cells: 1/12)
    s = torch.zeros(1, 2, 4, 4)
    s[0, 0, cell[0], cell[1]] = 2.0
    out = fgd_outputs(s, torch.zeros_like(s), [[0.25, 0.25, 0.5, 0.5]])
    for alpha, beta, gamma, expected in ((1.0, 0.0, 0.0, fg), (0.0, 1.0, 0.0, bg), (0.0, 0.0, 1.0, student_attention_gap(s))):
        loss = FGD(alpha=alpha, beta=beta, gamma=gamma, lambda_=0.0, temperature=1.0, levels=1)
        assert loss(out).item() == pytest.approx(expected, rel=1e-5)


def test_fgd_global_term_starts_as_the_plain_squared_difference_and_trains_its_blocks() -> None:
    torch.manual_seed(0)
    s = torch.randn(2, 32, 3, 3, requires_grad=True)
    t = torch.randn(2, 32, 3, 3)
    loss = FGD(alpha=0.0, beta=0.0, gamma=0.0, lambda_=1.0, levels=1)
    assert loss.learnable and loss.net is not None and len(list(loss.net.parameters())) == 0  # built on the first call
    value = loss(fgd_outputs(s, t, [[0.0, 0.0, 0.5, 0.5]]))
    # GcBlocks start as the identity (FGD zero-initialises their last conv): the term is sum (s - t)^2 per image
    torch.testing.assert_close(value, (s - t).pow(2).sum((1, 2, 3)))
    value.sum().backward()
    params = dict(loss.net.named_parameters())
    assert params and params["0.student.add.3.weight"].grad is not None and params["0.student.add.3.weight"].grad.abs().sum() > 0
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_fgd_is_zero_per_image_where_student_and_teacher_agree_and_refuses_other_shapes() -> None:
    torch.manual_seed(0)
    t = torch.randn(2, 32, 4, 4)
    s = t.clone()
    s[1] += 1.0
    value = FGD(levels=1)(fgd_outputs(s, t, [[0.0, 0.0, 0.5, 0.5]]))
    assert value[0].item() == pytest.approx(0.0, abs=1e-7) and value[1].item() > 0
    with pytest.raises(ValueError, match=r"fgd: student map \(2, 32, 4, 4\) and teacher map \(2, 32, 2, 2\)"):
        FGD(levels=1)(fgd_outputs(s, torch.zeros(2, 32, 2, 2), [[0.0, 0.0, 0.5, 0.5]]))


# ---------------------------------------------------------------- prediction mimicking


def bernoulli_kl(p: float, q: float) -> float:
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_pred_kd_matches_the_bernoulli_kl_by_hand(temperature: float) -> None:
    # two locations, one class: the teacher's logit log 3 (p = 0.75 at T = 1) vs the student's 0; then agreement
    s = torch.tensor([[[0.0], [1.0]]])
    t = torch.tensor([[[math.log(3)], [1.0]]])
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    expected = bernoulli_kl(sig(math.log(3) / temperature), 0.5) / 2 * temperature**2  # mean over the 2 locations
    got = DETECTION_LOSSES.build("pred_kd", temperature=temperature)({"student.cls": s, "teacher.cls": t})
    assert got.shape == (1,) and got.item() == pytest.approx(expected, rel=1e-5)
    same = DETECTION_LOSSES.build("pred_kd")({"student.cls": t, "teacher.cls": t})
    assert same.abs().max().item() < 1e-6
    with pytest.raises(ValueError, match=r"'student\.cls' \(1, 2, 1\) and 'teacher\.cls' \(1, 2, 2\)"):
        DETECTION_LOSSES.build("pred_kd")({"student.cls": s, "teacher.cls": torch.zeros(1, 2, 2)})


# ---------------------------------------------------------------- FCOS ground truth


def fcos_outputs(reg: list[float], labels: list[list[int]], ctr: float = 0.0) -> dict[str, Any]:
    """Images of 2 locations (centres (4, 4) and (12, 4)), one class, all logits 0; location 0 of image 0 may be positive
    with target box (0, 0, 8, 8)."""
    b = len(labels)
    return {
        "student.cls": torch.zeros(b, 2, 1),
        "student.reg": torch.tensor([[reg, [1.0, 1.0, 1.0, 1.0]]] * b),
        "student.ctr": torch.full((b, 2), ctr),
        "targets.labels": torch.tensor(labels),
        "targets.boxes": torch.tensor([[[0.0, 0.0, 8.0, 8.0], [0.0, 0.0, 0.0, 0.0]]] * b),
        "locations": torch.tensor([[4.0, 4.0], [12.0, 4.0]]),
    }


def test_fcos_loss_matches_focal_giou_and_centreness_by_hand() -> None:
    # focal at p = 0.5: alpha_t (1 - p_t)^2 ln 2 = 0.25 * 0.25 ln 2 (positive) + 0.75 * 0.25 ln 2 (background)
    focal = 0.25 * LN2
    det = DETECTION_LOSSES.build("det")
    exact = det(fcos_outputs([4.0, 4.0, 4.0, 4.0], [[0, -1]]))  # predicted box = target: GIoU loss 0
    assert exact.item() == pytest.approx(focal + LN2, rel=1e-5)  # centre-ness target 1 at the centre: BCE(0, 1) = ln 2
    inner = det(fcos_outputs([2.0, 2.0, 2.0, 2.0], [[0, -1]]))  # (2, 2, 6, 6) in (0, 0, 8, 8): IoU 1/4, GIoU loss 3/4
    assert inner.item() == pytest.approx(focal + 0.75 + LN2, rel=1e-5)
    weighted = DETECTION_LOSSES.build("det", box_weight=2.0, ctr_weight=0.0)(fcos_outputs([2.0, 2.0, 2.0, 2.0], [[0, -1]]))
    assert weighted.item() == pytest.approx(focal + 1.5, rel=1e-5)


def test_fcos_loss_divides_by_the_batch_positives() -> None:
    # image 0 has the one positive, image 1 only background; per image: its sum * B / positives
    got = DETECTION_LOSSES.build("det")(fcos_outputs([4.0, 4.0, 4.0, 4.0], [[0, -1], [-1, -1]]))
    background = 2 * 0.75 * 0.25 * LN2
    assert got.tolist() == pytest.approx([2 * (0.25 * LN2 + LN2), 2 * background], rel=1e-5)
    assert got.mean().item() == pytest.approx(0.25 * LN2 + LN2 + background, rel=1e-5)  # the batch's sum / 1 positive
    nothing = DETECTION_LOSSES.build("det")(fcos_outputs([4.0, 4.0, 4.0, 4.0], [[-1, -1]]))
    assert nothing.item() == pytest.approx(2 * 0.75 * 0.25 * LN2, rel=1e-5)  # no positive: divided by 1, no box terms


# ---------------------------------------------------------------- the objective


def test_the_objective_builds_learnable_losses_once_and_weights_the_terms() -> None:
    from cann_distill.core.recipe import LossSpec

    torch.manual_seed(0)
    specs = [LossSpec(kind="pred_kd", weight=2.0), LossSpec(kind="fgd", weight=1.0, levels=1), LossSpec(kind="pred_kd", weight=0.5)]
    objective = Objective(specs)
    assert objective.names == ["pred_kd[0]", "fgd", "pred_kd[1]"] and objective.reads_teacher
    out = {
        **fgd_outputs(torch.randn(2, 32, 4, 4), torch.randn(2, 32, 4, 4), [[0.0, 0.0, 0.5, 0.5]]),
        "student.cls": torch.randn(2, 5, 3),
        "teacher.cls": torch.randn(2, 5, 3),
    }
    assert len(objective.nets()) == 0 or not list(objective.nets().parameters())
    objective.prepare(out)
    assert list(objective.nets().parameters())  # FGD's blocks exist before the optimizer is built
    total, parts = objective(out)
    assert total.item() == pytest.approx(2.0 * parts["pred_kd[0]"] + parts["fgd"] + 0.5 * parts["pred_kd[1]"], rel=1e-5)
    with pytest.raises(Exception, match=r"'fgd' reads student\.fpn\.0, which the detector does not give"):
        Objective([LossSpec(kind="fgd", levels=1)]).prepare({"student.cls": torch.zeros(1)})


def test_per_image_weights_make_each_term_a_weighted_mean() -> None:
    from cann_distill.core.recipe import LossSpec

    torch.manual_seed(0)
    out = {"student.cls": torch.randn(3, 5, 2), "teacher.cls": torch.randn(3, 5, 2)}
    per_image = DETECTION_LOSSES.build("pred_kd")(out)
    objective = Objective([LossSpec(kind="pred_kd", weight=0.5)])
    plain, _ = objective(out)
    assert plain.item() == pytest.approx(0.5 * per_image.mean().item(), rel=1e-6)
    weights = torch.tensor([2.0, 1.0, 1.0])  # image 0 critical (distill.critical.weight 2)
    total, parts = objective(out, weights)
    expected = (2 * per_image[0] + per_image[1] + per_image[2]).item() / 4
    assert parts["pred_kd"] == pytest.approx(expected, rel=1e-6) and total.item() == pytest.approx(0.5 * expected, rel=1e-6)
    ones, _ = objective(out, torch.ones(3))
    assert ones.item() == pytest.approx(plain.item(), rel=1e-6)  # weight 1 everywhere: the plain mean
