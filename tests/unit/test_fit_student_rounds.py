"""fit-student times its candidates round-robin: every round visits every candidate, for latency and throughput."""

import numpy as np

from cann_distill.core.recipe import ValidateConfig, hardware_profile
from cann_distill.fit_student import Built, Setup, measure_all


class Logged:
    """A session that records its name at every run (and takes no time)."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def run(self, _outputs, _feed):
        self.log.append(self.name)
        return [np.zeros((1, 10), np.float32)]


def test_every_round_visits_every_candidate() -> None:
    log: list[str] = []
    cfg = ValidateConfig.model_validate({"latency": {"warmup": 0, "runs": 6, "rounds": 3}, "throughput_batch": 2})
    setup = Setup(
        10,
        1,
        8,
        np.zeros((2, 1, 8, 8), np.float32),
        np.zeros((1, 1, 8, 8), np.float32),
        cfg,
        hardware_profile("cpu"),
        "CPUExecutionProvider",
    )
    built = [Built({"arch": a}, Logged(f"{a}/fp32", log), Logged(f"{a}/int8", log)) for a in ("a", "b", "c")]
    measure_all(built, setup)
    sessions = ["a/fp32", "a/int8", "b/fp32", "b/int8", "c/fp32", "c/int8"]
    latency, throughput = log[:36], log[36:]  # 3 rounds × 2 runs × 6 sessions, then the throughput rounds
    blocks = [latency[i] for i in range(0, 36, 2)]
    assert blocks == sessions + sessions[::-1] + sessions  # each round: every session once, order reversed every other round
    per_round = len(throughput) // 5  # 5 throughput rounds of one warm-up run and 2 timed runs per session
    rounds = [throughput[i : i + per_round] for i in range(0, len(throughput), per_round)]
    assert len(rounds) == 5 and all(sorted(set(r)) == sessions for r in rounds)
    assert [r[0] for r in rounds] == ["a/fp32", "c/int8", "a/fp32", "c/int8", "a/fp32"]
    for b in built:
        row = b.row
        assert row["rounds"] == {"latency": 3, "throughput": 5, "candidates": 3}
        assert row["int8"]["runs"] == 6 and len(row["int8"]["round_medians_ms"]) == 3 and row["int8"]["p99_ms"] is None
        assert row["throughput"]["int8_spread_img_s"] >= 0 and row["throughput"]["fp32_img_s"] > 0
        assert row["comparison"]["round_verdicts"] and "int8_over_fp32" in row
