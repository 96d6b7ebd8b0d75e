"""report.html: one self-contained file (PNGs inlined as data: URIs, inline CSS, no script, no network).

The page is a Jinja2 template (`templates/report.html.j2`) with autoescaping on: every value from
report.json reaches the page as text, never as markup. Each section is built as a list of blocks
(paragraphs, tables, figures, lists, preformatted text) that the template renders; a section whose
input is missing says so, and one that fails to build shows the error instead, so a damaged run
still gets the rest of its report. The figures are drawn in `charts.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import yaml

from cann_distill.reporting import charts
from cann_distill.reporting.charts import inert, png
from cann_distill.reporting.fit import fit_section
from cann_distill.reporting.modes import modes_section
from cann_distill.reporting.numbers import headline, number, shown

Block = dict[str, Any]

NOT_LOSSES = {
    "epoch",
    "lr",
    "samples",
    "critical_only",
    "temperature_mean",
    "temperature_min",
    "temperature_max",
    "val_acc",
    "best_val_acc",
    "samples_per_s",
    "train_s",
    "data_share",
    "teacher_share",
    "student_share",
    "peak_rss_mb",
    "peak_device_mb",
    "grad_norm",
}


@dataclass
class Visuals:
    """Arrays the HTML shows that report.json does not hold (images, attention maps, per-sample scores)."""

    scores: Optional[np.ndarray] = None  # select's criticality score per training sample
    critical: Optional[np.ndarray] = None
    examples: list[tuple[np.ndarray, str]] = field(default_factory=list)  # highest-score training images [C, H, W], caption
    tapped: Any = None  # transfer.Tapped
    shown: list[dict[str, Any]] = field(default_factory=list)  # headline-split images with predictions


# ----------------------------------------------------------------------------- blocks


def para(text: str, cls: str = "") -> Block:
    return {"kind": "p", "text": text, "cls": cls}


def missing(text: str) -> list[Block]:
    return [para(text, "missing")]


def heading(text: str) -> Block:
    return {"kind": "h3", "text": text}


def table(head: list[str], rows: list[list[Any]], caption: str = "") -> Block:
    return {"kind": "table", "head": head, "rows": [[str(c) for c in row] for row in rows], "caption": caption}


def figure_block(fig: Any, alt: str, caption: str = "") -> Block:
    return {"kind": "figure", "src": png(fig), "alt": alt, "caption": caption}


def bullets(items: list[list[tuple[str, bool]]]) -> Block:
    """A list whose items are runs of (text, is_code) segments."""
    return {"kind": "list", "items": [[{"text": t, "code": c} for t, c in item] for item in items]}


def rich(segments: list[tuple[str, bool]]) -> Block:
    """A paragraph made of (text, is_code) segments."""
    return {"kind": "rich", "segments": [{"text": t, "code": c} for t, c in segments]}


def pre(text: str) -> Block:
    return {"kind": "pre", "text": text}


def pct(v: Optional[float]) -> str:
    return shown(number(v))


def num(v: Optional[float], digits: int = 3) -> str:
    return shown(number(v), "num", digits)


# ----------------------------------------------------------------------------- sections


def accuracy_section(r: dict[str, Any], v: Visuals) -> list[Block]:
    h = headline(r)
    split, ci = h["split"] or "?", h["ci95"]
    interval = lambda key: f"{100 * ci[key][0]:.1f}–{100 * ci[key][1]:.1f}%" if key in ci else "–"  # noqa: E731
    arch = ((r.get("teacher") or {}).get("arch")) or "?"
    rows = [
        [f"teacher {arch}", pct(h["teacher"]), interval("teacher")],
        ["baseline (CE only)", pct(h["baseline"]) if r.get("baseline") else "– (report.baseline off or not run)", interval("baseline")],
        ["student (distilled, torch)", pct(h["student"]), interval("student")],
        ["student ONNX FP32", pct(h["onnx_fp32"]), interval("onnx_fp32")],
        ["student ONNX INT8", pct(h["onnx_int8"]), interval("onnx_int8")],
        ["INT8 drop (ONNX FP32 − INT8)", shown(h["int8_drop"], "pt"), "–"],
    ]
    n = f", {h['n']} images" if h["n"] else ""
    out = [table(["model", f"top-1 on {split}", "95% interval (Wilson)"], rows, caption=f"Accuracy on the {split} split{n}.")]
    if h["other_split"]:
        out.append(para(h["other_split"], "note"))
    k = r.get("knowledge")
    if k:
        out += [heading(f"How much knowledge arrived (on {split})"), table(["metric", "value", "note"], _knowledge_rows(k, h))]
    if h["verdict_line"]:
        out.append(para(h["verdict_line"], f"verdict {h['verdict'] or ''}"))
    return out


def _knowledge_rows(k: dict[str, Any], h: dict[str, Any]) -> list[list[str]]:
    split = h["split"] or "?"
    ag, er, fit = k.get("agreement") or {}, k.get("error_reduction") or {}, k.get("hardware_fit") or {}
    rows = [
        ["teacher–student agreement, all", pct(ag.get("all")), f"{k.get('num')} {split} images"],
        [
            "teacher–student agreement, critical",
            pct(ag.get("critical")),
            f"{ag.get('num_critical')} {split} images ({k.get('critical_rule', '')})",
        ],
        [
            "transfer efficiency (TE)",
            num(h["te"]) if h["te"] is not None else "not meaningful" if h["verdict"] == "undefined" else "–",
            h["te_note"],
        ],
        [
            "teacher lead over baseline",
            shown(number((k.get("teacher_vs_baseline") or {}).get("difference")), "pt"),
            _paired(k.get("teacher_vs_baseline"), "teacher − baseline"),
        ],
        [
            "student − baseline",
            shown(number((k.get("distill_vs_baseline") or {}).get("difference")), "pt"),
            _paired(k.get("distill_vs_baseline"), "student − baseline"),
        ],
        [
            "error reduction",
            num(er.get("value")),
            f"{er.get('fixed', 0)} of {er.get('opportunities', 0)} fixed, {er.get('regressed', 0)} regressed ({split})"
            if er.get("value") is not None
            else er.get("reason") or "",
        ],
        *[
            [f"ECE {name} ({split})", num(e.get("value"), 4), f"{e.get('bins')} confidence bins"]
            for name, e in (k.get("ece") or {}).items()
        ],
        ["hardware fit", num(fit.get("value")), fit.get("reason") or f"{fit.get('passed')}/{fit.get('total')} budgets pass"],
        ["DQI", num(h["dqi"]) if h["dqi"] is not None else "not meaningful" if h["verdict"] == "undefined" else "–", h["dqi_note"]],
    ]
    return rows


def _paired(p: Optional[dict[str, Any]], what: str) -> str:
    """The paired test's numbers in words (exact McNemar on the same images)."""
    if not p:
        return ""
    lo, hi = p["ci95"]
    return (
        f"{what}: 95% CI {100 * lo:+.2f} to {100 * hi:+.2f} pt, exact McNemar p={p['p_value']:.2g}, "
        f"{p['a_only']} vs {p['b_only']} of {p['n']} images only one gets right: {str(p['verdict']).replace('_', ' ')}"
    )


