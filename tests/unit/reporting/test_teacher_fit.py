"""Is this teacher a good fit? The capacity gap, the teacher's lead by the report's paired test, and the advice."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import pytest

from cann_distill.reporting import fit
from cann_distill.reporting.html import render
from cann_distill.reporting.measures import paired_difference
from tests.report_fixtures import synthetic_report

T = {"arch": "resnet50", "params": 23_500_000, "flops": 8_000_000_000}
S = {"arch": "mobilenetv3_small_050", "params": 580_000, "flops": 90_000_000}
PARAMS = {"resnet34": 21_300_000, "resnet18": 11_200_000, "resnet10t": 4_900_000, "lcnet_100": 2_900_000, "lcnet_050": 600_000}


def knowledge(teacher_right: int, baseline_right: int, te: Optional[float], n: int = 400) -> dict[str, Any]:
    """A report's knowledge section from hand-made predictions: the teacher right on the first `teacher_right`
    images, the baseline on the first `baseline_right` (so every image one gets right and the other not is the
    leader's), with the paired test as the report computes it."""
    y = np.zeros(n, dtype=int)
    teacher, baseline = np.where(np.arange(n) < teacher_right, 0, 1), np.where(np.arange(n) < baseline_right, 0, 1)
    return {
        "split": "test",
        "accuracy": {"teacher": teacher_right / n, "baseline": baseline_right / n, "student": 0.5},
        "teacher_vs_baseline": paired_difference(y, teacher, baseline),
        "transfer_efficiency": {"value": te, "reason": None if te is not None else "no lead"},
    }


def test_gap_ratios_and_the_threshold() -> None:
    gap = fit.capacity_gap(T, S)
    assert gap["params_ratio"] == pytest.approx(23.5 / 0.58) and gap["flops_ratio"] == pytest.approx(8000 / 90)
    assert gap["large"] and gap["latency_ratio"] is None and gap["latency_note"] == "not measured"
    edge = fit.capacity_gap({"arch": "a", "params": 1000, "flops": None}, {"arch": "b", "params": 100, "flops": 50})
    assert edge["large"] and edge["flops_ratio"] is None and edge["why"] == "params 10.0× ≥ 10×"  # the threshold is inclusive
    below = fit.capacity_gap({"arch": "a", "params": 990, "flops": 990}, {"arch": "b", "params": 100, "flops": 100})
    assert not below["large"] and below["params_ratio"] == pytest.approx(9.9)
    timed = fit.capacity_gap(T, S, teacher_ms=12.0, student_ms=1.5)
    assert timed["latency_ratio"] == pytest.approx(8.0) and "FP32 batch-1" in timed["latency_note"]
    assert fit.ratio(5, 0) is None and fit.ratio(None, 3) is None
    line = fit.gap_line(gap)
    assert "params 23.50 M / 0.58 M = 40.5×" in line and "FLOPs 8.00 GFLOPs / 90.0 MFLOPs = 88.9×" in line


def test_teacher_within_the_noise_of_the_baseline_warns_with_the_numbers() -> None:
    k = knowledge(teacher_right=205, baseline_right=200, te=0.4)  # 5 discordant images: p = 0.0625
    result = fit.report_fit(fit.capacity_gap(T, S), k, chained=False)
    assert result["teacher_lead"]["status"] == "not_beyond_noise" and result["transfer_efficiency"] is None
    [advice] = result["advice"]  # TE is not meaningful here, so no chain advice either
    assert advice["kind"] == "weak_teacher"
    p = k["teacher_vs_baseline"]["p_value"]
    assert p == pytest.approx(0.0625)
    line = advice["line"]
    assert line.startswith("distillation cannot be expected to help")
    assert "teacher 51.25% vs CE-only baseline 50.00% on test, +1.25 pt" in line and f"p={p:.2g}" in line and "400 images" in line
    assert "stronger" in line and "teacher.train.epochs" in line


def test_a_teacher_that_leads_beyond_the_noise_gives_no_warning() -> None:
    k = knowledge(teacher_right=300, baseline_right=200, te=0.6)
    result = fit.report_fit(fit.capacity_gap(T, S), k, chained=False)
    assert result["teacher_lead"]["status"] == "leads" and result["advice"] == []
    assert result["transfer_efficiency"] == 0.6  # big gap, high TE: no suggestion


def test_big_gap_and_low_te_suggests_a_chain_through_a_picked_assistant() -> None:
    gap = fit.capacity_gap(T, S)
    k = knowledge(teacher_right=300, baseline_right=200, te=0.1)
    assert fit.wants_assistant(gap, 0.1, chained=False)
    assistant = fit.pick_assistant(gap, PARAMS)
    assert assistant == "resnet10t"  # geometric mean 3.7 M: resnet10t (4.9 M) is the teacher's family within 2× of it
    [advice] = fit.report_fit(gap, k, chained=False, assistant=assistant, assistant_params=PARAMS[assistant])["advice"]
    assert advice["kind"] == "assistant_chain" and advice["chain"] == ["resnet50", "resnet10t", "mobilenetv3_small_050"]
    assert "distill.chain: [resnet50, resnet10t, mobilenetv3_small_050]" in advice["line"] and "0.10 < 0.3" in advice["line"]
    assert fit.report_fit(gap, k, chained=True)["advice"] == []  # already a chain


def test_small_gap_or_undefined_te_gives_no_te_advice() -> None:
    small = fit.capacity_gap({"arch": "resnet18", "params": 11_200_000, "flops": 1}, {"arch": "resnet10t", "params": 4_900_000, "flops": 1})
    low = knowledge(teacher_right=300, baseline_right=200, te=0.1)
    assert fit.report_fit(small, low, chained=False)["advice"] == []
    undefined = knowledge(teacher_right=300, baseline_right=200, te=None)
    result = fit.report_fit(fit.capacity_gap(T, S), undefined, chained=False)
    assert result["transfer_efficiency"] is None and result["advice"] == []
    no_baseline = fit.report_fit(fit.capacity_gap(T, S), {"accuracy": {"teacher": 0.9}}, chained=False)
    assert no_baseline["teacher_lead"]["status"] == "unknown" and no_baseline["advice"] == []
    assert fit.report_fit(fit.capacity_gap(T, S), None, chained=False)["advice"] == []


def test_pick_assistant_stays_strictly_between_and_falls_back_to_a_size() -> None:
    gap = fit.capacity_gap({"arch": "resnet18", "params": 11_200_000}, {"arch": "lcnet_050", "params": 600_000})
    assert fit.pick_assistant(gap, PARAMS) == "resnet10t"  # mean 2.6 M: resnet10t (4.9 M) within 2×, teacher's family
    other = fit.capacity_gap({"arch": "efficientnet_b2", "params": 11_200_000}, {"arch": "lcnet_050", "params": 600_000})
    assert fit.pick_assistant(other, PARAMS) == "lcnet_100"  # no family member: the nearest to the mean (2.9 M)
    assert fit.pick_assistant(gap, {"resnet34": 21_300_000, "lcnet_050": 600_000}) is None  # none strictly between
    line = fit.chain_advice(fit.capacity_gap(T, S), 0.1, None, None)["line"]
    assert "a model of about 3.69 M parameters" in line and "<assistant>" in line
    assert "resnet50" not in fit.assistant_candidates("resnet50", "resnet10t")


@pytest.mark.parametrize(("teacher", "probe", "status"), [(0.70, 0.72, "below"), (0.80, 0.79, "near"), (0.90, 0.80, "leads")])
def test_teacher_against_the_probe_before_a_baseline(teacher: float, probe: float, status: str) -> None:
    out = fit.pretraining_fit(fit.capacity_gap(T, S), teacher, probe)
    assert out["teacher_vs_probe"]["status"] == status and out["teacher_vs_probe"]["lead"] == pytest.approx(teacher - probe)
    assert bool(out["advice"]) == (status != "leads")
    if status != "leads":
        assert f"({100 * teacher:.2f}%)" in out["advice"][0]["line"] and "mobilenetv3_small_050 probe" in out["advice"][0]["line"]
    assert fit.pretraining_fit(fit.capacity_gap(T, S), teacher, None) == {
        "capacity": fit.capacity_gap(T, S),
        "teacher_vs_probe": None,
        "advice": [],
    }


def test_the_page_shows_the_gap_and_the_advice_as_text() -> None:
    report, visuals = synthetic_report(["a", "b"])
    assert fit.fit_section(report) is None  # written before the section existed: left out
    gap = fit.capacity_gap({**T, "arch": "<b>resnet50</b>"}, S)
    report["fit"] = fit.report_fit(gap, knowledge(205, 200, 0.4), chained=False)
    html = render(report, visuals)
    assert '<section id="fit"><h2>Is this teacher a good fit?</h2>' in html
    assert "teacher &lt;b&gt;resnet50&lt;/b&gt;" in html and "<b>resnet50" not in html
    assert '<p class="advice">distillation cannot be expected to help' in html and "40.5×" in html
