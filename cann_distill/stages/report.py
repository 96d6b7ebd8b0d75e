"""report: one JSON report from every stage's artifacts."""

from __future__ import annotations

import json
from typing import Any

from cann_distill.stages.base import Context, Stage, register_stage
from cann_distill.stages.distill import METRICS as DISTILL_METRICS
from cann_distill.stages.select import SUMMARY as SELECT_SUMMARY
from cann_distill.stages.teacher import METRICS as TEACHER_METRICS
from cann_distill.stages.validate import REPORT as VALIDATION

REPORT = "report/report.json"


def rows(report: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(model, top-1, latency median, latency p99, size) rows for the terminal table."""
    v = report["validate"]
    lat = v["latency_batch1"]
    mb = lambda b: f"{b / 1e6:.2f} MB"  # noqa: E731
    pct = lambda a: f"{100 * a:.2f}%"  # noqa: E731
    return [
        (f"teacher {report['teacher']['arch']}", pct(v["accuracy"].get("teacher", report["teacher"]["val_acc"])), "-", "-", "-"),
        (f"student {report['distill']['arch']} (torch)", pct(v["accuracy"]["torch_fp32"]), "-", "-", "-"),
        ("student ONNX FP32", pct(v["accuracy"]["onnx_fp32"]), f"{lat['fp32']['median_ms']:.3f} ms", f"{lat['fp32']['p99_ms']:.3f} ms", mb(v["size_bytes"]["fp32"])),
        ("student ONNX INT8", pct(v["accuracy"]["onnx_int8"]), f"{lat['int8']['median_ms']:.3f} ms", f"{lat['int8']['p99_ms']:.3f} ms", mb(v["size_bytes"]["int8"])),
    ]


class ReportStage(Stage):
    name = "report"
    sections = ("report",)
    needs = (TEACHER_METRICS, SELECT_SUMMARY, DISTILL_METRICS, VALIDATION)

    def execute(self, ctx: Context) -> dict[str, Any]:
        r = ctx.recipe
        load = lambda rel: json.loads(ctx.artifacts[rel].read_text())  # noqa: E731
        teacher, select, distill, validate = (load(rel) for rel in self.needs)
        manifest = ctx.run.read_manifest()
        report = {
            "title": r.report.title or r.name,
            "recipe": r.to_dict(),
            "teacher": teacher,
            "select": select,
            "distill": distill,
            "validate": validate,
            "stages": {name: {"seconds": rec["seconds"], "outputs": rec["outputs"], "versions": rec["versions"]}
                       for name, rec in manifest["stages"].items()},
        }
        (ctx.out / "report.json").write_text(json.dumps(report, indent=2))
        acc = validate["accuracy"]
        return {
            "title": report["title"], "split": acc.get("split", "val"), "teacher_acc": acc.get("teacher", teacher["val_acc"]),
            "student_acc": acc["torch_fp32"],
            "onnx_fp32_acc": acc["onnx_fp32"], "onnx_int8_acc": acc["onnx_int8"],
            "int8_over_fp32_latency": validate["latency_batch1"]["int8_over_fp32"], "rows": rows(report),
        }


register_stage(ReportStage())
