"""An ImageFolder of awkward files end to end: device cpu, workers, odd modes, bad images, a test split, class checks."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import cann_distill.data.loading as data_module

pytestmark = pytest.mark.slow

CLASSES = {"cat": (200, 40, 40), "dog": (40, 200, 40), "eel": (40, 40, 200)}


def make_tree(root: Path, per_split: dict[str, int] = {"train": 10, "val": 4, "test": 4}) -> Path:
    rng = np.random.default_rng(0)
    for split, n in per_split.items():
        for cls, color in CLASSES.items():
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                px = np.clip(np.array(color) + rng.normal(0, 25, (20, 20, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(px).save(folder / f"{i}.png")
    train = root / "train"
    # awkward but valid: 16-bit grayscale, palette, CMYK JPEG, 10,000 px wide
    Image.fromarray((np.full((20, 20), 52000)).astype(np.uint16)).save(train / "cat" / "gray16.png")
    Image.new("RGB", (20, 20), CLASSES["dog"]).convert("P").save(train / "dog" / "palette.png")
    Image.new("CMYK", (20, 20), (255, 0, 0, 0)).save(train / "eel" / "cmyk.jpg")
    Image.new("RGB", (10_000, 24), CLASSES["cat"]).save(train / "cat" / "wide.png")
    return root


def add_bad_images(root: Path) -> None:
    (root / "train" / "cat" / "empty.png").write_bytes(b"")
    good = (root / "train" / "dog" / "0.png").read_bytes()
    (root / "train" / "dog" / "trunc.png").write_bytes(good[: len(good) // 2])


def recipe(tmp_path: Path, root: Path, **data) -> Path:
    r = {
        "name": "folder",
        "seed": 0,
        "run_dir": str(tmp_path / "run"),
        "runtime": {"device": "cpu"},
        "data": {
            "source": "imagefolder",
            "root": str(root),
            "image_size": 16,
            "batch_size": 8,
            "num_workers": 2,
            "augment": {"scale": [0.5, 1.0]},
            **data,
        },
        "teacher": {"arch": "test_resnet", "train": {"epochs": 2, "lr": 0.05}},
        "student": {"arch": "test_efficientnet"},
        "distill": {"epochs": 1, "lr": 0.05},
        "validate": {"calibration": {"samples": 8}, "latency": {"warmup": 1, "runs": 5}, "gap": {"samples": 8}},
    }
    path = tmp_path / "folder.yaml"
    path.write_text(yaml.safe_dump(r, sort_keys=False))
    return path


def test_awkward_folder_runs_on_cpu_with_workers_and_reports_test_apart_from_val(cli, tmp_path: Path, monkeypatch) -> None:
    root = make_tree(tmp_path / "ds")
    add_bad_images(root)
    path = recipe(tmp_path, root, on_bad_image="skip")
    result = cli("run", path, "--json")
    assert result.exit_code == 0, result.stderr
    stages = {s["stage"]: s["summary"] for s in json.loads(result.stdout)["stages"]}
    teacher = stages["teacher"]
    assert teacher["skipped_images"] == {"train": 2} and teacher["num_train"] == 34 and teacher["num_test"] == 12
    assert teacher["runtime"]["device"] == "cpu" and teacher["headline"]["split"] == "test"
    assert stages["distill"]["teacher"]["why_online"] == ["augmented views"] and stages["distill"]["augmented"]
    v = json.loads((tmp_path / "run" / "validate" / "validation.json").read_text())
    assert v["split"] == "test" and v["accuracy"]["split"] == "test" and v["feedback"]["split"] == "val"
    assert set(v["by_split"]) == {"val", "test"} and v["by_split"]["val"]["num"] == v["by_split"]["test"]["num"] == 12
    assert v["accuracy"]["onnx_int8"] == v["by_split"]["test"]["accuracy"]["onnx_int8"]
    assert v["runtime"]["device"] == "cpu" and v["num_test"] == 12
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"]["distill"]["summary"]["runtime"]["device"] == "cpu"

    # an up-to-date run walks the folder listing once, however many stages check upstream fingerprints
    calls = {"n": 0}
    real = data_module.scan_tree

    def counting(root):
        calls["n"] += 1
        return real(root)

    monkeypatch.setattr(data_module, "scan_tree", counting)
    result = cli("run", path, "--json")
    assert result.exit_code == 0 and {s["status"] for s in json.loads(result.stdout)["stages"]} == {"skipped"}
    assert calls["n"] == 1
    # the worker count is not part of any fingerprint: results do not depend on it
    result = cli("run", path, "--set", "data.num_workers=0", "--json")
    assert {s["status"] for s in json.loads(result.stdout)["stages"]} == {"skipped"}


def test_bad_image_is_named_in_one_line(cli, tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ds", {"train": 2, "val": 1})
    add_bad_images(root)
    result = cli("teacher", recipe(tmp_path, root))
    assert result.exit_code == 1
    lines = [line for line in result.stderr.strip().splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and lines[0].startswith(f"Error: bad image {root / 'train' / 'cat' / 'empty.png'}: empty file")
    assert "(and 1 more)" in lines[0] and "data.on_bad_image: skip" in lines[0]


def test_class_folders_must_match_and_not_be_empty(cli, tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ds", {"train": 2, "val": 1})
    (root / "val" / "fox").mkdir()
    result = cli("teacher", recipe(tmp_path, root))
    assert result.exit_code == 2
    assert "class folders of val/ do not match train/ (not in train: fox)" in result.stderr
    (root / "val" / "fox").rmdir()
    for p in (root / "val" / "eel").iterdir():
        p.unlink()
    result = cli("teacher", recipe(tmp_path, root))
    assert result.exit_code == 1 and f"{root / 'val' / 'eel'}: class folder has no images" in result.stderr


def test_a_checkpoint_for_other_classes_is_refused(cli, tmp_path: Path) -> None:
    root = make_tree(tmp_path / "ds", {"train": 2, "val": 1})
    assert cli("teacher", recipe(tmp_path, root, augment={"enabled": False})).exit_code == 0
    ckpt = tmp_path / "run" / "teacher" / "teacher.pt"
    (root / "train" / "eel").rename(root / "train" / "fox")
    (root / "val" / "eel").rename(root / "val" / "fox")
    path = recipe(tmp_path, root, augment={"enabled": False})
    result = cli("teacher", path, "--set", f"teacher.checkpoint={ckpt}", "--run-dir", str(tmp_path / "run2"))
    assert result.exit_code == 1
    assert "checkpoint was trained on other classes" in result.stderr and "not in checkpoint: fox" in result.stderr
