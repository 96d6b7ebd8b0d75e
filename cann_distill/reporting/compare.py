"""`report --compare`: key numbers of several runs side by side, the winner per row where the runs can be compared.

Accuracies, TE and DQI are the ones report.html and the dashboard show (`numbers.headline`): the
headline split of each run, TE "not meaningful" when its teacher's lead is within the noise. A row
names no winner when its runs are not comparable: accuracies on different data or splits, latency
and time measured on different machines, provider or thread count. One unit per quantity: top-1 in
%, the INT8 drop in points (pt), latency in ms, size in MB. Detection runs (`task: detect`) are
compared with each other on their own rows (COCO AP x 100 on val, the same rules); a detection run
and a classification run are not compared.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from cann_distill.core.errors import UsageError
from cann_distill.reporting.detection_report import SCHEMA as DETECTION_SCHEMA
from cann_distill.reporting.detection_report import check_detection_version
from cann_distill.reporting.numbers import headline, number
from cann_distill.reporting.schema import check_version, load_json

Getter = Callable[[dict[str, Any]], Optional[float]]


def _get(*path: str) -> Getter:
    def get(report: dict[str, Any]) -> Optional[float]:
        node: Any = report
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        return number(node)

    return get


def _headline(key: str) -> Getter:
    return lambda report: headline(report)[key]


PCT, PT, NUM, MS, MB, INT, SEC, AP, RATIO = "pct", "pt", "num", "ms", "mb", "int", "sec", "ap", "ratio"
DATA, MACHINE = "data", "machine"  # what must match for a row's runs to be comparable
# (metric, getter, better, format, what must match)
ROWS: list[tuple[str, Getter, str, str, Optional[str]]] = [
    ("teacher top-1", _headline("teacher"), "higher", PCT, DATA),
    ("baseline top-1 (CE only)", _headline("baseline"), "higher", PCT, DATA),
    ("student top-1 (torch)", _headline("student"), "higher", PCT, DATA),
    ("student INT8 top-1", _headline("onnx_int8"), "higher", PCT, DATA),
    ("INT8 drop", _headline("int8_drop"), "lower", PT, DATA),
    ("transfer efficiency", _headline("te"), "higher", NUM, DATA),
    ("error reduction", _get("knowledge", "error_reduction", "value"), "higher", NUM, DATA),
    ("agreement, all", _get("knowledge", "agreement", "all"), "higher", PCT, DATA),
    ("agreement, critical", _get("knowledge", "agreement", "critical"), "higher", PCT, DATA),
    ("ECE student", _get("knowledge", "ece", "student", "value"), "lower", NUM, DATA),
    ("DQI", _headline("dqi"), "higher", NUM, DATA),
    ("INT8 latency median (b=1)", _get("validate", "latency_batch1", "int8", "median_ms"), "lower", MS, MACHINE),
    ("INT8 size", _get("validate", "size_bytes", "int8"), "lower", MB, None),
    ("student params", _get("distill", "params"), "lower", INT, None),
    ("distill time", _get("stages", "distill", "seconds"), "lower", SEC, MACHINE),
]
# task: detect: COCO metrics of the torch models and the INT8 ONNX on val (AP x 100), validate's measurements
DETECTION_ROWS: list[tuple[str, Getter, str, str, Optional[str]]] = [
    ("teacher mAP", _get("teacher", "val", "mAP"), "higher", AP, DATA),
    ("baseline mAP (ground truth only)", _get("baseline", "val", "mAP"), "higher", AP, DATA),
    ("student mAP (torch)", _get("distill", "val", "mAP"), "higher", AP, DATA),
    ("student AP50 (torch)", _get("distill", "val", "AP50"), "higher", AP, DATA),
    ("student AP_small (torch)", _get("distill", "val", "AP_small"), "higher", AP, DATA),
    ("student INT8 mAP", _get("validate", "metrics", "onnx_int8", "mAP"), "higher", AP, DATA),
    ("INT8 mAP drop", _get("validate", "int8_map_drop"), "lower", PT, DATA),
    ("transfer efficiency (mAP)", _get("transfer_efficiency", "mAP", "value"), "higher", NUM, DATA),
    ("INT8 latency median (b=1)", _get("validate", "latency_batch1", "int8", "median_ms"), "lower", MS, MACHINE),
    ("INT8 / FP32 latency", _get("validate", "latency_batch1", "int8_over_fp32"), "lower", RATIO, MACHINE),
    ("INT8 size", _get("validate", "size_bytes", "int8"), "lower", MB, None),
    ("student params", _get("distill", "params"), "lower", INT, None),
]


def is_detection(report: dict[str, Any]) -> bool:
    return report.get("schema") == DETECTION_SCHEMA


def read_any_report(path: Path) -> dict[str, Any]:
    """A classification report.json or a detection one, of a version this cann-distill reads."""
    data = load_json(path)
    if isinstance(data, dict) and is_detection(data):
        return check_detection_version(data, path)
    return check_version(data, path)


def split_of(report: dict[str, Any]) -> Any:
    """The split a report's accuracies are measured on: the headline split, or val for a detection report."""
    return report.get("split") if is_detection(report) else headline(report)["split"]


