"""Each report metric against values worked out by hand (README: "Report: how much knowledge arrived")."""

import math

import numpy as np
import pytest

from cann_distill.reporting import measures as m


def test_agreement_all_and_within_a_mask() -> None:
    a, b = np.array([0, 1, 2, 3]), np.array([0, 1, 0, 0])
    assert m.agreement(a, b) == 0.5
    assert m.agreement(a, b, np.array([True, True, False, False])) == 1.0
    assert m.agreement(a, b, np.array([False, False, True, True])) == 0.0
    assert m.agreement(a, b, np.zeros(4, dtype=bool)) is None


def test_transfer_efficiency_and_its_undefined_case() -> None:
    te = m.transfer_efficiency(acc_student=0.90, acc_baseline=0.80, acc_teacher=0.95)
    assert te["value"] == pytest.approx(0.10 / 0.15) and te["reason"] is None
    assert m.transfer_efficiency(0.70, 0.80, 0.95)["value"] == pytest.approx(-0.10 / 0.15)  # distillation hurt
    same = m.transfer_efficiency(0.90, 0.80, 0.80)
    assert same["value"] is None and "does not beat the CE-only baseline (80.00%)" in same["reason"]
    assert m.transfer_efficiency(0.90, 0.85, 0.80)["value"] is None


def test_error_reduction_counts_by_hand() -> None:
    y = np.zeros(6, dtype=int)
    teacher = np.array([0, 0, 0, 0, 1, 0])  # right on 0 1 2 3 5
    baseline = np.array([1, 1, 0, 0, 0, 1])  # wrong on 0 1 5 -> opportunities {0, 1, 5}
    student = np.array([0, 1, 0, 1, 0, 0])  # right on 0 2 4 5 -> fixes 0 and 5; loses 3 (teacher and baseline right)
    er = m.error_reduction(y, teacher, baseline, student)
    assert er["value"] == pytest.approx(2 / 3)
    assert (er["fixed"], er["opportunities"], er["regressed"], er["teacher_correct"]) == (2, 3, 1, 5)
    none = m.error_reduction(y, teacher, teacher, student)
    assert none["value"] is None and none["opportunities"] == 0


def test_linear_cka_by_hand_and_invariances() -> None:
    x = np.array([[1.0], [2.0], [3.0]])
    assert m.linear_cka(x, 2 * x + 5) == pytest.approx(1.0)
    assert m.linear_cka(x, np.array([[1.0], [-2.0], [1.0]])) == pytest.approx(0.0, abs=1e-12)
    # centred X = [-1, 0, 1]; Y = I[:3, :2] centred: YᵀX = [-1, 0], ‖XᵀX‖ = 2, ‖YᵀY‖ = √10 / 3
    y = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    assert m.linear_cka(x, y) == pytest.approx(3 / (2 * math.sqrt(10)))
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(20, 6)), rng.normal(size=(20, 4, 2, 2))  # 4-D features are flattened per sample
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert m.linear_cka(a @ q * 3.0, b) == pytest.approx(m.linear_cka(a, b))  # orthogonal transform + isotropic scale
    assert m.linear_cka(a, np.ones((20, 3))) is None
    with pytest.raises(ValueError, match="same samples"):
        m.linear_cka(a, b[:5])


def test_expected_calibration_error_by_hand() -> None:
    logits = np.log(np.array([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]]))
    y = np.array([0, 1, 0, 0])  # conf 0.9 bin: 1/2 right; conf 0.6 bin: 2/2 right
    ece = m.expected_calibration_error(logits, y)
    assert ece["value"] == pytest.approx(0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.6))
    assert [r["count"] for r in ece["reliability"]] == [2, 2]
    perfect = m.expected_calibration_error(np.log(np.array([[0.75, 0.25]] * 4)), np.array([0, 0, 0, 1]))
    assert perfect["value"] == pytest.approx(0.0, abs=1e-12)


