"""The detection report on a tiny run dir (one epoch, 8 training and 8 val images, no validate): transfer efficiency,
the detections figure, and `report --compare` on two detection run dirs."""

from __future__ import annotations

import base64
import io
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("pycocotools", reason="task: detect's metrics need pycocotools (the detect and test extras)")

from cann_distill.cli import app  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "resnet10t_from_resnet18_detect_demo.yaml"
TINY = [
    *("--set", "teacher.arch=test_resnet", "--set", "student.arch=test_efficientnet"),
    *("--set", "teacher.train.epochs=1", "--set", "distill.epochs=1", "--set", "data.batch_size=8"),
    *("--set", "detect.data.demo.train_images=8", "--set", "detect.data.demo.val_images=8"),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """teacher, select, distill and baseline of the demo recipe, tiny: the checkpoints and metrics the report reads."""
    root = tmp_path_factory.mktemp("detect_report")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(root / "cache"))
        result = CliRunner().invoke(app, ["run", str(RECIPE), "--run-dir", str(root / "run"), *TINY, "--to", "baseline", "--json"])
    assert result.exit_code == 0, result.output
    return root / "run"


def report_of(cli: Callable[..., Any], run: Path, *extra: str) -> dict[str, Any]:
    result = cli("report", RECIPE, "--run-dir", run, *TINY, *extra, "--json")
    assert result.exit_code == 0, result.output
    return json.loads((run / "report" / "report.json").read_text())


def test_the_report_draws_every_model_on_the_same_val_images(cli: Callable[..., Any], trained: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    report = report_of(cli, run)
    pictures = report["pictures"]
    assert pictures["file"] == "detections.png" and pictures["models"] == ["teacher", "distill", "baseline"]
    assert len(pictures["images"]) == 6 and len({p["index"] for p in pictures["images"]}) == 6
    png = (run / "report" / "detections.png").read_bytes()
    assert 20_000 < len(png) < 2_000_000
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG" and 1000 <= im.width <= 1400 and 700 <= im.height <= 1000  # 6 images x 4 rows at 100 dpi
    html = (run / "report" / "report.html").read_text()
    assert f"data:image/png;base64,{base64.b64encode(png).decode()}" in html and "detections.png" in html  # inlined, and named
    te = report["transfer_efficiency"]
    assert set(te) == {"mAP", "AP50", "AP_small"} and all(t["status"] in ("meaningful", "not_meaningful") for t in te.values())
    assert report["data"]["fingerprint"] and report["schema_version"] == 2


def test_without_a_baseline_the_figure_has_no_baseline_row_and_te_says_why(cli: Callable[..., Any], trained: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    shutil.rmtree(run / "baseline")
    report = report_of(cli, run, "--set", "report.baseline=false")
    assert report["pictures"]["models"] == ["teacher", "distill"]
    with Image.open(run / "report" / "detections.png") as im:
        assert 500 <= im.height <= 800  # 3 rows
    assert report["transfer_efficiency"]["mAP"]["value"] is None and "no baseline" in report["transfer_efficiency"]["mAP"]["reason"]
    shutil.rmtree(run / "teacher")
    report = report_of(cli, run, "--set", "report.baseline=false", "--force")
    assert report["pictures"]["file"] is None and "teacher/teacher.pt not available" in report["pictures"]["reason"]
    assert not (run / "report" / "detections.png").exists()


def test_report_compare_puts_two_detection_runs_side_by_side(cli: Callable[..., Any], trained: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(trained, a)
    shutil.copytree(trained, b)
    report_of(cli, a)
    report_of(cli, b, "--set", "report.title=other")  # the same models, another report: not the same file
    result = cli("report", "--compare", a, b, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [r["name"] for r in out["runs"]] == ["a", "b"] and out["warnings"] == []
    rows = {r["metric"]: r for r in out["rows"]}
    named = ("teacher mAP", "student mAP (torch)", "student AP50 (torch)", "student AP_small (torch)", "transfer efficiency (mAP)")
    assert {f"{n} on val" for n in named} <= set(rows)
    student = rows["student mAP (torch) on val"]
    assert student["comparable"] and student["winner"] is None and student["display"][0] == student["display"][1]  # equal: no winner
    assert rows["INT8 mAP drop on val"]["display"] == ["–", "–"]  # validate has not run
    table = cli("report", "--compare", a, b)
    assert table.exit_code == 0 and "student mAP (torch) on val" in " ".join(table.stderr.split())
