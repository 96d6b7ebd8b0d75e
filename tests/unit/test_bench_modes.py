"""scripts/bench/modes_bench.py and modes_report.py: which row of a run counts, and each mode's verdict."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "bench"))
import modes_bench  # noqa: E402  (scripts/bench is not a package)
import modes_report  # noqa: E402


def row(name: str, arm: str, seed: int, val: float, test: float) -> dict[str, Any]:
    return {"name": name, "arm": arm, "seed": seed, "stage": "distill", "val": val, "test": test}


def test_a_later_failed_row_does_not_replace_a_finished_run(tmp_path: Path) -> None:
    lines = [
        {"name": "s1_kd10", "arm": "kd10", "seed": 1, "error": "teacher exited 2"},
        row("s1_kd10", "kd10", 1, 0.36, 0.35),
        {"name": "s1_kd10", "arm": "kd10", "seed": 1, "error": "teacher exited 2"},  # a racing invocation
        {"name": "s2_kd10", "arm": "kd10", "seed": 2, "error": "teacher exited 2"},
        {"meta": {"command": "python scripts/bench/modes_bench.py"}},
        row("s0_single", "single", 0, 0.5, 0.5),
        row("s0_single", "single", 0, 0.6, 0.61),  # a rerun replaces the earlier finished row
    ]
    out = tmp_path / "modes.jsonl"
    out.write_text("".join(json.dumps(x) + "\n" for x in lines))
    data = modes_bench.read_rows(out)
    rows = {r["name"]: r for r in data["rows"]}
    assert rows["s1_kd10"]["test"] == 0.35
    assert rows["s2_kd10"]["error"] == "teacher exited 2"
    assert rows["s0_single"]["test"] == 0.61
    assert len(data["metas"]) == 1


def test_a_mode_helps_only_when_its_mean_gain_exceeds_the_seed_spread() -> None:
    rows = [row(f"s{s}_base10", "base10", s, 0.1, t) for s, t in enumerate([0.14, 0.15, 0.28])]
    rows += [row(f"s{s}_kd10", "kd10", s, 0.3, t) for s, t in enumerate([0.41, 0.35, 0.36])]
    rows += [row(f"s{s}_single", "single", s, 0.6, t) for s, t in enumerate([0.56, 0.65, 0.69])]
    rows += [row(f"s{s}_tuned", "tuned", s, 0.6, t) for s, t in enumerate([0.63, 0.66, 0.71])]
    arms = modes_report.by_arm(rows)
    kd = modes_report.compare(arms, "kd10", ("base10",))
    assert kd is not None and kd["verdict"].startswith("helps")
    assert abs(kd["mean_delta"] - (0.27 + 0.20 + 0.08) / 3) < 1e-9
    tuned = modes_report.compare(arms, "tuned", ("single",))
    assert tuned is not None and tuned["verdict"] == "no difference beyond the seed spread"
    assert modes_report.compare(arms, "ens3", ("single", "single1")) is None


def test_several_references_pick_the_best_on_val_not_on_test() -> None:
    rows = [row("s0_single", "single", 0, 0.70, 0.50), row("s1_single", "single", 1, 0.70, 0.50)]
    rows += [row("s0_single1", "single1", 0, 0.60, 0.90), row("s1_single1", "single1", 1, 0.60, 0.90)]
    rows += [row("s0_ens2", "ens2", 0, 0.65, 0.55), row("s1_ens2", "ens2", 1, 0.65, 0.56)]
    result = modes_report.compare(modes_report.by_arm(rows), "ens2", ("single", "single1"))
    assert result is not None and result["ref"] == "single"
