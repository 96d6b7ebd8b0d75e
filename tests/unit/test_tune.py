"""`cann_distill.tune` without training: a trial's sampled values on the recipe, the best recipe file, the epoch
hook that prunes, and a study tied to its recipe."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from cann_distill.core.errors import RecipeError, UsageError
from cann_distill.core.recipe_load import load_recipe
from tests.conftest import TINY

optuna = pytest.importorskip("optuna", reason="tune needs optuna (the tune and test extras)")

from cann_distill.tune import TrialReporter, best_recipe_text, open_study, prepare, suggest  # noqa: E402

SPACE = {
    "distill.lr": {"low": 0.01, "high": 0.2, "log": True},
    "distill.losses[1].temperature": {"low": 1.0, "high": 8.0},
    "distill.epochs": {"low": 1, "high": 3},
    "distill.optimizer": {"choices": ["sgd", "adamw"]},
}


def test_sampled_values_are_applied_to_the_recipe_as_set_would(write_recipe) -> None:
    search, total = prepare(write_recipe(tune={**SPACE, "trials": 5}))
    assert total == 5
    chosen = {"distill.lr": 0.0314, "distill.losses[1].temperature": 2.5, "distill.epochs": 2, "distill.optimizer": "adamw"}
    trial = optuna.trial.FixedTrial(chosen)
    params = {key: suggest(trial, key, spec) for key, spec in search.tune.space().items()}
    assert params == chosen and isinstance(params["distill.epochs"], int)
    recipe = search.trial_recipe(params)
    d = recipe.distill
    assert (d.lr, d.losses[1].temperature, d.epochs, d.optimizer) == (0.0314, 2.5, 2, "adamw")
    assert recipe.tune is None and recipe.name == search.recipe.name
    assert search.recipe.distill.lr == TINY["distill"]["lr"]  # the base recipe is left as it was


def test_the_best_recipe_is_the_file_with_the_best_values_and_no_tune(write_recipe, tmp_path: Path) -> None:
    path = write_recipe(tune={**SPACE, "trials": 5})
    search, _ = prepare(path, overrides=["distill.momentum=0.8"], run_dir=tmp_path / "elsewhere")
    best = SimpleNamespace(number=3, value=0.75, params={"distill.lr": 0.02, "distill.losses[1].temperature": 6.0, "distill.epochs": 1})
    text = best_recipe_text(search, best)
    assert text.startswith("# the best trial of tune study 'tiny' (trial 3, val_acc 0.7500) over tiny.yaml")
    data = yaml.safe_load(text)
    assert "tune" not in data and data["data"] == TINY["data"]  # the file as written, not every default
    assert data["distill"]["losses"][1] == {"kind": "kd", "weight": 0.5, "temperature": 6.0}  # the default list, grafted
    assert data["run_dir"] == str(tmp_path / "elsewhere")
    out = tmp_path / "best.yaml"
    out.write_text(text)
    recipe = load_recipe(out)
    assert (recipe.distill.lr, recipe.distill.epochs, recipe.distill.momentum) == (0.02, 1, 0.8)


class StubTrial:
    """A trial whose pruner has already decided: should_prune says `prune` at every step."""

    def __init__(self, prune: bool) -> None:
        self.prune, self.reported = prune, []

    def report(self, value: float, step: int) -> None:
        self.reported.append((step, value))

    def should_prune(self) -> bool:
        return self.prune


def test_the_epoch_hook_reports_val_top1_and_prunes_only_before_the_last_epoch() -> None:
    curve = [0.30, 0.45, 0.50]
    keep = TrialReporter(StubTrial(prune=False), epochs=3)
    for e, acc in enumerate(curve):
        keep(e, {"epoch": e + 1, "loss": 1.0, "val_acc": acc})
    assert keep.trial.reported == [(1, 0.30), (2, 0.45), (3, 0.50)] and keep.curve == curve
    pruned = TrialReporter(StubTrial(prune=True), epochs=3)
    with pytest.raises(optuna.TrialPruned, match="epoch 1: val top-1 0.3000"):
        pruned(0, {"epoch": 1, "val_acc": 0.30})
    last = TrialReporter(StubTrial(prune=True), epochs=1)
    last(0, {"epoch": 1, "val_acc": 0.30})  # the last epoch is never pruned: the trial is done
    assert last.curve == [0.30]


def test_a_study_is_tied_to_its_recipe(write_recipe, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    search, _ = prepare(write_recipe(tune={**SPACE, "trials": 2}), run_dir=run_dir)
    study = open_study(search)
    assert (run_dir / "tune" / "study.db").is_file() and study.user_attrs["identity"]["metric"] == "val_acc"
    again, _ = prepare(write_recipe(tune={**SPACE, "trials": 9}, name="again.yaml"), overrides=["runtime.device=cpu"], run_dir=run_dir)
    open_study(again)  # the space, the trial count and where it runs may change
    changed: Any = {**TINY, "distill": {**TINY["distill"], "epochs": 5}}
    other, _ = prepare(write_recipe(changed, tune=SPACE, name="other.yaml"), trials=2, run_dir=run_dir)
    assert other.study_name == search.study_name == "tiny"  # the recipe's name
    with pytest.raises(UsageError, match=r"was made with another recipe \(recipe.distill.epochs: 3 → 5\)"):
        open_study(other)


def _prunes_at(study: Any, epochs: int) -> list[int]:
    """The epochs at which a trial far below five finished ones would be stopped."""
    for _ in range(5):
        done = study.ask()
        for step in range(1, epochs + 1):
            done.report(0.9, step)
        study.tell(done, 0.9)
    low = study.ask()
    stops = []
    for step in range(1, epochs + 1):
        low.report(0.1, step)
        if low.should_prune():
            stops.append(step)
    return stops


@pytest.mark.parametrize(("epochs", "asked", "first"), [(3, None, 2), (8, None, 3), (9, None, 4), (8, 0, 1), (8, 5, 6)])
def test_no_trial_is_stopped_before_its_warmup_epochs(write_recipe, tmp_path: Path, epochs: int, asked: Any, first: int) -> None:
    tune: dict[str, Any] = {"distill.lr": SPACE["distill.lr"], "trials": 9}
    if asked is not None:
        tune["pruner_warmup_epochs"] = asked
    changed: Any = {**TINY, "distill": {**TINY["distill"], "epochs": epochs}}
    search, _ = prepare(write_recipe(changed, tune=tune), run_dir=tmp_path / "run")
    stops = _prunes_at(open_study(search), epochs)
    assert stops[0] == first and stops == list(range(first, epochs + 1))


def test_a_negative_pruner_warmup_is_a_recipe_error(write_recipe) -> None:
    with pytest.raises(RecipeError, match="tune.pruner_warmup_epochs: Input should be greater than or equal to 0"):
        prepare(write_recipe(tune={"distill.lr": SPACE["distill.lr"], "pruner_warmup_epochs": -1}))
