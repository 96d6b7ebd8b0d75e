"""The recipe JSON Schema shipped for editors: equal to what the pydantic schema generates, and it accepts what
cann-distill accepts (the shipped recipes, a resolved recipe) and refuses what it refuses (unknown keys, wrong types)."""

import json
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator

from cann_distill.core.errors import RecipeError
from cann_distill.core.recipe import RECIPE_SCHEMA_FILE, Recipe, recipe_json_schema
from cann_distill.core.recipe_load import load_recipe, read_yaml

REPO = Path(__file__).resolve().parents[3]


def shipped_schema() -> dict[str, Any]:
    return json.loads(resources.files("cann_distill.schemas").joinpath(RECIPE_SCHEMA_FILE).read_text(encoding="utf-8"))


def validator() -> Draft202012Validator:
    return Draft202012Validator(shipped_schema())


def test_shipped_schema_is_what_the_recipe_schema_generates() -> None:
    assert shipped_schema() == recipe_json_schema(), (
        "cann_distill/schemas/recipe.schema.json is stale: python scripts/docs/gen_recipe_reference.py --write-schema"
    )


def test_shipped_schema_is_a_valid_draft_2020_12_schema() -> None:
    Draft202012Validator.check_schema(shipped_schema())


@pytest.mark.parametrize("path", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_passes_the_json_schema(path: Path) -> None:
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator().iter_errors(read_yaml(path))]
    assert errors == []


def test_resolved_recipes_pass_the_json_schema() -> None:
    """What recipe.resolved.yaml holds (every default filled in) is a valid recipe for editors too."""
    for data in (Recipe().to_dict(), load_recipe(None).to_dict()):
        assert [e.message for e in validator().iter_errors(data)] == []


@pytest.mark.parametrize(
    ("recipe", "where"),
    [
        ({"distil": {"epochs": 3}}, ""),  # unknown section
        ({"distill": {"epochs": "3"}}, "distill.epochs"),  # a string is not an integer
        ({"distill": {"epochs": -1}}, "distill.epochs"),  # below the minimum
        ({"data": {"augment": {"hflip": 2}}}, "data.augment.hflip"),  # a probability above 1
        ({"validate": {"latency": {"rounds": 1, "repeat": 3}}}, "validate.latency"),  # unknown nested key
        ({"distill": {"losses": []}}, "distill.losses"),  # at least one loss
        ({"distill": {"losses": [{"weight": 1}]}}, "distill.losses.0"),  # a loss needs its kind
        ({"select": {"policy": "hardest"}}, "select.policy"),  # not one of the policies
    ],
)
def test_json_schema_refuses_what_loading_refuses(recipe: dict[str, Any], where: str, tmp_path: Path) -> None:
    errors = list(validator().iter_errors(recipe))
    assert errors, f"{recipe} passed the JSON Schema"
    assert {".".join(map(str, e.absolute_path)) for e in errors} == {where}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    with pytest.raises(RecipeError):  # cann-distill refuses the same file
        load_recipe(path)
