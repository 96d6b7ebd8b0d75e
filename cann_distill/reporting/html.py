"""report.html: one self-contained file (matplotlib PNGs inlined as base64, inline CSS, no script, no network).

Each section renders on its own: a section whose input is missing says so, and one that fails to
render shows the error instead of its figure, so a damaged run still gets the rest of its report.
matplotlib is used through its object API (`Figure`), never pyplot: no global backend or state.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np

from cann_distill.reporting.modes import modes_section

MODELS = ("teacher", "baseline", "student")
COLORS = {"teacher": "#4c72b0", "baseline": "#8c8c8c", "student": "#dd8452", "fp32": "#4c72b0", "int8": "#c44e52"}
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
    tapped: Any = None  # knowledge.Tapped
    shown: list[dict[str, Any]] = field(default_factory=list)  # headline-split images with predictions, critical first


def esc(value: Any) -> str:
    return html.escape(str(value))


def pct(v: Optional[float]) -> str:
    return "–" if v is None else f"{100 * v:.2f}%"


def num(v: Optional[float], digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def figure(w: float = 6.0, h: float = 3.2) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h))


def as_image(chw: np.ndarray) -> np.ndarray:
    """A normalised [C, H, W] tensor as a displayable [H, W] or [H, W, 3] in [0, 1]."""
    img = np.asarray(chw, dtype=np.float64)
    img = (img - img.min()) / (img.max() - img.min() or 1.0)
    return img[0] if img.shape[0] == 1 else np.transpose(img[:3], (1, 2, 0))


def table(head: list[str], body: list[list[Any]]) -> str:
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    tr = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{tr}</tbody></table>"


# ----------------------------------------------------------------------------- sections


def accuracy_section(r: dict[str, Any], v: Visuals) -> str:
    k, val = r.get("knowledge") or {}, r.get("validate") or {}
    acc, vacc = k.get("accuracy") or {}, val.get("accuracy") or {}
    split = k.get("split") or vacc.get("split") or "val"
    body = [
        ["teacher " + (r.get("teacher") or {}).get("arch", "?"), pct(acc.get("teacher", vacc.get("teacher")))],
        ["baseline (CE only)", pct(acc.get("baseline")) if r.get("baseline") else "– (report.baseline off or not run)"],
        ["student (distilled, torch)", pct(acc.get("student", vacc.get("torch_fp32")))],
        ["student ONNX FP32", pct(vacc.get("onnx_fp32"))],
        ["student ONNX INT8", pct(vacc.get("onnx_int8"))],
    ]
    out = table(["model", f"top-1 ({split})"], body)
    if k:
        ag, te, er, fit, d = k["agreement"], k["transfer_efficiency"], k["error_reduction"], k["hardware_fit"], k["dqi"]
        why = lambda m: m.get("reason") or ""  # noqa: E731
        rows = [
            ["teacher–student agreement, all", pct(ag["all"]), f"{k['num']} samples"],
            ["teacher–student agreement, critical", pct(ag["critical"]), f"{ag['num_critical']} samples ({k.get('critical_rule', '')})"],
            ["transfer efficiency", num(te["value"]), why(te) or _paired_note(k.get("distill_vs_baseline"), "student − baseline")],
            [
                "teacher lead over baseline",
                num((k.get("teacher_vs_baseline") or {}).get("difference")),
                _paired_note(k.get("teacher_vs_baseline"), "teacher − baseline"),
            ],
            [
                "error reduction",
                num(er["value"]),
                f"{er.get('fixed', 0)} of {er.get('opportunities', 0)} fixed, {er.get('regressed', 0)} regressed"
                if er.get("value") is not None
                else why(er),
            ],
            *[[f"ECE {name}", num(e["value"], 4), f"{e['bins']} bins"] for name, e in k["ece"].items()],
            ["hardware fit", num(fit["value"]), why(fit) or f"{fit.get('passed')}/{fit.get('total')} budgets pass"],
            ["DQI", num(d["value"]), why(d)],
        ]
        out += "<h3>How much knowledge arrived</h3>" + table(["metric", "value", "note"], rows)
    verdict = r.get("distillation")
    if verdict:
        out += f'<p class="verdict {html.escape(verdict["status"])}">{html.escape(verdict["line"])}</p>'

    return out


def _paired_note(p: Optional[dict[str, Any]], what: str) -> str:
    """The paired test's numbers in words (exact McNemar on the same images)."""
    if not p:
        return ""
    lo, hi = p["ci95"]
    return (
        f"{what}: {100 * p['difference']:+.2f} pt (95% CI {100 * lo:+.2f} to {100 * hi:+.2f}), exact McNemar p={p['p_value']:.2g}, "
        f"{p['a_only']} vs {p['b_only']} images only one gets right: {p['verdict'].replace('_', ' ')}"
    )