def curves_section(r: dict[str, Any], v: Visuals) -> list[Block]:
    hist = (r.get("distill") or {}).get("history") or []
    if not hist:
        return missing("no distill history (distill/metrics.json missing)")
    keys = sorted(
        k
        for k in {k for row in hist for k in row} - NOT_LOSSES
        if not k.startswith("balance.") and all(isinstance(row.get(k), (int, float)) for row in hist)
    )
    fig = charts.curves(hist, (r.get("baseline") or {}).get("history") or [], (r.get("teacher") or {}).get("history") or [], keys)
    return [figure_block(fig, "training curves", "Per-epoch training history; the accuracy panel is measured on the val split.")]


def per_class_section(r: dict[str, Any], v: Visuals) -> list[Block]:
    k = r.get("knowledge")
    if not k:
        return missing("no per-sample predictions (teacher or student checkpoint missing)")
    split = k.get("split") or "?"
    per_class = k["per_class"]
    classes = (r.get("data") or {}).get("classes") or [str(i) for i in range(len(next(iter(per_class.values()))))]
    return [
        figure_block(charts.per_class_errors(classes, per_class, split), f"per-class error rate on {split}"),
        figure_block(charts.confusions(classes, k["confusion"], split), f"confusion matrices on {split}"),
    ]


def heatmap_section(r: dict[str, Any], v: Visuals) -> list[Block]:
    t, k = v.tapped, r.get("knowledge") or {}
    split = k.get("split") or "?"
    out: list[Block] = []
    if t is None or t.teacher_attention is None or not v.shown:
        out += missing("no attention maps (checkpoints missing, or no spatial feature taps)")
    else:
        pair = k.get("attention") or {}
        agree = sum(1 for s in v.shown if s["agree"])
        out += [
            para(
                f"Spatial attention (mean of squared activations over channels, each map scaled to 0–1) at teacher "
                f"{pair.get('teacher_module')} vs student {pair.get('student_module')}, laid over {len(v.shown)} {split} images: "
                f"{agree} where teacher and student predict the same class, {len(v.shown) - agree} where they differ."
            ),
            figure_block(charts.attention_overlays(v.shown, t.teacher_attention, t.student_attention, split), "attention heatmaps"),
        ]
    cka = k.get("cka") or []
    if cka:
        out += [heading("Linear CKA per stage"), figure_block(charts.cka_bars(cka, k.get("cka_samples"), split), "linear CKA per stage")]
    return out


