"""`cann-distill dashboard`: a local page listing the runs under a folder, live while they train.

Standard library only (`http.server`), bound to 127.0.0.1 by default. `/api/runs` reads each run
dir on every request: the manifest (stage status and key numbers), staging folders (a stage that is
running) and `.live/<stage>.json` (per-epoch rows written by training stages as they go, see live.py).
The page polls it and redraws its SVG curves; `/runs/<name>/report.html` serves a run's report.
Nothing is written to the run dirs and no lock is taken, so the dashboard never disturbs a run.
"""

from __future__ import annotations

import errno
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Optional
from urllib.parse import unquote

from cann_distill.core.errors import StageError, UsageError
from cann_distill.store.rundir import MANIFEST, RESOLVED, STAGE_ORDER, manifest_problem
from cann_distill.training.live import read_live

TRAINING = ("teacher", "distill", "baseline")


def is_run(path: Path) -> bool:
    return (path / MANIFEST).is_file() or (path / RESOLVED).is_file()


def find_runs(root: Path) -> list[Path]:
    """`root` itself when it is a run dir, else its sub-folders that are."""
    root = Path(root)
    if is_run(root):
        return [root]
    return sorted((p for p in root.iterdir() if p.is_dir() and is_run(p)), key=lambda p: p.name) if root.is_dir() else []


def _manifest(run: Path) -> tuple[dict[str, Any], Optional[str]]:
    path = run / MANIFEST
    if not path.is_file():
        return {}, None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}, "manifest unreadable"
    problem = manifest_problem(text)
    return ({}, f"manifest {problem}") if problem else (json.loads(text)["stages"], None)


def _number(summary: dict[str, Any], *path: str) -> Optional[float]:
    node: Any = summary
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def run_state(run: Path) -> dict[str, Any]:
    """Stage status, key numbers and live per-epoch curves of one run dir."""
    stages, problem = _manifest(run)
    running = {p.name.split(".")[1] for p in run.glob(".*.staging")}
    status = {}
    for name in STAGE_ORDER:
        status[name] = "running" if name in running else ("done" if name in stages else "–")
    live = {}
    for name in TRAINING:
        data = read_live(run, name)
        if data is None:
            continue
        rows = [{k: row.get(k) for k in ("epoch", "loss", "val_acc", "lr")} for row in data["history"] if isinstance(row, dict)]
        live[name] = {"epochs": data.get("epochs"), "done": len(rows), "updated": data.get("updated"), "history": rows}
    s = lambda stage: (stages.get(stage) or {}).get("summary") or {}  # noqa: E731
    numbers = {
        "teacher_val": _number(s("teacher"), "val_acc"),
        "student_val": _number(s("distill"), "val_acc"),
        "baseline_val": _number(s("baseline"), "val_acc"),
        "int8": _number(s("validate"), "accuracy", "onnx_int8"),
        "int8_over_fp32": _number(s("validate"), "int8_over_fp32"),
        "te": _number(s("report"), "transfer_efficiency"),
        "dqi": _number(s("report"), "dqi"),
    }
    return {
        "name": run.name,
        "path": str(run),
        "status": status,
        "numbers": numbers,
        "live": live,
        "problem": problem,
        "report": (run / "report" / "report.html").is_file(),
    }


