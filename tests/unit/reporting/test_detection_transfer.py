"""Transfer efficiency of a detection run on hand-made COCO numbers: the share of the teacher's lead gained, and
"not meaningful" with the reason where the teacher is behind, level or ahead by less than the margin."""

from __future__ import annotations

import pytest

from cann_distill.reporting.detection_report import build_report, render_html, te_rows, terminal_lines
from cann_distill.reporting.detection_transfer import (
    MIN_TEACHER_LEAD,
    lead_is_meaningful,
    te_note,
    te_shown,
    transfer_efficiencies,
    transfer_efficiency,
)


def test_a_clear_lead_gives_the_share_of_it_the_student_gained() -> None:
    te = transfer_efficiency("mAP", teacher=0.40, baseline=0.30, distilled=0.34)
    assert te["status"] == "meaningful" and te["reason"] is None
    assert te["value"] == pytest.approx(0.4) and te["lead_points"] == pytest.approx(10.0)
    assert te_shown(te) == "0.400" and te_note(te).startswith("(distilled 34.0 − baseline 30.0) / (teacher 40.0 − baseline 30.0)")
    behind = transfer_efficiency("mAP", teacher=0.40, baseline=0.30, distilled=0.25)  # the student fell behind its baseline
    assert behind["value"] == pytest.approx(-0.5)


def test_a_teacher_behind_or_level_with_the_baseline_has_no_lead_to_transfer() -> None:
    for teacher in (0.28, 0.30):
        te = transfer_efficiency("AP50", teacher=teacher, baseline=0.30, distilled=0.35)
        assert te["value"] is None and te["status"] == "not_meaningful"
        assert f"the teacher's AP50 ({100 * teacher:.1f}) does not beat the baseline's (30.0)" in te["reason"]
        assert te_shown(te) == "not meaningful" and te_note(te) == f"not meaningful: {te['reason']}"


def test_a_lead_under_the_margin_is_not_meaningful_and_the_margin_itself_is() -> None:
    assert MIN_TEACHER_LEAD == pytest.approx(0.005)
    tiny = transfer_efficiency("mAP", teacher=0.303, baseline=0.30, distilled=0.31)  # 0.3 points: TE would read 3.3
    assert tiny["value"] is None and tiny["status"] == "not_meaningful"
    assert "by 0.30 points, under the 0.5-point margin" in tiny["reason"] and "no per-image paired test" in tiny["reason"]
    assert lead_is_meaningful(0.3051, 0.30) and not lead_is_meaningful(0.3049, 0.30)
    edge = transfer_efficiency("mAP", teacher=0.306, baseline=0.30, distilled=0.303)
    assert edge["value"] == pytest.approx(0.5)
    assert transfer_efficiency("mAP", 0.303, 0.30, 0.31, min_lead=0.001)["value"] == pytest.approx(10 / 3)


def test_missing_numbers_give_no_te_and_say_which() -> None:
    no_base = transfer_efficiency("mAP", teacher=0.4, baseline=None, distilled=0.3)
    assert no_base["status"] == "unknown" and "no baseline" in no_base["reason"] and te_shown(no_base) == "-"
    no_small = transfer_efficiencies({"mAP": 0.4, "AP_small": None}, {"mAP": 0.3, "AP_small": None}, {"mAP": 0.35, "AP_small": None})
    assert no_small["mAP"]["value"] == pytest.approx(0.5)
    assert (
        no_small["AP_small"]["value"] is None
        and "no AP_small for the teacher, baseline and distilled student" in no_small["AP_small"]["reason"]
    )
    assert set(no_small) == {"mAP", "AP50", "AP_small"}


def doc(mAP: float, AP50: float, AP_small: float, arch: str = "a") -> dict[str, object]:
    val = {"mAP": mAP, "AP50": AP50, "AP75": None, "AP_small": AP_small, "AP_medium": None, "AP_large": None, "AR100": None}
    return {"task": "detect", "arch": arch, "params": 1000, "val": val, "map": mAP}


def test_the_report_puts_te_in_json_html_and_the_terminal_lines() -> None:
    docs = {"teacher": doc(0.5, 0.8, 0.2), "distill": doc(0.35, 0.6, 0.2), "baseline": doc(0.3, 0.5, 0.199), "validate": None}
    report = build_report("t", docs, [], {})
    te = report["transfer_efficiency"]
    assert te["mAP"]["value"] == pytest.approx(0.25) and te["AP50"]["value"] == pytest.approx(1 / 3)
    assert te["AP_small"]["status"] == "not_meaningful"  # a 0.1-point lead
    lines = terminal_lines(report)
    assert lines[0] == "transfer efficiency (mAP): 0.250" and lines[2].startswith("transfer efficiency (AP_small): not meaningful (")
    assert [r[4] for r in te_rows(report)] == ["0.250", "0.333", "not meaningful"]
    html = render_html(report)
    assert "<h2>Transfer efficiency</h2>" in html and "0.250" in html and "not meaningful: the teacher&#x27;s AP_small (20.0)" in html
