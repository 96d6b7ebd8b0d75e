"""`report --compare` on hand-built detection reports: COCO rows in AP points, no winner where the data differ or the
machines do, TE "not meaningful" as the report says it, and no comparison between a detection and a classification run."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Optional

import pytest

from cann_distill.core.errors import ArtifactError, UsageError
from cann_distill.reporting.compare import compare, to_markdown
from cann_distill.reporting.detection_report import build_report
from tests.report_fixtures import synthetic_report


def doc(mAP: float, AP50: float = 0.5, AP_small: Optional[float] = 0.1, params: int = 1000) -> dict[str, Any]:
    val = {"mAP": mAP, "AP50": AP50, "AP75": None, "AP_small": AP_small, "AP_medium": None, "AP_large": None, "AR100": None}
    return {"task": "detect", "arch": "a", "params": params, "val": val, "map": mAP}


def validation(int8: float, fp32: float, int8_ms: float, ratio: float, threads: int = 1) -> dict[str, Any]:
    return {
        "task": "detect",
        "metrics": {"onnx_fp32": {"mAP": fp32}, "onnx_int8": {"mAP": int8}},
        "int8_map_drop": fp32 - int8,
        "size_bytes": {"fp32": 4e6, "int8": 1e6},
        "latency_batch1": {
            "threads": threads,
            "int8": {"median_ms": int8_ms},
            "fp32": {"median_ms": int8_ms / ratio},
            "int8_over_fp32": ratio,
        },
        "provider": "CPUExecutionProvider",
        "cpu": {"machine": "x86_64", "avx2": True},
    }


def detection_report(teacher: float, student: float, baseline: float, v: dict[str, Any], fingerprint: str = "f" * 64) -> dict[str, Any]:
    docs = {"teacher": doc(teacher), "distill": doc(student), "baseline": doc(baseline), "validate": v}
    return build_report("det", docs, [], {}, fingerprint)


def put(root: Path, name: str, report: dict[str, Any]) -> Path:
    (root / name / "report").mkdir(parents=True)
    (root / name / "report" / "report.json").write_text(json.dumps(report))
    return root / name


def row(result: dict[str, Any], start: str) -> dict[str, Any]:
    return next(r for r in result["rows"] if r["metric"].startswith(start))


@pytest.fixture
def pair(tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    a = detection_report(0.40, 0.34, 0.30, validation(0.33, 0.34, 2.0, 0.5))
    b = detection_report(0.40, 0.36, 0.30, validation(0.30, 0.36, 1.0, 0.6))
    return a, b


def test_detection_rows_in_ap_points_with_a_winner_per_row(tmp_path: Path, pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    result = compare([put(tmp_path, "a", pair[0]), put(tmp_path, "b", pair[1])])
    assert [r["metric"] for r in result["rows"]][:3] == [
        "teacher mAP on val",
        "baseline mAP (ground truth only) on val",
        "student mAP (torch) on val",
    ]
    student = row(result, "student mAP")
    assert student["display"] == ["34.0", "36.0"] and student["winner"] == 1
    assert row(result, "teacher mAP")["winner"] is None  # a tie as displayed
    drop = row(result, "INT8 mAP drop")
    assert drop["display"] == ["1.00 pt", "6.00 pt"] and drop["winner"] == 0
    te = row(result, "transfer efficiency (mAP)")
    assert te["display"] == ["0.400", "0.600"] and te["winner"] == 1
    assert row(result, "INT8 / FP32 latency")["display"] == ["0.50×", "0.60×"] and row(result, "INT8 / FP32 latency")["winner"] == 0
    assert row(result, "INT8 latency median")["winner"] == 1 and result["warnings"] == []
    assert "| student mAP (torch) on val (higher is better) | 34.0 | **36.0** | b |" in to_markdown(result)


def test_no_winner_for_accuracies_on_other_data_nor_latency_on_other_machines(
    tmp_path: Path, pair: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    other = copy.deepcopy(pair[1])
    other["data"]["fingerprint"] = "e" * 64
    other["validate"]["latency_batch1"]["threads"] = 4
    result = compare([put(tmp_path, "a", pair[0]), put(tmp_path, "b", other)])
    for start in ("teacher mAP", "student mAP", "student AP50", "student AP_small", "INT8 mAP drop", "transfer efficiency"):
        r = row(result, start)
        assert r["winner"] is None and not r["comparable"] and r["why"] == "different data or splits", start
    for start in ("INT8 latency median", "INT8 / FP32 latency"):
        assert row(result, start)["why"] == "different machines, providers or thread counts"
    assert row(result, "INT8 size")["comparable"]  # a file size depends on neither
    assert any("different data or splits" in w for w in result["warnings"]) and any("different machines" in w for w in result["warnings"])


def test_te_not_meaningful_is_said_and_never_wins(tmp_path: Path, pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    flat = detection_report(0.302, 0.36, 0.30, validation(0.30, 0.36, 1.0, 0.6))  # a 0.2-point teacher lead
    result = compare([put(tmp_path, "a", pair[0]), put(tmp_path, "b", flat)])
    te = row(result, "transfer efficiency (mAP)")
    assert te["display"] == ["0.400", "not meaningful"] and te["winner"] is None


def test_a_detection_run_is_not_compared_with_a_classification_run(tmp_path: Path, pair: tuple[dict[str, Any], dict[str, Any]]) -> None:
    classify = synthetic_report(["a", "b"])[0]
    with pytest.raises(UsageError, match="a is task: detect, the others are not"):
        compare([put(tmp_path, "a", pair[0]), put(tmp_path, "c", classify)])
    old = dict(pair[1], schema_version=1)
    with pytest.raises(ArtifactError, match="detection report version 1 is unknown; .* rerun `cann-distill report RECIPE --force`"):
        compare([put(tmp_path, "x", pair[0]), put(tmp_path, "old", old)])
