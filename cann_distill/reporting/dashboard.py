"""`cann-distill dashboard`: a local page listing the runs under a folder, live while they train.

Standard library only (`http.server`), bound to 127.0.0.1 by default. `/api/runs` reads each run
dir on every request: the manifest (stage status), staging folders (a stage that is running, or
was interrupted when no process holds the run's lock), `.live/<stage>.json` (per-epoch rows written
by training stages as they go, see training/live.py) and report.json (the same headline numbers,
from the same split, as report.html). The page (`templates/dashboard.*`) polls it and builds its
DOM from the data with text nodes and attributes only; `/runs/<name>/report.html` serves a run's
report in a sandbox. Nothing is written to the run dirs and no lock is taken or opened, so the
dashboard never disturbs a run.

What the server refuses: a Host header outside the allow-list (the bound address, localhost,
127.0.0.1, ::1 and names given with --allow-host; this stops DNS rebinding), files that a symlink
takes outside the served folder, and JSON over `MAX_JSON_BYTES` or nested too deeply to parse
(shown as unreadable). NaN and infinities in any file are sent as null.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import json
import math
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Sequence
from urllib.parse import unquote

from cann_distill.core.errors import ArtifactError, StageError, UsageError
from cann_distill.reporting.numbers import headline, number
from cann_distill.reporting.schema import check_version
from cann_distill.store.rundir import MANIFEST, RESOLVED, STAGE_ORDER, manifest_problem
from cann_distill.training.live import live_path

TRAINING = ("teacher", "distill", "baseline")
MAX_JSON_BYTES = 16 * 2**20  # a live log or report above this is shown as unreadable, not parsed
MAX_ROWS = 2000  # live rows sent per stage (the latest ones)
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
STATIC = {
    "/": ("dashboard.html", "text/html; charset=utf-8"),
    "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
REPORT_POLICY = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"


# ----------------------------------------------------------------------------- reading run dirs


def inside(root: Path, path: Path) -> bool:
    """Whether `path`, with every symlink followed, stays inside `root`."""
    try:
        return Path(path).resolve().is_relative_to(Path(root).resolve())
    except (OSError, RuntimeError):  # a symlink loop
        return False


def is_run(path: Path) -> bool:
    return (path / MANIFEST).is_file() or (path / RESOLVED).is_file()


def find_runs(root: Path) -> list[Path]:
    """`root` itself when it is a run dir, else its sub-folders that are (a symlink that leaves `root` is not followed)."""
    root = Path(root)
    if is_run(root):
        return [root]
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and inside(root, p) and is_run(p)), key=lambda p: p.name)


def finite(value: Any) -> Any:
    """`value` with NaN and infinities as None, so the JSON sent is valid for a browser's JSON.parse."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def read_json(path: Path, root: Path, limit: int = MAX_JSON_BYTES) -> tuple[Any, Optional[str]]:
    """(document, None), (None, None) when absent, or (None, why it is unreadable): never raises for the file's content."""
    if not path.is_file():
        return None, None
    if not inside(root, path):
        return None, "unreadable: a symlink leads outside the served folder"
    try:
        size = path.stat().st_size
        if size > limit:
            return None, f"unreadable: {size / 2**20:.0f} MiB, over the {limit / 2**20:.0f} MiB the dashboard reads"
        return json.loads(path.read_bytes().decode("utf-8"), parse_constant=lambda _: None), None
    except RecursionError:
        return None, "unreadable: nested too deeply"
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"unreadable ({type(exc).__name__})"


def _manifest(run: Path, root: Path) -> tuple[dict[str, Any], Optional[str]]:
    path = run / MANIFEST
    data, problem = read_json(path, root)
    if problem:
        return {}, f"manifest {problem}"
    if data is None:
        return {}, None
    why = manifest_problem(json.dumps(data))  # the run dir's own check of the structure
    return ({}, f"manifest {why}") if why else (data["stages"], None)


