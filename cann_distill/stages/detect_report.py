"""report for `task: detect`: report.json and report.html from the detect stages' metrics (every input optional)."""

from __future__ import annotations

import json
from typing import Any, Optional

from cann_distill.core.errors import MissingInputError
from cann_distill.reporting.detection_report import build_report, render_html, terminal_lines, terminal_rows
from cann_distill.runtime.terminal import ui
from cann_distill.stages.base import Context, Stage, register_stage
from cann_distill.stages.detect import BASELINE_METRICS, DISTILL_METRICS, TEACHER_METRICS

VALIDATION = "validate/validation.json"
DOCS = {"teacher": TEACHER_METRICS, "distill": DISTILL_METRICS, "baseline": BASELINE_METRICS, "validate": VALIDATION}


def read_doc(ctx: Context, rel: str, problems: list[dict[str, str]]) -> Optional[dict[str, Any]]:
    if rel not in ctx.artifacts:
        return None
    try:
        doc = json.loads(ctx.artifacts[rel].read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append({"input": rel, "kind": "missing", "problem": f"unreadable ({type(exc).__name__})"})
        return None
    if not isinstance(doc, dict) or doc.get("task") != "detect":
        problems.append({"input": rel, "kind": "missing", "problem": "not a detection stage's metrics"})
        return None
    return doc


class DetectReportStage(Stage):
    name = "report"
    version = 2  # 2: transfer efficiency
    sections = ("report", "detect", "teacher", "student", "seed")
    ignore = ("report.trackers",)  # where distill's epochs were also logged does not change the report
    optional = (TEACHER_METRICS, DISTILL_METRICS, BASELINE_METRICS, VALIDATION)

    def extra_inputs(self, recipe: Any) -> dict[str, Any]:
        return {"task": "detect"}

    def execute(self, ctx: Context) -> dict[str, Any]:
        r = ctx.recipe
        problems = [{"input": rel, "kind": "missing", "problem": why} for rel, why in sorted(ctx.missing.items())]
        problems += [{"input": rel, "kind": "stale", "problem": why} for rel, why in sorted(ctx.stale.items())]
        docs = {name: read_doc(ctx, rel, problems) for name, rel in DOCS.items()}
        if not any(docs[k] for k in ("teacher", "distill", "baseline")):
            raise MissingInputError(
                f"report: nothing to report yet (no stage output in {ctx.run.root}): run `cann-distill teacher` first (or `cann-distill run`)"
            )
        for p in problems:
            ui.warn(f"report: {p['input']}: {p['problem']}; rendering the rest")
        report = build_report(r.report.title or r.name or "cann-distill run", docs, problems, r.to_dict())
        (ctx.out / "report.json").write_text(json.dumps(report, indent=2))
        (ctx.out / "report.html").write_text(render_html(report), encoding="utf-8")
        g = report["gain"]
        return {
            "task": "detect",
            "title": report["title"],
            "split": "val",
            "metric": "mAP",
            "columns": ["model", "mAP (val)", "AP50", "latency median (b=1)", "size"],
            "rows": terminal_rows(report),
            "lines": terminal_lines(report),
            "gain_map_points": g["mAP_points"] if g else None,
            "transfer_efficiency": {m: te.get("value") for m, te in report["transfer_efficiency"].items()},
            "key": report["title"],
            "problems": [f"{p['input']}: {p['problem']}" for p in problems],
        }


register_stage(DetectReportStage(), task="detect")
