"""`cann-distill tune`: bad input is one line and exit 2 before any training; a small study on tiny data writes
study.db, trials.json and best.yaml and a rerun continues it; a pruned trial's distill leaves nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import TINY

optuna = pytest.importorskip("optuna", reason="tune needs optuna (the tune and test extras)")

SPACE = {"distill.lr": {"low": 0.02, "high": 0.2, "log": True}, "distill.losses[1].temperature": {"low": 1.0, "high": 8.0}}
SMALL: dict[str, Any] = {
    **TINY,
    "data": {**TINY["data"], "max_samples": 200},
    "teacher": {**TINY["teacher"], "train": {"epochs": 2, "lr": 0.05}},
    "distill": {**TINY["distill"], "epochs": 2},
}


def one_line_error(result: Any) -> str:
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.mark.parametrize(
    ("tune", "args", "message"),
    [
        ({**SPACE, "distill.lrr": {"low": 0.1, "high": 0.2}}, [], "tune.distill.lrr: not a recipe key (did you mean: distill.lr"),
        ({"distill.lr": {"choices": ["fast"]}}, [], "tune.distill.lr: 'fast' does not fit distill.lr: Input should be a valid number"),
        ({"distill.lr": {"low": 0.2, "high": 0.1}}, [], "tune.distill.lr: low must be <= high"),
        ({"distill.lr": {"choices": []}}, [], "tune.distill.lr: choices: needs at least one value"),
        ({"distill.lr": {"low": -1.0, "high": 0.1, "log": True}}, [], "tune.distill.lr: log: a log range needs low > 0"),
        ({**SPACE, "trials": 0}, [], "tune.trials: Input should be greater than or equal to 1"),
        (SPACE, ["--trials", "0"], "Invalid value for '--trials'"),
        (SPACE, [], "how many trials? pass --trials N or set tune.trials in the recipe"),
        (None, ["--trials", "2"], "no tune: section"),
        (SPACE, ["--trials", "2", "--study-name", "../up"], "--study-name: letters, digits"),
    ],
    ids=["key", "type", "low>high", "empty", "log", "trials", "--trials", "no-trials", "no-tune", "study-name"],
)
def test_bad_input_is_one_line_and_exit_2_before_any_training(
    cli, write_recipe, tmp_path: Path, tune: Any, args: list[str], message: str
) -> None:
    recipe = write_recipe(SMALL, **({"tune": tune} if tune is not None else {}))
    result = cli("tune", recipe, *args)
    assert result.exit_code == 2, result.stderr
    assert message in one_line_error(result)
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def test_tune_without_optuna_names_the_extra_and_help_still_works(cli, write_recipe, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` fails as if it were not installed
    result = cli("tune", write_recipe(SMALL, tune=SPACE), "--trials", "2")
    assert result.exit_code == 2
    assert "pip install 'cann-distill[tune]'" in one_line_error(result)
    probe = (
        "import sys; sys.modules['optuna'] = None; sys.argv = ['cann-distill', 'tune', '--help']\nfrom cann_distill.cli import main\nmain()"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--trials" in proc.stdout, proc.stderr


def test_a_small_study_writes_its_files_and_a_rerun_continues_it(cli, write_recipe, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="report.trackers: tensorboard needs the tensorboard package")
    recipe = write_recipe(SMALL, tune={**SPACE, "trials": 2}, report={"trackers": ["tensorboard"]})
    run, folder = tmp_path / "run", tmp_path / "run" / "tune"
    first = cli("tune", recipe, "--json")
    assert first.exit_code == 0, first.stderr
    result = json.loads(first.stdout)
    assert [t["state"] for t in result["trials"]] == ["complete", "complete"]
    assert {p.name for p in folder.iterdir()} >= {"study.db", "trials.json", "best.yaml", "trial_0000", "trial_0001"}
    teacher_started = json.loads((run / "manifest.json").read_text())["stages"]["teacher"]["started"]
    assert (folder / "trial_0000" / "teacher" / "teacher.pt").stat().st_ino == (run / "teacher" / "teacher.pt").stat().st_ino

    second = cli("tune", recipe, "--trials", "3")  # the study's total: one more trial
    assert second.exit_code == 0, second.stderr
    assert "best: trial " in second.stderr and "teacher: up to date, skipped" in second.stderr
    assert json.loads((run / "manifest.json").read_text())["stages"]["teacher"]["started"] == teacher_started  # trained once
    trials = json.loads((folder / "trials.json").read_text())["trials"]
    assert [t["number"] for t in trials] == [0, 1, 2] and all(t["state"] == "complete" for t in trials)
    for t in trials:
        assert len(t["val_curve"]) == t["epochs"] == 2 and t["value"] == t["val_acc"] == t["val_curve"][-1]
        assert set(t["params"]) == set(SPACE) and 0.02 <= t["params"]["distill.lr"] <= 0.2
        assert "test_acc" not in json.dumps(t)  # never a test number for choosing
    best = max(trials, key=lambda t: t["value"])
    data = yaml.safe_load((folder / "best.yaml").read_text())
    assert "tune" not in data and data["distill"]["lr"] == best["params"]["distill.lr"]
    assert data["distill"]["losses"][1]["temperature"] == best["params"]["distill.losses[1].temperature"]
    assert sorted(p.name for p in (run / "tensorboard").iterdir()) == ["trial_0000", "trial_0001", "trial_0002"]

    third = cli("tune", recipe, "--trials", "3", "--json", "--report-test")  # the study is complete: nothing runs
    assert third.exit_code == 0, third.stderr
    done = json.loads(third.stdout)
    assert len(done["trials"]) == 3 and done["best"]["number"] == best["number"]
    assert (
        done["test"] == {"trial": best["number"], "test_acc": None, "why": done["test"]["why"]} and "no test split" in done["test"]["why"]
    )


def test_a_failing_trial_is_listed_with_its_error_and_no_completed_trial_is_exit_1(cli, write_recipe, tmp_path: Path) -> None:
    recipe = write_recipe(SMALL, tune={"distill.lr": {"low": 1.0e6, "high": 1.0e9, "log": True}})  # the loss overflows
    result = cli("tune", recipe, "--trials", "1")
    assert result.exit_code == 1
    assert "Error: tune: no trial completed (1 failed); see " in one_line_error(result)
    (trial,) = json.loads((tmp_path / "run" / "tune" / "trials.json").read_text())["trials"]
    assert trial["state"] == "failed" and "distill: loss is " in trial["error"] and trial["value"] is None
    assert not (tmp_path / "run" / "tune" / "best.yaml").exists()


class AlwaysPrune(optuna.pruners.BasePruner):
    """The pruner's verdict fixed: every trial is stopped after its first epoch."""

    def prune(self, study: Any, trial: Any) -> bool:
        return True


def test_a_pruned_trial_stops_its_distill_and_leaves_no_stage_behind(write_recipe, tmp_path: Path) -> None:
    from cann_distill.api import run_stages
    from cann_distill.store.rundir import RunDir
    from cann_distill.tune import prepare, run_trial, trial_dir

    search, _ = prepare(write_recipe(SMALL, tune=SPACE), trials=1)
    run_stages(search.recipe, ["teacher", "select"], run_dir=search.run.root)
    study = optuna.create_study(direction="maximize", pruner=AlwaysPrune())
    study.optimize(lambda trial: run_trial(search, trial, search.run.root), n_trials=1)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [1] and len(trial.user_attrs["curve"]) == 1  # stopped after epoch 1 of 2
    root = trial_dir(search, trial.number)
    assert not (root / "distill").exists() and not list(root.glob(".distill*"))  # no stage, no staging, no resume state
    assert RunDir(root).record("distill") is None and RunDir(root).record("select") is not None