def lock_held(run: Path) -> Optional[bool]:
    """Whether a process holds the run dir's lock (store/rundir.py, `RunDir.lock`: flock on `.lock`).

    Read from /proc/locks, so the dashboard neither opens nor locks the file (taking the lock even
    for a moment could make a starting run fail as "in use"). None where that cannot be told.
    """
    try:
        st = (run / ".lock").stat()
    except FileNotFoundError:
        return False
    except OSError:
        return None
    try:
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    want = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    for line in table.splitlines():
        fields = line.split()
        if "FLOCK" not in fields or "->" in fields:  # "->": a waiter, not a holder
            continue
        for f in fields:
            parts = f.split(":")
            if len(parts) == 3 and all(parts):
                try:
                    if (int(parts[0], 16), int(parts[1], 16), int(parts[2])) == want:
                        return True
                except ValueError:
                    continue
    return False


def stage_status(run: Path, stages: dict[str, Any]) -> dict[str, str]:
    """done / running / interrupted / – per stage; a staging folder with no lock holder is an interrupted stage."""
    staged = {p.name.split(".")[1] for p in run.glob(".*.staging") if p.name.count(".") >= 2}
    held = lock_held(run) if staged else None
    out = {}
    for name in STAGE_ORDER:
        if name in staged:
            out[name] = "interrupted" if held is False else "running"
        else:
            out[name] = "done" if name in stages else "–"
    return out


def live_state(run: Path, root: Path, stage: str) -> Optional[dict[str, Any]]:
    """One stage's live log for the page: total epochs (None when unknown), rows done, the latest rows."""
    data, problem = read_json(live_path(run, stage), root)
    if problem:
        return {"epochs": None, "done": 0, "updated": None, "history": [], "problem": problem}
    if not isinstance(data, dict) or not isinstance(data.get("history"), list):
        return None
    epochs = data.get("epochs")
    epochs = epochs if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs > 0 else None
    rows = [{k: number(row.get(k)) for k in ("epoch", "loss", "val_acc", "lr")} for row in data["history"] if isinstance(row, dict)]
    return {"epochs": epochs, "done": len(rows), "updated": number(data.get("updated")), "history": rows[-MAX_ROWS:], "problem": None}


@functools.lru_cache(maxsize=256)
def _report_numbers(path: str, root: str, mtime_ns: int, size: int) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    """headline() of a report.json, cached by its modification time and size (the page polls every few seconds)."""
    data, problem = read_json(Path(path), Path(root))
    if problem or data is None:
        return None, f"report.json {problem}" if problem else None
    try:
        return headline(check_version(data, "report.json")), None
    except ArtifactError as exc:
        return None, str(exc)


def _stage_number(stages: dict[str, Any], stage: str, *path: str) -> Optional[float]:
    node: Any = (stages.get(stage) or {}).get("summary") if isinstance(stages.get(stage), dict) else None
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return number(node)


