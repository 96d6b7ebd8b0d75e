"""Did distillation help? The report's one-line verdict and the `--strict` check built on it.

Policy only: the numbers come from `metrics.paired_difference` (the exact McNemar test on the same
images), computed by the report stage for teacher vs baseline and student vs baseline.
"""

from __future__ import annotations

from typing import Any, Optional


def hurt_hint(warmup_epochs: Optional[float] = None) -> str:
    """What to try when the distilled student is below its baseline, given the run's warmup (None: not known).

    The first cause is the draw: one seed's CE-only baseline can land far from another's (the packaged photo
    recipe's over seeds 0-2 and both `--jobs` values: 67.00-78.22% test, the distilled student 72.89-80.11%;
    docs/getting-started.md), so one run below its baseline is a reason to rerun with another seed first."""
    causes = [
        "one run is one draw: the CE-only baseline's accuracy moves with the seed more than the distilled student's, "
        "so rerun with another seed (--set seed=1) before changing the recipe"
    ]
    if warmup_epochs is None or warmup_epochs == 0:
        causes.append("no learning-rate warmup (distill.warmup_epochs)")
    causes += ["a learning rate too high for the KD term's larger gradient", "too few epochs for the student to follow the teacher"]
    return f"likely causes: {'; '.join(causes)}; measured alternatives: docs/defaults.md"


def no_gain_hint(teacher: Optional[float], baseline: Optional[float]) -> str:
    """What bounds the gain when distillation made no difference: the teacher's lead over the baseline (accuracies in
    [0, 1]; None when not known), and the two levers that moved it on the photo benchmarks (docs/defaults.md)."""
    lead = "" if teacher is None or baseline is None else f" (here {100 * (teacher - baseline):.2f} pt)"
    return (
        f"what distillation can add is bounded by the teacher's lead over the baseline{lead}; on the photo benchmarks "
        "a longer schedule (distill.epochs) and a teacher trained until it is clearly ahead raised it: docs/defaults.md"
    )


STRICT_FAILS = frozenset({"hurt", "undefined"})
"""Verdicts that fail `--strict`: distillation measurably hurt, or the teacher has no lead to transfer."""


def _pct(x: Optional[float]) -> str:
    return "?" if x is None else f"{100 * x:.2f}%"


def distillation_verdict(knowledge: Optional[dict[str, Any]], warmup_epochs: Optional[float] = None) -> dict[str, Any]:
    """{"status": helped | no_gain | hurt | too_few | undefined | unknown, "line": one sentence for the user}.
    `warmup_epochs`: distill's warmup, so that a "hurt" line names a missing warmup only when there was none."""
    if not knowledge:
        return {"status": "unknown", "line": "cannot tell whether distillation helped: the report has no per-sample predictions"}
    acc = knowledge.get("accuracy") or {}
    split = knowledge.get("split", "?")
    s, b, t = acc.get("student"), acc.get("baseline"), acc.get("teacher")
    vs_base, teacher_lead = knowledge.get("distill_vs_baseline"), knowledge.get("teacher_vs_baseline")
    if b is None or vs_base is None or teacher_lead is None:
        return {
            "status": "unknown",
            "line": "cannot tell whether distillation helped: no CE-only baseline "
            "(report.baseline is false, or the baseline stage has not run)",
        }
    nums = f"student {_pct(s)} vs baseline {_pct(b)} on {split}, {vs_base['n']} images"
    if teacher_lead["verdict"] != "better":
        return {
            "status": "undefined",
            "line": f"the teacher ({_pct(t)}) does not beat the CE-only baseline ({_pct(b)}) beyond the "
            f"noise on {split} (exact McNemar p={teacher_lead['p_value']:.2g}): there is no lead to transfer, so "
            "distillation cannot be judged; train the teacher longer or pick a larger one",
        }
    verdict = vs_base["verdict"]
    if verdict == "too_few":
        return {"status": "too_few", "line": f"cannot tell whether distillation helped: {vs_base['reason']} ({nums})"}
    if verdict == "worse":
        return {
            "status": "hurt",
            "line": f"the distilled student is below its CE-only baseline beyond the noise ({nums}, exact "
            f"McNemar p={vs_base['p_value']:.2g}); {hurt_hint(warmup_epochs)}",
        }
    if verdict == "better":
        return {"status": "helped", "line": f"distillation helped beyond the noise ({nums}, exact McNemar p={vs_base['p_value']:.2g})"}
    return {
        "status": "no_gain",
        "line": f"distillation made no difference beyond the noise ({nums}, exact McNemar p={vs_base['p_value']:.2g}); "
        f"{no_gain_hint(t, b)}",
    }


def strict_failure(verdict: Optional[dict[str, Any]]) -> Optional[str]:
    """The `--strict` failure message for a report verdict, or None when it passes (or was not judged)."""
    if verdict and verdict.get("status") in STRICT_FAILS:
        return f"distillation gate failed: {verdict['line']}"
    return None
