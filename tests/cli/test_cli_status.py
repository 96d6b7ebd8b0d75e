"""`status` (each stage up to date / stale and why / missing, without running anything), `run --from/--to`, and
`--resume` refused before any work when the recipe changed since the checkpoint was saved."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tests.conftest import TINY

RECIPE: dict[str, Any] = {
    **TINY,
    "data": {**TINY["data"], "max_samples": 120},
    "teacher": {"arch": "test_resnet", "train": {"epochs": 1, "lr": 0.05}},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run dir where teacher and select have run (copied per test)."""
    from typer.testing import CliRunner

    from cann_distill.cli import app

    root = tmp_path_factory.mktemp("trained")
    (root / "r.yaml").write_text(yaml.safe_dump({**RECIPE, "run_dir": str(root / "run")}))
    result = CliRunner().invoke(app, ["run", str(root / "r.yaml"), "--to", "select", "-q"])
    assert result.exit_code == 0, result.stderr
    return root


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(recipe, run dir): a copy of the trained run dir and a recipe pointing at it."""
    shutil.copytree(trained / "run", tmp_path / "run")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**RECIPE, "run_dir": str(tmp_path / "run")}))
    return recipe, tmp_path / "run"


def status(cli, *args: Any) -> dict[str, dict]:
    result = cli("status", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return {s["stage"]: s for s in json.loads(result.stdout)["stages"]}


def one_error(result) -> str:
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_status_of_a_fresh_recipe_is_all_missing(cli, write_recipe) -> None:
    states = status(cli, write_recipe())
    assert {k: v["state"] for k, v in states.items()} == {
        "teacher": "missing",
        "select": "missing",
        "distill": "missing",
        "baseline": "off",
        "validate": "missing",
        "report": "missing",
    }


def test_status_says_which_recipe_key_made_a_stage_stale(cli, run) -> None:
    recipe, run_dir = run
    before = (run_dir / "manifest.json").read_text()
    states = status(cli, recipe)
    assert (states["teacher"]["state"], states["select"]["state"], states["distill"]["state"]) == ("up to date", "up to date", "missing")
    states = status(cli, recipe, "--set", "select.top_k_ratio=0.5")
    assert states["teacher"]["state"] == "up to date"
    assert states["select"]["state"] == "stale" and states["select"]["why"] == ["recipe changed: select.top_k_ratio: 0.35 → 0.5"]
    states = status(cli, recipe, "--set", "teacher.train.lr=0.1")
    assert states["teacher"]["why"] == ["recipe changed: teacher.train.lr: 0.05 → 0.1"]
    assert states["select"]["why"] == ["needs teacher, which is stale"]
    assert (run_dir / "manifest.json").read_text() == before  # status runs and writes nothing
    text = " ".join(cli("status", recipe, "--set", "teacher.train.lr=0.1").stderr.split())
    assert f"`cann-distill run {recipe} --set teacher.train.lr=0.1` runs teacher, select, distill, validate, report" in text


def test_status_of_a_run_dir_and_damaged_outputs(cli, run, tmp_path: Path) -> None:
    _, run_dir = run
    index = run_dir / "select" / "index.csv"
    index.write_text(index.read_text() + "\n")
    states = status(cli, run_dir)
    assert states["select"]["state"] == "stale" and states["select"]["why"] == ["outputs changed on disk: select/index.csv modified"]
    (tmp_path / "plain").mkdir()
    result = cli("status", tmp_path / "plain")
    assert result.exit_code == 2 and "is a folder but not a run dir (no recipe.resolved.yaml)" in one_error(result)


def test_run_from_to_runs_only_that_span(cli, run) -> None:
    recipe, run_dir = run
    result = cli("run", recipe, "--from", "select", "--to", "select", "--force", "--json", "-q")
    assert result.exit_code == 0, result.stderr
    assert [s["stage"] for s in json.loads(result.stdout)["stages"]] == ["select"]
    assert not (run_dir / "distill").exists()
    result = cli("run", recipe, "--from", "validate", "--to", "distill")
    assert result.exit_code == 2 and "--from validate comes after --to distill" in one_error(result)


def test_resume_after_the_recipe_changed_is_refused_before_any_work(cli, run) -> None:
    recipe, run_dir = run
    torch.save({"format": 2, "fingerprint": "saved by the run that was killed"}, run_dir / ".distill.resume.pt")
    before = (run_dir / "manifest.json").read_text()
    for command in (["run", recipe, "--set", "teacher.train.lr=0.1"], ["distill", recipe]):
        result = cli(*command, "--set", "distill.epochs=5", "--resume")
        assert result.exit_code == 2
        err = one_error(result)
        assert "--resume: .distill.resume.pt was saved by another configuration (changed: " in err and "distill.epochs: 3 → 5" in err
    assert (run_dir / "manifest.json").read_text() == before  # the teacher did not retrain
    assert "distill was interrupted" in " ".join(cli("status", run_dir).stderr.split())


def test_resume_problem_is_none_for_the_checkpoint_of_this_recipe(run) -> None:
    from cann_distill.core.recipe_load import load_recipe
    from cann_distill.stages.base import STAGES, plan_stage
    from cann_distill.stages.status import resume_problem
    from cann_distill.store.rundir import RunDir

    recipe, run_dir = run
    r, rd = load_recipe(recipe), RunDir(run_dir)
    assert resume_problem(r, rd) is None  # no checkpoint: nothing to refuse
    fingerprint = plan_stage(STAGES["distill"], r, rd).fingerprint  # distill has not run yet: no record, as after a kill
    torch.save({"format": 2, "fingerprint": fingerprint}, run_dir / ".distill.resume.pt")
    assert resume_problem(r, rd) is None
    assert resume_problem(load_recipe(recipe, ["distill.lr=0.1"]), rd) is not None