def run_numbers(run: Path, root: Path, stages: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers the page shows, all from one source and one split: report.json (what report.html shows),
    else validate's summary (its headline split), else the training stages' val accuracies."""
    report = run / "report" / "report.json"
    if "report" in stages and report.is_file():
        st = report.stat()
        got, problem = _report_numbers(str(report), str(root), st.st_mtime_ns, st.st_size)
        if got is not None:
            return {**got, "source": "report"}
        if problem:
            return {"source": None, "split": None, "problem": problem}
    acc = ((stages.get("validate") or {}).get("summary") or {}).get("accuracy") if isinstance(stages.get("validate"), dict) else None
    if isinstance(acc, dict) and isinstance(acc.get("split"), str):
        return {
            "source": "validate",
            "split": acc["split"],
            "teacher": number(acc.get("teacher")),
            "student": number(acc.get("torch_fp32")),
            "onnx_int8": number(acc.get("onnx_int8")),
            "int8_drop": number(acc.get("int8_drop")),
        }
    return {
        "source": "training",
        "split": "val",
        "teacher": _stage_number(stages, "teacher", "val_acc"),
        "student": _stage_number(stages, "distill", "val_acc"),
        "baseline": _stage_number(stages, "baseline", "val_acc"),
    }


def run_state(run: Path, root: Optional[Path] = None) -> dict[str, Any]:
    """Stage status, headline numbers and live per-epoch curves of one run dir (everything JSON-safe)."""
    root = Path(root) if root is not None else Path(run).parent
    stages, problem = _manifest(run, root)
    live = {name: state for name in TRAINING if (state := live_state(run, root, name)) is not None}
    report = run / "report" / "report.html"
    return finite(
        {
            "name": run.name,
            "path": str(run),
            "status": stage_status(run, stages),
            "numbers": run_numbers(run, root, stages),
            "live": live,
            "problem": problem,
            "report": report.is_file() and inside(root, report),
        }
    )


# ----------------------------------------------------------------------------- serving


def allowed_hosts(host: str, extra: Sequence[str] = ()) -> frozenset[str]:
    """Host header names the server answers: the bound address, the loopback names and the ones the user named."""
    return frozenset({host.strip("[]").lower(), *LOOPBACK_NAMES, *(h.strip("[]").lower() for h in extra)})


def host_name(header: Optional[str]) -> Optional[str]:
    """The name in a Host header, without its port ("[::1]:9400" → "::1")."""
    if not header:
        return None
    h = header.strip().lower()
    if h.startswith("["):
        return h[1 : h.index("]")] if "]" in h else None
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def is_loopback(host: str) -> bool:
    """Whether binding `host` keeps the dashboard on this machine."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Dashboard(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path, host: str, port: int, refresh: float, allow: Sequence[str] = ()) -> None:
        self.root, self.refresh = Path(root), refresh
        self.allowed = allowed_hosts(host, allow)
        super().__init__((host, port), Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/"

    def state(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "refresh": self.refresh,
            "stages": list(STAGE_ORDER),
            "runs": [run_state(p, self.root) for p in find_runs(self.root)],
        }


class Handler(BaseHTTPRequestHandler):
    server: Dashboard

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet: no access log on the terminal
        pass

    def _send(self, code: int, body: bytes, kind: str, policy: str = PAGE_POLICY, head: bool = False) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", policy)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _answer(self, head: bool) -> None:
        if host_name(self.headers.get("Host")) not in self.server.allowed:
            self._send(
                403, b"forbidden: unknown Host (start the dashboard with --allow-host NAME to serve it under NAME)", "text/plain", head=head
            )
            return
        path = unquote(self.path.split("?", 1)[0].split("#", 1)[0])
        if path in STATIC:
            name, kind = STATIC[path]
            self._send(200, resources.files("cann_distill.reporting").joinpath("templates", name).read_bytes(), kind, head=head)
        elif path == "/api/runs":
            body = json.dumps(self.server.state(), allow_nan=False).encode()
            self._send(200, body, "application/json", head=head)
        elif path.startswith("/runs/") and path.endswith("/report.html") and path.count("/") == 3:
            self._report(path.split("/")[2], head)
        else:
            self._send(404, b"not found", "text/plain", head=head)

    def _report(self, name: str, head: bool) -> None:
        runs = {p.name: p for p in find_runs(self.server.root)}
        report = runs[name] / "report" / "report.html" if name in runs else None
        if report is None or not report.is_file():
            self._send(404, b"no such report", "text/plain", head=head)
        elif not inside(self.server.root, report):
            self._send(403, b"forbidden: the report is a symlink leading outside the served folder", "text/plain", head=head)
        else:
            self._send(200, report.read_bytes(), "text/html; charset=utf-8", policy=REPORT_POLICY, head=head)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(head=True)


def make_server(root: Path, port: int = 9400, host: str = "127.0.0.1", refresh: float = 2.0, allow: Sequence[str] = ()) -> Dashboard:
    """A bound dashboard server (call `serve_forever`); one-line errors for no runs and a port in use."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root} is not a folder")
    if not find_runs(root):
        raise UsageError(f"no runs under {root} (a run dir holds {MANIFEST} or {RESOLVED}; start one with `cann-distill run RECIPE`)")
    if not 0 <= port <= 65535:
        raise UsageError(f"--port must be 0..65535, got {port}")
    try:
        return Dashboard(root, host, port, refresh, allow)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise StageError(f"port {port} on {host} is in use (another dashboard?); pick another with --port") from None
        raise StageError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None


def serve(server: Dashboard) -> None:
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
