"""`report --compare`: key numbers of several runs side by side, the winner per row, a warning on different data."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from cann_distill.core.errors import UsageError
from cann_distill.reporting.schema import read_report


def _get(*path: str) -> Callable[[dict[str, Any]], Optional[float]]:
    def get(report: dict[str, Any]) -> Optional[float]:
        node: Any = report
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else None

    return get


def _distill_seconds(report: dict[str, Any]) -> Optional[float]:
    return _get("stages", "distill", "seconds")(report)


PCT, NUM, MS, MB, INT, SEC = "pct", "num", "ms", "mb", "int", "sec"
# (metric, getter, better, format)
ROWS: list[tuple[str, Callable[[dict[str, Any]], Optional[float]], str, str]] = [
    ("teacher top-1", _get("knowledge", "accuracy", "teacher"), "higher", PCT),
    ("baseline top-1 (CE only)", _get("knowledge", "accuracy", "baseline"), "higher", PCT),
    ("student top-1 (torch)", _get("knowledge", "accuracy", "student"), "higher", PCT),
    ("student INT8 top-1", _get("validate", "accuracy", "onnx_int8"), "higher", PCT),
    ("INT8 drop", _get("validate", "accuracy", "int8_drop"), "lower", PCT),
    ("transfer efficiency", _get("knowledge", "transfer_efficiency", "value"), "higher", NUM),
    ("error reduction", _get("knowledge", "error_reduction", "value"), "higher", NUM),
    ("agreement, all", _get("knowledge", "agreement", "all"), "higher", PCT),
    ("agreement, critical", _get("knowledge", "agreement", "critical"), "higher", PCT),
    ("ECE student", _get("knowledge", "ece", "student", "value"), "lower", NUM),
    ("DQI", _get("knowledge", "dqi", "value"), "higher", NUM),
    ("INT8 latency median (b=1)", _get("validate", "latency_batch1", "int8", "median_ms"), "lower", MS),
    ("INT8 size", _get("validate", "size_bytes", "int8"), "lower", MB),
    ("student params", _get("distill", "params"), "lower", INT),
    ("distill time", _distill_seconds, "lower", SEC),
]


def fmt(value: Optional[float], kind: str) -> str:
    if value is None:
        return "–"
    return {
        PCT: f"{100 * value:.2f}%",
        NUM: f"{value:.3f}",
        MS: f"{value:.3f} ms",
        MB: f"{value / 1e6:.2f} MB",
        INT: f"{int(value):,}",
        SEC: f"{value:.1f} s",
    }[kind]


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


def data_warnings(names: Sequence[str], reports: Sequence[dict[str, Any]]) -> list[str]:
    keys = [((r.get("data") or {}).get("fingerprint"), (r.get("data") or {}).get("headline_split")) for r in reports]
    if len(set(keys)) <= 1:
        return []
    groups: dict[Any, list[str]] = {}
    for name, key in zip(names, keys):
        groups.setdefault(key, []).append(name)
    desc = "; ".join(f"{', '.join(g)}: {(k[0] or '?')[:12]} ({k[1]} split)" for k, g in groups.items())
    return [f"runs used different data ({desc}): their accuracies are not comparable"]


def compare(targets: Sequence[Path]) -> dict[str, Any]:
    """Key metrics of each run's report.json side by side; `winner` is the index of the best run per row."""
    if len(targets) < 2:
        raise UsageError("--compare needs at least two run dirs (or report.json files)")
    reports = [read_report(report_path(t)) for t in targets]
    names = [Path(t).name if Path(t).suffix != ".json" else Path(t).parent.parent.name for t in targets]
    if len(set(names)) < len(names):
        names = [str(t) for t in targets]
    rows = []
    for metric, get, better, kind in ROWS:
        values = [get(r) for r in reports]
        rows.append(
            {
                "metric": metric,
                "better": better,
                "values": values,
                "display": [fmt(v, kind) for v in values],
                "winner": winner(values, better, kind),
            }
        )
    return {
        "runs": [{"name": n, "dir": str(t), "title": r.get("title")} for n, t, r in zip(names, targets, reports)],
        "rows": rows,
        "warnings": data_warnings(names, reports),
    }


def to_markdown(result: dict[str, Any]) -> str:
    names = [r["name"] for r in result["runs"]]
    lines = ["| metric | " + " | ".join(names) + " | winner |", "|---|" + "---|" * len(names) + "---|"]
    for row in result["rows"]:
        cells = [f"**{d}**" if i == row["winner"] else d for i, d in enumerate(row["display"])]
        win = names[row["winner"]] if row["winner"] is not None else "–"
        lines.append(f"| {row['metric']} ({row['better']} is better) | " + " | ".join(cells) + f" | {win} |")
    lines += [f"\n> **Warning:** {w}" for w in result["warnings"]]
    return "\n".join(lines) + "\n"