def test_hardware_fit_and_dqi() -> None:
    gate = [{"budget": "latency_ms_p99", "pass": True}, {"budget": "size_mb", "pass": False}, {"budget": "params_m", "pass": True}]
    fit = m.hardware_fit(gate)
    assert fit["value"] == pytest.approx(2 / 3) and (fit["passed"], fit["total"]) == (2, 3)
    assert m.hardware_fit([])["value"] == 1.0 and "no deployment budget" in m.hardware_fit([])["reason"]
    d = m.dqi({"value": 0.5}, int8_drop=0.02, fit=fit)
    assert d["value"] == pytest.approx(0.5 * 0.98 * 2 / 3)
    assert m.dqi({"value": 1.4}, int8_drop=-0.01, fit={"value": 1.0})["value"] == 1.0  # TE clipped, an INT8 gain is no loss
    assert m.dqi({"value": -0.2}, 0.0, {"value": 1.0})["value"] == 0.0
    und = m.dqi({"value": None, "reason": "the teacher does not beat"}, 0.0, fit)
    assert und["value"] is None and "the teacher does not beat" in und["reason"]


def test_per_class_accuracy_confusion_and_attention() -> None:
    y, pred = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 0])
    assert m.per_class_accuracy(pred, y, 4) == [0.5, 1.0, 0.0, None]
    assert m.confusion(pred, y, 3) == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    feat = np.array([[[[1.0, 0.0], [0.0, 0.0]], [[1.0, 2.0], [0.0, 0.0]]]])  # mean of squares: [[1, 2], [0, 0]]
    np.testing.assert_allclose(m.attention_map(feat)[0], [[0.5, 1.0], [0.0, 0.0]])


def test_binomial_p_matches_the_exact_tail() -> None:
    # 2 of 10 fair flips or fewer: (1 + 10 + 45) / 1024, doubled
    assert m.binomial_two_sided_p(2, 10) == pytest.approx(2 * 56 / 1024, rel=1e-12)
    assert m.binomial_two_sided_p(8, 10) == pytest.approx(2 * 56 / 1024, rel=1e-12)  # symmetric
    assert m.binomial_two_sided_p(5, 10) == 1.0
    assert m.binomial_two_sided_p(0, 0) == 1.0
    # large n stays finite and tiny (no overflow from huge binomial coefficients)
    assert 0 < m.binomial_two_sided_p(100, 1000) < 1e-100


def _pair(a_only: int, b_only: int, both: int, neither: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and two prediction vectors with the given counts of (A right only, B right only, both, neither)."""
    y = np.zeros(a_only + b_only + both + neither, dtype=int)
    a = np.array([0] * a_only + [1] * b_only + [0] * both + [1] * neither)
    b = np.array([1] * a_only + [0] * b_only + [0] * both + [1] * neither)
    return y, a, b


def test_paired_difference_verdicts() -> None:
    y, a, b = _pair(a_only=40, b_only=15, both=300, neither=45)
    out = m.paired_difference(y, a, b)
    assert out["verdict"] == "better" and out["a_only"] == 40 and out["b_only"] == 15
    assert out["difference"] == pytest.approx(25 / 400)
    assert out["ci95"][0] > 0 and out["p_value"] < 0.01
    assert m.paired_difference(y, b, a)["verdict"] == "worse"
    y, a, b = _pair(a_only=22, b_only=18, both=300, neither=60)  # +1 pt on 400 images: within the noise
    tie = m.paired_difference(y, a, b)
    assert tie["verdict"] == "tie" and tie["ci95"][0] < 0 < tie["ci95"][1]


def test_paired_difference_says_when_the_split_is_too_small() -> None:
    # 5 discordant images all one way: p = 2 / 32 = 0.0625, never below 0.05 however they split
    y, a, b = _pair(a_only=5, b_only=0, both=10, neither=5)
    out = m.paired_difference(y, a, b)
    assert out["verdict"] == "too_few" and "only 5 of 20 images" in out["reason"]
    y, a, b = _pair(a_only=6, b_only=0, both=10, neither=5)  # 2 / 64 < 0.05: now it can tell
    assert m.paired_difference(y, a, b)["verdict"] == "better"
