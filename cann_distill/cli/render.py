"""What the commands print for people (on stderr, through rich): tables of stage results, status, lists, predictions,
the environment and fit-student's measurements. Text that comes from files (class names, recipe values) is
printed inert: no rich markup, no terminal escape sequences."""

from __future__ import annotations

import re
from pathlib import Path

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from cann_distill.core.errors import cut
from cann_distill.runtime.terminal import ui

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")


def inert(text: str, limit: int = 120) -> str:
    """`text` safe to print: control characters (ESC, CR, BEL, bidi overrides) shown as \\xNN / \\uNNNN, cut to `limit`."""
    shown = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}", text)
    return cut(shown, limit)


def print_results(results: list) -> None:
    table = Table(title="cann-distill", title_justify="left")
    for col in ("stage", "status", "seconds", "key results"):
        table.add_column(col)
    for r in results:
        s = r.summary
        key = {
            "teacher": lambda: f"{s.get('arch')} val {100 * s.get('val_acc', 0):.2f}%",
            "select": lambda: f"{s.get('num_critical')}/{s.get('num_samples')} critical ({s.get('strategy')})",
            "distill": lambda: f"{s.get('arch')} val {100 * s.get('val_acc', 0):.2f}%",
            "baseline": lambda: f"{s.get('arch')} CE only, val {100 * s.get('val_acc', 0):.2f}%" if s else "off (report.baseline)",
            "validate": lambda: (
                f"INT8 {100 * s['accuracy']['onnx_int8']:.2f}% (drop {100 * s['accuracy']['int8_drop']:.2f} pt), "
                f"latency ×{s['int8_over_fp32']:.2f} vs FP32"
            ),
            "report": lambda: s.get("title", ""),
        }.get(r.stage if "key" not in s else "", lambda: s.get("key", ""))()  # a stage of task: detect says it itself
        table.add_row(r.stage, r.status, f"{r.seconds:.1f}", key)
    ui.console.print(table)
    for r in results:
        if r.stage == "report":
            t = Table(title=f"report: {r.summary.get('title')}", title_justify="left")
            top1 = f"top-1 ({r.summary.get('split', 'val')})"
            for col in r.summary.get("columns") or ("model", top1, "latency median (b=1)", "latency p99", "size"):
                t.add_column(col)
            for row in r.summary.get("rows", []):
                t.add_row(*row)
            ui.console.print(t)
            for line in r.summary.get("lines") or ():  # task: detect: transfer efficiency per metric
                ui.console.print(Text(line), highlight=False)
            ui.console.print(f"report: {Path(r.run_dir) / 'report' / 'report.html'} (+ report.json)", highlight=False)


def _probe_cells(row: dict) -> tuple[str, str]:
    p = row.get("probe") or {}
    if "val_acc" not in p:
        return ("failed", "")
    return (f"{100 * p['val_acc']:.1f}%", f"{100 * p['val_acc_per_ms']:.0f}")


