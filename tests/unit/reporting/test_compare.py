"""`report --compare` on hand-built reports: markdown cells stay cells, no winner where runs are not comparable,
a warning for a run compared with itself, the INT8 drop in points, the split named."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from cann_distill.reporting.compare import compare, md_cell, to_markdown
from tests.report_fixtures import synthetic_report


@pytest.fixture(scope="module")
def base() -> dict[str, Any]:
    return synthetic_report(["a", "b", "c"], teacher=0.95, baseline=0.5, student=0.8)[0]


def put(root: Path, name: str, report: dict[str, Any]) -> Path:
    (root / name / "report").mkdir(parents=True)
    (root / name / "report" / "report.json").write_text(json.dumps(report))
    return root / name


def row(result: dict[str, Any], start: str) -> dict[str, Any]:
    return next(r for r in result["rows"] if r["metric"].startswith(start))


def test_markdown_cells_escape_pipes_and_markup(tmp_path: Path, base: dict[str, Any]) -> None:
    other = copy.deepcopy(base)
    other["knowledge"]["accuracy"]["student"] = 0.99
    a, b = put(tmp_path, "a|b", base), put(tmp_path, "<img src=x>*bold*", other)
    md = to_markdown(compare([a, b]))
    for line in md.splitlines():
        if line.startswith("|"):
            assert len(re.findall(r"(?<!\\)\|", line)) == 5, line  # metric, two runs, winner: 4 cells, 5 bars
    assert "a\\|b" in md and "&lt;img src=x&gt;\\*bold\\*" in md and "<img" not in md
    assert md_cell("two\nlines | here") == "two lines \\| here"


def test_no_winner_where_the_data_differs(tmp_path: Path, base: dict[str, Any]) -> None:
    other = copy.deepcopy(base)
    other["data"]["fingerprint"] = "e" * 64
    other["knowledge"]["accuracy"]["student"] = 0.99
    other["validate"]["size_bytes"]["int8"] = 5e5
    result = compare([put(tmp_path, "a", base), put(tmp_path, "b", other)])
    student = row(result, "student top-1")
    assert student["winner"] is None and not student["comparable"] and student["why"] == "different data or splits"
    assert row(result, "INT8 size")["winner"] == 1  # a file size does not depend on the data
    assert any("different data or splits" in w for w in result["warnings"])
    md = to_markdown(result)
    line = next(x for x in md.splitlines() if x.startswith("| student top-1"))
    assert "**" not in line and "not comparable" in line


def test_no_latency_winner_across_machines(tmp_path: Path, base: dict[str, Any]) -> None:
    other = copy.deepcopy(base)
    other["validate"]["latency_batch1"]["int8"]["median_ms"] = 0.1
    other["validate"]["latency_batch1"]["threads"] = 8
    result = compare([put(tmp_path, "a", base), put(tmp_path, "b", other)])
    assert row(result, "INT8 latency")["winner"] is None and any("different machines" in w for w in result["warnings"])
    assert row(result, "teacher top-1")["comparable"]


def test_a_run_compared_with_itself_is_named(tmp_path: Path, base: dict[str, Any]) -> None:
    a = put(tmp_path, "a", base)
    result = compare([a, a / "report" / "report.json"])
    assert any("same run" in w for w in result["warnings"])


def test_units_and_split(tmp_path: Path, base: dict[str, Any]) -> None:
    noisy = synthetic_report(["a", "b", "c"], teacher=0.62, baseline=0.6, student=0.61, n=40, seed=3)[0]
    noisy["data"]["fingerprint"] = base["data"]["fingerprint"]
    result = compare([put(tmp_path, "a", base), put(tmp_path, "b", noisy)])
    drop = row(result, "INT8 drop")
    assert drop["metric"] == "INT8 drop on test" and drop["display"] == ["1.00 pt", "1.00 pt"]
    assert row(result, "transfer efficiency")["display"][1] == "not meaningful" and [r["split"] for r in result["runs"]] == ["test", "test"]
