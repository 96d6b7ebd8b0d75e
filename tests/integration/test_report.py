"""Baseline stage, report.json against its schema, report.html and the dashboard in headless Chromium, --compare."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from cann_distill.reporting.dashboard import make_server
from cann_distill.reporting.schema import schema
from tests.browser import CHROMIUM, Browser
from tests.conftest import TINY

pytestmark = pytest.mark.slow
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed and could not be (.ci/run runs `apt-get install -y chromium`; it needs root and the Debian archive)",
)
RECIPE = {
    **TINY,
    "data": {**TINY["data"], "max_samples": 200},
    "teacher": {"arch": "test_resnet", "train": {"epochs": 3, "lr": 0.05}},
    "distill": {"epochs": 2, "lr": 0.05},
    "report": {"baseline": True},
}


def write(path: Path, recipe: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished tiny run (baseline on) under runs/tiny, its cache in runs/../cache."""
    root = tmp_path_factory.mktemp("report")
    env = {"XDG_CACHE_HOME": str(root / "cache")}
    recipe = write(root / "tiny.yaml", {**RECIPE, "run_dir": str(root / "runs" / "tiny")})
    out = subprocess.run(
        [sys.executable, "-m", "cann_distill", "run", str(recipe), "--json"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, **env},
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert {s["stage"]: s["status"] for s in json.loads(out.stdout)["stages"]}["baseline"] == "done"
    return root


def load(run: Path) -> dict[str, Any]:
    return json.loads((run / "report" / "report.json").read_text())


def test_report_json_validates_and_metrics_agree(runs: Path) -> None:
    r = load(runs / "runs" / "tiny")
    jsonschema.Draft202012Validator(schema()).validate(r)
    k, v = r["knowledge"], r["validate"]
    assert r["problems"] == [] and r["baseline"]["losses"] == ["ce"] and r["baseline"]["epochs"] == 2
    assert k["accuracy"]["teacher"] == pytest.approx(v["accuracy"]["teacher"])  # same split, same checkpoint, two code paths
    assert k["accuracy"]["student"] == pytest.approx(v["accuracy"]["torch_fp32"])
    assert k["agreement"]["all"] == pytest.approx(v["agreement"]["teacher_vs_student_top1"])
    acc = k["accuracy"]
    if acc["teacher"] > acc["baseline"]:
        assert k["transfer_efficiency"]["value"] == pytest.approx((acc["student"] - acc["baseline"]) / (acc["teacher"] - acc["baseline"]))
    else:
        assert k["transfer_efficiency"]["value"] is None and "does not beat" in k["transfer_efficiency"]["reason"]
    assert len(k["cka"]) >= 2 and all(0 <= c["cka"] <= 1 + 1e-9 for c in k["cka"])
    assert abs(k["agreement"]["num_critical"] - 0.35 * k["num"]) <= 10  # class-balanced quotas round per class
    assert len(v["latency_batch1"]["int8"]["times_ms"]) == 10
    bad = {**r, "knowledge": {**k, "dqi": {"value": "high"}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema()).validate(bad)


def test_baseline_is_reused_across_recipes_and_skipped(runs: Path, cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(runs / "cache"))
    other = {**RECIPE, "run_dir": str(runs / "other"), "distill": {**RECIPE["distill"], "losses": [{"kind": "kd", "weight": 1.0}]}}
    res = cli("baseline", write(runs / "other.yaml", other), "--json")
    assert res.exit_code == 0, res.stderr
    summary = json.loads(res.stdout)["stages"][0]["summary"]
    assert summary["reused_from"].endswith(".pt")  # a different distillation recipe, same student/data/budget: not retrained
    assert (runs / "other" / "baseline" / "student.pt").read_bytes() == (runs / "runs" / "tiny" / "baseline" / "student.pt").read_bytes()
    again = cli("baseline", runs / "other.yaml", "--json")
    assert json.loads(again.stdout)["stages"][0]["status"] == "skipped"
    off = cli("baseline", write(runs / "off.yaml", {**other, "report": {"baseline": False}}), "--json")
    assert json.loads(off.stdout)["stages"][0]["message"] == "off in this recipe"


@needs_chromium
def test_report_html_renders_in_chromium(runs: Path) -> None:
    html = (runs / "runs" / "tiny" / "report" / "report.html").read_text()
    assert "http://" not in html and "https://" not in html and "<script" not in html  # self-contained, no network
    with Browser() as b:
        b.open((runs / "runs" / "tiny" / "report" / "report.html").as_uri())
        images = b.images()
        assert len(images) >= 9 and all(i["ok"] and i["src"].startswith("data:image/png;base64") for i in images), images
        assert b.js("document.querySelectorAll('section').length") == 10  # every section but modes (one teacher)
        assert b.js("document.querySelectorAll('section#fit').length") == 1
        assert b.js("document.querySelectorAll('.missing').length") == 0
        assert b.errors == []


def test_damaged_run_reports_what_is_missing_and_renders_the_rest(runs: Path, cli, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(runs / "cache"))
    run = tmp_path / "damaged"
    shutil.copytree(runs / "runs" / "tiny", run)
    (run / "distill" / "metrics.json").write_text("{ truncated")
    res = cli("report", write(tmp_path / "r.yaml", {**RECIPE, "run_dir": str(run)}), "--json")
    assert res.exit_code == 0, res.stderr
    r = load(run)
    jsonschema.Draft202012Validator(schema()).validate(r)
    missing = [p for p in r["problems"] if p["kind"] == "missing"]
    assert [p["input"] for p in missing] == ["distill/metrics.json"] and "hash does not match" in missing[0]["problem"]
    assert {p["input"] for p in r["problems"] if p["kind"] == "stale"} == {"distill/student.pt", "validate/validation.json"}
    assert r["distill"] is None and r["validate"] is not None and r["knowledge"]["accuracy"]["student"] is not None
    html = (run / "report" / "report.html").read_text()
    assert "distill/metrics.json" in html and html.count("<img") >= 7  # the rest rendered
    assert "distill/metrics.json" in res.stderr


def test_compare_winner_data_warning_and_unknown_version(runs: Path, cli, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        shutil.copytree(runs / "runs" / "tiny" / "report", d / "report")
    rb = load(b)
    rb["knowledge"]["accuracy"]["student"] = 1.0
    (b / "report" / "report.json").write_text(json.dumps(rb))
    res = cli("report", "--compare", a, b, "--format", "json")
    assert res.exit_code == 0, res.stderr
    out = json.loads(res.stdout)
    row = next(r for r in out["rows"] if r["metric"] == "student top-1 (torch) on val")
    assert row["winner"] == 1 and row["display"][1] == "100.00%" and out["warnings"] == []
    md = cli("report", "--compare", a, b, "--format", "markdown").stdout
    assert "| student top-1 (torch) on val (higher is better) |" in md and "**100.00%** | b |" in md
    rb["data"]["fingerprint"] = "f" * 64
    (b / "report" / "report.json").write_text(json.dumps(rb))
    warned = cli("report", "--compare", a, b, "--format", "json")
    assert "runs used different data" in json.loads(warned.stdout)["warnings"][0] and "different data" in warned.stderr
    rb["schema_version"] = 99
    (b / "report" / "report.json").write_text(json.dumps(rb))
    bad = cli("report", "--compare", a, b)
    assert bad.exit_code == 1 and "version 99 is unknown" in bad.stderr and bad.stderr.startswith("Error: ")


def test_dashboard_errors(cli, tmp_path: Path, runs: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    res = cli("dashboard", empty)
    assert res.exit_code == 2 and res.stderr.strip().startswith("Error: no runs under") and len(res.stderr.strip().splitlines()) == 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        busy = cli("dashboard", runs / "runs", "--port", port)
    assert busy.exit_code == 1 and busy.stderr.strip() == (
        f"Error: port {port} on 127.0.0.1 is in use (another dashboard?); pick another with --port"
    )


@needs_chromium
def test_dashboard_follows_a_run_while_it_trains(runs: Path, tmp_path: Path) -> None:
    live = {
        **RECIPE,
        "run_dir": str(runs / "runs" / "live"),
        # 30 short epochs: on a quiet machine 8 were over before Chromium had loaded the page twice
        "teacher": {"arch": "test_resnet", "train": {"epochs": 30, "lr": 0.05}},
        "report": {"baseline": False},
    }
    recipe = write(tmp_path / "live.yaml", live)
    env = {**__import__("os").environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    train = subprocess.Popen(
        [sys.executable, "-m", "cann_distill", "teacher", str(recipe), "--quiet"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    server = None
    try:
        end = time.monotonic() + 120
        while not (runs / "runs" / "live" / "recipe.resolved.yaml").exists() and time.monotonic() < end:
            time.sleep(0.05)
        server = make_server(runs / "runs", port=0, refresh=0.2)
        assert server.server_address[0] == "127.0.0.1"
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        with Browser() as b:
            b.open(server.url)
            seen: list[int] = []
            end = time.monotonic() + 180
            while time.monotonic() < end:
                text = b.js("(document.querySelector('.epoch[data-run=\"live\"][data-stage=\"teacher\"]') || {}).textContent || ''")
                if text:
                    done = int(text.split("/")[0])
                    if not seen or done != seen[-1]:
                        seen.append(done)
                    if done == 30:
                        break
                time.sleep(0.05)
            assert len(seen) >= 3 and seen == sorted(seen) and seen[-1] == 30, seen  # the page followed the epochs as they finished
            assert b.js("document.querySelector('.run[data-run=\"live\"] svg polyline') !== null")
            assert b.js("document.querySelector('.run[data-run=\"tiny\"] a').getAttribute('href')") == "/runs/tiny/report.html"
            b.open(server.url + "runs/tiny/report.html")
            assert all(i["ok"] for i in b.images()) and len(b.images()) >= 9
            assert b.errors == []
        assert train.wait(120) == 0, train.stderr.read()[-2000:] if train.stderr else ""
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        if train.poll() is None:
            train.terminate()
            train.wait(30)