def curves_section(r: dict[str, Any], v: Visuals) -> str:
    d = r.get("distill") or {}
    hist = d.get("history") or []
    if not hist:
        return "<p class=missing>no distill history (distill/metrics.json missing)</p>"
    base = (r.get("baseline") or {}).get("history") or []
    teacher = (r.get("teacher") or {}).get("history") or []
    ep = [row["epoch"] for row in hist]
    fig = figure(11, 3.2)
    ax1, ax2, ax3 = fig.subplots(1, 3)
    for key in sorted({k for row in hist for k in row} - NOT_LOSSES):
        if all(isinstance(row.get(key), (int, float)) for row in hist) and not key.startswith("balance."):
            ax1.plot(ep, [row[key] for row in hist], label=key)
    ax1.set_title("distill loss terms"), ax1.set_xlabel("epoch"), ax1.legend(fontsize=7)
    ax2.plot(ep, [row["lr"] for row in hist], color="#555", label="lr")
    ax2.set_title("learning rate / temperature"), ax2.set_xlabel("epoch"), ax2.set_ylabel("lr")
    if all("temperature_mean" in row for row in hist):
        t = ax2.twinx()
        t.plot(ep, [row["temperature_mean"] for row in hist], color=COLORS["student"], label="T (mean)")
        t.set_ylabel("temperature")
    for name, h in (("teacher", teacher), ("baseline", base), ("student", hist)):
        if h and all("val_acc" in row for row in h):
            ax3.plot([row["epoch"] for row in h], [row["val_acc"] for row in h], label=name, color=COLORS[name])
    ax3.set_title("validation top-1"), ax3.set_xlabel("epoch"), ax3.legend(fontsize=7)
    return png(fig)


