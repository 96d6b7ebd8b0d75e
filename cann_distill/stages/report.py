"""report: report.json (versioned schema, see report_schema.py) and a self-contained report.html.

Every upstream artifact is optional: a missing, stale or corrupted one is named in `problems`
(and at the top of the HTML) and the report renders the rest. The knowledge section (agreement,
transfer efficiency, error reduction, CKA, ECE, DQI) is computed here from the saved checkpoints
(`knowledge.py`, formulas in `metrics.py`); nothing is retrained.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
from rich.markup import escape

from cann_distill.core.errors import MissingInputError
from cann_distill.data.loading import Splits, data_fingerprint, load_splits
from cann_distill.data.transforms import channels_of
from cann_distill.models.build import build_model, capacity, exported_student, teacher_input, with_teacher_input
from cann_distill.reporting import fit as teacher_fit
from cann_distill.reporting import html as report_html
from cann_distill.reporting.guard import STRICT_FAILS, distillation_verdict
from cann_distill.reporting.modes import modes_report
from cann_distill.reporting.schema import SCHEMA_ID, SCHEMA_VERSION
from cann_distill.reporting.transfer import SHOWN, Tapped, logits_of, pick_shown, tap_features, transfer_metrics
from cann_distill.runtime.terminal import ui
from cann_distill.selection import SELECTORS
from cann_distill.selection.pick import pick_critical
from cann_distill.stages.base import Context, Stage, register_stage
from cann_distill.stages.baseline import CHECKPOINT as BASELINE_CKPT
from cann_distill.stages.baseline import METRICS as BASELINE_METRICS
from cann_distill.stages.distill import CHECKPOINT as STUDENT_CKPT
from cann_distill.stages.distill import METRICS as DISTILL_METRICS
from cann_distill.stages.select import INDEX
from cann_distill.stages.select import SUMMARY as SELECT_SUMMARY
from cann_distill.stages.teacher import CHECKPOINT as TEACHER_CKPT
from cann_distill.stages.teacher import METRICS as TEACHER_METRICS
from cann_distill.stages.validate import REPORT as VALIDATION

REPORT = "report/report.json"
HTML = "report/report.html"
DOCS = {
    "teacher": TEACHER_METRICS,
    "select": SELECT_SUMMARY,
    "distill": DISTILL_METRICS,
    "baseline": BASELINE_METRICS,
    "validate": VALIDATION,
}


def rows(report: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(model, top-1, latency median, latency p99, size) rows for the terminal table; '?' where an input is missing."""
    v = report.get("validate") or {}
    k = report.get("knowledge") or {}
    acc, lat, size = v.get("accuracy", {}), v.get("latency_batch1", {}), v.get("size_bytes", {})
    mb = lambda b: f"{b / 1e6:.2f} MB" if b is not None else "?"  # noqa: E731
    pct = lambda a: f"{100 * a:.2f}%" if a is not None else "?"  # noqa: E731
    ms = lambda kind, q: f"{lat[kind][q]:.3f} ms" if kind in lat else "?"  # noqa: E731
    p99 = lambda kind: tail_cell(lat.get(kind))  # noqa: E731
    arch = lambda doc: (report.get(doc) or {}).get("arch", "?")  # noqa: E731
    out = [
        (f"teacher {arch('teacher')}", pct(acc.get("teacher", (report.get("teacher") or {}).get("val_acc"))), "-", "-", "-"),
        (f"student {arch('distill')} (torch)", pct(acc.get("torch_fp32")), "-", "-", "-"),
    ]
    if report.get("baseline"):
        out.append((f"baseline {arch('baseline')} (CE only)", pct((k.get("accuracy") or {}).get("baseline")), "-", "-", "-"))
    out += [
        ("student ONNX FP32", pct(acc.get("onnx_fp32")), ms("fp32", "median_ms"), p99("fp32"), mb(size.get("fp32"))),
        (
            f"student ONNX INT8 ({v.get('quantization', 'ptq').upper()}, shipped)",
            pct(acc.get("onnx_int8")),
            ms("int8", "median_ms"),
            p99("int8"),
            mb(size.get("int8")),
        ),
    ]
    return out


