"""report.html and the dashboard in headless Chromium, built from runs whose names, class names, live logs and
served folder carry markup and script: nothing runs (no global set, no title change, no request to the marker
server, no element with an event handler), and the pages still render with the names shown as text."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from cann_distill.reporting.dashboard import make_server
from tests.browser import CHROMIUM, Browser
from tests.report_fixtures import synthetic_report, write_run

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it with apt-get)")

PROBE = """(() => ({
  pwned: window.__pwned === undefined ? null : window.__pwned,
  title: document.title,
  handlers: document.querySelectorAll('[onerror],[onload],[onfocus],[onclick],[autofocus],[onmouseover]').length,
  scripts: Array.from(document.scripts).map(s => s.src),
  foreign: Array.from(document.querySelectorAll('img')).filter(i => !i.src.startsWith('data:image/png;base64,')).length,
}))()"""


class Marker(ThreadingHTTPServer):
    """Records every request: a payload that runs reports itself here."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        marker = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                marker.hits.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture
def marker() -> Iterator[Marker]:
    server = Marker()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def payloads(port: int) -> dict[str, str]:
    """Markup and script that would set a global, change the title and call the marker server; no '/' (folder names)."""

    def act(tag: str) -> str:
        return f"window.__pwned='{tag}';document.title='pwned';fetch('http:\\x2f\\x2f127.0.0.1:{port}\\x2f{tag}')"

    return {
        "attr": f'x" autofocus onfocus="{act("attr")}" y="',
        "img": f'<img src=x onerror="{act("img")}">',
        "svg": f'<svg onload="{act("svg")}">',
        "quote": f"x' onmouseover='{act('quote')}' '",
        "bidi": "safe\u202eevil\u2066name",
        "math": "$\\frac{1}{2}$",
    }


def hostile_report(p: dict[str, str], port: int) -> tuple[dict[str, Any], Any]:
    script = f"</script><script>window.__pwned='script';fetch('http://127.0.0.1:{port}/script')</script>"
    classes = [p["attr"], p["img"], p["svg"], p["quote"], p["bidi"], p["math"], script, "plain"]
    report, visuals = synthetic_report(classes, title=p["img"] + script)
    report["data"].update(num_train=p["img"], num_val=p["attr"], num_test=script, source=p["svg"])
    report["validate"]["latency_batch1"]["threads"] = p["img"]
    report["knowledge"]["cka_samples"] = p["attr"]
    report["knowledge"]["critical_rule"] = script
    report["knowledge"]["attention"]["teacher_module"] = p["svg"]
    report["knowledge"]["cka"][0]["student_module"] = p["math"] + p["img"]
    report["problems"] = [{"input": p["img"], "kind": p["attr"], "problem": script}]
    report["validate"]["notes"] = [p["svg"], p["bidi"]]
    report["validate"]["feedback"] = {
        "triggered": True,
        "int8_drop": 0.05,
        "threshold": 0.01,
        "split": p["img"],
        "suggestions": [{"why": p["img"], "changes": {p["attr"]: script}, "int8_acc": 0.5, "gain": 0.01}],
        "apply": {p["svg"]: p["img"]},
    }
    report["recipe"]["name"] = script
    return report, visuals


def hostile_runs(tmp_path: Path, port: int) -> tuple[Path, dict[str, str]]:
    p = payloads(port)
    root = tmp_path / f"runs {p['svg']}"
    report, visuals = hostile_report(p, port)
    live = {
        "teacher": {"epochs": p["img"], "history": [{"epoch": 1, "loss": p["svg"], "val_acc": p["img"]}, {"epoch": 2, "loss": 1.0}]},
        "distill": "{" + '"epochs": 4, "history": [{"epoch": 1, "loss": NaN, "val_acc": Infinity}, {"epoch": 2, "loss": -Infinity}]' + "}",
    }
    write_run(root, p["attr"], report, visuals, live=live)
    write_run(
        root, p["img"], live={"baseline": {"epochs": None, "history": [{"epoch": 1, "loss": 1.0, "val_acc": 0.5}]}}, stages=("teacher",)
    )
    write_run(root, p["bidi"], live={"teacher": {"epochs": 3, "stage": p["svg"], "history": []}}, stages=())
    damaged = root / p["quote"]
    damaged.mkdir()
    (damaged / "manifest.json").write_text(json.dumps({"version": 1, "stages": {p["img"]: {"fingerprint": 1}}}))
    return root, p


def assert_inert(b: Browser, title: str, marker: Marker) -> None:
    got = b.js(PROBE)
    assert got["pwned"] is None and got["title"] == title, got
    assert got["handlers"] == 0 and got["foreign"] == 0, got
    assert marker.hits == [], marker.hits
    assert b.errors == [], b.errors  # a blocked inline handler or script would be reported here


