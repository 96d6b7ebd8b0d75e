"""The report of a `task: detect` run: COCO metrics of teacher, distilled student and baseline side by side, what the
data held, the distilled student's gain over its baseline and its transfer efficiency (`detection_transfer`).
report.json plus one self-contained report.html (inline CSS, no script; every value escaped)."""

from __future__ import annotations

import html
from typing import Any, Optional

from cann_distill.core.errors import ArtifactError
from cann_distill.reporting.charts import data_uri
from cann_distill.reporting.detection_metrics import SHOWN, percent
from cann_distill.reporting.detection_transfer import METRICS as TE_METRICS
from cann_distill.reporting.detection_transfer import te_note, te_shown, transfer_efficiencies

SCHEMA = "cann-distill detection report"
SCHEMA_VERSION = 2  # 2: transfer efficiency, the data fingerprint, the pictures
MODELS = (("teacher", "teacher"), ("distill", "student (distilled)"), ("baseline", "student (ground truth only)"))


def check_detection_version(report: dict[str, Any], where: Any) -> dict[str, Any]:
    """A detection report this version reads; ArtifactError naming the version otherwise."""
    if report.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(
            f"{where}: detection report version {str(report.get('schema_version'))[:20]} is unknown; this cann-distill reads "
            f"version {SCHEMA_VERSION}: rerun `cann-distill report RECIPE --force`"
        )
    return report


