"""The report's distillation verdict and the --strict check built on it, from knowledge dicts."""

import numpy as np
import pytest

from cann_distill.api import check_gate
from cann_distill.core.errors import GateError
from cann_distill.reporting import measures as m
from cann_distill.reporting.guard import distillation_verdict, strict_failure
from cann_distill.stages import StageResult


def _knowledge(y: np.ndarray, teacher: np.ndarray, student: np.ndarray, baseline: np.ndarray | None) -> dict:
    pred = {"teacher": teacher, "student": student}
    if baseline is not None:
        pred["baseline"] = baseline
    logits = {k: np.eye(2)[p] for k, p in pred.items()}
    from cann_distill.reporting.transfer import transfer_metrics

    return {**transfer_metrics(y, logits, None, None, None, 2), "split": "test"}


def _result(stage: str, summary: dict) -> StageResult:
    return StageResult(stage=stage, status="done", run_dir="runs/x", outputs={}, summary=summary, seconds=0.0)


def _preds(n: int, right: int, rng: np.random.Generator, y: np.ndarray) -> np.ndarray:
    """Predictions right on a random `right` of the `n` images."""
    ok = np.zeros(n, dtype=bool)
    ok[rng.choice(n, right, replace=False)] = True
    return np.where(ok, y, 1 - y)


@pytest.mark.parametrize("student_right, status", [(360, "helped"), (200, "hurt"), (281, "no_gain")])
def test_verdict_follows_the_paired_test(student_right: int, status: str) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    k = _knowledge(y, _preds(400, 390, rng, y), _preds(400, student_right, rng, y), _preds(400, 280, rng, y))
    v = distillation_verdict(k)
    assert v["status"] == status, v
    assert "baseline" in v["line"] and "test" in v["line"]
    assert (strict_failure(v) is not None) == (status == "hurt")
    if status == "hurt":
        assert "warmup" in v["line"] and "docs/defaults.md" in v["line"]


def test_a_hurt_line_names_the_draw_first_and_a_missing_warmup_only_when_there_was_none() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    k = _knowledge(y, _preds(400, 390, rng, y), _preds(400, 200, rng, y), _preds(400, 280, rng, y))
    warmed, cold = distillation_verdict(k, warmup_epochs=1.0)["line"], distillation_verdict(k, warmup_epochs=0.0)["line"]
    assert "likely causes: one run is one draw" in warmed and "--set seed=1" in warmed
    assert "no learning-rate warmup" not in warmed and "too few epochs" in warmed
    assert "no learning-rate warmup (distill.warmup_epochs)" in cold


def test_a_no_gain_line_names_the_teachers_lead_over_the_baseline_in_points() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    k = _knowledge(y, _preds(400, 390, rng, y), _preds(400, 281, rng, y), _preds(400, 280, rng, y))
    v = distillation_verdict(k)
    assert v["status"] == "no_gain"
    assert "teacher's lead over the baseline (here 27.50 pt)" in v["line"]  # 390/400 - 280/400
    assert "distill.epochs" in v["line"] and "docs/defaults.md" in v["line"]
    assert strict_failure(v) is None


def test_no_baseline_says_it_cannot_tell_and_does_not_gate() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 100)
    v = distillation_verdict(_knowledge(y, y, 1 - y, None))
    assert v["status"] == "unknown" and "cannot tell" in v["line"] and "report.baseline" in v["line"]
    assert strict_failure(v) is None
    assert distillation_verdict(None)["status"] == "unknown"


def test_teacher_without_a_lead_makes_the_verdict_undefined_and_fails_strict() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 400)
    base = _preds(400, 300, rng, y)
    v = distillation_verdict(_knowledge(y, base.copy(), _preds(400, 250, rng, y), base))
    assert v["status"] == "undefined" and "no lead to transfer" in v["line"]
    with pytest.raises(GateError, match="distillation gate failed: the teacher"):
        check_gate([_result("report", {"distillation": v})])


def test_tiny_split_is_too_few_and_does_not_gate() -> None:
    y = np.zeros(12, dtype=int)
    teacher = np.zeros(12, dtype=int)  # teacher all right, baseline right on 2: a lead the test can see
    base = np.array([0, 0] + [1] * 10)
    student = np.array([0, 0, 0, 0] + [1] * 8)  # two more than the baseline: too few to tell
    v = distillation_verdict(_knowledge(y, teacher, student, base))
    assert v["status"] == "too_few" and "too few" in v["line"]
    assert strict_failure(v) is None
    check_gate([_result("report", {"distillation": v})])  # does not raise


def test_strict_names_budgets_and_distillation_together() -> None:
    hurt = {"status": "hurt", "line": "the distilled student is below its CE-only baseline beyond the noise"}
    validate = _result("validate", {"gate": [{"budget": "latency_ms", "value": 3.0, "limit": 2.0, "pass": False}]})
    with pytest.raises(GateError) as err:
        check_gate([validate, _result("report", {"distillation": hurt})])
    assert "latency_ms 3 > 2" in str(err.value) and "distillation gate failed" in str(err.value)
    assert m.PAIRED_ALPHA == 0.05
