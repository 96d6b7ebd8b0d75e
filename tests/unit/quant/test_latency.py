"""The interleaved latency routine: alternating rounds, median of round medians, spread, flags."""

import time

import numpy as np

from cann_distill.quant.latency import compare, interleaved, summarize, unstable_note


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
    fp32 = summarize([[1.0, 1.0], [1.4, 1.4], [1.0, 1.0]])
    int8 = summarize([[1.1, 1.1], [1.1, 1.1], [1.2, 1.2]])
    assert fp32["median_ms"] == 1.0 and abs(fp32["spread_ms"] - 0.4) < 1e-9
    cmp = compare(fp32, int8)
    assert cmp["verdict"] == "same within spread" and not cmp["significant"]
    assert cmp["rounds_disagree"]  # round 2 says INT8 faster, the others slower
    assert fp32["unstable"] and not int8["unstable"]
    note = unstable_note({"fp32": fp32, "int8": int8, "comparison": cmp, "load_avg": {"after": [3.5, 2.0, 1.0]}})
    assert note is not None and "fp32 rounds 1.000, 1.400, 1.000 ms" in note and "load average 3.50" in note


def test_a_clear_difference_is_reported_with_its_direction() -> None:
    fp32 = summarize([[1.0], [1.02], [0.99]])
    int8 = summarize([[0.5], [0.51], [0.49]])
    cmp = compare(fp32, int8)
    assert cmp["verdict"] == "faster" and abs(cmp["int8_over_fp32"] - 0.5) < 0.01
    assert unstable_note({"fp32": fp32, "int8": int8, "comparison": cmp}) is None