def model_rows(docs: dict[str, Optional[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per model that has metrics: its role, arch, parameters, COCO metrics, and for the ONNX files of
    validate their size and batch-1 median latency."""
    rows = []
    for key, label in MODELS:
        doc = docs.get(key)
        if doc and isinstance(doc.get("val"), dict):
            rows.append(
                {
                    "model": label,
                    "stage": key,
                    "arch": doc.get("arch"),
                    "params": doc.get("params"),
                    **{m: doc["val"].get(m) for m in SHOWN},
                }
            )
    v = docs.get("validate") or {}
    params = (docs.get("distill") or {}).get("params")
    for kind in ("fp32", "int8"):
        metrics = (v.get("metrics") or {}).get(f"onnx_{kind}")
        if isinstance(metrics, dict):
            latency = ((v.get("latency_batch1") or {}).get(kind) or {}).get("median_ms")
            rows.append(
                {
                    "model": f"student ONNX {kind.upper()}",
                    "stage": "validate",
                    "arch": v.get("arch"),
                    "params": params,
                    **{m: metrics.get(m) for m in SHOWN},
                    "latency_ms": latency,
                    "size_bytes": (v.get("size_bytes") or {}).get(kind),
                }
            )
    return rows


def gain(docs: dict[str, Optional[dict[str, Any]]]) -> Optional[dict[str, Any]]:
    """The distilled student's mAP minus its baseline's (points of AP x 100), when both ran; one run, one seed: no noise
    estimate, so a small difference says nothing."""
    d, b = docs.get("distill") or {}, docs.get("baseline") or {}
    if d.get("map") is None or b.get("map") is None:
        return None
    return {"mAP_points": 100 * (d["map"] - b["map"]), "distill": d["map"], "baseline": b["map"]}


def _val(doc: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    v = (doc or {}).get("val")
    return v if isinstance(v, dict) else None


def build_report(
    title: str,
    docs: dict[str, Optional[dict[str, Any]]],
    problems: list[dict[str, str]],
    recipe: dict[str, Any],
    fingerprint: Optional[str] = None,
    pictures: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    """report.json; `fingerprint`: the data's (what `report --compare` checks before naming a winner); `pictures`:
    what the detections figure shows (`detection_pictures.describe`), or why there is none."""
    data = next((d for d in (docs.get("teacher"), docs.get("distill"), docs.get("baseline")) if d), {}) or {}
    te = transfer_efficiencies(_val(docs.get("teacher")), _val(docs.get("baseline")), _val(docs.get("distill")))
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "task": "detect",
        "title": title,
        "split": "val",
        "models": model_rows(docs),
        "gain": gain(docs),
        "transfer_efficiency": te,
        "pictures": pictures,
        "data": {
            **{k: data.get(k) for k in ("num_train", "num_val", "classes", "category_ids", "data", "notes")},
            "fingerprint": fingerprint,
        },
        **{k: ({kk: vv for kk, vv in v.items() if kk != "history"} if v else None) for k, v in docs.items()},
        "problems": problems,
        "recipe": recipe,
    }


def terminal_lines(report: dict[str, Any]) -> list[str]:
    """The lines under the terminal table: transfer efficiency per metric, each with its number or why not."""
    te = report.get("transfer_efficiency") or {}
    out = []
    for m in TE_METRICS:
        why = (te.get(m) or {}).get("reason")
        out.append(f"transfer efficiency ({m}): {te_shown(te.get(m))}" + (f" ({why})" if why else ""))
    return out


def te_rows(report: dict[str, Any]) -> list[list[str]]:
    """metric, teacher, baseline, distilled, TE, note: the report.html table."""
    te = report.get("transfer_efficiency") or {}
    rows = []
    for m in TE_METRICS:
        t = te.get(m) or {}
        rows.append([m, *(percent(t.get(k)) for k in ("teacher", "baseline", "distilled")), te_shown(t), te_note(t)])
    return rows


def terminal_rows(report: dict[str, Any]) -> list[tuple[str, str, str, str, str]]:
    """(model, mAP, AP50, latency median, size) for the terminal table ('-' where a stage did not measure it)."""
    out = []
    for r in report["models"]:
        ms = f"{r['latency_ms']:.3f} ms" if r.get("latency_ms") is not None else "-"
        mb = f"{r['size_bytes'] / 1e6:.2f} MB" if r.get("size_bytes") is not None else "-"
        out.append((f"{r['model']} {r['arch']}", percent(r["mAP"]), percent(r["AP50"]), ms, mb))
    return out


_CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:70em}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}th:first-child,td:first-child{text-align:left}"
    ".problem{color:#a00}img{max-width:100%}figcaption{color:#444;font-size:13px;max-width:80ch}"
)


def _table(head: list[str], rows: list[list[Any]]) -> str:
    e = html.escape
    out = "<table><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in head) + "</tr>"
    for row in rows:
        out += "<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>"
    return out + "</table>"


def pictures_html(report: dict[str, Any], png: Optional[bytes]) -> str:
    """The detections figure inlined as a data: URI (the page stays one self-contained file), with its caption; or
    why there is none."""
    e = html.escape
    p = report.get("pictures") or {}
    if png is None:
        return f"<p class='problem'>{e(str(p.get('reason') or 'no detections figure'))}</p>"
    file = e(str(p.get("file") or ""))
    caption = (
        f"Each column one val image: its ground truth on top, then each model's detections scored at least "
        f"{p.get('min_score')} (evaluation's own decoding and NMS), labelled with class and score. Picked: {p.get('rule')}. "
        f"Also written as {file} beside this page."
    )
    return f"<figure><img alt='detections on val images' src='{data_uri(png)}'><figcaption>{e(caption)}</figcaption></figure>"


def render_html(report: dict[str, Any], png: Optional[bytes] = None) -> str:
    """report.html; `png`: the detections figure's bytes (report/detections.png), inlined."""
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(report['title'])}</title><style>{_CSS}</style></head><body>"]
    parts.append(f"<h1>{e(report['title'])}</h1><p>Object detection; COCO box metrics (AP x 100) on the validation split.</p>")
    for p in report["problems"]:
        parts.append(f"<p class='problem'>{e(p['input'])}: {e(p['problem'])}</p>")
    rows = [
        [
            r["model"],
            r["arch"],
            f"{(r['params'] or 0) / 1e6:.2f} M",
            *(percent(r[m]) for m in SHOWN),
            *terminal_rows({"models": [r]})[0][3:],
        ]
        for r in report["models"]
    ]
    head = ["model", "arch", "params", *SHOWN, "latency median (batch 1)", "size"]
    parts.append(_table(head, rows) if rows else "<p>No model has been evaluated yet.</p>")
    v = report.get("validate") or {}
    if v.get("int8_map_drop") is not None:
        parts.append(
            f"<p>INT8 vs FP32 ONNX: {100 * v['int8_map_drop']:+.1f} mAP points lost; latency ratio INT8 / FP32 "
            f"{(v.get('latency_batch1') or {}).get('int8_over_fp32', float('nan')):.2f} ({e(str(v.get('provider')))}).</p>"
        )
    g = report.get("gain")
    if g:
        parts.append(
            f"<p>Distilled student vs its ground-truth-only baseline: {g['mAP_points']:+.1f} mAP points "
            "(one run and one seed: no noise estimate, so a small difference says nothing).</p>"
        )
    if report.get("transfer_efficiency"):
        parts.append("<h2>Transfer efficiency</h2>")
        parts.append(
            "<p>TE = (distilled − baseline) / (teacher − baseline), AP x 100 on the validation split: the share of the "
            "teacher's lead over the ground-truth-only baseline that distillation gave the student (1: all of it, 0: none, "
            "below 0: the student fell behind its baseline).</p>"
        )
        parts.append(_table(["metric", "teacher", "baseline", "distilled", "TE", "note"], te_rows(report)))
    if report.get("pictures") is not None:
        parts.append("<h2>Detections</h2>" + pictures_html(report, png))
    data = report.get("data") or {}
    counts = data.get("data") or {}
    if counts:
        keys = sorted({k for c in counts.values() for k in c})
        parts.append("<h2>Data</h2>" + _table(["split", *keys], [[s, *(c.get(k, 0) for k in keys)] for s, c in counts.items()]))
    for note in data.get("notes") or []:
        parts.append(f"<p>{e(note)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)