def render_fit(result: dict) -> None:
    from cann_distill.fit_student import describe_miss

    basis = result["basis"]
    t = Table(
        title=f"fit-student: {result['target']} ({result['provider']}, {result['scheme']['activation_type']} activations, "
        f"reduce_range={result['scheme']['reduce_range']}, batch {result['batch']}, {result['threads']} thread(s), "
        f"{result['image_size']} px) — {basis['kind']}" + (f" ({basis['why']})" if basis["why"] else ""),
        title_justify="left",
    )
    probed = result.get("probe_epochs", 0) > 0
    for col in (
        "candidate",
        "params M",
        "MFLOPs",
        "FP32 ms",
        "INT8 ms",
        "INT8 p99",
        "INT8/FP32",
        "INT8 MB",
        "gap to teacher",
        *(("probe val", "val/ms") if probed else ()),
        "fits",
    ):
        t.add_column(col)
    notes = []
    for r in result["candidates"]:
        mark = (
            "[bold green]picked[/bold green]" if r["arch"] == result["picked"] else ("[green]yes[/green]" if r["fits"] else "[red]no[/red]")
        )
        flops = "" if r.get("flops") is None else f"{r['flops'] / 1e6:.1f}"
        gap = gap_cell(r.get("teacher_fit"))
        if r["status"] != "ok":
            blank = ("",) * 5  # nothing timed
            t.add_row(r["arch"], f"{r['params'] / 1e6:.2f}", flops, *blank, gap, *(("", "") if probed else ()), f"[red]{r['status']}[/red]")
            notes.append(f"{r['arch']}: {r['status']}: {cut(r['error'], 200)}")
            continue
        note = [f"{m['budget']} {m['value']:.4g} > {m['limit']:.4g} (+{100 * m['excess']:.0f}%)" for m in r["misses"]]
        if r["fp32"]["unstable"] or r["int8"]["unstable"]:
            note.append("latency rounds disagree (busy machine)")
        if note:
            notes.append(f"{r['arch']}: {'; '.join(note)}")
        t.add_row(
            r["arch"] + (" (cached)" if r.get("cached") else ""),
            f"{r['params'] / 1e6:.2f}",
            flops,
            f"{r['fp32']['median_ms']:.3f}±{r['fp32']['spread_ms']:.3f}",
            f"{r['int8']['median_ms']:.3f}±{r['int8']['spread_ms']:.3f}",
            f"{r['int8']['p99_ms']:.3f}" if r["int8"].get("p99_ms") is not None else f"max {r['int8'].get('max_ms', float('nan')):.3f}",
            f"{r['int8_over_fp32']:.2f}×" + ("" if r["comparison"]["significant"] else "~"),
            f"{r['size_bytes']['int8'] / 1e6:.2f}",
            gap,
            *(_probe_cells(r) if probed else ()),
            mark,
        )
    ui.console.print(t)
    for line in notes:
        ui.console.print(f"  {line}", highlight=False)
    budgets = ", ".join(f"{k} ≤ {v['limit']:.4g} ({v['source']})" for k, v in result["budgets"].items())
    ui.console.print(f"budgets: {budgets or 'none'}; ~ = INT8/FP32 difference within the measurement spread", highlight=False)
    if result["not_checked"]:
        ui.console.print(f"not checked before training: {', '.join(result['not_checked'])} (validate's gate checks it)", highlight=False)
    if result["picked"]:
        ui.console.print(f"picked {result['picked']}: wrote {result['outputs']['recipe']}", highlight=False)
    elif result["closest_miss"]:
        ui.console.print(f"closest miss: {describe_miss(result['closest_miss'])}", highlight=False)
    render_candidate_fit(result.get("teacher_fit") or {})
    ui.console.print(f"measurements: {result['outputs']['json']}", highlight=False)


def render_candidate_fit(fit: dict) -> None:
    """fit-student's teacher (what the `gap to teacher` column divides by) and its warnings about the probes."""
    if not fit:
        return
    teacher = fit["teacher"]
    acc = f", val top-1 {100 * teacher['val_acc']:.2f}% (teacher/metrics.json)" if teacher.get("val_acc") is not None else ""
    ui.console.print(
        Text(
            f"gap to teacher {teacher['arch']} ({teacher['params'] / 1e6:.2f} M params{acc}): teacher/candidate parameters "
            f"and FLOPs; ! = {fit['threshold']:g}× or more (a teacher-assistant chain may help if transfer efficiency is low)"
        ),
        highlight=False,
    )
    for advice in fit.get("advice") or []:
        ui.warn(escape(inert(advice["line"], 400)))


def gap_cell(fit: dict | None) -> str:
    """Teacher/candidate parameter and FLOP ratios, `!` when the gap is large (reporting/fit.py: GAP_RATIO)."""
    if not fit:
        return ""
    ratio = lambda r: "?" if r is None else f"{r:.1f}×"  # noqa: E731
    return f"{ratio(fit['params_ratio'])} / {ratio(fit['flops_ratio'])}" + (" !" if fit["large"] else "")


def render_teacher_fit(fit: dict | None) -> None:
    """`check`'s capacity gap and its advice (reporting/fit.py)."""
    if not fit:
        return
    from cann_distill.reporting.fit import gap_line

    ui.console.print(Text(inert(gap_line(fit["capacity"]), 400)), highlight=False)
    probe = fit.get("teacher_vs_probe")
    if probe and probe["status"] == "leads":
        ui.console.print(
            Text(
                f"teacher val top-1 {100 * probe['teacher_val_acc']:.2f}% leads the student's probe "
                f"{100 * probe['probe_val_acc']:.2f}% by {100 * probe['lead']:+.2f} pt"
            ),
            highlight=False,
        )
    for advice in fit.get("advice") or []:
        ui.warn(escape(inert(advice["line"], 400)))  # a chain's [a, b, c] is text, not rich markup


