"""data.unlabeled end to end on tiny digits: unlabelled images join distill's training split with the teacher's
soft outputs as their only targets, the teacher and the probe learn from labelled images only, the counts reach
report.json; and the folders refused before any work."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cann_distill.core.recipe_load import load_recipe
from cann_distill.data.loading import load_splits

pytestmark = pytest.mark.slow

DATA = {"source": "digits", "image_size": 16, "max_samples": 100, "batch_size": 32, "augment": {"enabled": False}}


def noise_images(folder: Path, n: int) -> Path:
    """`n` grayscale PNGs in a nested tree, plus a file that is no image by name."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        path = folder / ("deep/er" if i % 2 else "top") / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8), "L").save(path)
    (folder / "notes.txt").write_text("not an image")
    return folder


def run_ok(cli, *args: str) -> dict:
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.stderr
    return {s["stage"]: s for s in json.loads(result.stdout)["stages"]}


def test_unlabelled_images_are_distilled_from_the_teacher_only(cli, write_recipe, tmp_path: Path) -> None:
    folder = noise_images(tmp_path / "unl", 24)
    (folder / "top" / "broken.png").write_bytes(b"\x89PNG not really")
    data = {**DATA, "on_bad_image": "skip"}
    recipe = write_recipe(data=data, teacher={"arch": "test_resnet", "train": {"epochs": 1}}, distill={"epochs": 1})
    run = tmp_path / "run"
    run_ok(cli, "teacher", recipe)
    unlabeled = ("--set", f"data.unlabeled={folder}")
    probe = ("--set", "select.strategy=disagreement", "--set", "select.probe_epochs=1")
    # the teacher learns from labelled images only: adding the folder leaves it up to date
    assert run_ok(cli, "teacher", recipe, *unlabeled)["teacher"]["status"] == "skipped"
    select = run_ok(cli, "select", recipe, *unlabeled, *probe)["select"]["summary"]
    assert select["num_samples"] == 80 + 24 and select["num_unlabelled"] == 24
    with open(run / "select" / "index.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    unlabelled = [r for r in rows if r["target"] == "-1"]
    assert len(unlabelled) == 24 and all(r["id"].startswith("unlabeled/") for r in unlabelled)
    assert "unlabeled/top/broken.png" not in {r["id"] for r in rows}

    summary = run_ok(cli, "distill", recipe, *unlabeled, *probe)["distill"]["summary"]
    assert summary["data"] == {"labelled": 80, "unlabelled": 24, "unlabelled_skipped": 1}
    history = json.loads((run / "distill" / "metrics.json").read_text())["history"]
    assert history[0]["samples"] == 104 and np.isfinite(history[0]["ce"])
    run_ok(cli, "report", recipe, *unlabeled, *probe)
    report = json.loads((run / "report" / "report.json").read_text())
    assert report["modes"]["unlabeled"] == {"labelled": 80, "unlabelled": 24, "unlabelled_skipped": 1}
    assert "80 labelled and 24 unlabelled training images" in (run / "report" / "report.html").read_text()


def test_bad_image_in_the_folder_stops_select_with_one_line(cli, write_recipe, tmp_path: Path) -> None:
    folder = noise_images(tmp_path / "unl", 2)
    (folder / "top" / "broken.png").write_bytes(b"\x89PNG not really")
    recipe = write_recipe(data={**DATA, "unlabeled": str(folder)}, teacher={"arch": "test_resnet", "train": {"epochs": 0}})
    run_ok(cli, "teacher", recipe)
    result = cli("select", recipe)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "broken.png" in errors[0] and "data.on_bad_image: skip" in errors[0]


def leaked_folder(tmp_path: Path, recipe_path: Path) -> Path:
    folder = noise_images(tmp_path / "unl", 3)
    val = load_splits(load_recipe(recipe_path).data).val
    val.images(5).save(folder / "deep" / "copy.png")  # a val image, re-encoded: same pixels
    return folder


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("leak", "is the same image as val image digits/"),
        ("empty", "data.unlabeled: no images in"),
        ("missing", "data.unlabeled: folder not found"),
        ("select.strategy=loss", "select.strategy: 'loss' scores with labels, which unlabelled images do not have"),
        ("data.augment={enabled: true, mixup_alpha: 0.4}", "data.augment: mixup/cutmix mixes labels"),
        ("select.refresh_every=1", "select.refresh_every: re-mining critical samples does not take unlabelled images"),
    ],
)
def test_bad_unlabelled_folders_stop_before_any_work(cli, write_recipe, tmp_path: Path, setting: str, message: str) -> None:
    recipe = write_recipe(data=DATA, teacher={"arch": "test_resnet", "train": {"epochs": 0}})
    folder = {"leak": lambda: leaked_folder(tmp_path, recipe), "empty": lambda: noise_images(tmp_path / "unl", 0)}.get(
        setting, lambda: noise_images(tmp_path / "unl", 2)
    )()
    if setting == "missing":
        folder = tmp_path / "nowhere"
    extra = ["--set", setting] if "=" in setting else []
    result = cli("run", recipe, "--set", f"data.unlabeled={folder}", *extra)
    assert result.exit_code == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and message in errors[0]
    assert not (tmp_path / "run" / "teacher").exists()
