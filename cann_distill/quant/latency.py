"""Latency you can trust: FP32 and INT8 timed in alternating rounds in one process.

Sub-millisecond timings swing with machine load: timing FP32 first and INT8 afterwards lets a
burst of load land on one of them only (a student measured 2.2× slower in INT8 on a busy machine
and 0.95× on a quiet one, same files). Here every round times each session in turn (the order
alternates between rounds), each model's figure is the median of its round medians, its spread
is the range of those round medians, and the INT8/FP32 ratio is the median of the per-round
ratios. The load average and CPU features are recorded with the numbers; a measurement whose
rounds disagree is flagged, never hidden. Tails (P90/P99) are the median over rounds of each
round's quantile, so one burst of load does not become the model's tail; the pooled P99 is kept too.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any, Mapping, Optional

import numpy as np

from cann_distill.quant.export import INPUT

UNSTABLE_SPREAD = 0.25
"""A model's rounds disagree when the range of its round medians exceeds this share of their median."""


def load_average() -> Optional[list[float]]:
    """1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def nearest_rank(sorted_values: list[float], q: float) -> float:
    """The q-quantile of already sorted values (nearest rank, no interpolation)."""
    return sorted_values[min(len(sorted_values) - 1, int(round(q * (len(sorted_values) - 1))))]


def summarize(round_times: list[list[float]]) -> dict[str, Any]:
    """One model's figures from its per-round run times (ms)."""
    medians = [statistics.median(r) for r in round_times]
    pooled = sorted(t for r in round_times for t in r)
    median = statistics.median(medians)
    spread = max(medians) - min(medians)

    def per_round(q: float) -> float:  # a preemption burst in one round does not become the model's tail
        return statistics.median(nearest_rank(sorted(r), q) for r in round_times)

    return {
        "median_ms": median,
        "spread_ms": spread,
        "round_medians_ms": medians,
        "p90_ms": per_round(0.90),
        "p99_ms": per_round(0.99),
        "p99_pooled_ms": nearest_rank(pooled, 0.99),
        "mean_ms": statistics.fmean(pooled),
        "runs": len(pooled),
        "rounds": len(round_times),
        "times_ms": [round(t, 5) for t in pooled],  # every run, sorted: the report's latency distribution
        "unstable": bool(median > 0 and spread / median > UNSTABLE_SPREAD),
    }


def compare(fp32: Mapping[str, Any], int8: Mapping[str, Any]) -> dict[str, Any]:
    """INT8 vs FP32: the ratio (median of per-round ratios, with its range) and whether the difference
    exceeds the measurement spread (the larger of the two models' round-median ranges)."""
    ratios = [b / a for a, b in zip(fp32["round_medians_ms"], int8["round_medians_ms"]) if a > 0]
    diff = int8["median_ms"] - fp32["median_ms"]
    spread = max(fp32["spread_ms"], int8["spread_ms"])
    significant = abs(diff) > spread
    verdict = ("slower" if diff > 0 else "faster") if significant else "same within spread"
    disagree = bool(ratios) and min(ratios) < 1.0 < max(ratios)
    return {
        "int8_over_fp32": statistics.median(ratios) if ratios else float("nan"),
        "ratio_range": [min(ratios), max(ratios)] if ratios else None,
        "difference_ms": diff,
        "spread_ms": spread,
        "significant": significant,
        "verdict": verdict,
        "rounds_disagree": disagree,
    }


def interleaved(
    sessions: Mapping[str, Any], sample: np.ndarray, warmup: int, runs: int, rounds: int, batch: int = 1, progress: Any = None
) -> dict[str, Any]:
    """Time every session at `batch` in `rounds` alternating rounds of `runs // rounds` runs each.

    `progress`, when given, is called once per timed run (a progress-bar advance).
    Returns {name: summary} plus `load_avg` (before and after) and, for two sessions, `comparison`.
    """
    names = list(sessions)
    x = np.resize(sample, (batch, *sample.shape[1:])).astype(np.float32)
    feed = {INPUT: x}
    per_round = max(1, runs // rounds)
    load_before = load_average()
    for name in names:
        for _ in range(warmup):
            sessions[name].run(None, feed)
    times: dict[str, list[list[float]]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            sess, this = sessions[name], []
            for _ in range(per_round):
                t0 = time.perf_counter()
                sess.run(None, feed)
                this.append((time.perf_counter() - t0) * 1e3)
                if progress is not None:
                    progress()
            times[name].append(this)
    out: dict[str, Any] = {name: summarize(times[name]) for name in names}
    out["load_avg"] = {"before": load_before, "after": load_average()}
    out["batch"], out["rounds"], out["runs_per_round"] = batch, rounds, per_round
    if set(names) == {"fp32", "int8"}:
        out["comparison"] = compare(out["fp32"], out["int8"])
    return out


def unstable_note(measured: Mapping[str, Any]) -> Optional[str]:
    """A warning line when a model's rounds disagree or the per-round ratios straddle 1, else None."""
    shaky = [
        f"{name} rounds {', '.join(f'{m:.3f}' for m in measured[name]['round_medians_ms'])} ms"
        for name in ("fp32", "int8")
        if name in measured and measured[name]["unstable"]
    ]
    cmp = measured.get("comparison") or {}
    if cmp.get("rounds_disagree"):
        lo, hi = cmp["ratio_range"]
        shaky.append(f"per-round INT8/FP32 ratios range {lo:.2f}–{hi:.2f} (both sides of 1)")
    if not shaky:
        return None
    load = (measured.get("load_avg") or {}).get("after")
    return (
        "latency rounds disagree ("
        + "; ".join(shaky)
        + ")"
        + (f"; load average {load[0]:.2f}" if load else "")
        + ": the machine was busy, rerun on a quieter one to trust the figures"
    )
