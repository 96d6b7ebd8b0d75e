"""A folder of photos as a dataset, end to end through the CLI, and a class the teacher never saw."""

from pathlib import Path

import numpy as np
from PIL import Image

from tests.cli.test_cli import one_line_error


def _photos(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        rng = np.random.default_rng(i)
        base = np.array([(60 * i) % 256, (200 - 50 * i) % 256, (30 + 90 * i) % 256])
        Image.fromarray(np.clip(base + rng.integers(0, 60, (60, 90, 3)), 0, 255).astype(np.uint8)).save(folder / f"{name}.png")


def test_a_class_the_teacher_never_saw_is_a_one_line_error(cli, write_recipe, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    _photos(photos, ["alpha", "beta", "gamma"])
    data = {
        "source": "photos",
        "root": str(photos),
        "crops_per_class": [8, 4, 4],
        "image_size": 16,
        "batch_size": 8,
        "augment": {"enabled": False},
    }
    first = write_recipe(data=data, teacher={"arch": "test_resnet", "train": {"epochs": 1, "lr": 0.05}})
    result = cli("teacher", first)
    assert result.exit_code == 0, result.stderr
    ckpt = tmp_path / "run" / "teacher" / "teacher.pt"
    assert ckpt.is_file()
    _photos(photos, ["alpha", "beta", "gamma", "delta"])  # a fourth photo: a class the trained teacher has no output for
    again = write_recipe(
        data=data, name="again.yaml", run_dir=str(tmp_path / "run2"), teacher={"arch": "test_resnet", "checkpoint": str(ckpt)}
    )
    result = cli("teacher", again)
    assert result.exit_code == 1
    line = one_line_error(result)
    assert "trained on other classes" in line and "not in checkpoint: delta" in line
