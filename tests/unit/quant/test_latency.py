"""The interleaved latency routine: alternating rounds, median of round medians, spread, flags."""

import time

import numpy as np

from cann_distill.quant.latency import compare, interleaved, min_samples, not_measured_why, percentile, runs_for, summarize, unstable_note


class Timed:
    """A session whose run takes a scripted time per call and records the call order."""

    def __init__(self, name: str, log: list[str], seconds) -> None:
        self.name, self.log, self.seconds, self.calls = name, log, seconds, 0

    def run(self, _outputs, _feed):
        self.log.append(self.name)
        delay = self.seconds(self.calls) if callable(self.seconds) else self.seconds
        self.calls += 1
        end = time.perf_counter() + delay
        while time.perf_counter() < end:
            pass


def test_rounds_alternate_and_the_ratio_is_measured() -> None:
    log: list[str] = []
    sessions = {"fp32": Timed("fp32", log, 0.001), "int8": Timed("int8", log, 0.004)}
    out = interleaved(sessions, np.zeros((1, 1, 4, 4), np.float32), warmup=1, runs=8, rounds=4)
    timed = log[2:]  # after one warm-up run each
    blocks = [timed[i] for i in range(0, len(timed), 2)]
    assert blocks == ["fp32", "int8", "int8", "fp32", "fp32", "int8", "int8", "fp32"]
    assert out["fp32"]["rounds"] == 4 and out["fp32"]["runs"] == 8 and len(out["int8"]["round_medians_ms"]) == 4
    cmp = out["comparison"]
    assert cmp["int8_over_fp32"] > 1.5  # 4x when the machine is quiet; load only stretches single runs
    assert min(out["int8"]["round_medians_ms"]) >= 4.0 and min(out["fp32"]["round_medians_ms"]) >= 1.0
    assert out["load_avg"]["before"] is None or len(out["load_avg"]["before"]) == 3


def test_a_difference_inside_the_spread_is_not_called_slower() -> None:
    rng = np.random.default_rng(0)
    quiet = lambda ms: list(ms * rng.lognormal(0.0, 0.01, 20))  # noqa: E731  # 20 runs of a round, 1% noise
    fp32 = summarize([quiet(1.0), quiet(1.4), quiet(1.0)])
    int8 = summarize([quiet(1.1), quiet(1.1), quiet(1.2)])
    assert abs(fp32["median_ms"] - 1.0) < 0.01 and abs(fp32["spread_ms"] - 0.4) < 0.02
    cmp = compare(fp32, int8)
    assert cmp["verdict"] == "same within spread" and not cmp["significant"]
    assert cmp["rounds_disagree"] and cmp["round_verdicts"] == ["slower", "faster", "slower"]  # round 2: INT8 faster
    assert fp32["unstable"] and fp32["rounds_p_value"] < 0.01 and not int8["unstable"]
    note = unstable_note({"fp32": fp32, "int8": int8, "comparison": cmp, "load_avg": {"after": [3.5, 2.0, 1.0]}})
    rounds = ", ".join(f"{m:.3f}" for m in fp32["round_medians_ms"])
    assert note is not None and f"fp32 rounds {rounds} ms" in note and "load average 3.50" in note


def test_a_clear_difference_is_reported_with_its_direction() -> None:
    fp32 = summarize([[1.0], [1.02], [0.99]])
    int8 = summarize([[0.5], [0.51], [0.49]])
    cmp = compare(fp32, int8)
    assert cmp["verdict"] == "faster" and abs(cmp["int8_over_fp32"] - 0.5) < 0.01
    assert unstable_note({"fp32": fp32, "int8": int8, "comparison": cmp}) is None


def rounds_of(rng: np.random.Generator, rounds: int, runs: int, scale: float = 1.0, noise: float = 0.3) -> list[list[float]]:
    """Run times (ms) of a machine with no load change: every round drawn from one log-normal distribution."""
    return [list(scale * rng.lognormal(0.0, noise, runs)) for _ in range(rounds)]


