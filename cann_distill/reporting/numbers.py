"""A run's headline numbers, each named by its split: one reading of report.json for report.html and the dashboard.

The report measures the teacher, the baseline and the student on the headline split (test when the
recipe has one, else val); validate measures the ONNX models on the same split. A number from any
other split is not shown beside them. Transfer efficiency (and DQI, which is built on it) is only
meaningful when the teacher beats the CE-only baseline beyond the noise: the report's distillation
verdict (`guard.distillation_verdict`, from the exact McNemar test in `measures.paired_difference`)
says so, and where it does not, the number is replaced by "not meaningful" and the reason.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from cann_distill.reporting.guard import distillation_verdict

ACCURACIES = ("teacher", "baseline", "student", "onnx_fp32", "onnx_int8")


def number(value: Any) -> Optional[float]:
    """A finite float, else None (booleans, strings, NaN and infinities are not numbers to show)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """{"split", accuracies, "int8_drop", "te", "dqi" (None when not meaningful), "te_note", "dqi_note", "verdict", "other_split"}."""
    k, v = _dict(report.get("knowledge")), _dict(report.get("validate"))
    kacc, vacc = _dict(k.get("accuracy")), _dict(v.get("accuracy"))
    ksplit = k.get("split") if k else None
    vsplit = (vacc.get("split") or v.get("split")) if vacc else None
    split = ksplit or vsplit or _dict(report.get("data")).get("headline_split")
    out: dict[str, Any] = {"split": split, "other_split": None}
    same = vsplit is None or vsplit == split
    if not same:
        out["other_split"] = f"validate measured on {vsplit}, the report on {split}: its numbers are left out"
    out["teacher"] = number(kacc.get("teacher")) if ksplit else (number(vacc.get("teacher")) if same else None)
    out["student"] = number(kacc.get("student")) if ksplit else (number(vacc.get("torch_fp32")) if same else None)
    out["baseline"] = number(kacc.get("baseline")) if ksplit else None
    for key in ("onnx_fp32", "onnx_int8", "int8_drop"):
        out[key] = number(vacc.get(key)) if same else None
    verdict = _dict(report.get("distillation")) or (distillation_verdict(k) if k else {})
    out["verdict"] = verdict.get("status")
    out["verdict_line"] = verdict.get("line")
    te, dqi = _dict(k.get("transfer_efficiency")), _dict(k.get("dqi"))
    out["te"], out["te_note"] = number(te.get("value")), te.get("reason") or ""
    out["dqi"], out["dqi_note"] = number(dqi.get("value")), dqi.get("reason") or ""
    if verdict.get("status") == "undefined":  # the teacher's lead over the baseline is within the noise
        out["te"], out["te_note"] = None, f"not meaningful: {verdict.get('line')}"
        out["dqi"], out["dqi_note"] = None, "not meaningful: built on transfer efficiency, which is not meaningful here"
    elif out["te"] is not None and isinstance(k.get("distill_vs_baseline"), dict):
        p = k["distill_vs_baseline"]
        if number(p.get("difference")) is not None and isinstance(p.get("ci95"), list) and len(p["ci95"]) == 2:
            lo, hi = (number(x) for x in p["ci95"])
            if lo is not None and hi is not None:
                out["te_note"] = (
                    f"student − baseline {100 * p['difference']:+.2f} pt (95% CI {100 * lo:+.2f} to {100 * hi:+.2f}) on {split}"
                )
    out["meaningful"] = out["te"] is not None
    n_k = k.get("num") if ksplit else None
    n_v = v.get(f"num_{vsplit}") if vsplit else None
    out["n"] = n_k if isinstance(n_k, int) else (n_v if isinstance(n_v, int) else None)
    out["ci95"] = {}
    for key in ACCURACIES:
        n = n_k if (ksplit and key in ("teacher", "baseline", "student")) else n_v
        if out[key] is not None and isinstance(n, int) and n > 0:
            out["ci95"][key] = wilson_interval(round(out[key] * n), n)
    return out


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of an accuracy of `correct` out of `n` (sound near 0 and 1, unlike the Wald one)."""
    p = correct / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def shown(value: Optional[float], kind: str = "pct", digits: int = 3) -> str:
    """One number as the report and the dashboard print it: '–' when there is none."""
    if value is None:
        return "–"
    return f"{100 * value:.2f}%" if kind == "pct" else (f"{100 * value:+.2f} pt" if kind == "pt" else f"{value:.{digits}f}")