def tail_cell(lat: Optional[dict[str, Any]]) -> str:
    """The P99 cell: the percentile when enough runs measured it, else the slowest run labelled `max`."""
    if not lat:
        return "?"
    if lat.get("p99_ms") is not None:
        return f"{lat['p99_ms']:.3f} ms"
    return f"max {lat['max_ms']:.3f} ms" if lat.get("max_ms") is not None else "?"


class Inputs:
    """The upstream documents and files the report could read, and what it could not (with why)."""

    def __init__(self, ctx: Context) -> None:
        self.paths = dict(ctx.artifacts)
        self.problems = [{"input": rel, "kind": "missing", "problem": why} for rel, why in sorted(ctx.missing.items())] + [
            {"input": rel, "kind": "stale", "problem": why} for rel, why in sorted(ctx.stale.items())
        ]
        self.docs: dict[str, Optional[dict[str, Any]]] = {name: self._json(rel) for name, rel in DOCS.items()}

    def _json(self, rel: str) -> Optional[dict[str, Any]]:
        if rel not in self.paths:
            return None
        try:
            doc = json.loads(self.paths[rel].read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            self.problem(rel, f"unreadable ({type(exc).__name__})")
            return None
        if not isinstance(doc, dict):
            self.problem(rel, "not a JSON object")
            return None
        return doc

    def problem(self, rel: str, why: str) -> None:
        self.problems.append({"input": rel, "kind": "missing", "problem": why})
        self.paths.pop(rel, None)


def eval_critical(recipe: Any, teacher_logits: np.ndarray, y: np.ndarray, classes: list[str]) -> tuple[np.ndarray, str]:
    """Critical samples of the headline split and the rule that chose them: the recipe's selector, policy and ratio
    applied to the teacher's logits there. Teacher-only: a strategy that scores with the student (disagreement,
    reducible_loss) would pick the samples the distilled student gets wrong and make "agreement on critical samples"
    low by construction, so margin stands in for it (and for one that needs augmented views or a probe history)."""
    strategy = recipe.select.strategy
    selector = SELECTORS.build(strategy, **recipe.select.strategy_args)
    rule = f"select.strategy '{strategy}'"
    if selector.needs_student:
        selector, rule = SELECTORS.build("margin"), f"margin (teacher-only: '{strategy}' scores with the student the report measures)"
    elif selector.needs_views or selector.needs_history:
        selector, rule = SELECTORS.build("margin"), f"margin ('{strategy}' needs views or a probe history the report does not compute)"
    scores = np.asarray(selector.score(teacher_logits, y, seed=recipe.seed), dtype=np.float64)
    chosen = pick_critical(scores, y, recipe, classes, seed=recipe.seed)
    return chosen.mask, f"{rule}, policy {chosen.resolved}, {recipe.select.top_k_ratio:.0%} of this split"


def read_scores(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    with open(path, newline="") as f:
        rows_ = list(csv.DictReader(f))
    return ([r["id"] for r in rows_], np.array([float(r["score"]) for r in rows_]), np.array([r["critical"] == "1" for r in rows_]))


LATENCY_NOTE = "not measured: validate times the student's ONNX models, not the teacher"


def measure_fit(
    recipe: Any, docs: dict[str, Optional[dict[str, Any]]], knowledge: Optional[dict[str, Any]], classes: int
) -> dict[str, Any]:
    """report.json's `fit`: teacher and student built untrained to count parameters and FLOPs (the student distill
    exported: with mutual learning the best peer), the policy in `reporting/fit.py`; the assistant's short list is
    built only when a chain is suggested."""
    in_chans, size = channels_of(recipe.data), int(recipe.data.image_size or 224)
    student_arch = (docs.get("distill") or {}).get("arch") or recipe.student.arch
    gap = teacher_fit.capacity_gap(
        capacity(recipe.teacher.arch, classes, in_chans, size), capacity(student_arch, classes, in_chans, size), latency_note=LATENCY_NOTE
    )
    chained = bool((docs.get("distill") or {}).get("chain"))
    assistant, params = None, None
    te = teacher_fit.meaningful_te(knowledge)
    if teacher_fit.wants_assistant(gap, te, chained):
        candidates = teacher_fit.assistant_candidates(recipe.teacher.arch, student_arch)
        counts = {}
        for arch in candidates:
            try:
                counts[arch] = capacity(arch, classes, in_chans, size, with_flops=False)["params"]
            except Exception as exc:  # a candidate that cannot be built here is not suggested; the report goes on
                ui.warn(escape(f"report: fit: assistant candidate {arch} not counted ({str(exc)[:120]})"))
        assistant = teacher_fit.pick_assistant(gap, counts)
        params = counts.get(assistant) if assistant else None
    return teacher_fit.report_fit(gap, knowledge, chained, assistant, params)


class ReportStage(Stage):
    name = "report"
    version = 7  # 4: critical samples from the teacher alone; the INT8 row names what ships; 5: the fit section; 6: the hurt line names the draw first; 7: the no-gain line names the teacher's lead
    sections = ("report", "data", "teacher", "student", "select", "seed")
    ignore = ("report.trackers",)  # where distill's epochs were also logged does not change the report
    optional = (
        TEACHER_METRICS,
        SELECT_SUMMARY,
        INDEX,
        DISTILL_METRICS,
        BASELINE_METRICS,
        VALIDATION,
        TEACHER_CKPT,
        STUDENT_CKPT,
        BASELINE_CKPT,
    )

    def execute(self, ctx: Context) -> dict[str, Any]:
        r = ctx.recipe
        inputs = Inputs(ctx)
        if not any(inputs.docs.values()):
            first = next(name for name, rel in DOCS.items() if "is off" not in ctx.missing.get(rel, ""))
            raise MissingInputError(
                f"report: nothing to report yet (no stage output in {ctx.run.root}): "
                f"run `cann-distill {first}` first (or `cann-distill run`)"
            )
        splits = load_splits(r.data)
        knowledge, visuals = self._knowledge(ctx, inputs, splits)
        fit = measure_fit(r, inputs.docs, knowledge, len(splits.train.classes))
        manifest = ctx.run.read_manifest()
        verdict = distillation_verdict(knowledge, r.distill.warmup())
        report = {
            "schema": SCHEMA_ID,
            "schema_version": SCHEMA_VERSION,
            "title": r.report.title or r.name or "cann-distill run",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "recipe": r.to_dict(),
            "data": {
                "source": r.data.source,
                "fingerprint": data_fingerprint(r.data, ignore=frozenset({"augment", "batch_size"})),
                "classes": splits.train.classes,
                "num_train": len(splits.train),
                "num_val": len(splits.val),
                "num_test": len(splits.test) if splits.test is not None else 0,
                "headline_split": splits.headline.name,
            },
            **inputs.docs,
            **({"modes": modes} if (modes := modes_report(inputs.docs.get("teacher"), inputs.docs.get("distill"))) else {}),
            "knowledge": knowledge,
            "distillation": verdict,
            "fit": fit,
            "problems": inputs.problems,
            "stages": {
                name: {"seconds": rec["seconds"], "outputs": rec["outputs"], "versions": rec["versions"]}
                for name, rec in manifest["stages"].items()
            },
        }
        for p in inputs.problems:
            ui.warn(f"report: {p['input']}: {p['problem']}; rendering the rest")
        (ui.warn if verdict["status"] in STRICT_FAILS else ui.info)(f"report: {verdict['line']}")
        ui.info(escape(f"report: {teacher_fit.gap_line(fit['capacity'])}"))
        for advice in fit["advice"]:
            if advice["kind"] != "weak_teacher":  # the verdict line above already says it on the terminal
                ui.warn(escape(f"report: fit: {advice['line']}"))  # the chain's [a, b, c] is text, not rich markup
        (ctx.out / "report.json").write_text(json.dumps(report, indent=2))
        (ctx.out / "report.html").write_text(report_html.render(report, visuals), encoding="utf-8")
        return self._summary(report)

    def _knowledge(self, ctx: Context, inputs: Inputs, splits: Splits) -> tuple[Optional[dict[str, Any]], report_html.Visuals]:
        r, rt = ctx.recipe, ctx.runtime
        visuals = report_html.Visuals()
        if INDEX in inputs.paths:
            try:
                ids, visuals.scores, visuals.critical = read_scores(inputs.paths[INDEX])
                top = np.argsort(-visuals.scores, kind="stable")[:8]
                by_id = {sid: i for i, sid in enumerate(splits.train.ids)}
                visuals.examples = [(splits.train.fetch(by_id[ids[i]]).numpy(), f"{visuals.scores[i]:.3g}") for i in top if ids[i] in by_id]
            except (OSError, KeyError, ValueError) as exc:
                inputs.problem(INDEX, f"unreadable ({type(exc).__name__}: {exc})")
        if TEACHER_CKPT not in inputs.paths or STUDENT_CKPT not in inputs.paths:
            return None, visuals
        split, classes, in_chans = splits.headline, splits.train.classes, channels_of(r.data)
        teacher = build_model(r.teacher, len(classes), in_chans, checkpoint=inputs.paths[TEACHER_CKPT], classes=classes)
        exported = exported_student(r, inputs.paths[STUDENT_CKPT])  # mutual learning: the best peer
        student = build_model(exported, len(classes), in_chans, checkpoint=inputs.paths[STUDENT_CKPT], classes=classes)
        models = {"teacher": with_teacher_input(teacher, r.data, r.teacher), "student": student}
        if BASELINE_CKPT in inputs.paths:
            models["baseline"] = build_model(r.student, len(classes), in_chans, checkpoint=inputs.paths[BASELINE_CKPT], classes=classes)
        logits = logits_of(models, split, rt)
        y = split.targets
        critical, rule = eval_critical(r, logits["teacher"], y, classes)
        v = inputs.docs.get("validate") or {}
        drop = (v.get("accuracy") or {}).get("int8_drop")
        k = transfer_metrics(y, logits, critical, drop, v.get("gate") if v else None, len(classes))
        k["split"], k["critical_rule"] = split.name, rule
        if "onnx_int8" in (v.get("accuracy") or {}):
            k["accuracy"]["onnx_int8"] = v["accuracy"]["onnx_int8"]
        teacher_pred, student_pred = logits["teacher"].argmax(1), logits["student"].argmax(1)
        shown = pick_shown(critical, teacher_pred == student_pred, SHOWN)
        tapped: Tapped = tap_features(
            teacher,
            r.teacher.arch,
            teacher_input(r.data, r.teacher),
            student,
            exported.arch,
            split,
            r.report.samples,
            [int(i) for i in shown],
            rt,
        )
        k["cka"], k["cka_samples"], k["attention"] = tapped.cka, min(r.report.samples, len(split)), tapped.attention_pair
        visuals.tapped = tapped
        visuals.shown = [
            {
                "image": split.fetch(i).numpy(),
                "critical": bool(critical[i]),
                "label": classes[y[i]],
                "teacher": classes[teacher_pred[i]],
                "student": classes[student_pred[i]],
                "agree": bool(teacher_pred[i] == student_pred[i]),
            }
            for i in tapped.shown
        ]
        return k, visuals

    def _summary(self, report: dict[str, Any]) -> dict[str, Any]:
        v, k = report.get("validate") or {}, report.get("knowledge") or {}
        acc = v.get("accuracy") or {}
        return {
            "title": report["title"],
            "split": acc.get("split", "val"),
            "teacher_acc": acc.get("teacher", (report.get("teacher") or {}).get("val_acc")),
            "student_acc": acc.get("torch_fp32"),
            "baseline_acc": (k.get("accuracy") or {}).get("baseline"),
            "onnx_fp32_acc": acc.get("onnx_fp32"),
            "onnx_int8_acc": acc.get("onnx_int8"),
            "int8_over_fp32_latency": (v.get("latency_batch1") or {}).get("int8_over_fp32"),
            "transfer_efficiency": (k.get("transfer_efficiency") or {}).get("value"),
            "dqi": (k.get("dqi") or {}).get("value"),
            "distillation": report["distillation"],
            "problems": [f"{p['input']}: {p['problem']}" for p in report["problems"]],
            "rows": rows(report),
        }


register_stage(ReportStage())
