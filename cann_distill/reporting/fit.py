"""Is this teacher a good fit for this student? Rules of thumb from practice, as numbers and one-line advice.

Arithmetic and policy only (no torch, no files): the callers measure and read, this module compares.

- **Teacher lead.** Once the CE-only baseline exists, the report's paired test of teacher vs baseline on the
  headline split (the exact McNemar test of `measures.paired_difference`, `knowledge["teacher_vs_baseline"]`)
  says whether the teacher leads beyond the noise; when it does not, distillation has nothing to transfer.
  Before a baseline exists (`check`, `fit-student`), the teacher's recorded val top-1 is compared with the
  student's probe (`fit-student --probe-epochs`) by a margin (`NEAR_LEAD`): accuracies alone, no paired test.
- **Capacity gap.** Parameter and FLOP ratios of teacher to student (both built untrained), and the FP32 batch-1
  CPU time ratio where both were timed. A large gap (`GAP_RATIO`) with a low transfer efficiency (`LOW_TE`)
  suggests a teacher-assistant chain (`distill.chain`, docs/guides/modes.md), with an assistant from a short list
  (`ASSISTANTS`) picked by parameter count.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Optional

GAP_RATIO = 10.0
"""A teacher with at least 10× the student's parameters or FLOPs is a large gap. An order of magnitude is where
Mirzadeh et al. ("Improved Knowledge Distillation via Teacher Assistant", AAAI 2020) saw plain KD fall behind
distilling through a mid-sized assistant, and where Cho & Hariharan ("On the Efficacy of Knowledge Distillation",
ICCV 2019) saw larger teachers stop helping small students; below it plain KD is the usual practice."""

LOW_TE = 0.3
"""Transfer efficiency below 0.3: the student gained less than a third of the teacher's lead over the CE-only
baseline. With a large gap that is the pattern an assistant is meant to fix; above it plain KD already transfers
a fair share and an extra hop (another distillation run) is unlikely to pay for itself."""

NEAR_LEAD = 0.02
"""Before a baseline exists: a teacher whose val top-1 is less than 2 points above the student's probe (a few
epochs distilled from this teacher by `fit-student --probe-epochs`) has little left to teach. Two points is a
rule of thumb for how much seed-to-seed variation and a short probe's under-training move a small student's val
accuracy; it is only a guess without per-sample predictions. The report's paired test replaces it."""

ASSISTANTS = (
    "resnet50",
    "resnet34",
    "resnet26",
    "resnet18",
    "resnet14t",
    "resnet10t",
    "efficientnet_b2",
    "efficientnet_b0",
    "mobilenetv3_large_100",
    "mobilenetv2_100",
    "lcnet_100",
    "mobilenetv3_small_100",
    "mobilenetv2_050",
    "lcnet_050",
)
"""timm architectures an assistant is picked from (a short list: each is built once to count its parameters).
Dense ResNets and the common mobile families, from about 25 M parameters down to about 0.6 M."""

TEACHER_FIX = (
    "train the teacher longer (teacher.train.epochs) or use a stronger one (a larger teacher.arch, or a pretrained "
    "or fine-tuned teacher.checkpoint)"
)


def _pct(x: Optional[float]) -> str:
    return "?" if x is None else f"{100 * x:.2f}%"


def _finite(x: Any) -> Optional[float]:
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def ratio(teacher: Any, student: Any) -> Optional[float]:
    """teacher / student, or None when either is missing or the student's is not positive."""
    t, s = _finite(teacher), _finite(student)
    return None if t is None or s is None or s <= 0 else t / s


def params_text(n: Optional[float]) -> str:
    return "?" if n is None else f"{n / 1e6:.2f} M"


def flops_text(n: Optional[float]) -> str:
    if n is None:
        return "?"
    return f"{n / 1e9:.2f} GFLOPs" if n >= 1e9 else f"{n / 1e6:.1f} MFLOPs"


def times(r: Optional[float]) -> str:
    return "?" if r is None else f"{r:.1f}×"


# ----------------------------------------------------------------------------- capacity gap


def capacity_gap(
    teacher: Mapping[str, Any],
    student: Mapping[str, Any],
    teacher_ms: Optional[float] = None,
    student_ms: Optional[float] = None,
    latency_note: str = "not measured",
) -> dict[str, Any]:
    """The gap between two models ({"arch", "params", "flops"} each): params and FLOPs ratios, the FP32 batch-1
    CPU time ratio when both times are given (else None with `latency_note`), and whether the gap is large."""
    p, f, t = ratio(teacher.get("params"), student.get("params")), ratio(teacher.get("flops"), student.get("flops")), None
    if _finite(teacher_ms) is not None and _finite(student_ms) is not None:
        t, latency_note = ratio(teacher_ms, student_ms), "FP32 batch-1 median on the CPU"
    over = [f"{name} {times(r)}" for name, r in (("params", p), ("FLOPs", f)) if r is not None and r >= GAP_RATIO]
    return {
        "teacher": {k: teacher.get(k) for k in ("arch", "params", "flops")},
        "student": {k: student.get(k) for k in ("arch", "params", "flops")},
        "params_ratio": p,
        "flops_ratio": f,
        "latency_ratio": t,
        "latency_note": latency_note,
        "threshold": GAP_RATIO,
        "large": bool(over),
        "why": f"{', '.join(over)} ≥ {GAP_RATIO:g}×" if over else f"params and FLOPs ratios below {GAP_RATIO:g}×",
    }


