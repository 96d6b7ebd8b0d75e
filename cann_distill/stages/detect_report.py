"""report for `task: detect`: report.json and report.html from the detect stages' metrics, and a figure of the
teacher's, the distilled student's and the baseline's detections on a few val images, from their checkpoints
(every input optional)."""

from __future__ import annotations

import json
from typing import Any, Optional

from cann_distill.core.errors import MissingInputError
from cann_distill.data.coco import detection_fingerprint
from cann_distill.models.detector import load_detector
from cann_distill.quant.detect_predict import DEFAULT_MIN_SCORE
from cann_distill.reporting import charts
from cann_distill.reporting.detection_pictures import POOL, ROLES, describe, gather
from cann_distill.reporting.detection_report import build_report, render_html, terminal_lines, terminal_rows
from cann_distill.runtime.terminal import ui
from cann_distill.stages.base import Context, Stage, register_stage
from cann_distill.stages.detect import (
    BASELINE_CKPT,
    BASELINE_METRICS,
    DISTILL_METRICS,
    STUDENT_CKPT,
    TEACHER_CKPT,
    TEACHER_METRICS,
    Data,
    data_inputs,
)

VALIDATION = "validate/validation.json"
DOCS = {"teacher": TEACHER_METRICS, "distill": DISTILL_METRICS, "baseline": BASELINE_METRICS, "validate": VALIDATION}
CHECKPOINTS = {"teacher": TEACHER_CKPT, "distill": STUDENT_CKPT, "baseline": BASELINE_CKPT}
PICTURES = "detections.png"


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


def pictures(ctx: Context) -> tuple[Optional[bytes], dict[str, Any]]:
    """The detections figure (PNG bytes) and report.json's `pictures`; without the teacher's or the distilled
    student's checkpoint, no figure and the reason."""
    absent = [CHECKPOINTS[role] for role in ("teacher", "distill") if CHECKPOINTS[role] not in ctx.artifacts]
    if absent:
        return None, {"file": None, "reason": f"no detections figure: {' and '.join(absent)} not available"}
    r = ctx.recipe
    data = Data(r)
    archs = {"teacher": r.teacher.arch, "distill": r.student.arch, "baseline": r.student.arch}
    models = {
        role: load_detector(ctx.artifacts[rel], archs[role], len(data.classes), r.detect, data.train_set.category_ids, rel).to(
            ctx.runtime.device
        )
        for role, rel in CHECKPOINTS.items()
        if rel in ctx.artifacts
    }
    shown = gather(models, data.val, r.detect, r.data.batch_size, ctx.runtime, min_score=DEFAULT_MIN_SCORE)
    try:
        with charts.plain_text():
            png = charts.png_bytes(charts.detection_grid(shown, ROLES, data.classes, DEFAULT_MIN_SCORE, "val"))
    except Exception as exc:  # a figure that cannot be drawn must not cost the rest of the report
        return None, {"file": None, "reason": f"could not draw the detections figure: {type(exc).__name__}: {str(exc)[:200]}"}
    return png, describe(shown, DEFAULT_MIN_SCORE, POOL, PICTURES)


class DetectReportStage(Stage):
    name = "report"
    version = 3  # 2: transfer efficiency; 3: the detections figure
    sections = ("report", "detect", "teacher", "student", "seed")
    ignore = ("report.trackers",)  # where distill's epochs were also logged does not change the report
    optional = (TEACHER_METRICS, DISTILL_METRICS, BASELINE_METRICS, VALIDATION, TEACHER_CKPT, STUDENT_CKPT, BASELINE_CKPT)

    def extra_inputs(self, recipe: Any) -> dict[str, Any]:
        return data_inputs(recipe)  # the figure draws val images, the model runs in batches of data.batch_size

    def execute(self, ctx: Context) -> dict[str, Any]:
        r = ctx.recipe
        shown = set(DOCS.values())  # a missing checkpoint is said by the figure's note, its metrics by these
        problems = [{"input": rel, "kind": "missing", "problem": why} for rel, why in sorted(ctx.missing.items()) if rel in shown]
        problems += [{"input": rel, "kind": "stale", "problem": why} for rel, why in sorted(ctx.stale.items()) if rel in shown]
        docs = {name: read_doc(ctx, rel, problems) for name, rel in DOCS.items()}
        if not any(docs[k] for k in ("teacher", "distill", "baseline")):
            raise MissingInputError(
                f"report: nothing to report yet (no stage output in {ctx.run.root}): run `cann-distill teacher` first (or `cann-distill run`)"
            )
        for p in problems:
            ui.warn(f"report: {p['input']}: {p['problem']}; rendering the rest")
        png, drawn = pictures(ctx)
        if png is not None:
            (ctx.out / PICTURES).write_bytes(png)
        else:
            ui.warn(f"report: {drawn['reason']}")
        title = r.report.title or r.name or "cann-distill run"
        report = build_report(title, docs, problems, r.to_dict(), detection_fingerprint(r.detect.data), drawn)
        (ctx.out / "report.json").write_text(json.dumps(report, indent=2))
        (ctx.out / "report.html").write_text(render_html(report, png), encoding="utf-8")
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
