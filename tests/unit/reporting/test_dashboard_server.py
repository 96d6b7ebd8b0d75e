"""The dashboard's server without a browser: Host allow-list, security headers, HEAD, symlinks, broken live logs,
interrupted stages, and numbers that match report.html's."""

from __future__ import annotations

import fcntl
import http.client
import json
import shutil
import threading
from pathlib import Path
from typing import Iterator

import pytest

from cann_distill.reporting import dashboard as d
from cann_distill.reporting.numbers import headline
from tests.report_fixtures import synthetic_report, write_run


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run with a rendered report (drawing its figures takes seconds: done once for the module)."""
    report, visuals = synthetic_report(["a", "b", "c"])
    root = tmp_path_factory.mktemp("dashboard") / "runs"
    write_run(root, "tiny", report, visuals, live={"teacher": {"epochs": 5, "history": [{"epoch": 1, "loss": 1.0}]}})
    return root


@pytest.fixture
def runs(built: Path, tmp_path: Path) -> Path:
    shutil.copytree(built, tmp_path / "runs", symlinks=True)
    return tmp_path / "runs"


@pytest.fixture
def server(runs: Path) -> Iterator[d.Dashboard]:
    srv = d.make_server(runs, port=0, refresh=1.0, allow=["dash.example"])
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def ask(srv: d.Dashboard, path: str, host: str = "127.0.0.1", method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", srv.server_address[1], timeout=10)
    conn.putrequest(method, path, skip_host=True)
    conn.putheader("Host", host)
    conn.endheaders()
    res = conn.getresponse()
    body = res.read()
    conn.close()
    return res.status, {k.lower(): v for k, v in res.getheaders()}, body


@pytest.mark.parametrize(
    "host, code",
    [
        ("127.0.0.1", 200),
        ("localhost:9400", 200),
        ("[::1]:9400", 200),
        ("dash.example", 200),  # named with --allow-host
        ("evil.example", 403),  # DNS rebinding: a page on another name must not read the runs
        ("127.0.0.1.evil.example", 403),
        ("", 403),
    ],
)
def test_host_header_is_checked_against_the_allow_list(server: d.Dashboard, host: str, code: int) -> None:
    status, _, body = ask(server, "/api/runs", host)
    assert status == code
    if code == 403:
        assert b"tiny" not in body


def test_report_is_sandboxed_and_the_page_allows_only_its_own_script(server: d.Dashboard) -> None:
    status, headers, body = ask(server, "/runs/tiny/report.html")
    assert status == 200 and b"<section" in body
    policy = headers["content-security-policy"]
    assert policy.split(";")[0].strip() == "sandbox" and "script-src" not in policy
    assert headers["x-content-type-options"] == "nosniff"
    status, headers, body = ask(server, "/")
    assert status == 200 and b'<script src="/dashboard.js"' in body
    assert "script-src 'self'" in headers["content-security-policy"] and "unsafe-inline" not in headers["content-security-policy"]
    status, headers, js = ask(server, "/dashboard.js")
    assert status == 200 and headers["content-type"].startswith("text/javascript")
    assert not any(sink in js for sink in (b"innerHTML", b"outerHTML", b"insertAdjacentHTML", b"document.write", b"eval("))


def test_head_is_answered_like_get_without_a_body(server: d.Dashboard) -> None:
    for path in ("/", "/api/runs", "/runs/tiny/report.html", "/nothing"):
        got, head = ask(server, path), ask(server, path, method="HEAD")
        assert head[0] == got[0] and head[2] == b""
        assert head[1]["content-length"] == str(len(got[2])) or path == "/api/runs"  # the run list is re-read per request


def test_symlinks_out_of_the_served_folder_are_refused(tmp_path: Path, runs: Path) -> None:
    outside = tmp_path / "secret.html"
    outside.write_text("<p>secret</p>")
    report = runs / "tiny" / "report" / "report.html"
    report.unlink()
    report.symlink_to(outside)
    elsewhere = tmp_path / "elsewhere"
    write_run(elsewhere, "other")
    (runs / "linked").symlink_to(elsewhere / "other")
    srv = d.make_server(runs, port=0)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        status, _, body = ask(srv, "/runs/tiny/report.html")
        assert status == 403 and b"secret" not in body
        state = json.loads(ask(srv, "/api/runs")[2])
        assert [r["name"] for r in state["runs"]] == ["tiny"] and state["runs"][0]["report"] is False
        assert ask(srv, "/runs/linked/report.html")[0] == 404
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize(
    "text, problem",
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"epochs": 3, "history": ' + "[" * 50_000, "nested too deeply"),
        ("{ truncated", "unreadable (JSONDecodeError)"),
        (b"\xff\xfe".decode("latin-1"), "unreadable"),
    ],
)
def test_broken_live_logs_are_shown_as_unreadable(tmp_path: Path, text: str, problem: str) -> None:
    run = write_run(tmp_path, "r", live={"teacher": text})
    state = d.run_state(run, tmp_path)
    live = state["live"]["teacher"]
    assert problem in live["problem"] and live["history"] == [] and live["epochs"] is None
    json.dumps(state, allow_nan=False)


def test_a_live_log_over_the_limit_is_not_read(tmp_path: Path) -> None:
    run = write_run(tmp_path, "r", live={"teacher": {"epochs": 3, "history": [{"epoch": 1, "loss": 1.0}] * 1000}})
    data, problem = d.read_json(run / ".live" / "teacher.json", tmp_path, limit=1000)
    assert data is None and problem is not None and "over the" in problem


def test_epochs_null_is_no_total(tmp_path: Path) -> None:
    run = write_run(tmp_path, "r", live={"teacher": {"epochs": None, "history": [{"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 0.5}]}})
    live = d.run_state(run, tmp_path)["live"]["teacher"]
    assert live["epochs"] is None and live["done"] == 2


def test_a_staging_folder_without_a_lock_holder_is_interrupted(tmp_path: Path) -> None:
    run = write_run(tmp_path, "r", stages=("teacher",))
    (run / ".distill.x1y2.staging").mkdir()
    assert d.run_state(run, tmp_path)["status"]["distill"] == "interrupted"
    with open(run / ".lock", "w") as f:  # what RunDir.lock holds while a command runs
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert d.lock_held(run) is True
        assert d.run_state(run, tmp_path)["status"]["distill"] == "running"
        fcntl.flock(f, fcntl.LOCK_UN)
    assert d.lock_held(run) is False
    assert d.run_state(run, tmp_path)["status"] == {**d.run_state(run, tmp_path)["status"], "teacher": "done", "distill": "interrupted"}


def test_dashboard_numbers_are_the_reports(runs: Path) -> None:
    """The page shows report.json's headline numbers and split, not the training stages' val accuracies."""
    report = json.loads((runs / "tiny" / "report" / "report.json").read_text())
    numbers = d.run_state(runs / "tiny", runs)["numbers"]
    expected = headline(report)
    assert numbers["source"] == "report" and numbers["split"] == "test"
    for key in ("teacher", "baseline", "student", "onnx_int8", "te", "dqi"):
        assert numbers[key] == expected[key]
    assert numbers["teacher"] == report["knowledge"]["accuracy"]["teacher"] != 0.5  # 0.5: the stages' val_acc


def test_loopback_and_host_names() -> None:
    assert d.is_loopback("127.0.0.1") and d.is_loopback("localhost") and d.is_loopback("::1") and d.is_loopback("127.0.0.2")
    assert not d.is_loopback("0.0.0.0") and not d.is_loopback("192.168.1.5") and not d.is_loopback("myhost")
    assert d.host_name("Example.COM:80") == "example.com" and d.host_name("[::1]:9400") == "::1" and d.host_name(None) is None


def test_binding_beyond_loopback_warns(cli, runs: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def stop(server: d.Dashboard) -> None:
        server.server_close()
        raise KeyboardInterrupt

    monkeypatch.setattr(d, "serve", stop)
    res = cli("dashboard", runs, "--host", "0.0.0.0", "--port", "0")
    assert res.exit_code == 0 and "Warning: dashboard: bound to 0.0.0.0, beyond this machine" in res.stderr
    quiet = cli("dashboard", runs, "--port", "0")
    assert quiet.exit_code == 0 and "Warning" not in quiet.stderr
