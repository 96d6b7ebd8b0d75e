"""Transfer efficiency of a `task: detect` run: how much of the teacher's lead over the ground-truth-only baseline
the distilled student gained, per COCO metric (mAP, AP50, AP_small). Pure numbers in, a small dict out, no IO.

TE = (distilled − baseline) / (teacher − baseline). It is a share of the teacher's lead, so it only means something
when there is a lead: where the teacher does not lead the baseline, or leads it by less than `MIN_TEACHER_LEAD`,
TE is "not meaningful" with the reason, as classification's TE is where its teacher's lead is within the noise.
"""

from __future__ import annotations

import math
from typing import Any, Optional

MIN_TEACHER_LEAD = 0.005
"""The teacher's lead over the baseline (AP as a fraction: 0.005 = 0.5 AP points) below which TE is not meaningful."""

METRICS = ("mAP", "AP50", "AP_small")
"""The COCO metrics the report gives a TE for: the primary metric, the lenient one, and the one small students lose first."""


def lead_is_meaningful(teacher: float, baseline: float, min_lead: float = MIN_TEACHER_LEAD) -> bool:
    """True when the teacher leads the baseline by at least `min_lead` (AP as a fraction), so TE has a lead to divide.

    Why a fixed margin and not a test: classification decides "beyond the noise" with an exact McNemar test on paired
    per-image results (`measures.paired_difference`); COCO AP has no per-image paired form (an image's detections
    enter every class's precision-recall curve at once), so there is no paired test to run, and one run with one
    seed gives no noise estimate. Half an AP point is the margin validate's INT8 feedback uses for "beyond the
    noise" with mAP (`quant.detect_feedback.MIN_MAP_GAIN`). Below it, TE divides by a lead that may be noise: a
    0.3-point gain over a 0.1-point lead would read as TE 3.
    """
    return teacher - baseline >= min_lead


def _points(value: float) -> str:
    return f"{100 * value:.1f}"


def transfer_efficiency(
    metric: str,
    teacher: Optional[float],
    baseline: Optional[float],
    distilled: Optional[float],
    min_lead: float = MIN_TEACHER_LEAD,
) -> dict[str, Any]:
    """{"metric", "value" (None unless meaningful), "status": meaningful | not_meaningful | unknown, "reason",
    "teacher", "baseline", "distilled", "lead_points", "min_lead_points"} for one COCO metric (AP as fractions)."""
    values = {"teacher": teacher, "baseline": baseline, "distilled": distilled}
    out: dict[str, Any] = {"metric": metric, "value": None, **values, "lead_points": None, "min_lead_points": 100 * min_lead}
    absent = [who for who, v in values.items() if v is None or not math.isfinite(v)]
    if absent:
        who = [{"distilled": "distilled student"}.get(a, a) for a in absent]
        named = who[0] if len(who) == 1 else f"{', '.join(who[:-1])} and {who[-1]}"
        why = f"no {metric} for the {named} (not run, or no ground truth of that size)"
        if absent == ["baseline"]:
            why = "no baseline (report.baseline is false, or the baseline stage has not run)"
        out.update(status="unknown", reason=why)
        return out
    assert teacher is not None and baseline is not None and distilled is not None
    lead = teacher - baseline
    out["lead_points"] = 100 * lead
    if lead <= 0:
        out.update(
            status="not_meaningful",
            reason=f"the teacher's {metric} ({_points(teacher)}) does not beat the baseline's ({_points(baseline)}): "
            "there is no lead to transfer",
        )
    elif not lead_is_meaningful(teacher, baseline, min_lead):
        out.update(
            status="not_meaningful",
            reason=f"the teacher's {metric} ({_points(teacher)}) leads the baseline's ({_points(baseline)}) by "
            f"{100 * lead:.2f} points, under the {100 * min_lead:.1f}-point margin (COCO AP has no per-image paired "
            "test): the lead may be noise, too small to divide by",
        )
    else:
        out.update(status="meaningful", value=(distilled - baseline) / lead, reason=None)
    return out


def transfer_efficiencies(
    teacher: Optional[dict[str, Any]], baseline: Optional[dict[str, Any]], distilled: Optional[dict[str, Any]]
) -> dict[str, Any]:
    """TE per metric of `METRICS` from the three models' COCO metrics on val (each a dict metric -> AP, or None)."""
    t, b, d = teacher or {}, baseline or {}, distilled or {}
    return {m: transfer_efficiency(m, t.get(m), b.get(m), d.get(m)) for m in METRICS}


def te_shown(te: Optional[dict[str, Any]]) -> str:
    """TE as the report prints it: the number, 'not meaningful', or '-' when it cannot be computed."""
    if not te:
        return "-"
    if te.get("value") is not None:
        return f"{te['value']:.3f}"
    return "not meaningful" if te.get("status") == "not_meaningful" else "-"


def te_note(te: Optional[dict[str, Any]]) -> str:
    """The line beside TE: what it was computed from, or why it is not meaningful (classification's wording)."""
    if not te:
        return ""
    if te.get("value") is not None:
        d, b, t = (_points(te[k]) for k in ("distilled", "baseline", "teacher"))
        return f"(distilled {d} − baseline {b}) / (teacher {t} − baseline {b}); one run, one seed: no noise estimate"
    return f"not meaningful: {te['reason']}" if te.get("status") == "not_meaningful" else te.get("reason") or ""
