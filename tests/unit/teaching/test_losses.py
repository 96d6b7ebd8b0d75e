import math

import pytest
import torch

from cann_distill.teaching.losses import LOSSES


def test_registry_has_the_logit_losses() -> None:
    assert {"ce", "kd"} <= set(LOSSES.names())


def test_kd_matches_hand_computed_value() -> None:
    s = torch.tensor([[1.0, 0.0]])
    t = torch.tensor([[0.0, 1.0]])
    T = 2.0
    # by hand: p_t = softmax([0, .5]), p_s = softmax([.5, 0]); KL(p_t||p_s) * T^2
    pt1 = math.exp(0.5) / (1 + math.exp(0.5))
    pt0 = 1 - pt1
    kl = pt0 * math.log(pt0 / pt1) + pt1 * math.log(pt1 / pt0)
    got = LOSSES.build("kd", temperature=T)({"student.logits": s, "teacher.logits": t})
    assert got.shape == (1,)
    assert got.item() == pytest.approx(kl * T * T, rel=1e-5)
    assert kl * T * T == pytest.approx(0.48984, abs=1e-4)  # (p1 - p0) * 0.5 * T^2


def test_kd_is_zero_when_student_equals_teacher_and_uses_per_sample_temperature() -> None:
    x = torch.randn(4, 10)
    kd = LOSSES.build("kd", temperature=4.0)
    assert kd({"student.logits": x, "teacher.logits": x}).abs().max().item() < 1e-6
    s, t = torch.randn(2, 5), torch.randn(2, 5)
    fixed1 = LOSSES.build("kd", temperature=1.0)({"student.logits": s, "teacher.logits": t})
    fixed3 = LOSSES.build("kd", temperature=3.0)({"student.logits": s, "teacher.logits": t})
    per = kd({"student.logits": s, "teacher.logits": t, "temperature": torch.tensor([1.0, 3.0])})
    assert per[0].item() == pytest.approx(fixed1[0].item(), rel=1e-5)
    assert per[1].item() == pytest.approx(fixed3[1].item(), rel=1e-5)


def test_kd_rejects_logits_of_different_shapes_instead_of_broadcasting() -> None:
    kd = LOSSES.build("kd", temperature=4.0)
    s = torch.randn(4, 10)
    with pytest.raises(ValueError, match=r"kd needs .* got \(4, 10\) and \(4, 1\)"):
        kd({"student.logits": s, "teacher.logits": torch.randn(4, 1)})  # would broadcast to a finite, wrong loss
    with pytest.raises(ValueError, match="same shape"):
        kd({"student.logits": s, "teacher.logits": torch.randn(4, 16)})


def test_ce_per_sample_and_label_smoothing() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    y = torch.tensor([0, 0])
    ce = LOSSES.build("ce")({"student.logits": logits, "targets": y})
    assert ce[0].item() == pytest.approx(math.log(1 + math.exp(-2)), rel=1e-5)
    assert ce[1].item() == pytest.approx(math.log(1 + math.exp(2)), rel=1e-5)
    smooth = LOSSES.build("ce", label_smoothing=0.1)({"student.logits": logits, "targets": y})
    assert smooth[0].item() > ce[0].item()


def test_bad_loss_arguments_raise() -> None:
    with pytest.raises(ValueError):
        LOSSES.build("kd", temperature=0)
    with pytest.raises(ValueError):
        LOSSES.build("ce", label_smoothing=1.5)
