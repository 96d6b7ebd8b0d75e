"""Run dirs and reports built by hand (no training): a full report.json and its Visuals from seeded random predictions.

Used by the report and dashboard tests, which put hostile names and broken files into them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Optional

import numpy as np

from cann_distill.reporting.guard import distillation_verdict
from cann_distill.reporting.html import Visuals, render
from cann_distill.reporting.schema import SCHEMA_ID, SCHEMA_VERSION
from cann_distill.reporting.transfer import transfer_metrics
from cann_distill.store.rundir import MANIFEST_VERSION, STAGE_ORDER


def predictions(n: int, classes: int, accuracy: float, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Logits whose argmax is right on about `accuracy` of the samples."""
    logits = rng.normal(size=(n, classes))
    right = rng.random(n) < accuracy
    logits[np.arange(n), y] += np.where(right, 6.0, -6.0)
    return logits


def synthetic_report(
    classes: list[str],
    title: str = "synthetic",
    teacher: float = 0.9,
    baseline: float = 0.6,
    student: float = 0.75,
    n: int = 200,
    seed: int = 0,
) -> tuple[dict[str, Any], Visuals]:
    """A report.json-shaped dict with every section filled, and the arrays report.html draws."""
    rng = np.random.default_rng(seed)
    c = len(classes)
    y = rng.integers(0, c, n)
    logits = {name: predictions(n, c, acc, y, rng) for name, acc in (("teacher", teacher), ("baseline", baseline), ("student", student))}
    critical = rng.random(n) < 0.3
    gate = [{"budget": "latency_ms_p99", "limit": 5.0, "value": 1.2, "pass": True, "source": "profile"}]
    k = transfer_metrics(y, logits, critical, 0.01, gate, c)
    k.update(split="test", critical_rule="select.strategy 'margin', policy hard, 30% of this split", cka_samples=n)
    k["cka"] = [{"teacher_tap": "0", "student_tap": "0", "teacher_module": "layer1", "student_module": "blocks.0", "cka": 0.8}]
    k["attention"] = {"teacher_tap": "1", "student_tap": "1", "teacher_module": "layer2", "student_module": "blocks.1"}
    hist = [{"epoch": e, "lr": 0.1 / e, "loss": 2.0 / e, "kd": 1.0 / e, "ce": 1.0 / e, "val_acc": 0.5 + 0.05 * e} for e in range(1, 6)]
    acc = {name: float((v.argmax(1) == y).mean()) for name, v in logits.items()}
    report = {
        "schema": SCHEMA_ID,
        "schema_version": SCHEMA_VERSION,
        "title": title,
        "created": "2026-01-01T00:00:00+0000",
        "recipe": {"name": title, "data": {"source": "digits"}, "distill": {"epochs": 5}},
        "data": {
            "source": "digits",
            "fingerprint": "f" * 64,
            "classes": classes,
            "num_train": 800,
            "num_val": 100,
            "num_test": n,
            "headline_split": "test",
        },
        "teacher": {"arch": "resnet18", "history": hist},
        "select": {
            "strategy": "margin",
            "num_samples": 800,
            "num_critical": 240,
            "ratio": 0.3,
            "selection": {"policy": "auto", "resolved": "hard", "class_balanced": True, "notes": []},
        },
        "distill": {"history": hist, "params": 1000},
        "baseline": {"history": hist},
        "validate": {
            "split": "test",
            "num_val": 100,
            "num_test": n,
            "accuracy": {
                "teacher": acc["teacher"],
                "torch_fp32": acc["student"],
                "onnx_fp32": acc["student"],
                "onnx_int8": acc["student"] - 0.01,
                "int8_drop": 0.01,
                "split": "test",
            },
            "layer_gap": {"samples": 64, "split": "val", "worst": [{"module": "blocks.0.conv", "node": "/b0/Conv", "gap_db": 3.0}]},
            "latency_batch1": {
                "threads": 1,
                "fp32": {"median_ms": 1.0, "times_ms": list(rng.normal(1.0, 0.1, 20))},
                "int8": {"median_ms": 0.7, "times_ms": list(rng.normal(0.7, 0.1, 20))},
                "int8_over_fp32": 0.7,
            },
            "size_bytes": {"fp32": 4e6, "int8": 1e6},
            "gate": gate,
            "feedback": {"triggered": False, "suggestions": [], "apply": {}},
            "notes": [],
        },
        "knowledge": k,
        "problems": [],
        "stages": {"distill": {"seconds": 12.0, "outputs": {}, "versions": {}}},
    }
    report["distillation"] = distillation_verdict(k)
    shown = list(range(4))
    visuals = Visuals(
        scores=rng.gamma(1.0, 1.0, 800),
        critical=rng.random(800) < 0.3,
        examples=[(rng.normal(size=(1, 16, 16)), f"{s:.3g}") for s in (3.1, 2.9)],
        tapped=SimpleNamespace(teacher_attention=rng.random((4, 4, 4)), student_attention=rng.random((4, 4, 4))),
        shown=[
            {
                "image": rng.normal(size=(1, 16, 16)),
                "critical": bool(i % 2),
                "label": classes[int(y[i])],
                "teacher": classes[int(logits["teacher"][i].argmax())],
                "student": classes[int(logits["student"][i].argmax())],
                "agree": bool(i % 2),
            }
            for i in shown
        ],
    )
    return report, visuals


def record(summary: dict[str, Any]) -> dict[str, Any]:
    return {"fingerprint": "x", "inputs": {}, "outputs": {}, "started": 0.0, "seconds": 1.0, "versions": {}, "summary": summary}


def write_run(
    root: Path,
    name: str,
    report: Optional[dict[str, Any]] = None,
    visuals: Optional[Visuals] = None,
    live: Optional[dict[str, Any]] = None,
    stages: tuple[str, ...] = tuple(STAGE_ORDER),
) -> Path:
    """A run dir with a manifest of `stages` done, optional live logs ({stage: document or raw text}) and a report."""
    run = Path(root) / name
    run.mkdir(parents=True)
    summaries = {s: record({"val_acc": 0.5}) for s in stages}
    if report is not None:
        summaries["report"] = record({"title": report.get("title")})
        (run / "report").mkdir()
        (run / "report" / "report.json").write_text(json.dumps(report))
        (run / "report" / "report.html").write_text(render(report, visuals), encoding="utf-8")
    (run / "manifest.json").write_text(json.dumps({"version": MANIFEST_VERSION, "stages": summaries}))
    for stage, doc in (live or {}).items():
        (run / ".live").mkdir(exist_ok=True)
        text = doc if isinstance(doc, str) else json.dumps({"stage": stage, "started": time.time(), "updated": time.time(), **doc})
        (run / ".live" / f"{stage}.json").write_text(text)
    return run