def selection_caption(sel: dict[str, Any]) -> str:
    """What select chose and how, in one sentence (the policy, its resolution, the class balance, random picks)."""
    strategy = sel.get("strategy", "?")
    s = sel.get("selection") or {}
    policy, resolved = s.get("policy", "?"), s.get("resolved")
    n, total, ratio = sel.get("num_critical"), sel.get("num_samples"), sel.get("ratio")
    how = {
        "hard": "the highest scores",
        "easy": "the lowest scores",
        "mix": "drawn at random (seeded) from score bands (hard / medium / easy thirds of each class)"
        + (f" in shares {s['mix']}" if s.get("mix") else ""),
        "random": "drawn at random (seeded); the scores are ignored (the reference every score-based policy must beat)",
    }.get(str(resolved or policy), f"policy {resolved}")
    asked = f"policy {policy}" + (f" → {resolved}" if resolved and resolved != policy else "")
    balance = "an equal quota per class" if s.get("class_balanced") else "ranked over all classes together"
    share = f" ({100 * ratio:.0f}%)" if isinstance(ratio, (int, float)) else ""
    return (
        f"{n} of {total} training samples{share} selected as critical: scored by select.strategy '{strategy}', {asked}: "
        f"{how}; {balance}." + ("".join(f" {note}" for note in s.get("notes") or []))
    )


def critical_section(r: dict[str, Any], v: Visuals) -> list[Block]:
    if v.scores is None:
        return missing("no critical-sample index (select/index.csv missing)")
    sel = r.get("select") or {}
    crit = v.critical if v.critical is not None else np.zeros(len(v.scores), dtype=bool)
    out = [
        figure_block(charts.critical_histogram(v.scores, crit, sel.get("strategy", "?")), "criticality histogram", selection_caption(sel))
    ]
    if v.examples:
        policy = str(((sel.get("selection") or {}).get("resolved")) or "")
        note = "" if policy == "hard" else f" (policy {policy}: the selected samples are not only these)"
        out.append(
            figure_block(charts.example_strip(v.examples), "highest-scoring samples", f"The highest-scoring training samples{note}.")
        )
    return out


def gap_section(r: dict[str, Any], v: Visuals) -> list[Block]:
    gap = (r.get("validate") or {}).get("layer_gap") or {}
    rows = gap.get("worst") or []
    if not rows:
        return missing("no per-layer INT8 gap (validate/validation.json missing or empty)")
    return [figure_block(charts.gap_bars(rows, gap.get("samples", "?"), gap.get("split", "val")), "per-layer INT8 gap")]


def latency_section(r: dict[str, Any], v: Visuals) -> list[Block]:
    lat = (r.get("validate") or {}).get("latency_batch1") or {}
    if "fp32" not in lat or "int8" not in lat:
        return missing("no latency measurements (validate/validation.json missing)")
    note = f"{lat.get('threads', '?')} thread(s); INT8/FP32 median ratio {num(lat.get('int8_over_fp32'), 2)}×."
    return [para(note), figure_block(charts.latency_histogram(lat), "latency histogram")]


def budget_section(r: dict[str, Any], v: Visuals) -> list[Block]:
    val = r.get("validate")
    if not val:
        return missing("no budget verdicts (validate/validation.json missing)")
    gate = val.get("gate") or []
    out = [
        table(
            ["budget", "value", "limit", "verdict", "source"],
            [
                [
                    g["budget"],
                    budget_value(g["budget"], g["value"]),
                    budget_value(g["budget"], g["limit"]),
                    "pass" if g["pass"] else "FAIL",
                    g["source"],
                ]
                for g in gate
            ],
        )
        if gate
        else para("No deployment budget set.")
    ]
    out += feedback_blocks(val.get("feedback") or {})
    notes = [n for n in val.get("notes") or [] if "--apply-feedback" not in str(n)]  # the feedback is said above, from its numbers
    return out + [para(str(n), "note") for n in notes]


def budget_value(budget: str, value: Any) -> str:
    """Accuracy drops in points (as everywhere else), the other budgets in their own units (named in the budget)."""
    v = number(value)
    if v is None:
        return "–"
    return f"{100 * v:.2f} pt" if "drop" in budget else f"{v:.4g}"


def changes_text(changes: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}" for k, v in changes.items())


