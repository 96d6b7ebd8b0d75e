"""Screenshots of a run's report.html and of the dashboard for the README (headless Chromium, tests/browser.py).

python scripts/screenshots.py RUNS_DIR [--report-run NAME] [--out docs/img]
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cann_distill.reporting.dashboard import make_server  # noqa: E402
from tests.browser import Browser  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", type=Path)
    ap.add_argument("--report-run", default=None, help="run whose report.html to capture (default: the first with one)")
    ap.add_argument("--out", type=Path, default=Path("docs/img"))
    ap.add_argument("--only", choices=("dashboard", "report"), default=None, help="take just one of the two")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    server = make_server(args.runs, port=0, refresh=1.0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with Browser(width=1200, height=900) as b:
        if args.only in (None, "dashboard"):
            b.open(server.url)
            b.js("new Promise(r => setTimeout(r, 1500))")
            b.screenshot(args.out / "dashboard.png", full_page=False)
            print(f"wrote {args.out / 'dashboard.png'}")
        if args.only in (None, "report"):
            runs = sorted(p.parent.parent for p in args.runs.glob("*/report/report.html"))
            name = args.report_run or runs[0].name
            b.open(f"{server.url}runs/{name}/report.html")
            b.screenshot(args.out / "report.png")
            print(f"wrote {args.out / 'report.png'}")
        assert not b.errors, b.errors
    server.shutdown()


if __name__ == "__main__":
    main()