def render_status(result: dict) -> None:
    colour = {"up to date": "green", "stale": "yellow", "missing": "red", "off": "dim"}
    ui.console.print(Text(f"run dir {inert(result['run_dir'], 200)} (recipe: {inert(result['recipe'], 200)})"), highlight=False)
    t = Table()
    for col in ("stage", "state", "why"):
        t.add_column(col, overflow="fold")
    for row in result["stages"]:
        state = Text(row["state"], style=colour.get(row["state"], ""))
        t.add_row(row["stage"], state, Text("; ".join(inert(w, 300) for w in row["why"])))
    ui.console.print(t)
    if result.get("resume"):
        ui.console.print(Text(result["resume"]), highlight=False)
    ui.console.print(Text(result["next"]), highlight=False)


def render_list(result: dict) -> None:
    t = Table(title=f"{result['kind']}" + (f" matching {inert(result['pattern'], 40)}" if result["pattern"] else ""), title_justify="left")
    tasks = any("task" in e for e in result["entries"])  # selectors: classification's and detection's
    for col in (
        "name",
        *(("task",) if tasks else ()),
        "description",
        "arguments" if result["kind"] in ("losses", "selectors", "schedules") else "details",
    ):
        t.add_column(col, overflow="fold")
    for e in result["entries"]:
        task = (Text(e.get("task", "")),) if tasks else ()
        t.add_row(Text(e["name"], style="bold"), *task, Text(e["description"]), Text(e["arguments"]))
    ui.console.print(t)
    ui.console.print(f"{len(result['entries'])} {result['kind']}", highlight=False)


def render_predict(result: dict) -> None:
    if result.get("task") == "detect":
        render_boxes(result)
        return
    for pred in result["predictions"]:
        t = Table(title=Text(inert(pred["image"], 200)), title_justify="left")
        for col in ("rank", "class", "index", "probability"):
            t.add_column(col)
        for g in pred["top"]:
            t.add_row(str(g["rank"]), Text(inert(g["name"], 80)), str(g["index"]), f"{100 * g['probability']:.2f}%")
        ui.console.print(t)


def render_boxes(result: dict) -> None:
    """A detector's boxes per image: class, score and corners in the image's pixels (and where the drawing went)."""
    for pred in result["predictions"]:
        w, h = pred["size"]
        title = f"{inert(pred['image'], 200)} ({w}x{h}): {len(pred['boxes'])} box(es) scored >= {result['min_score']:g}"
        t = Table(title=Text(title), title_justify="left")
        for col in ("class", "score", "x1", "y1", "x2", "y2"):
            t.add_column(col)
        for b in pred["boxes"]:
            t.add_row(Text(inert(b["class"], 80)), f"{b['score']:.3f}", *(f"{v:.1f}" for v in b["box"]))
        ui.console.print(t)
        if pred.get("drawn"):
            ui.console.print(Text(f"drawn: {inert(pred['drawn'], 200)}"), highlight=False)


def render_env(info: dict) -> None:
    v = info["versions"]
    cpu, torch_, ort = info["cpu"], info["torch"], info["onnxruntime"]
    have = [f for f, on in cpu["flags"].items() if on]
    lack = [f for f, on in cpu["flags"].items() if not on]
    lines = [
        f"cann-distill {v.get('cann-distill')}  python {v.get('python')}  ({info['platform']})",
        "packages: " + ", ".join(f"{k} {val}" for k, val in v.items() if k not in ("cann-distill", "python") and val),
        f"cpu: {cpu['model']} ({cpu['machine']}, {cpu['cores']} cores); torch kernels: {torch_['cpu_capability']}",
        f"cpu flags: {', '.join(have) or 'none found'}" + (f"; not: {', '.join(lack)}" if lack else ""),
        f"torch devices: {', '.join(torch_['devices'])}" + (f" (CUDA {torch_['cuda']}, cuDNN {torch_['cudnn']})" if torch_["cuda"] else ""),
        f"onnxruntime providers: {', '.join(ort['available_providers'])}",
    ]
    if info["env"]:
        lines.append("environment: " + ", ".join(f"{k}={val}" for k, val in info["env"].items()))
    for line in lines:
        ui.console.print(Text(line), highlight=False)


def render_note(text: str) -> None:
    ui.console.print(Text(text), highlight=False)