def feedback_blocks(fb: dict[str, Any]) -> list[Block]:
    """The feedback in words that match what it found: --apply-feedback is named only when a change would be applied."""
    split = fb.get("split", "val")
    if not fb.get("triggered"):
        return [para("Feedback: INT8 within its thresholds, nothing to suggest.")]
    sugg = fb.get("suggestions") or []
    drop, limit = number(fb.get("int8_drop")), number(fb.get("threshold"))
    said = f"INT8 drop {100 * drop:.2f} pt on {split}" if drop is not None else f"INT8 on {split}"
    said += f" (threshold {100 * limit:.2f} pt)" if limit is not None else ""
    out = [heading("Feedback")]
    if sugg:
        out.append(
            bullets(
                [
                    [(str(s.get("why")), False)]
                    + (
                        [(f" — INT8 {pct(s['int8_acc'])} on {split} ({shown(number(s.get('gain')), 'pt')})", False)]
                        if "int8_acc" in s
                        else []
                    )
                    + ([(" ", False), (changes_text(s["changes"]), True)] if isinstance(s.get("changes"), dict) and s["changes"] else [])
                    for s in sugg
                ]
            )
        )
    measured = [s for s in sugg if "gain" in s]
    if isinstance(fb.get("apply"), dict) and fb["apply"]:
        how = f"measured INT8 {pct(fb['combined_int8_acc'])} on {split}" if "combined_int8_acc" in fb else "not measured"
        out.append(
            rich(
                [
                    (f"{said}: ", False),
                    ("cann-distill validate RECIPE --apply-feedback", True),
                    (" writes a recipe with ", False),
                    (changes_text(fb["apply"]), True),
                    (f" ({how}).", False),
                ]
            )
        )
    elif measured:
        out.append(para(f"{said}: none of the {len(measured)} measured fixes raised INT8 accuracy on {split}; nothing to apply.", "note"))
    else:
        out.append(para(f"{said}: no automatic fix applies; the suggestions above are manual.", "note"))
    return out


def settings_section(r: dict[str, Any], v: Visuals) -> list[Block]:
    recipe = r.get("recipe")
    if not recipe:
        return missing("no recipe recorded in report.json")
    return [para("The resolved recipe this report was written for:"), pre(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True))]


SECTIONS: list[tuple[str, str, Callable[[dict[str, Any], Visuals], Optional[list[Block]]]]] = [
    ("accuracy", "Accuracy", accuracy_section),
    ("fit", "Is this teacher a good fit?", fit_section),  # None (left out) for a report.json written without it
    ("curves", "Training curves", curves_section),
    ("per-class", "Per-class errors and confusion", per_class_section),
    ("heatmaps", "Knowledge heatmaps", heatmap_section),
    ("critical", "Critical samples", critical_section),
    ("int8-gap", "Per-layer INT8 gap", gap_section),
    ("latency", "Latency FP32 vs INT8", latency_section),
    ("budgets", "Budget verdicts and feedback", budget_section),
    ("modes", "Distillation mode", modes_section),  # None (left out) for one teacher, labelled data, one student
    ("settings", "Settings", settings_section),
]


def _environment() -> Any:
    import jinja2
    import markupsafe

    return jinja2.Environment(
        loader=jinja2.PackageLoader("cann_distill.reporting", "templates"),
        autoescape=True,
        # data reaches the page as text with its bidi controls made visible; markup the template built itself passes as is
        finalize=lambda value: value if isinstance(value, markupsafe.Markup) or not isinstance(value, str) else inert(value),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render(report: dict[str, Any], visuals: Optional[Visuals] = None) -> str:
    v = visuals or Visuals()
    data = report.get("data") or {}
    sections = []
    with charts.plain_text():
        for anchor, title, build in SECTIONS:
            try:
                blocks = build(report, v)
            except Exception as exc:  # one broken section must not cost the rest of the report
                blocks = missing(f"could not render this section: {type(exc).__name__}: {str(exc)[:200]}")
            if blocks is None:  # a section with nothing to say for this run (e.g. modes for one teacher)
                continue
            sections.append({"anchor": anchor, "title": title, "blocks": blocks})
    counts = " / ".join(f"{data.get(f'num_{s}', '?')} {s}" for s in ("train", "val", "test"))
    meta = (
        f"{data.get('source', '?')} data, {counts} images; headline split {data.get('headline_split', '?')}; "
        f"written {report.get('created', '?')}"
    )
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            title=str(report.get("title") or "cann-distill run"),
            meta=meta,
            problems=[
                {"input": str(p.get("input", "?")), "kind": str(p.get("kind", "missing")), "problem": str(p.get("problem", ""))}
                for p in report.get("problems") or []
                if isinstance(p, dict)
            ],
            sections=sections,
        )
    )
