"""Latency you can trust: FP32 and INT8 timed in alternating rounds in one process.

Sub-millisecond timings swing with machine load: timing FP32 first and INT8 afterwards lets a
burst of load land on one of them only (a student measured 2.2× slower in INT8 on a busy machine
and 0.95× on a quiet one, same files). Here every round times each session in turn (the order
alternates between rounds), each model's figure is the median of its round medians, its spread
is the range of those round medians, and the INT8/FP32 ratio is the median of the per-round
ratios. The load average and CPU features are recorded with the numbers.

Tails are percentiles of all runs pooled over the rounds, and only from enough runs: a nearest-rank
q-percentile needs n ≥ 1/(1-q) runs (100 for P99), else it is the slowest run itself. With fewer runs
the figure is `None`, the slowest run is kept as `max_ms` (labelled "max", never "P99") and the gate
does not check a budget on it.

Rounds disagree only beyond what the sample count explains. A model is flagged when the range of its
round medians is both larger than `UNSTABLE_SPREAD` of the median and larger than shuffling its runs
across the rounds produces (a permutation test, p < `ROUNDS_ALPHA`: with few runs per round, medians
scatter widely on a quiet machine too). The INT8/FP32 ratio is flagged when some round's ratio interval
lies wholly above 1 and another's wholly below (beyond `RATIO_TOLERANCE`); each round median's interval
is ±1.58·IQR/√n (McGill, Tukey & Larsen 1978, "Variations of box plots": the notch that compares two
medians at ~95%), with the IQR of the runs within rounds.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from cann_distill.quant.export import INPUT

UNSTABLE_SPREAD = 0.25
"""A model's rounds disagree only when the range of its round medians also exceeds this share of their median."""
MEDIAN_NOTCH = 1.58
"""Half-width of a median's ~95% comparison interval in units of IQR/√n (McGill, Tukey & Larsen 1978)."""
RATIO_TOLERANCE = 0.02
"""A round's INT8/FP32 ratio interval must clear 1 by this much to count as slower or faster."""
ROUNDS_ALPHA = 0.01
"""Rounds differ when fewer than this share of shuffles of the runs over the rounds spread the medians as far."""
PERMUTATIONS = 999
MIN_WITHIN_ROUND = 4
"""Rounds of fewer runs cannot estimate their own noise: the IQR of all runs pooled stands in (wider, so fewer flags)."""
TAILS = {"p90_ms": 0.90, "p99_ms": 0.99}


def load_average() -> Optional[list[float]]:
    """1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def min_samples(q: float) -> int:
    """Runs a nearest-rank q-percentile needs before it can differ from the slowest run: ⌈1/(1−q)⌉ (100 for P99)."""
    return math.ceil(round(1.0 / (1.0 - q), 9))


def percentile(sorted_values: Sequence[float], q: float) -> Optional[float]:
    """The nearest-rank q-percentile (the ⌈q·n⌉-th smallest value) of sorted values; None below `min_samples(q)`."""
    n = len(sorted_values)
    if n < min_samples(q):
        return None
    return float(sorted_values[math.ceil(round(q * n, 9)) - 1])


def runs_for(q: float, rounds: int) -> int:
    """The smallest `runs` (split evenly over `rounds`) whose pooled runs measure the q-percentile."""
    return math.ceil(min_samples(q) / rounds) * rounds


def iqr(values: Sequence[float]) -> float:
    lo, hi = np.percentile(np.asarray(values, dtype=np.float64), [25, 75])
    return float(hi - lo)


def notch(round_times: Sequence[Sequence[float]]) -> float:
    """Half-width of one round median's noise interval: 1.58·IQR/√n with the IQR of the runs within rounds."""
    n = min(len(r) for r in round_times)
    if n >= MIN_WITHIN_ROUND:
        within = statistics.median(iqr(r) for r in round_times)
    else:
        within = iqr([t for r in round_times for t in r])
    return MEDIAN_NOTCH * within / math.sqrt(n)


def rounds_p_value(round_times: Sequence[Sequence[float]], permutations: int = PERMUTATIONS, seed: int = 0) -> float:
    """How often shuffling all runs over rounds of the same sizes spreads the round medians at least as far as
    measured (a permutation test of "every round drew from one distribution"; seeded, so a figure reproduces)."""
    sizes = [len(r) for r in round_times]
    if len(sizes) < 2:
        return 1.0
    pooled = np.concatenate([np.asarray(r, dtype=np.float64) for r in round_times])
    observed = np.ptp([np.median(r) for r in round_times])
    shuffled = np.random.default_rng(seed).permuted(np.tile(pooled, (permutations, 1)), axis=1)
    edges = np.cumsum([0, *sizes])
    medians = np.stack([np.median(shuffled[:, a:b], axis=1) for a, b in zip(edges[:-1], edges[1:])], axis=1)
    as_far = int((np.ptp(medians, axis=1) >= observed - 1e-12).sum())
    return (as_far + 1) / (permutations + 1)


