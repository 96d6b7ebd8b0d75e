"""scripts/bench/default_job_seeds.py reads one run's numbers back from its manifest."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "bench"))
import default_job_seeds  # noqa: E402  (scripts/bench is not a package)


def test_a_row_is_the_manifests_numbers_in_percent_with_no_wall_time_for_a_skipped_run(tmp_path: Path) -> None:
    def rec(seconds: float, **summary: object) -> dict:
        return {"seconds": seconds, "summary": summary}

    stages = {
        "teacher": rec(70.04, val_acc=0.8667, test_acc=0.85556),
        "distill": rec(104.9, val_acc=0.74815, test_acc=0.76778),
        "baseline": rec(54.9, val_acc=0.76667, test_acc=0.81667),
        "validate": rec(14.2, accuracy={"onnx_int8": 0.59444, "split": "test"}),
    }
    (tmp_path / "manifest.json").write_text(json.dumps({"stages": stages}))
    row = default_job_seeds.row(tmp_path, 0, 2, None, ["distill.ema_decay=0.99"])
    assert row["distill"] == {"val": 74.81, "test": 76.78} and row["baseline"] == {"val": 76.67, "test": 81.67}
    assert row["teacher"] == {"val": 86.67, "test": 85.56} and row["int8_test"] == 59.44 and row["int8_split"] == "test"
    assert row["stage_seconds"]["teacher"] == 70.0 and row["wall_seconds"] is None
    assert (row["seed"], row["jobs"], row["overrides"]) == (0, 2, ["distill.ema_decay=0.99"])
    assert default_job_seeds.row(tmp_path, 1, 1, 201.34, [])["wall_seconds"] == 201.3