def fmt(value: Optional[float], kind: str) -> str:
    if value is None:
        return "–"
    return {
        PCT: f"{100 * value:.2f}%",
        PT: f"{100 * value:.2f} pt",
        NUM: f"{value:.3f}",
        MS: f"{value:.3f} ms",
        MB: f"{value / 1e6:.2f} MB",
        INT: f"{int(value):,}",
        SEC: f"{value:.1f} s",
        AP: f"{100 * value:.1f}",
        RATIO: f"{value:.2f}×",
    }[kind]


def display(report: dict[str, Any], metric: str, value: Optional[float], kind: str) -> str:
    """The value as shown; TE and DQI say "not meaningful" where the teacher's lead is within the noise (as report.html)."""
    if value is None and is_detection(report) and metric == "transfer efficiency (mAP)":
        te = (report.get("transfer_efficiency") or {}).get("mAP") or {}
        return "not meaningful" if te.get("status") == "not_meaningful" else fmt(value, kind)
    if value is None and metric in ("transfer efficiency", "DQI") and headline(report)["verdict"] == "undefined":
        return "not meaningful"
    return fmt(value, kind)


def winner(values: Sequence[Optional[float]], better: str, kind: str) -> Optional[int]:
    """Index of the best value; None when fewer than two runs have one or the best ties (as displayed)."""
    known = [(v, i) for i, v in enumerate(values) if v is not None]
    if len(known) < 2:
        return None
    best = max(known) if better == "higher" else min(known)
    if sum(1 for v, _ in known if fmt(v, kind) == fmt(best[0], kind)) > 1:
        return None
    return best[1]


def report_path(target: Path) -> Path:
    target = Path(target)
    return target if target.suffix == ".json" else target / "report" / "report.json"


def data_key(report: dict[str, Any]) -> tuple[Any, Any]:
    """What accuracies depend on besides the model: the data (fingerprint) and the split they were measured on."""
    return (report.get("data") or {}).get("fingerprint"), split_of(report)


def machine_key(report: dict[str, Any]) -> str:
    """What latency and time depend on besides the model: the CPU's features, the provider, the threads."""
    v = report.get("validate") or {}
    return json.dumps([v.get("cpu"), v.get("provider"), (v.get("latency_batch1") or {}).get("threads")], sort_keys=True, default=str)


def _groups(names: Sequence[str], keys: Sequence[Any]) -> dict[Any, list[str]]:
    groups: dict[Any, list[str]] = {}
    for name, key in zip(names, keys):
        groups.setdefault(key, []).append(name)
    return groups


def data_warnings(names: Sequence[str], reports: Sequence[dict[str, Any]]) -> list[str]:
    keys = [data_key(r) for r in reports]
    if len(set(keys)) <= 1:
        return []
    desc = "; ".join(f"{', '.join(g)}: {(k[0] or '?')[:12]} ({k[1]} split)" for k, g in _groups(names, keys).items())
    return [f"runs used different data or splits ({desc}): their accuracies are not comparable, no winner is named"]