def summarize(round_times: list[list[float]]) -> dict[str, Any]:
    """One model's figures from its per-round run times (ms)."""
    medians = [statistics.median(r) for r in round_times]
    pooled = sorted(t for r in round_times for t in r)
    median = statistics.median(medians)
    spread = max(medians) - min(medians)
    half = notch(round_times)
    tails = {key: percentile(pooled, q) for key, q in TAILS.items()}
    return {
        "median_ms": median,
        "spread_ms": spread,
        "round_medians_ms": medians,
        "notch_ms": half,
        **tails,
        "max_ms": pooled[-1],
        "tail": tail(pooled),
        "mean_ms": statistics.fmean(pooled),
        "runs": len(pooled),
        "rounds": len(round_times),
        "times_ms": [round(t, 5) for t in pooled],  # every run, sorted: the report's latency distribution
        "rounds_p_value": (p := rounds_p_value(round_times) if median > 0 and spread / median > UNSTABLE_SPREAD else 1.0),
        "unstable": bool(p < ROUNDS_ALPHA),
    }


def tail(pooled: Sequence[float]) -> dict[str, Any]:
    """The highest percentile the runs measure, labelled: P99, else P90, else the slowest run ("max")."""
    for key, q in sorted(TAILS.items(), key=lambda kv: -kv[1]):
        value = percentile(pooled, q)
        if value is not None:
            return {"label": key.removesuffix("_ms"), "value_ms": value, "runs": len(pooled)}
    return {"label": "max", "value_ms": float(pooled[-1]), "runs": len(pooled)}


def not_measured_why(summary: Mapping[str, Any], key: str = "p99_ms") -> str:
    """Why a percentile is missing, in the words the gate and the notes use."""
    need = min_samples(TAILS[key])
    return (
        f"{key.removesuffix('_ms').upper()} needs ≥ {need} timed runs, got {summary['runs']} "
        f"(validate.latency.runs); the slowest of them took {summary['max_ms']:.3f} ms (max, not a percentile)"
    )


def round_verdicts(fp32: Mapping[str, Any], int8: Mapping[str, Any]) -> list[str]:
    """Per round: "slower" / "faster" when its INT8/FP32 ratio interval (round medians ± their notches) clears 1
    by `RATIO_TOLERANCE`, else "same"."""
    h32, h8 = fp32.get("notch_ms", 0.0), int8.get("notch_ms", 0.0)
    out = []
    for a, b in zip(fp32["round_medians_ms"], int8["round_medians_ms"]):
        lo = (b - h8) / (a + h32) if a + h32 > 0 else float("nan")
        hi = (b + h8) / (a - h32) if a - h32 > 0 else float("inf")
        out.append("slower" if lo > 1 + RATIO_TOLERANCE else "faster" if hi < 1 - RATIO_TOLERANCE else "same")
    return out


def compare(fp32: Mapping[str, Any], int8: Mapping[str, Any]) -> dict[str, Any]:
    """INT8 vs FP32: the ratio (median of per-round ratios, with its range) and whether the difference
    exceeds the measurement spread (the larger of the two models' round-median ranges)."""
    ratios = [b / a for a, b in zip(fp32["round_medians_ms"], int8["round_medians_ms"]) if a > 0]
    diff = int8["median_ms"] - fp32["median_ms"]
    spread = max(fp32["spread_ms"], int8["spread_ms"])
    significant = abs(diff) > spread
    verdict = ("slower" if diff > 0 else "faster") if significant else "same within spread"
    rounds = round_verdicts(fp32, int8)
    return {
        "int8_over_fp32": statistics.median(ratios) if ratios else float("nan"),
        "ratio_range": [min(ratios), max(ratios)] if ratios else None,
        "difference_ms": diff,
        "spread_ms": spread,
        "significant": significant,
        "verdict": verdict,
        "round_verdicts": rounds,
        "rounds_disagree": "slower" in rounds and "faster" in rounds,
    }


def interleaved(
    sessions: Mapping[str, Any], sample: np.ndarray, warmup: int, runs: int, rounds: int, batch: int = 1, progress: Any = None
) -> dict[str, Any]:
    """Time every session at `batch` in `rounds` alternating rounds of `runs // rounds` runs each.

    `progress`, when given, is called once per timed run (a progress-bar advance).
    Returns {name: summary} plus `load_avg` (before and after) and, with `fp32` and `int8` among them, `comparison`.
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
    if {"fp32", "int8"} <= set(names):
        out["comparison"] = compare(out["fp32"], out["int8"])
    return out


def unstable_note(measured: Mapping[str, Any]) -> Optional[str]:
    """A warning line when a model's rounds disagree or the per-round ratios lie on both sides of 1, beyond the noise
    the run count explains; else None."""
    shaky = [
        f"{name} rounds {', '.join(f'{m:.3f}' for m in measured[name]['round_medians_ms'])} ms"
        for name in ("fp32", "int8", "ptq")
        if name in measured and measured[name]["unstable"]
    ]
    cmp = measured.get("comparison") or {}
    if cmp.get("rounds_disagree"):
        lo, hi = cmp["ratio_range"]
        shaky.append(f"per-round INT8/FP32 ratios range {lo:.2f}–{hi:.2f} (some rounds clearly faster, others clearly slower)")
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