def test_p99_needs_100_runs_else_the_slowest_run_is_labelled_max() -> None:
    base = [[1.0 + 0.001 * i for i in range(19)] + [9.0 + r] for r in range(4)]  # 4 rounds of 20, one outlier each
    s = summarize(base)
    assert s["runs"] == 80 and s["p99_ms"] is None and s["max_ms"] == 12.0
    assert s["p90_ms"] == sorted(t for r in base for t in r)[71] < 2.0  # 80 runs measure P90: the 72nd smallest
    assert s["tail"] == {"label": "p90", "value_ms": s["p90_ms"], "runs": 80}
    assert "P99 needs ≥ 100 timed runs, got 80" in not_measured_why(s) and "12.000 ms (max" in not_measured_why(s)
    few = summarize([[1.0, 1.1, 5.0]])
    assert few["p90_ms"] is None and few["tail"] == {"label": "max", "value_ms": 5.0, "runs": 3}


def test_p99_pools_the_rounds() -> None:
    """One burst of three slow runs in one round of five: 1.5% of all runs, so the P99 is slow (a median over the
    rounds' own P99s would hide it); with one slow run in each round of 40 it is one of those runs too."""
    burst = [[1.0] * 40 for _ in range(5)]
    burst[2][:3] = [7.0, 8.0, 9.0]
    s = summarize(burst)
    assert s["runs"] == 200 and s["p99_ms"] == 7.0 and s["p90_ms"] == 1.0  # ranks 198 of 200 and 180 of 200
    each = [[1.0] * 39 + [5.0 + r] for r in range(5)]
    assert summarize(each)["p99_ms"] == 7.0  # the 198th smallest of 200: the third-slowest outlier


def test_percentile_is_nearest_rank_and_needs_its_runs() -> None:
    values = list(range(1, 101))
    assert min_samples(0.99) == 100 and min_samples(0.9) == 10 and min_samples(0.5) == 2
    assert percentile(values, 0.99) == 99 and percentile(values, 0.9) == 90 and percentile(values, 0.5) == 50
    assert percentile(values[:99], 0.99) is None and percentile(values[:10], 0.9) == 9
    assert runs_for(0.99, 5) == 100 and runs_for(0.99, 3) == 102 and runs_for(0.99, 7) == 105


def test_rounds_from_one_distribution_are_not_called_busy() -> None:
    """Small runs (5 rounds of 4 to 20) from an unchanging machine: the warning stays quiet; a real load change
    (one round twice as slow) and a real ratio flip are still flagged."""
    flags = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        runs = (4, 8, 20)[seed % 3]
        fp32, int8 = summarize(rounds_of(rng, 5, runs)), summarize(rounds_of(rng, 5, runs))
        cmp = compare(fp32, int8)
        flags += unstable_note({"fp32": fp32, "int8": int8, "comparison": cmp}) is not None
    assert flags <= 5, flags
    rng = np.random.default_rng(0)
    busy = rounds_of(rng, 5, 20, noise=0.05)
    busy[2] = [2 * t for t in busy[2]]
    assert summarize(busy)["unstable"]
    a, b = rounds_of(rng, 4, 20, noise=0.05), rounds_of(rng, 4, 20, noise=0.05)
    b[0], b[1] = [0.5 * t for t in b[0]], [0.5 * t for t in b[1]]
    a[2], a[3] = [0.5 * t for t in a[2]], [0.5 * t for t in a[3]]
    flip = compare(summarize(a), summarize(b))
    assert flip["rounds_disagree"] and flip["round_verdicts"] == ["faster", "faster", "slower", "slower"]


def test_int8_as_fast_as_fp32_is_not_a_disagreement() -> None:
    """INT8 ≈ FP32 puts the point ratios on both sides of 1 by chance: no round's interval clears 1, no note."""
    disagree = straddles = 0
    for seed in range(100):
        rng = np.random.default_rng(seed)
        cmp = compare(summarize(rounds_of(rng, 5, 20, noise=0.1)), summarize(rounds_of(rng, 5, 20, noise=0.1)))
        disagree += cmp["rounds_disagree"]
        straddles += min(cmp["ratio_range"]) < 1 < max(cmp["ratio_range"])
    assert straddles >= 80, straddles  # what a "ratios on both sides of 1" rule would have flagged
    assert disagree <= 2, disagree