PAGE = """<!doctype html><html lang=en><head><meta charset=utf-8><title>cann-distill dashboard</title>
<link rel=icon href="data:,"><style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}th{background:#f4f4f4}.done{color:#2a7}.running{color:#d80;font-weight:bold}
.run{margin:1.2em 0;padding:.6em 1em;border:1px solid #ddd;border-radius:6px}svg{background:#fafafa;border:1px solid #eee;margin-right:8px}
.meta{color:#777}</style></head><body><h1>cann-distill runs</h1><p class=meta>__ROOT__ — refreshed every __REFRESH__ s,
<span id=updated>loading…</span></p><div id=runs></div><script>
"use strict";
const REFRESH = __REFRESH__ * 1000;
const STAGES = __STAGES__;
const pct = v => v === null || v === undefined ? "–" : (100 * v).toFixed(2) + "%";
const num = v => v === null || v === undefined ? "–" : v.toFixed(3);
function esc(s) { const d = document.createElement("div"); d.textContent = String(s); return d.innerHTML; }
function curve(rows, key, color, w, h, lo, hi) {
  const pts = rows.filter(r => typeof r[key] === "number");
  if (!pts.length) return "";
  const n = Math.max(rows.length, 2);
  return '<polyline fill="none" stroke="' + color + '" stroke-width="2" points="' + pts.map(r =>
    (10 + (r.epoch - 1) * (w - 20) / (n - 1)).toFixed(1) + "," + (h - 10 - (r[key] - lo) * (h - 20) / ((hi - lo) || 1)).toFixed(1)).join(" ") + '"/>';
}
function chart(stage, live) {
  const rows = live.history, w = 260, h = 120;
  const losses = rows.map(r => r.loss).filter(v => typeof v === "number");
  const hi = losses.length ? Math.max(...losses) : 1;
  return '<svg width="' + w + '" height="' + h + '" role="img" aria-label="' + stage + ' curves">' +
    '<text x="8" y="14" font-size="11">' + stage + ": loss (red), val top-1 (blue)</text>" +
    curve(rows, "loss", "#c44e52", w, h, 0, hi) + curve(rows, "val_acc", "#4c72b0", w, h, 0, 1) + "</svg>";
}
function render(runs) {
  const out = runs.map(run => {
    const stages = STAGES.map(s => {
      const st = run.status[s], live = run.live[s];
      const ep = live ? ' <span class="epoch" data-run="' + esc(run.name) + '" data-stage="' + s + '">' + live.done + "/" + live.epochs + "</span>" : "";
      return '<td class="' + (st === "–" ? "" : st) + '">' + esc(st) + ep + "</td>";
    }).join("");
    const n = run.numbers;
    const charts = Object.keys(run.live).map(s => chart(s, run.live[s])).join("");
    const link = run.report ? '<a href="/runs/' + encodeURIComponent(run.name) + '/report.html">report.html</a>' : "no report yet";
    return '<div class="run" data-run="' + esc(run.name) + '"><h2>' + esc(run.name) + "</h2>" +
      (run.problem ? '<p class="running">' + esc(run.problem) + "</p>" : "") +
      "<table><tr>" + STAGES.map(s => "<th>" + s + "</th>").join("") + "</tr><tr>" + stages + "</tr></table>" +
      "<p>teacher " + pct(n.teacher_val) + " · student " + pct(n.student_val) + " · baseline " + pct(n.baseline_val) +
      " · INT8 " + pct(n.int8) + " · TE " + num(n.te) + " · DQI " + num(n.dqi) + " · " + link + "</p>" + charts + "</div>";
  }).join("");
  document.getElementById("runs").innerHTML = out || "<p>no runs</p>";
  document.getElementById("updated").textContent = "last update " + new Date().toLocaleTimeString();
}
async function poll() {
  try {
    const r = await fetch("/api/runs", {cache: "no-store"});
    if (r.ok) render(await r.json());
  } catch (e) {
    document.getElementById("updated").textContent = "server unreachable, retrying";
  }
  setTimeout(poll, REFRESH);
}
poll();
</script></body></html>
"""


class Dashboard(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, host: str, port: int, refresh: float) -> None:
        self.root, self.refresh = Path(root), refresh
        super().__init__((host, port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


class Handler(BaseHTTPRequestHandler):
    server: Dashboard

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: no access log on the terminal
        pass

    def _send(self, code: int, body: bytes, kind: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = unquote(self.path.split("?", 1)[0])
        runs = {p.name: p for p in find_runs(self.server.root)}
        if path == "/":
            page = (
                PAGE.replace("__ROOT__", str(self.server.root))
                .replace("__REFRESH__", f"{self.server.refresh:g}")
                .replace("__STAGES__", json.dumps(list(STAGE_ORDER)))
            )
            self._send(200, page.encode(), "text/html; charset=utf-8")
        elif path == "/api/runs":
            self._send(200, json.dumps([run_state(p) for p in runs.values()]).encode(), "application/json")
        elif path.startswith("/runs/") and path.endswith("/report.html") and path.count("/") == 3:
            run = runs.get(path.split("/")[2])
            report = run / "report" / "report.html" if run is not None else None
            if report is not None and report.is_file():
                self._send(200, report.read_bytes(), "text/html; charset=utf-8")
            else:
                self._send(404, b"no such report", "text/plain")
        else:
            self._send(404, b"not found", "text/plain")


def make_server(root: Path, port: int = 9400, host: str = "127.0.0.1", refresh: float = 2.0) -> Dashboard:
    """A bound dashboard server (call `serve_forever`); one-line errors for no runs and a port in use."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder")
    if not find_runs(root):
        raise UsageError(f"no runs under {root} (a run dir holds {MANIFEST} or {RESOLVED}; start one with `cann-distill run RECIPE`)")
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be 0..65535, got {port}")
    try:
        return Dashboard(root, host, port, refresh)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise StageError(f"port {port} on {host} is in use (another dashboard?); pick another with --port") from None
        raise StageError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None


def serve(server: Dashboard) -> None:
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
