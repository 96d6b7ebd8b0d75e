from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from typer.testing import CliRunner

from cann_distill.cli import app

TINY: dict[str, Any] = {
    "name": "tiny",
    "seed": 0,
    "data": {"source": "digits", "image_size": 16, "max_samples": 300, "batch_size": 32, "augment": {"enabled": False}},
    "teacher": {"arch": "test_resnet", "train": {"epochs": 4, "lr": 0.05}},
    "student": {"arch": "test_efficientnet"},
    "select": {"strategy": "margin", "top_k_ratio": 0.35},
    "distill": {"epochs": 3, "lr": 0.05, "critical": {"mode": "weight"}},  # the weighting machinery is on in the tiny runs
    "validate": {"calibration": {"samples": 32}, "latency": {"warmup": 2, "runs": 10}},
}


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the teacher-output cache out of the user's ~/.cache (one cache per test)."""
    cache = tmp_path_factory.mktemp("xdg_cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache / "cann-distill"


@pytest.fixture
def write_recipe(tmp_path: Path) -> Callable[..., Path]:
    """Write a recipe (TINY updated with top-level keys) to tmp and return its path."""

    def write(base: dict[str, Any] | None = None, name: str = "tiny.yaml", **updates: Any) -> Path:
        recipe = dict(TINY if base is None else base)
        recipe.update(updates)
        recipe.setdefault("run_dir", str(tmp_path / "run"))
        path = tmp_path / name
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        return path

    return write


@pytest.fixture
def cli() -> Callable[..., Any]:
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(app, [str(a) for a in args])

    return invoke
