"""task: detect through the CLI: one epoch teacher -> select -> distill -> baseline -> validate (INT8) -> report on the demo
set with tiny archs, then what an unchanged rerun, select's critical images in distill, and bad COCO input do."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from PIL import Image

pytest.importorskip("pycocotools", reason="task: detect's metrics need pycocotools (the detect and test extras)")

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "resnet10t_from_resnet18_detect_demo.yaml"
TINY = [
    "--set",
    "teacher.arch=test_resnet",
    "--set",
    "student.arch=test_efficientnet",
    "--set",
    "teacher.train.epochs=1",
    "--set",
    "distill.epochs=1",
    "--set",
    "detect.data.demo.train_images=32",
    "--set",
    "detect.data.demo.val_images=16",
    "--set",
    "data.batch_size=16",
    "--set",
    "validate.calibration.samples=16",
    "--set",
    "validate.latency.warmup=2",
    "--set",
    "validate.latency.runs=10",
]


def stages_of(result: Any) -> dict[str, dict[str, Any]]:
    assert result.exit_code == 0, result.output
    return {s["stage"]: s for s in json.loads(result.stdout)["stages"]}


@pytest.mark.slow
def test_one_epoch_detection_run_through_the_cli(cli: Callable[..., Any], tmp_path: Path) -> None:
    run = tmp_path / "run"
    stages = stages_of(cli("run", RECIPE, "--run-dir", run, *TINY, "--json"))
    assert list(stages) == ["teacher", "select", "distill", "baseline", "validate", "report"]
    assert all(s["status"] == "done" for s in stages.values())
    for name, arch in (("teacher", "test_resnet"), ("distill", "test_efficientnet"), ("baseline", "test_efficientnet")):
        summary = stages[name]["summary"]
        assert summary["arch"] == arch and summary["task"] == "detect" and 0.0 <= summary["map"] <= 1.0
        assert set(summary["val"]) == {"mAP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR100"}
        assert summary["data"]["train"]["images"] == 32 and summary["data"]["val"]["images"] == 16
    metrics = json.loads((run / "distill" / "metrics.json").read_text())
    assert {"det", "fgd", "pred_kd", "loss"} <= set(metrics["history"][0])  # every term trained and recorded
    validation = json.loads((run / "validate" / "validation.json").read_text())
    assert validation["metrics"]["onnx_fp32"] == pytest.approx(validation["metrics"]["torch_fp32"], abs=1e-3)  # same decoding
    assert validation["size_bytes"]["int8"] < validation["size_bytes"]["fp32"]
    assert (run / "validate" / "student_int8.onnx").is_file() and validation["latency_batch1"]["int8"]["median_ms"] > 0
    assert validation["cpu"]["machine"] and validation["threads"] == validation["latency_batch1"]["threads"]  # what compare checks
    m32, m8 = validation["metrics"]["onnx_fp32"]["mAP"], validation["metrics"]["onnx_int8"]["mAP"]
    assert validation["int8_map_drop"] == pytest.approx(m32 - m8)
    worst = validation["layer_gap"]["worst"]
    assert worst and all(isinstance(row[k], float) for row in worst for k in ("sqnr_db", "gap_db", "cosine"))
    assert [row["gap_db"] for row in worst] == sorted((row["gap_db"] for row in worst), reverse=True)
    assert validation["feedback"]["metric"] == "mAP" and "apply" in validation["feedback"]
    assert {g["budget"] for g in validation["gate"]} >= {"size_mb", "params_m", "max_accuracy_drop"}  # the cpu profile's budgets
    drop = next(g for g in validation["gate"] if g["budget"] == "max_accuracy_drop")
    assert drop["value"] == pytest.approx(validation["int8_map_drop"])  # with task: detect, the mAP drop
    Image.new("RGB", (80, 60), (200, 120, 40)).save(tmp_path / "photo.jpg")
    boxes = cli("predict", run / "validate" / "student_int8.onnx", tmp_path / "photo.jpg", "--min-score", "0", "--json")
    assert boxes.exit_code == 0 and json.loads(boxes.stdout)["predictions"][0]["size"] == [80, 60]  # validate stamped the decoding
    report = json.loads((run / "report" / "report.json").read_text())
    assert [m["stage"] for m in report["models"]] == ["teacher", "distill", "baseline", "validate", "validate"]
    assert report["task"] == "detect" and report["models"][-1]["model"] == "student ONNX INT8"
    assert report["gain"]["mAP_points"] == pytest.approx(100 * (report["gain"]["distill"] - report["gain"]["baseline"]))
    html = (run / "report" / "report.html").read_text()
    assert "test_efficientnet" in html and "<script" not in html
    assert report["pictures"]["file"] == "detections.png" and (run / "report" / "detections.png").is_file()
    again = stages_of(cli("run", RECIPE, "--run-dir", run, *TINY, "--json"))
    assert all(s["status"] == "skipped" for s in again.values())  # up to date: nothing retrained
    head = ["--set", "detect.int8_head=float", "--set", "validate.feedback.search=false", "--set", "validate.budgets.size_mb=0.001"]
    strict = cli("run", RECIPE, "--run-dir", run, *TINY, *head, "--strict", "--json")
    assert strict.exit_code == 1 and "deployment gate failed: size_mb" in strict.stderr.strip().splitlines()[-1]
    headless = json.loads((run / "validate" / "validation.json").read_text())
    assert headless["int8_head"] == "float" and headless["nodes_in_float"] > 0  # the head's nodes, kept in float
    assert headless["size_bytes"]["int8"] > validation["size_bytes"]["int8"]  # float head weights take 4 bytes each
    status = json.loads(cli("status", RECIPE, "--run-dir", run, *TINY, *head, "--json").stdout)
    assert {s["stage"]: s["state"] for s in status["stages"]}["distill"] == "up to date"  # the head setting retrains nothing


def read_index(run: Path) -> list[dict[str, str]]:
    with open(run / "select" / "index.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_select_scores_images_and_distill_weighs_or_trains_on_the_critical_ones(cli: Callable[..., Any], tmp_path: Path) -> None:
    run = tmp_path / "run"
    weight = ["--set", "distill.critical.mode=weight", "--set", "select.top_k_ratio=0.25"]
    stages = stages_of(cli("run", RECIPE, "--run-dir", run, *TINY, *weight, "--to", "distill", "--json"))
    assert list(stages) == ["teacher", "select", "distill"]
    rows = read_index(run)
    assert len(rows) == 32 and sum(r["critical"] == "1" for r in rows) == stages["select"]["summary"]["num_critical"] == 8
    critical = [float(r["score"]) for r in rows if r["critical"] == "1"]
    others = [float(r["score"]) for r in rows if r["critical"] == "0" and r["target"] != "-1"]
    assert stages["select"]["summary"]["strategy"] == "small_objects" and min(critical) > 0 and max(others) > 0
    sizes = stages["select"]["summary"]["teacher_outputs"]
    assert sizes["cached"] is False and sizes["bytes_per_image"]["fpn"] == (16 * 16 + 8 * 8 + 4 * 4) * 64 * 4  # 3 levels, 64 ch
    distill = stages["distill"]["summary"]
    assert distill["critical_mode"] == "weight" and distill["critical_weight"] == 2.0 and distill["num_critical"] == 8
    history = json.loads((run / "distill" / "metrics.json").read_text())["history"]
    assert history[0]["images"] == 32  # weight: every image, the critical ones count twice
    subset = ["--set", "distill.critical.mode=subset", "--set", "select.top_k_ratio=0.25"]
    stages = stages_of(cli("distill", RECIPE, "--run-dir", run, *TINY, *subset, "--json"))
    assert stages["distill"]["summary"]["critical_mode"] == "subset"
    assert json.loads((run / "distill" / "metrics.json").read_text())["history"][0]["images"] == 8  # only the critical ones
    assert [r["critical"] for r in read_index(run)] == [r["critical"] for r in rows]  # policy hard in both modes: the same images


def coco_run(tmp_path: Path, write_recipe: Callable[..., Path], annotations: str | dict[str, Any], on_bad: str = "error") -> Path:
    images = tmp_path / "images"
    images.mkdir(exist_ok=True)
    for name in ("a.png", "b.png"):
        Image.new("RGB", (64, 48), (30, 90, 150)).save(images / name)
    ann = tmp_path / "train.json"
    ann.write_text(annotations if isinstance(annotations, str) else json.dumps(annotations))
    recipe = yaml.safe_load(RECIPE.read_text())
    recipe["detect"]["data"] = {
        "source": "coco",
        "train_annotations": str(ann),
        "train_images": str(images),
        "val_annotations": str(ann),
        "val_images": str(images),
        "image_size": 64,
        "on_bad": on_bad,
    }
    recipe.update(teacher={"arch": "test_resnet", "train": {"epochs": 1}}, student={"arch": "test_efficientnet"})
    return write_recipe(recipe, name="coco.yaml")


def test_a_coco_file_that_is_not_json_stops_the_stage_with_one_line(cli: Callable[..., Any], tmp_path: Path, write_recipe) -> None:
    result = cli("teacher", coco_run(tmp_path, write_recipe, "{not json"), "--run-dir", tmp_path / "run")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: ") and "train.json: not a COCO JSON file (Expecting property name" in lines[-1]
    assert not (tmp_path / "run" / "teacher").exists()  # nothing half-written


def test_bad_boxes_stop_or_are_skipped_and_counted_as_the_recipe_says(cli: Callable[..., Any], tmp_path: Path, write_recipe) -> None:
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 64, "height": 48}, {"id": 2, "file_name": "b.png", "width": 64, "height": 48}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [4, 4, 20, 20]},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [10, 10, 0, 8]},
            {"id": 3, "image_id": 2, "category_id": 7, "bbox": [70, 4, 5, 5]},
        ],
        "categories": [{"id": 3, "name": "a"}, {"id": 7, "name": "b"}],
    }
    result = cli("teacher", coco_run(tmp_path, write_recipe, data), "--run-dir", tmp_path / "run")
    assert result.exit_code == 1 and "annotation 2 (image 1): zero-area box [10, 10, 0, 8]" in result.stderr.strip().splitlines()[-1]
    result = cli("teacher", coco_run(tmp_path, write_recipe, data, on_bad="skip"), "--run-dir", tmp_path / "run2", "--json")
    summary = stages_of(result)["teacher"]["summary"]
    assert summary["data"]["train"] == {"images": 2, "boxes": 1, "without_annotations": 1, "bad_annotations": 2}
    assert summary["category_ids"] == [3, 7] and summary["notes"] == [
        "category ids 3, 7 are not contiguous: mapped in id order to classes 0..1"
    ]


def test_fit_student_refuses_a_detection_recipe_with_one_line(cli: Callable[..., Any], tmp_path: Path) -> None:
    result = cli("fit-student", RECIPE, "--run-dir", tmp_path / "fit")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == "Error: fit-student measures classifiers; task: detect recipes are not supported yet"
