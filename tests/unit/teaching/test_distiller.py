"""Distiller: taps, connectors and loss fusion on tiny timm models (test_resnet teacher -> test_efficientnet student, 16 px)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from cann_distill.core.errors import RecipeError
from cann_distill.core.recipe import LossSpec
from cann_distill.models.build import Renormalize, create_model
from cann_distill.teaching.distiller import Distiller
from cann_distill.teaching.losses import LOSSES

TAP_KWARGS: dict[str, dict[str, Any]] = {
    "ce": {},
    "kd": {"temperature": 2.0},
    "dkd": {},
    "dist": {},
    "fitnet": {"student": "2", "teacher": "2"},  # 32x2x2 -> 48x2x2: a connector
    "cw_mse": {"student": "2", "teacher": "2"},
    "at": {"student": "1", "teacher": "1"},
    "attn_mse": {"student": "1", "teacher": "1"},
    "sp": {"student": "4", "teacher": "4"},
    "rkd": {},
    "dml": {},
}


def models() -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(0)
    return create_model("test_efficientnet", 10, 1), create_model("test_resnet", 10, 1).eval()


def make(specs: list[dict[str, Any]], **kwargs: Any) -> Distiller:
    student, teacher = models()
    return Distiller(
        [LossSpec(**s) for s in specs],
        student,
        student_arch="test_efficientnet",
        sample=torch.randn(2, 1, 16, 16),
        teacher=teacher,
        teacher_arch="test_resnet",
        **kwargs,
    )


def batch(b: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, 1, 16, 16, generator=g), torch.randint(0, 10, (b,), generator=g)


def outputs(d, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the distill stage feeds the loss for one batch: the student's taps, and the teacher's when it runs."""
    return {**d.student_outputs(x), **(d.teacher_outputs(x) if d.runs_teacher else {})}


def test_tap_kwargs_cover_every_registered_loss() -> None:
    assert set(TAP_KWARGS) == set(LOSSES.names()), "add the new loss to TAP_KWARGS"


@pytest.mark.parametrize("kind", LOSSES.names())
def test_one_distill_step_with_every_registered_loss(kind: str) -> None:
    d = make([{"kind": "ce", "weight": 0.5}, {"kind": kind, "weight": 0.5, **TAP_KWARGS[kind]}])
    if kind == "cw_mse":
        d.constants["teacher.chw.2"] = torch.rand(48) + 0.1
    x, y = batch()
    out = outputs(d, x)
    out["targets"] = y
    if not d.runs_teacher:  # the stage's fast path: select's cached teacher logits
        with torch.no_grad():
            out["teacher.logits"] = models()[1](x)
    if kind == "dml":  # mutual learning: another peer's logits, detached
        out["peers.logits"] = torch.randn(1, *out["student.logits"].shape)
    assert not any(v.requires_grad for k, v in out.items() if k.startswith("teacher."))
    opt = torch.optim.SGD(d.model.parameters(), lr=0.1)
    total, parts = d.loss(out, torch.tensor([1.0, 2.0, 1.0, 1.0]))
    assert torch.isfinite(total) and set(parts) == ({"ce[0]", "ce[1]"} if kind == "ce" else {"ce", kind})  # kind[i] when repeated
    assert total.item() == pytest.approx(0.5 * sum(parts.values()), rel=1e-5)
    before = {k: v.clone() for k, v in d.model.student.state_dict().items()}
    opt.zero_grad()
    total.backward()
    opt.step()
    if d.teacher is not None:
        assert all(p.grad is None for p in d.teacher.parameters())
    assert any(not torch.equal(before[k], v) for k, v in d.model.student.state_dict().items())
    if kind in ("fitnet", "cw_mse", "attn_mse"):
        (conn,) = d.model.connectors.values()
        assert conn.conv.weight.grad is not None and conn.conv.weight.grad.abs().sum() > 0
    else:
        assert len(d.model.connectors) == 0
    assert d.runs_teacher == (kind in ("fitnet", "cw_mse", "at", "attn_mse", "sp"))


def test_connectors_are_not_exported() -> None:
    d = make(
        [{"kind": "fitnet", "student": "2", "teacher": "2"}, {"kind": "attn_mse", "student": "2", "teacher": "2"}], balance="uncertainty"
    )
    assert list(d.model.connectors) == ["2__2"]  # one connector per tap pair, shared
    plain = create_model("test_efficientnet", 10, 1)
    assert set(d.model.student.state_dict()) == set(plain.state_dict())
    assert any(k.startswith("connectors.") for k in d.model.state_dict()) and "balance.log_var" in d.model.state_dict()


def test_bad_taps_and_unbridgeable_shapes_are_one_line_recipe_errors() -> None:
    with pytest.raises(RecipeError) as exc:
        make([{"kind": "ce"}, {"kind": "fitnet", "student": "7", "teacher": "2"}, {"kind": "at", "student": "1", "teacher": "layer9"}])
    msg = str(exc.value)
    assert "\n" not in msg
    assert (
        "distill.losses[1].student: layer '7' not in test_efficientnet's taps (valid: 0, 1, 2, 3, 4 or a module path like blocks.2.0)"
    ) in msg
    assert "distill.losses[2].teacher: layer 'layer9' not in test_resnet's taps" in msg
    with pytest.raises(
        RecipeError, match=r"distill\.losses\[0\] \(fitnet\): cannot connect student tap \(64, 1, 1\) to teacher tap \(96,\)"
    ):
        make([{"kind": "fitnet", "student": "4", "teacher": "global_pool"}])


def test_uncertainty_balance_starts_at_the_weighted_sum_and_learns() -> None:
    d = make([{"kind": "ce", "weight": 0.7}, {"kind": "kd", "weight": 0.3}], balance="uncertainty")
    assert not d.runs_teacher  # logit losses only: the caller feeds cached teacher logits
    x, y = batch()
    out = {**outputs(d, x), "targets": y, "teacher.logits": torch.randn(4, 10)}
    total, parts = d.loss(out)
    assert total.item() == pytest.approx(0.7 * parts["ce"] + 0.3 * parts["kd"], rel=1e-5)  # s_i = 0
    assert parts["balance.ce"] == pytest.approx(0.7) and parts["balance.kd"] == pytest.approx(0.3)
    total.backward()
    # d/ds_i of w_i (exp(-s_i) L_i + s_i) at s_i = 0 is w_i (1 - L_i)
    expected = torch.tensor([0.7 * (1 - parts["ce"]), 0.3 * (1 - parts["kd"])])
    torch.testing.assert_close(d.model.balance.log_var.grad, expected, rtol=1e-4, atol=1e-5)


def test_teacher_runs_when_its_normalisation_differs_and_sensitivity_is_per_channel() -> None:
    renorm = Renormalize([0.5], [0.5], [0.1], [0.3])
    d = make([{"kind": "kd"}], teacher_input=renorm, force_teacher=True)
    x, _ = batch()
    out = outputs(d, x)
    with torch.no_grad():
        torch.testing.assert_close(out["teacher.logits"], d.teacher(renorm(x)))
    d2 = make([{"kind": "cw_mse", "student": "2", "teacher": "2"}])
    sens = d2.channel_sensitivity("2", [batch(), batch(2)])
    assert sens.shape == (48,) and (sens >= 0).all() and sens.sum() > 0
