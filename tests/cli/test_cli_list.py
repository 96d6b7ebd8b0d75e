"""`cann-distill list`: every registered component with its description and arguments, filtered by PATTERN."""

from __future__ import annotations

import json

import pytest
import timm

from cann_distill.core.recipe import hardware_profiles
from cann_distill.core.recipe_find import packaged_recipes
from cann_distill.core.registries import DETECTION_SELECTORS, LOSSES, SCHEDULES, SELECTORS


def listed(cli, *args: str) -> list[dict]:
    result = cli("list", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["entries"]


@pytest.mark.parametrize(
    ("kind", "names"),
    [
        ("losses", lambda: LOSSES.names()),
        ("selectors", lambda: SELECTORS.names() + DETECTION_SELECTORS.names()),
        ("schedules", lambda: SCHEDULES.names()),
        ("profiles", lambda: list(hardware_profiles())),
        ("recipes", lambda: list(packaged_recipes())),
    ],
)
def test_each_list_holds_the_registry(cli, kind: str, names) -> None:
    entries = listed(cli, kind)
    assert [e["name"] for e in entries] == names()
    assert all(e["description"] and e["arguments"] for e in entries), entries


def test_components_show_their_first_doc_line_and_keyword_arguments(cli) -> None:
    kd = {e["name"]: e for e in listed(cli, "losses")}["kd"]
    assert kd["description"].startswith("Hinton et al.")
    assert kd["arguments"] == "temperature: float = 4.0, standardize: bool = False"
    linear = {e["name"]: e for e in listed(cli, "schedules")}["linear"]
    assert linear["arguments"] == "start: float, end: float"


def test_pattern_is_a_substring_or_a_glob(cli) -> None:
    assert [e["name"] for e in listed(cli, "losses", "KD")] == ["dkd", "kd", "rkd"]
    assert [e["name"] for e in listed(cli, "losses", "k*")] == ["kd"]
    archs = listed(cli, "archs", "resnet1*t")
    assert [e["name"] for e in archs] == timm.list_models("resnet1*t")
    resnet18 = {e["name"]: e for e in listed(cli, "archs", "resnet18")}["resnet18"]
    assert resnet18["arguments"].startswith("pretrained: ")


def test_table_output_and_unknown_lists(cli) -> None:
    result = cli("list", "losses", "fitnet")
    assert result.exit_code == 0
    text = " ".join(result.stderr.split())
    assert "fitnet" in text and "FitNets" in text and "1 losses" in text
    bad = cli("list", "loss")
    assert bad.exit_code == 2 and "unknown list 'loss' (did you mean: losses?)" in bad.stderr


def test_selectors_are_marked_with_the_task_they_score_for(cli) -> None:
    tasks = {e["name"]: e["task"] for e in listed(cli, "selectors")}
    assert tasks["small_objects"] == tasks["box_disagreement"] == "detect"
    assert tasks["margin"] == "classify" and set(tasks.values()) == {"classify", "detect"}
    assert "task" not in listed(cli, "losses", "kd")[0]  # only selectors say it
    result = cli("list", "selectors", "box")
    text = " ".join(result.stderr.split())
    assert result.exit_code == 0 and "box_disagreement" in text and "detect" in text and "1 selectors" in text