def per_class_section(r: dict[str, Any], v: Visuals) -> str:
    k = r.get("knowledge")
    if not k:
        return "<p class=missing>no per-sample predictions (teacher or student checkpoint missing)</p>"
    classes = (r.get("data") or {}).get("classes") or [str(i) for i in range(len(k["per_class"]["teacher"]))]
    names = [n for n in MODELS if n in k["per_class"]]
    fig = figure(max(6, 0.5 * len(classes)), 3)
    ax = fig.subplots()
    x, w = np.arange(len(classes)), 0.8 / len(names)
    for i, name in enumerate(names):
        ax.bar(x + i * w, [a if a is not None else 0 for a in k["per_class"][name]], w, label=name, color=COLORS[name])
    ax.set_xticks(x + w * (len(names) - 1) / 2, classes, fontsize=7, rotation=45 if len(classes) > 12 else 0)
    ax.set_ylim(0, 1.05), ax.set_ylabel("top-1"), ax.legend(fontsize=7, loc="lower right")
    out = png(fig)
    fig = figure(4 * len(names), 3.6)
    for ax, name in zip(np.atleast_1d(fig.subplots(1, len(names))), names):
        cm = np.asarray(k["confusion"][name], dtype=np.float64)
        ax.imshow(cm / np.maximum(cm.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
        ax.set_title(f"{name} confusion"), ax.set_xlabel("predicted"), ax.set_ylabel("true")
    return out + png(fig)


def heatmap_section(r: dict[str, Any], v: Visuals) -> str:
    t = v.tapped
    if t is None or t.teacher_attention is None or not v.shown:
        return "<p class=missing>no attention maps (checkpoints missing, or no spatial feature taps)</p>"
    pair = (r.get("knowledge") or {}).get("attention") or {}
    fig = figure(2.0 * len(v.shown), 6.4)
    axes = fig.subplots(3, len(v.shown), squeeze=False)
    for j, s in enumerate(v.shown):
        img = as_image(s["image"])
        axes[0, j].imshow(img, cmap="gray" if img.ndim == 2 else None)
        axes[0, j].set_title(f"{'critical' if s['critical'] else 'other'}\nlabel {s['label']}", fontsize=8)
        for row, (att, who) in enumerate(((t.teacher_attention[j], "teacher"), (t.student_attention[j], "student")), start=1):
            axes[row, j].imshow(att, cmap="inferno", vmin=0, vmax=1)
            axes[row, j].set_title(f"{who}: {s[who]}" + ("" if row == 1 else (" ✓ agree" if s["agree"] else " ✗ differ")), fontsize=8)
        for row in range(3):
            axes[row, j].axis("off")
    cka = (r.get("knowledge") or {}).get("cka") or []
    out = (
        f"<p>Spatial attention (mean of squared activations over channels) at teacher {esc(pair.get('teacher_module'))} vs "
        f"student {esc(pair.get('student_module'))}; critical samples first.</p>" + png(fig)
    )
    if cka:
        fig = figure(6, 2.6)
        ax = fig.subplots()
        ax.bar([f"T {c['teacher_module']}\nS {c['student_module']}" for c in cka], [c["cka"] or 0 for c in cka], color=COLORS["student"])
        ax.set_ylim(0, 1), ax.set_ylabel("linear CKA"), ax.tick_params(axis="x", labelsize=7)
        out += f"<h3>Linear CKA per stage ({(r.get('knowledge') or {}).get('cka_samples')} images)</h3>" + png(fig)
    return out


def critical_section(r: dict[str, Any], v: Visuals) -> str:
    if v.scores is None:
        return "<p class=missing>no critical-sample index (select/index.csv missing)</p>"
    fig = figure(6, 2.6)
    ax = fig.subplots()
    crit = v.critical if v.critical is not None else np.zeros(len(v.scores), dtype=bool)
    bins = np.histogram_bin_edges(v.scores, bins=30)
    ax.hist([v.scores[~crit], v.scores[crit]], bins=bins, stacked=True, label=["other", "critical"], color=["#9db3d1", COLORS["int8"]])
    ax.set_xlabel(f"criticality score ({(r.get('select') or {}).get('strategy', '?')})"), ax.set_ylabel("training samples")
    ax.legend(fontsize=7)
    out = png(fig)
    if v.examples:
        fig = figure(1.4 * len(v.examples), 1.8)
        for ax, (img, caption) in zip(np.atleast_1d(fig.subplots(1, len(v.examples))), v.examples):
            im = as_image(img)
            ax.imshow(im, cmap="gray" if im.ndim == 2 else None), ax.axis("off"), ax.set_title(f"score {caption}", fontsize=8)
        out += "<p>Highest-scoring (most critical) training samples:</p>" + png(fig)
    return out


def gap_section(r: dict[str, Any], v: Visuals) -> str:
    rows = ((r.get("validate") or {}).get("layer_gap") or {}).get("worst") or []
    if not rows:
        return "<p class=missing>no per-layer INT8 gap (validate/validation.json missing or empty)</p>"
    fig = figure(7, 0.35 * len(rows) + 1)
    ax = fig.subplots()
    labels = [row.get("module") or row.get("node") or "?" for row in rows][::-1]
    ax.barh(labels, [row["gap_db"] for row in rows][::-1], color=COLORS["int8"])
    ax.set_xlabel("SQNR lost in the layer (dB)"), ax.tick_params(axis="y", labelsize=7)
    return png(fig)


def latency_section(r: dict[str, Any], v: Visuals) -> str:
    lat = (r.get("validate") or {}).get("latency_batch1") or {}
    if "fp32" not in lat or "int8" not in lat:
        return "<p class=missing>no latency measurements (validate/validation.json missing)</p>"
    fig = figure(6, 2.8)
    ax = fig.subplots()
    if all("times_ms" in lat[k] for k in ("fp32", "int8")):
        ax.hist([lat["fp32"]["times_ms"], lat["int8"]["times_ms"]], bins=30, label=["FP32", "INT8"], color=[COLORS["fp32"], COLORS["int8"]])
        ax.set_xlabel("batch-1 latency (ms)"), ax.set_ylabel("runs")
    else:  # reports from before per-run times were kept
        qs = ("median_ms", "p90_ms", "p99_ms")
        x = np.arange(len(qs))
        ax.bar(x - 0.2, [lat["fp32"][q] for q in qs], 0.4, label="FP32", color=COLORS["fp32"])
        ax.bar(x + 0.2, [lat["int8"][q] for q in qs], 0.4, label="INT8", color=COLORS["int8"])
        ax.set_xticks(x, qs), ax.set_ylabel("ms")
    ax.legend(fontsize=7)
    note = f"<p>{lat.get('threads', '?')} thread(s); INT8/FP32 median ratio {num(lat.get('int8_over_fp32'), 2)}×.</p>"
    return note + png(fig)


def budget_section(r: dict[str, Any], v: Visuals) -> str:
    val = r.get("validate")
    if not val:
        return "<p class=missing>no budget verdicts (validate/validation.json missing)</p>"
    gate = val.get("gate") or []
    out = (
        table(
            ["budget", "value", "limit", "verdict", "source"],
            [[g["budget"], f"{g['value']:.4g}", f"{g['limit']:.4g}", "pass" if g["pass"] else "FAIL", g["source"]] for g in gate],
        )
        if gate
        else "<p>No deployment budget set.</p>"
    )
    fb = val.get("feedback") or {}
    sugg = fb.get("suggestions") or []
    if sugg:
        out += (
            "<h3>Feedback suggestions</h3><ul>"
            + "".join(
                f"<li>{esc(s.get('why'))}"
                + (f" — INT8 {pct(s['int8_acc'])} ({100 * s['gain']:+.2f} pt)" if "int8_acc" in s else "")
                + (f" <code>{esc(s.get('changes'))}</code>" if s.get("changes") else "")
                + "</li>"
                for s in sugg
            )
            + "</ul>"
        )
    else:
        out += f"<p>Feedback: {'triggered, no suggestion' if fb.get('triggered') else 'INT8 within thresholds, nothing to suggest'}.</p>"
    notes = val.get("notes") or []
    return out + "".join(f"<p class=note>{esc(n)}</p>" for n in notes)


SECTIONS: list[tuple[str, str, Callable[[dict[str, Any], Visuals], Optional[str]]]] = [
    ("accuracy", "Accuracy", accuracy_section),
    ("curves", "Training curves", curves_section),
    ("per-class", "Per-class accuracy and confusion", per_class_section),
    ("heatmaps", "Knowledge heatmaps", heatmap_section),
    ("critical", "Critical samples", critical_section),
    ("int8-gap", "Per-layer INT8 gap", gap_section),
    ("latency", "Latency FP32 vs INT8", latency_section),
    ("budgets", "Budget verdicts and feedback", budget_section),
    ("modes", "Distillation mode", modes_section),  # None (left out) for one teacher, labelled data, one student
]

CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1150px;color:#222;padding:0 1em}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 9px;text-align:left}
th{background:#f4f4f4}img{max-width:100%}.missing{color:#a33}.problems{background:#fff3f3;border:1px solid #e0b4b4;padding:.5em 1em}
.note{color:#555;font-size:13px}.meta{color:#666}"""


def render(report: dict[str, Any], visuals: Optional[Visuals] = None) -> str:
    v = visuals or Visuals()
    data = report.get("data") or {}
    parts = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{esc(report.get('title'))} — cann-distill report</title>"
        f'<link rel=icon href="data:,"><style>{CSS}</style></head><body><h1>{esc(report.get("title"))}</h1>',
        f"<p class=meta>{esc(data.get('source'))} data, {data.get('num_train')} train / {data.get('num_val')} val / "
        f"{data.get('num_test')} test images; headline split {esc(data.get('headline_split'))}; written {esc(report.get('created'))}</p>",
    ]
    problems = report.get("problems") or []
    if problems:
        parts.append(
            "<div class=problems><b>Missing, unusable or out-of-date inputs</b> (the rest is rendered):<ul>"
            + "".join(f"<li><code>{esc(p['input'])}</code> ({esc(p.get('kind', 'missing'))}): {esc(p['problem'])}</li>" for p in problems)
            + "</ul></div>"
        )
    for anchor, title, fn in SECTIONS:
        try:
            body = fn(report, v)
        except Exception as exc:  # one broken section must not cost the rest of the report
            body = f"<p class=missing>could not render this section: {esc(type(exc).__name__)}: {esc(str(exc)[:200])}</p>"
        if body is None:
            continue
        parts.append(f"<section id={anchor}><h2>{esc(title)}</h2>{body}</section>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
