"""Report pieces without training: recipe keys, the schema version check, --compare's winners, stage pairing, the HTML of an empty report."""

import json
from pathlib import Path

import pytest
import yaml

from cann_distill.core.errors import ArtifactError, RecipeError
from cann_distill.core.recipe_load import load_recipe
from cann_distill.reporting.compare import to_markdown, winner
from cann_distill.reporting.html import render
from cann_distill.reporting.schema import SCHEMA_ID, SCHEMA_VERSION, read_report, schema
from cann_distill.reporting.transfer import stage_pairs

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("path", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_train_a_baseline(path: Path) -> None:
    assert yaml.safe_load(path.read_text())["report"]["baseline"] is True


@pytest.mark.parametrize(
    "report, message",
    [
        ({"baseline": "sometimes"}, r"report\.baseline: Input should be a valid boolean"),
        ({"samples": 2}, r"report\.samples: Input should be greater than or equal to 8"),
        ({"baselines": True}, r"report\.baselines: unknown key"),
    ],
)
def test_bad_report_keys_are_named(write_recipe, report: dict, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        load_recipe(write_recipe(report=report))


def test_schema_is_shipped_and_versions_are_checked(tmp_path: Path) -> None:
    s = schema()
    assert s["properties"]["schema_version"]["const"] == SCHEMA_VERSION and s["properties"]["schema"]["const"] == SCHEMA_ID
    path = tmp_path / "report.json"
    path.write_text(json.dumps({"title": "old"}))
    with pytest.raises(ArtifactError, match="schema version 1 .*older cann-distill"):
        read_report(path)
    path.write_text(json.dumps({"schema": SCHEMA_ID, "schema_version": 3}))
    with pytest.raises(ArtifactError, match="version 3 is unknown; this cann-distill reads cann-distill/report version 2"):
        read_report(path)
    path.write_text("{")
    with pytest.raises(ArtifactError, match="unreadable"):
        read_report(path)
    with pytest.raises(ArtifactError, match="is missing"):
        read_report(tmp_path / "none.json")


def test_winner_per_row() -> None:
    assert winner([0.9, 0.95, None], "higher", "pct") == 1
    assert winner([3.0, 2.0], "lower", "ms") == 1
    assert winner([0.9, 0.9], "higher", "pct") is None  # tie
    assert winner([0.91234, 0.91231], "higher", "pct") is None  # equal as displayed
    assert winner([None, 0.5], "higher", "num") is None  # one value: nothing to win
    md = to_markdown(
        {
            "runs": [{"name": "a"}, {"name": "b"}],
            "warnings": ["runs used different data (x)"],
            "rows": [{"metric": "DQI", "better": "higher", "display": ["0.100", "0.200"], "winner": 1}],
        }
    )
    assert "| DQI (higher is better) | 0.100 | **0.200** | b |" in md and "**Warning:** runs used different data" in md


def test_stage_pairs_match_relative_depth() -> None:
    assert stage_pairs(5, 5) == [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4)]
    assert stage_pairs(5, 3) == [(0, 0), (2, 1), (4, 2)]
    assert stage_pairs(4, 1) == [(3, 0)] and stage_pairs(0, 3) == []


def test_html_of_a_report_with_nothing_but_problems() -> None:
    html = render({"title": "t <x>", "problems": [{"input": "distill/metrics.json", "kind": "missing", "problem": "unreadable"}]})
    assert "t &lt;x&gt;" in html and "distill/metrics.json" in html
    assert html.count("<section") == 9 and "<img" not in html and "could not render" not in html