def test_dashboard_shows_hostile_names_as_text(tmp_path: Path, marker: Marker) -> None:
    root, p = hostile_runs(tmp_path, marker.server_address[1])
    server = make_server(root, port=0, refresh=0.2)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        with Browser() as b:
            b.open(server.url)
            b.js(
                "new Promise(r => { const t = setInterval(() => { if (document.querySelectorAll('.run').length) { clearInterval(t); r(); } }, 50); })"
            )
            b.js("new Promise(r => setTimeout(r, 1000))")  # several refreshes
            assert_inert(b, "cann-distill dashboard", marker)
            names = b.js("Array.from(document.querySelectorAll('.run h2')).map(h => h.textContent)")
            assert sorted(names) == sorted(
                [p["attr"], p["img"], p["bidi"].replace("\u202e", "\\u202e").replace("\u2066", "\\u2066"), p["quote"]]
            )
            assert b.js("document.getElementById('root').textContent").startswith(str(root))
            cards = b.js("Array.from(document.querySelectorAll('.run')).map(c => c.getAttribute('data-run'))")
            assert sorted(cards) == sorted([p["attr"], p["img"], p["bidi"], p["quote"]])  # attributes hold the exact names
            text = b.js("document.body.innerText")
            assert "is damaged" in text and "nested" not in text
            hostile = p["attr"]
            card = f"Array.from(document.querySelectorAll('.run')).find(c => c.getAttribute('data-run') === {json.dumps(hostile)})"
            epochs = b.js(f"Array.from({card}.querySelectorAll('.epoch')).map(e => e.textContent)")
            assert epochs == ["2 epochs", "2/4"]  # the teacher's hostile "epochs" is no total; NaN rows still count
            assert b.js(f"{card}.querySelectorAll('svg polyline').length") >= 1
            href = b.js(f"{card}.querySelector('a').getAttribute('href')")
            assert href == "/runs/" + __import__("urllib.parse").parse.quote(hostile, safe="~()*!'") + "/report.html"
            b.open(server.url.rstrip("/") + href)
            assert_inert(
                b,
                f"{p['img']}</script><script>window.__pwned='script';fetch('http://127.0.0.1:{marker.server_address[1]}/script')</script> — cann-distill report",
                marker,
            )
            assert b.js("document.querySelectorAll('section').length") == 9
    finally:
        server.shutdown()
        server.server_close()


def test_report_html_shows_hostile_names_as_text(tmp_path: Path, marker: Marker) -> None:
    root, p = hostile_runs(tmp_path, marker.server_address[1])
    html = root / p["attr"] / "report" / "report.html"
    text = html.read_text()
    assert "<script" not in text and "<img src=x" not in text and "<svg" not in text
    assert "could not render" not in text
    with Browser() as b:
        b.open(html.as_uri())
        title = b.js("document.title")
        assert title.startswith(p["img"]) and title.endswith("— cann-distill report")
        assert_inert(b, title, marker)
        images = b.images()
        assert len(images) >= 9 and all(i["ok"] for i in images), images
        body = b.js("document.body.innerText")
        assert p["attr"] in body and "\\u202e" in body and "\u202e" not in body  # shown, and bidi controls made visible
        assert b.js("document.querySelectorAll('section').length") == 9


def test_dashboard_survives_nan_in_a_live_file(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    write_run(root, "ok", live={"teacher": {"epochs": 3, "history": [{"epoch": 1, "loss": 1.0, "val_acc": 0.5}]}})
    write_run(root, "nan", live={"distill": '{"epochs": 3, "history": [{"epoch": 1, "loss": NaN, "val_acc": Infinity, "lr": -Infinity}]}'})
    server = make_server(root, port=0, refresh=0.2)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        with Browser() as b:
            b.open(server.url)
            b.js(
                "new Promise(r => { const t = setInterval(() => { if (document.querySelectorAll('.run').length) { clearInterval(t); r(); } }, 50); })"
            )
            assert b.js("document.querySelectorAll('.run').length") == 2
            assert b.js('document.querySelector(\'.epoch[data-run="nan"][data-stage="distill"]\').textContent') == "1/3"
            assert b.js('document.querySelector(\'.epoch[data-run="ok"][data-stage="teacher"]\').textContent') == "1/3"
            assert b.errors == []
        body = __import__("urllib.request").request.urlopen(server.url + "api/runs").read().decode()
        doc = json.loads(body, parse_constant=lambda c: pytest.fail(f"{c} sent to the page"))
        row = next(r for r in doc["runs"] if r["name"] == "nan")["live"]["distill"]["history"][0]
        assert row == {"epoch": 1.0, "loss": None, "val_acc": None, "lr": None} and not any(
            isinstance(v, float) and math.isnan(v) for v in row.values()
        )
    finally:
        server.shutdown()
        server.server_close()