def gap_line(gap: Mapping[str, Any]) -> str:
    """The gap in one line, for the terminal and the page."""
    t, s = gap["teacher"], gap["student"]
    parts = [
        f"params {params_text(t.get('params'))} / {params_text(s.get('params'))} = {times(gap['params_ratio'])}",
        f"FLOPs {flops_text(t.get('flops'))} / {flops_text(s.get('flops'))} = {times(gap['flops_ratio'])}",
        f"FP32 CPU time {times(gap['latency_ratio'])}" if gap["latency_ratio"] is not None else f"FP32 CPU time {gap['latency_note']}",
    ]
    size = "large" if gap["large"] else "moderate"
    return f"capacity gap teacher {t.get('arch')} → student {s.get('arch')}: {'; '.join(parts)} ({size}: {gap['why']})"


# ----------------------------------------------------------------------------- teacher lead


def teacher_lead(knowledge: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """Does the teacher lead the CE-only baseline beyond the noise? From the report's paired test (never a second one):
    status `leads`, `not_beyond_noise` (the warning) or `unknown` (no baseline, or no per-sample predictions)."""
    k = knowledge or {}
    p, acc = k.get("teacher_vs_baseline"), k.get("accuracy") or {}
    if not isinstance(p, Mapping) or acc.get("baseline") is None:
        return {"status": "unknown", "line": "no CE-only baseline to test the teacher's lead against (report.baseline)"}
    split, t, b = k.get("split", "?"), acc.get("teacher"), acc.get("baseline")
    lo, hi = p["ci95"]
    nums = (
        f"teacher {_pct(t)} vs CE-only baseline {_pct(b)} on {split}, {100 * p['difference']:+.2f} pt "
        f"(95% CI {100 * lo:+.2f} to {100 * hi:+.2f}), exact McNemar p={p['p_value']:.2g}, {p['n']} images"
    )
    numbers = {
        "split": split,
        "teacher": t,
        "baseline": b,
        **{key: p.get(key) for key in ("difference", "ci95", "p_value", "n", "verdict")},
    }
    if p.get("verdict") == "better":
        return {"status": "leads", "line": f"the teacher leads beyond the noise ({nums})", **numbers}
    why = f"; {p['reason']}" if p.get("verdict") == "too_few" and p.get("reason") else ""
    return {
        "status": "not_beyond_noise",
        "line": f"distillation cannot be expected to help: the teacher does not lead the CE-only baseline beyond the "
        f"noise ({nums}{why}); {TEACHER_FIX}",
        **numbers,
    }


def meaningful_te(knowledge: Optional[Mapping[str, Any]]) -> Optional[float]:
    """Transfer efficiency where it means something: defined, and the teacher's lead beyond the noise (the report
    shows TE as "not meaningful" otherwise). None: no TE-based advice."""
    k = knowledge or {}
    if teacher_lead(k)["status"] != "leads":
        return None
    return _finite((k.get("transfer_efficiency") or {}).get("value"))


def teacher_vs_probe(teacher_acc: Optional[float], probe_acc: Optional[float], student_arch: str) -> Optional[dict[str, Any]]:
    """Before a baseline exists: the teacher's recorded val top-1 against the student's probe val top-1; None when
    either was not measured. Status `leads`, `near` (within `NEAR_LEAD`) or `below`."""
    t, s = _finite(teacher_acc), _finite(probe_acc)
    if t is None or s is None:
        return None
    lead = t - s
    status = "below" if lead < 0 else "near" if lead < NEAR_LEAD else "leads"
    out: dict[str, Any] = {"status": status, "teacher_val_acc": t, "probe_val_acc": s, "lead": lead, "margin": NEAR_LEAD}
    if status != "leads":
        where = "below" if status == "below" else f"within {100 * NEAR_LEAD:.0f} pt of"
        out["line"] = (
            f"the teacher's val top-1 ({_pct(t)}) is {where} the {student_arch} probe's ({_pct(s)}, {100 * lead:+.2f} pt): "
            f"distillation may not help; {TEACHER_FIX}"
        )
    return out


# ----------------------------------------------------------------------------- assistant chain


def wants_assistant(gap: Mapping[str, Any], te: Optional[float], chained: bool) -> bool:
    """Large gap and a low, meaningful TE, in a run that is not already a chain."""
    return bool(gap.get("large")) and te is not None and te < LOW_TE and not chained


def _family(arch: str) -> str:
    return re.split(r"\d", arch, maxsplit=1)[0]


def assistant_candidates(teacher_arch: str, student_arch: str) -> list[str]:
    """The short list to measure, without the two ends."""
    return [a for a in ASSISTANTS if a not in (teacher_arch, student_arch)]


def pick_assistant(gap: Mapping[str, Any], params: Mapping[str, int]) -> Optional[str]:
    """The candidate strictly between student and teacher in parameters nearest their geometric mean (TAKD's best
    assistants sat mid-way), preferring one of the teacher's family within 2× of that mean (the same kind of
    features on both sides of the first hop). None when no candidate fits between them."""
    t, s = _finite(gap["teacher"].get("params")), _finite(gap["student"].get("params"))
    if t is None or s is None or t <= s or s <= 0:
        return None
    centre = 0.5 * (math.log(t) + math.log(s))
    off = {a: abs(math.log(n) - centre) for a, n in params.items() if s < n < t}
    family = [a for a in off if _family(a) == _family(str(gap["teacher"].get("arch"))) and off[a] <= math.log(2.0)]
    pool = family or list(off)
    return min(pool, key=lambda a: (off[a], a)) if pool else None


def chain_advice(gap: Mapping[str, Any], te: float, assistant: Optional[str], assistant_params: Optional[int]) -> dict[str, Any]:
    t, s = gap["teacher"]["arch"], gap["student"]["arch"]
    head = f"large capacity gap ({gap['why']}) and transfer efficiency {te:.2f} < {LOW_TE:g}: "
    if assistant is None:
        middle = math.sqrt(float(gap["teacher"]["params"]) * float(gap["student"]["params"]))
        return {
            "kind": "assistant_chain",
            "chain": None,
            "line": head + f"try a teacher-assistant chain through a model of about {params_text(middle)} parameters "
            f"(distill.chain: [{t}, <assistant>, {s}]; docs/guides/modes.md)",
        }
    chain = [t, assistant, s]
    return {
        "kind": "assistant_chain",
        "chain": chain,
        "assistant_params": assistant_params,
        "line": head + f"try a teacher-assistant chain, distill.chain: [{', '.join(chain)}] ({assistant}: "
        f"{params_text(assistant_params)} parameters; docs/guides/modes.md)",
    }


# ----------------------------------------------------------------------------- the sections


def report_fit(
    gap: Mapping[str, Any],
    knowledge: Optional[Mapping[str, Any]],
    chained: bool,
    assistant: Optional[str] = None,
    assistant_params: Optional[int] = None,
) -> dict[str, Any]:
    """report.json's `fit`: the capacity gap, the teacher's lead over the baseline, and the advice lines."""
    lead, te = teacher_lead(knowledge), meaningful_te(knowledge)
    advice: list[dict[str, Any]] = []
    if lead["status"] == "not_beyond_noise":
        advice.append({"kind": "weak_teacher", "line": lead["line"]})
    if te is not None and wants_assistant(gap, te, chained):
        advice.append(chain_advice(gap, te, assistant, assistant_params))
    return {"capacity": dict(gap), "teacher_lead": lead, "transfer_efficiency": te, "low_te": LOW_TE, "chained": chained, "advice": advice}


def pretraining_fit(gap: Mapping[str, Any], teacher_acc: Optional[float], probe_acc: Optional[float]) -> dict[str, Any]:
    """`check`'s fit: the capacity gap and, where both were measured, the teacher's val top-1 against the probe's."""
    probe = teacher_vs_probe(teacher_acc, probe_acc, str(gap["student"].get("arch")))
    advice = [{"kind": "teacher_near_probe", "line": probe["line"]}] if probe and "line" in probe else []
    return {"capacity": dict(gap), "teacher_vs_probe": probe, "advice": advice}


Block = dict[str, Any]  # the report page's block (reporting/html.py renders it through its autoescaping template)


def fit_section(report: Mapping[str, Any], visuals: Any = None) -> Optional[list[Block]]:
    """The page blocks of report.json's `fit`; None (left out) for a report written before it existed."""
    fit = report.get("fit")
    if not isinstance(fit, Mapping):
        return None
    gap = fit["capacity"]
    t, s = gap["teacher"], gap["student"]
    rows = [
        ["parameters", params_text(t.get("params")), params_text(s.get("params")), times(gap["params_ratio"])],
        ["FLOPs (batch 1)", flops_text(t.get("flops")), flops_text(s.get("flops")), times(gap["flops_ratio"])],
        ["FP32 batch-1 CPU time", "", "", times(gap["latency_ratio"]) if gap["latency_ratio"] is not None else gap["latency_note"]],
    ]
    blocks: list[Block] = [
        {
            "kind": "table",
            "head": ["capacity", f"teacher {t.get('arch')}", f"student {s.get('arch')}", "teacher / student"],
            "rows": [[str(c) for c in row] for row in rows],
            "caption": f"Capacity gap: {'large' if gap['large'] else 'moderate'} ({gap['why']}); models built untrained.",
        }
    ]
    lead = fit.get("teacher_lead") or {}
    if lead.get("status") in ("leads", "unknown"):
        blocks.append({"kind": "p", "text": f"Teacher lead: {lead['line']}.", "cls": "note"})
    for item in fit.get("advice") or []:
        blocks.append({"kind": "p", "text": str(item.get("line")), "cls": "advice"})
    if not fit.get("advice"):
        blocks.append({"kind": "p", "text": "No fit advice: nothing above calls for a different teacher or an assistant.", "cls": "note"})
    return blocks