def machine_warnings(names: Sequence[str], reports: Sequence[dict[str, Any]]) -> list[str]:
    keys = [machine_key(r) for r in reports]
    if len(set(keys)) <= 1:
        return []
    desc = "; ".join(", ".join(g) for g in _groups(names, keys).values())
    return [f"runs were measured on different machines, providers or thread counts ({desc}): latency and time have no winner"]


def same_run_warnings(names: Sequence[str], targets: Sequence[Path]) -> list[str]:
    """Two targets that are one report (the same file, or byte-identical files)."""
    seen: dict[Any, str] = {}
    out = []
    for name, target in zip(names, targets):
        path = report_path(target)
        key = path.read_bytes()
        if key in seen:
            out.append(f"{seen[key]} and {name} are the same run (identical report.json): nothing to compare between them")
        else:
            seen[key] = name
    return out


def run_names(targets: Sequence[Path]) -> list[str]:
    names = [Path(t).name if Path(t).suffix != ".json" else Path(t).parent.parent.name for t in targets]
    return names if len(set(names)) == len(names) else [str(t) for t in targets]


def compare(targets: Sequence[Path]) -> dict[str, Any]:
    """Key metrics of each run's report.json side by side; `winner` is the index of the best run per row (None when
    the row's runs are not comparable, see `comparable` and `why`)."""
    if len(targets) < 2:
        raise UsageError("--compare needs at least two run dirs (or report.json files)")
    reports = [read_any_report(report_path(t)) for t in targets]
    names = run_names(targets)
    detect = [is_detection(r) for r in reports]
    if len(set(detect)) > 1:
        which = ", ".join(n for n, d in zip(names, detect) if d)
        raise UsageError(
            f"--compare: {which} {'is' if sum(detect) == 1 else 'are'} task: detect, the others are not: "
            "detection and classification runs have no numbers in common"
        )
    splits = [split_of(r) for r in reports]
    same = {DATA: len({data_key(r) for r in reports}) == 1, MACHINE: len({machine_key(r) for r in reports}) == 1}
    why = {DATA: "different data or splits", MACHINE: "different machines, providers or thread counts"}
    rows = []
    for metric, get, better, kind, needs in DETECTION_ROWS if detect[0] else ROWS:
        values = [get(r) for r in reports]
        comparable = needs is None or same[needs]
        label = f"{metric} on {splits[0]}" if needs == DATA and len(set(splits)) == 1 else metric
        rows.append(
            {
                "metric": label,
                "better": better,
                "values": values,
                "display": [display(r, metric, v, kind) for r, v in zip(reports, values)],
                "winner": winner(values, better, kind) if comparable else None,
                "comparable": comparable,
                "why": None if comparable else why[needs or DATA],
            }
        )
    return {
        "runs": [{"name": n, "dir": str(t), "title": r.get("title"), "split": s} for n, t, r, s in zip(names, targets, reports, splits)],
        "rows": rows,
        "warnings": same_run_warnings(names, targets) + data_warnings(names, reports) + machine_warnings(names, reports),
    }


def md_cell(text: Any) -> str:
    """A markdown table cell that stays one cell of plain text: | and markup escaped, line breaks as spaces."""
    s = " ".join(str(text).split())
    for ch in "\\`*_[]|#":
        s = s.replace(ch, "\\" + ch)
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_markdown(result: dict[str, Any]) -> str:
    names = [md_cell(r["name"]) for r in result["runs"]]
    lines = ["| metric | " + " | ".join(names) + " | winner |", "|---|" + "---|" * len(names) + "---|"]
    for row in result["rows"]:
        cells = [f"**{md_cell(d)}**" if i == row["winner"] else md_cell(d) for i, d in enumerate(row["display"])]
        if row["winner"] is not None:
            win = names[row["winner"]]
        else:
            win = f"– (not comparable: {md_cell(row['why'])})" if not row.get("comparable", True) else "–"
        lines.append(f"| {md_cell(row['metric'])} ({row['better']} is better) | " + " | ".join(cells) + f" | {win} |")
    lines += [f"\n> **Warning:** {md_cell(w)}" for w in result["warnings"]]
    return "\n".join(lines) + "\n"
