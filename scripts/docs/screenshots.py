"""Screenshots of a run's report.html and of the dashboard for the docs (docs/img/), with `chromium --headless --screenshot`.

    python scripts/docs/screenshots.py RUNS_DIR [--report-run NAME] [--out docs/img] [--only dashboard|report]

The dashboard is served from RUNS_DIR on a free local port for the time of the shot; Chromium's virtual
time budget lets the page fetch /api/runs and draw before the picture is taken. report.html is opened
from disk. Needs Debian's `chromium` (or `chromium-browser`) on PATH.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Optional

from cann_distill.reporting.dashboard import make_server


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise SystemExit("Error: chromium is not installed (apt-get install -y chromium)")
    return found


def shoot(url: str, out: Path, width: int, height: int, wait_ms: int = 3000) -> None:
    """One headless Chromium that loads `url`, lets `wait_ms` of virtual time pass, and writes a PNG of the window."""
    with tempfile.TemporaryDirectory(prefix="cann-distill-shot-") as profile:
        cmd = [
            chromium(),
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--virtual-time-budget={wait_ms}",
            f"--screenshot={out.resolve()}",
            url,
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if res.returncode != 0 or not out.is_file():
        raise SystemExit(f"Error: chromium could not take {out}: {res.stderr.strip()[-500:]}")
    print(f"wrote {out}")


def report_of(runs: Path, name: Optional[str]) -> Path:
    found = sorted(runs.glob("*/report/report.html")) + sorted(runs.glob("report/report.html"))
    if name is not None:
        found = [p for p in found if p.parent.parent.name == name]
    if not found:
        raise SystemExit(f"Error: no report.html under {runs}" + (f" for run {name}" if name else "") + ": run `cann-distill report` first")
    return found[0]


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, help="folder of run dirs (or one run dir)")
    ap.add_argument("--report-run", default=None, help="run whose report.html to capture (default: the first with one)")
    ap.add_argument("--out", type=Path, default=Path("docs/img"))
    ap.add_argument("--only", choices=("dashboard", "report"), default=None, help="take just one of the two")
    ap.add_argument("--report-height", type=int, default=4600, help="pixels of report.html captured from the top")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "report"):
        shoot(report_of(args.runs, args.report_run).resolve().as_uri(), args.out / "report.png", 1200, args.report_height, wait_ms=500)
    if args.only in (None, "dashboard"):
        server = make_server(args.runs, port=0, refresh=1.0)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        try:
            shoot(server.url, args.out / "dashboard.png", 1200, 900)
        finally:
            server.shutdown()
            server.server_close()


if __name__ == "__main__":
    sys.exit(main())
