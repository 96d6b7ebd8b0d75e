"""End-to-end: drive the CLI through every stage on a tiny recipe and check what it leaves behind."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from cann_distill.core.files import sha256_file
from cann_distill.core.recipe_load import load_recipe
from cann_distill.data.loading import load_splits
from cann_distill.models.build import build_model

pytestmark = pytest.mark.slow

STAGES = ["teacher", "select", "distill", "validate", "report"]


def stage_statuses(result) -> dict[str, str]:
    assert result.exit_code == 0, result.stderr
    return {s["stage"]: s["status"] for s in json.loads(result.stdout)["stages"]}


def test_every_stage_then_skip_then_force(cli, write_recipe, tmp_path: Path) -> None:
    recipe_path = write_recipe()
    run = tmp_path / "run"
    for stage in STAGES:
        assert stage_statuses(cli(stage, recipe_path, "--json")) == {stage: "done"}

    # artifacts
    for rel in [
        "teacher/teacher.pt",
        "teacher/metrics.json",
        "select/teacher_logits.npy",
        "select/index.csv",
        "select/summary.json",
        "distill/student.pt",
        "distill/metrics.json",
        "validate/student_fp32.onnx",
        "validate/student_int8.onnx",
        "validate/validation.json",
        "report/report.json",
        "recipe.resolved.yaml",
    ]:
        assert (run / rel).is_file(), rel
    manifest = json.loads((run / "manifest.json").read_text())
    assert list(manifest["stages"]) == STAGES
    for rec in manifest["stages"].values():
        for rel, digest in rec["outputs"].items():
            assert sha256_file(run / rel) == digest
        assert rec["versions"]["torch"] and rec["seconds"] > 0

    # critical-sample index: every training sample, ranks 1..N, ~35% critical
    recipe = load_recipe(recipe_path)
    splits = load_splits(recipe.data)
    train, val = splits.train, splits.val
    lines = (run / "select" / "index.csv").read_text().splitlines()
    assert lines[0] == "id,target,score,rank,critical,temperature"
    rows = [line.split(",") for line in lines[1:]]
    assert [r[0] for r in rows] == train.ids
    assert sorted(int(r[3]) for r in rows) == list(range(1, len(train) + 1))
    assert sum(int(r[4]) for r in rows) == round(0.35 * len(train))
    assert np.load(run / "select" / "teacher_logits.npy").shape == (len(train), 10)

    # INT8 model is valid and runs; FP32 ONNX agrees with the torch student (checked independently here)
    int8 = run / "validate" / "student_int8.onnx"
    onnx.checker.check_model(str(int8), full_check=True)
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(int8)).graph.node)
    x = torch.stack([val.fetch(i) for i in range(len(val))])
    student = build_model(recipe.student, 10, 1, checkpoint=run / "distill" / "student.pt")
    with torch.no_grad():
        torch_pred = student.eval()(x).argmax(1).numpy()
    fp32 = ort.InferenceSession(str(run / "validate" / "student_fp32.onnx"), providers=["CPUExecutionProvider"])
    onnx_pred = fp32.run(None, {"input": x.numpy()})[0].argmax(1)
    assert (torch_pred == onnx_pred).mean() >= 0.99
    int8_out = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()[:7]})[0]
    assert int8_out.shape == (7, 10)  # dynamic batch axis survives quantization

    v = json.loads((run / "validate" / "validation.json").read_text())
    assert v["agreement"]["torch_vs_onnx_fp32_top1"] >= 0.99
    assert v["accuracy"]["onnx_fp32"] == pytest.approx(float((onnx_pred == val.targets).mean()))
    assert 0 < v["latency_batch1"]["int8"]["median_ms"] <= v["latency_batch1"]["int8"]["max_ms"]
    assert v["size_bytes"]["int8"] < v["size_bytes"]["fp32"]
    assert v["scheme"]["activation_type"] in ("uint8", "int8") and v["scheme"]["reasons"]
    report = json.loads((run / "report" / "report.json").read_text())
    assert report["validate"]["accuracy"] == v["accuracy"]
    assert report["teacher"]["val_acc"] > 0.3  # the tiny teacher learned something (chance is 0.1)

    # second run: everything up to date
    assert stage_statuses(cli("run", recipe_path, "--json")) == dict.fromkeys(STAGES, "skipped")
    # --force reruns exactly one stage
    mtime = (run / "teacher" / "teacher.pt").stat().st_mtime_ns
    assert stage_statuses(cli("distill", recipe_path, "--json", "--force"))["distill"] == "done"
    assert (run / "teacher" / "teacher.pt").stat().st_mtime_ns == mtime
    # a recipe change reruns the affected stage and everything downstream of it
    statuses = stage_statuses(cli("run", recipe_path, "--json", "--set", "distill.epochs=1"))
    assert statuses == {"teacher": "skipped", "select": "skipped", "distill": "done", "validate": "done", "report": "done"}
    # and a downstream stage alone refuses to use stale inputs
    result = cli("validate", recipe_path, "--set", "select.top_k_ratio=0.5")
    assert result.exit_code == 1
    assert "'distill' stage is out of date" in result.stderr or "'select' stage is out of date" in result.stderr


def test_tampered_artifact_is_detected_and_rebuilt(cli, write_recipe, tmp_path: Path) -> None:
    recipe_path = write_recipe(teacher={"arch": "test_resnet", "train": {"epochs": 1}})
    assert stage_statuses(cli("teacher", recipe_path, "--json")) == {"teacher": "done"}
    assert stage_statuses(cli("select", recipe_path, "--json")) == {"select": "done"}
    (tmp_path / "run" / "select" / "index.csv").write_text("id,target,score,rank,critical,temperature\n")
    # the damaged output makes select out of date, so it reruns instead of being trusted
    assert stage_statuses(cli("select", recipe_path, "--json")) == {"select": "done"}
    assert len((tmp_path / "run" / "select" / "index.csv").read_text().splitlines()) > 100


def test_failed_stage_leaves_no_artifact(cli, write_recipe, tmp_path: Path, monkeypatch) -> None:
    recipe_path = write_recipe(teacher={"arch": "test_resnet", "train": {"epochs": 1}})
    assert stage_statuses(cli("teacher", recipe_path, "--json")) == {"teacher": "done"}
    assert stage_statuses(cli("select", recipe_path, "--json")) == {"select": "done"}
    before = (tmp_path / "run" / "manifest.json").read_text()

    from cann_distill.stages import distill

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(distill, "fit", killed)
    result = cli("distill", recipe_path)
    assert result.exit_code == 130
    assert "interrupted" in result.stderr
    assert not (tmp_path / "run" / "distill").exists()
    assert not list((tmp_path / "run").glob(".distill*"))
    assert (tmp_path / "run" / "manifest.json").read_text() == before


def test_imagefolder_source(cli, write_recipe, tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("val", 4)):
        for c, colour in enumerate(((255, 0, 0), (0, 0, 255))):
            d = tmp_path / "imgs" / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                arr = np.clip(np.array(colour) + rng.normal(0, 20, (20, 20, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")
    recipe_path = write_recipe(
        data={"source": "imagefolder", "root": str(tmp_path / "imgs"), "image_size": 16, "batch_size": 8},
        teacher={"arch": "test_resnet", "train": {"epochs": 3}},
        distill={"epochs": 2},
        validate={"calibration": {"samples": 8}, "latency": {"warmup": 1, "runs": 5}},
    )
    assert set(stage_statuses(cli("run", recipe_path, "--json")).values()) == {"done"}
    ids = [line.split(",")[0] for line in (tmp_path / "run" / "select" / "index.csv").read_text().splitlines()[1:]]
    assert ids[0] == "train/class0/0.png" and len(ids) == 24
    # calibration set smaller than asked
    result = cli("validate", recipe_path, "--set", "validate.calibration.samples=500")
    assert result.exit_code == 1
    assert "asks for 500 images but the training split has only 24" in result.stderr
