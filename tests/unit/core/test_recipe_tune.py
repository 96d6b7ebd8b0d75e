"""The recipe's `tune:` section and `report.trackers`: checked before any work (each bad search space one error on one
line), left out of every stage's fingerprint, and a trial's sampled values applied to the recipe as `--set` would."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cann_distill.core.errors import RecipeError
from cann_distill.core.recipe import Recipe
from cann_distill.core.recipe_load import load_recipe
from cann_distill.stages import STAGE_ORDER, STAGES
from cann_distill.stages.base import _section
from tests.conftest import TINY

SPACE = {"distill.lr": {"low": 0.01, "high": 0.2, "log": True}, "distill.losses[1].temperature": {"low": 1.0, "high": 8.0}}


@pytest.mark.parametrize(
    ("tune", "message"),
    [
        ({"distill.lrr": {"low": 0.01, "high": 0.1}}, "tune.distill.lrr: not a recipe key (did you mean: distill.lr"),
        ({"distill.losses[5].temperature": {"low": 1.0, "high": 2.0}}, "tune.distill.losses[5].temperature: not a recipe key (index [5]"),
        ({"distill.lr": {"choices": ["fast", "slow"]}}, "tune.distill.lr: 'fast' does not fit distill.lr: Input should be a valid number"),
        ({"distill.lr": {"low": "a", "high": "b"}}, "tune.distill.lr.low: should be a number, got 'a'"),
        (
            {"distill.epochs": {"low": 1.0, "high": 3.0}},
            "tune.distill.epochs: 1.0 does not fit distill.epochs: Input should be a valid integer",
        ),
        ({"distill.optimizer": {"choices": ["sgd", "adam"]}}, "tune.distill.optimizer: 'adam' does not fit distill.optimizer"),
        ({"distill.lr": {"low": 0.5, "high": 0.1}}, "tune.distill.lr: low must be <= high, got low=0.5 > high=0.1"),
        ({"distill.lr": {"choices": []}}, "tune.distill.lr: choices: needs at least one value"),
        ({"distill.lr": {"low": 0.0, "high": 0.1, "log": True}}, "tune.distill.lr: log: a log range needs low > 0, got low=0.0"),
        ({**SPACE, "trials": 0}, "tune.trials: Input should be greater than or equal to 1"),
        ({"validate.opset": {"choices": [13, 17]}}, "tune.validate.opset: trials run teacher, select and distill"),
        ({"trials": 3}, "tune: names no recipe key to search"),
    ],
    ids=[
        "unknown-key",
        "index",
        "choice-type",
        "string-range",
        "float-on-int",
        "choice-value",
        "low>high",
        "empty",
        "log",
        "trials",
        "validate",
        "no-keys",
    ],
)
def test_a_bad_search_space_is_one_error_with_its_key(write_recipe, tune: dict[str, Any], message: str) -> None:
    with pytest.raises(RecipeError) as info:
        load_recipe(write_recipe(tune=tune))
    text = str(info.value)
    assert message in text, text
    assert "\n" not in text


def test_a_search_space_loads_and_the_resolved_recipe_reads_back(write_recipe, tmp_path: Path) -> None:
    recipe = load_recipe(write_recipe(tune={**SPACE, "select.top_k_ratio": {"low": 0.2, "high": 0.5, "step": 0.1}, "trials": 4}))
    assert recipe.tune is not None and list(recipe.tune.space()) == [*SPACE, "select.top_k_ratio"]
    assert recipe.tune.trials == 4 and (recipe.tune.metric, recipe.tune.pruner, recipe.tune.sampler) == ("val_acc", "median", "tpe")
    assert recipe.tune.space()["distill.lr"].integer is False
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    assert load_recipe(resolved).to_dict() == recipe.to_dict()


def test_int_ranges_stay_int_and_an_int_range_takes_no_float_step(write_recipe) -> None:
    recipe = load_recipe(write_recipe(tune={"distill.epochs": {"low": 1, "high": 4}}))
    assert recipe.tune is not None and recipe.tune.space()["distill.epochs"].integer
    with pytest.raises(RecipeError, match="an int range .* takes an int step, got 0.5"):
        load_recipe(write_recipe(tune={"distill.epochs": {"low": 1, "high": 4, "step": 0.5}}))


def _fingerprint_inputs(recipe: Recipe) -> dict[str, Any]:
    """What each stage fingerprints from the recipe: its sections (minus `ignore`) and its extra inputs."""
    return {
        name: (
            {s: _section(recipe, s, STAGES[name].ignore) if s != "seed" else recipe.seed for s in STAGES[name].sections},
            STAGES[name].extra_inputs(recipe),
        )
        for name in STAGE_ORDER
    }


def test_tune_and_trackers_change_no_stage_fingerprint(write_recipe) -> None:
    plain = load_recipe(write_recipe())
    tuned = load_recipe(write_recipe(tune={**SPACE, "trials": 3}, report={"trackers": ["tensorboard"]}, name="tuned.yaml"))
    plain.name = tuned.name = "same"
    assert _fingerprint_inputs(tuned) == _fingerprint_inputs(plain)
    assert "tune" not in plain.to_dict() and "trackers" not in plain.to_dict()["report"]  # unset: in no dump


def test_a_tracker_that_is_not_installed_is_a_recipe_error_naming_the_package(write_recipe, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow fails as if it were absent
    with pytest.raises(RecipeError) as info:
        load_recipe(write_recipe(report={"trackers": ["mlflow"]}))
    assert "report.trackers: mlflow is not installed (pip install mlflow, or pip install 'cann-distill[trackers]')" in str(info.value)
    assert len(str(info.value).splitlines()) == 1


def test_an_unknown_tracker_is_refused_by_the_schema(write_recipe) -> None:
    with pytest.raises(RecipeError, match="report.trackers\\[0\\]: Input should be 'tensorboard' or 'mlflow'"):
        load_recipe(write_recipe(report={"trackers": ["wandb"]}))


def test_tune_recipe_keys_name_the_tiny_recipe(write_recipe) -> None:
    """A key the file leaves to the defaults (the default loss list) can be searched: it is a key of the resolved recipe."""
    assert "losses" not in TINY["distill"]
    recipe = load_recipe(write_recipe(tune={"distill.losses[1].temperature": {"choices": [2.0, 4.0]}}))
    assert recipe.tune is not None and recipe.tune.space()["distill.losses[1].temperature"].choices == [2.0, 4.0]
