"""scripts/docs/screenshots.py: PNGs of report.html and the dashboard, taken by headless Chromium."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import pytest

from tests.browser import CHROMIUM
from tests.report_fixtures import write_run

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "docs" / "screenshots.py"
spec = importlib.util.spec_from_file_location("docs_screenshots", SCRIPT)
assert spec is not None and spec.loader is not None
screenshots = importlib.util.module_from_spec(spec)
spec.loader.exec_module(screenshots)


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it with apt-get)")
def test_screenshots_of_report_and_dashboard(tmp_path: Path) -> None:
    run = write_run(tmp_path / "runs", "tiny", live={"teacher": {"epochs": 3, "history": [{"epoch": 1, "loss": 1.0, "val_acc": 0.5}]}})
    (run / "report").mkdir()
    (run / "report" / "report.html").write_text("<!doctype html><title>r</title><h1>a report</h1>")
    screenshots.main([str(tmp_path / "runs"), "--out", str(tmp_path / "img"), "--report-height", "600"])
    assert png_size(tmp_path / "img" / "dashboard.png") == (1200, 900)
    assert png_size(tmp_path / "img" / "report.png") == (1200, 600)


def test_no_report_is_one_line(tmp_path: Path) -> None:
    write_run(tmp_path / "runs", "tiny")
    with pytest.raises(SystemExit, match="no report.html under .* for run other: run `cann-distill report` first"):
        screenshots.main([str(tmp_path / "runs"), "--out", str(tmp_path / "img"), "--only", "report", "--report-run", "other"])
