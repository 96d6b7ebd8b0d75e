"""Recipes by packaged name, `init` (a recipe to edit, never an overwrite without --force) and `check`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cann_distill.core.recipe_find import packaged_recipes

NAME = "resnet10t_from_resnet18_digits"


def one_error(result) -> str:
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_check_by_packaged_name_prints_the_resolved_recipe(cli, in_tmp: Path) -> None:
    result = cli("check", NAME, "--set", "distill.epochs=2")
    assert result.exit_code == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert resolved["name"] == NAME and resolved["distill"]["epochs"] == 2
    assert resolved["data"]["image_size"] == 32  # filled in from the digits defaults
    assert f"packaged {NAME}" in " ".join(result.stderr.split())
    quiet = cli("check", NAME, "-q")
    assert yaml.safe_load(quiet.stdout)["name"] == NAME and quiet.stderr == ""
    as_json = json.loads(cli("check", f"{NAME}.yaml", "--json").stdout)
    assert as_json["resolved"]["distill"]["epochs"] == yaml.safe_load(packaged_recipes()[NAME].read_text())["distill"]["epochs"]


@pytest.mark.parametrize(
    ("arg", "close"),
    [("resnet10t_digits", "resnet10t_from_resnet18_digits"), ("mobilenetv3_small_050_from_resnet18_photo", "_photos")],
)
def test_unknown_name_lists_close_names(cli, in_tmp: Path, arg: str, close: str) -> None:
    result = cli("run", arg)
    assert result.exit_code == 2
    err = one_error(result)
    assert f"no recipe file or packaged recipe named '{arg}'" in err and close in err


def test_missing_path_stays_recipe_not_found(cli, in_tmp: Path) -> None:
    result = cli("teacher", "sub/nothing.yaml")
    assert result.exit_code == 2 and "recipe not found: sub/nothing.yaml" in one_error(result)


def test_local_file_wins_over_the_packaged_name_and_says_so(cli, in_tmp: Path) -> None:
    local = yaml.safe_load(packaged_recipes()[NAME].read_text())
    local["distill"]["epochs"] = 7
    for file_name in (NAME, f"{NAME}.yaml"):
        (in_tmp / file_name).write_text(yaml.safe_dump(local))
        result = cli("check", NAME)
        assert result.exit_code == 0, result.stderr
        assert yaml.safe_load(result.stdout)["distill"]["epochs"] == 7
        assert f"{file_name}: using the local file, not the packaged recipe" in " ".join(result.stderr.split())
        (in_tmp / file_name).unlink()


def test_init_copies_a_packaged_recipe_and_never_overwrites_without_force(cli, in_tmp: Path) -> None:
    result = cli("init", NAME)
    assert result.exit_code == 0, result.stderr
    written = in_tmp / f"{NAME}.yaml"
    assert written.read_text() == packaged_recipes()[NAME].read_text()  # comments kept
    written.write_text("# my edits\n" + written.read_text())
    again = cli("init", NAME)
    assert again.exit_code == 2
    assert one_error(again) == f"Error: {NAME}.yaml exists; --force replaces it"
    assert written.read_text().startswith("# my edits")
    assert cli("init", NAME, "--force").exit_code == 0
    assert written.read_text() == packaged_recipes()[NAME].read_text()


def test_init_from_flags_writes_a_commented_recipe_that_checks(cli, in_tmp: Path) -> None:
    photos = in_tmp / "shots"
    photos.mkdir()
    for name in ("cat", "dog"):
        (photos / f"{name}.jpg").write_bytes(b"")
    args = ["--teacher", "resnet18", "--student", "resnet10t", "--data", str(photos), "--critical-samples", "20%"]
    result = cli("init", *args, "-o", "mine.yaml", "--hardware", "x86-avx2", "--quant-aware")
    assert result.exit_code == 0, result.stderr
    text = (in_tmp / "mine.yaml").read_text()
    assert "# any timm architecture" in text and "`cann-distill list losses`" in text
    data = yaml.safe_load(text)
    assert data["name"] == "resnet10t_from_resnet18_shots"
    assert (data["teacher"]["arch"], data["student"]["arch"]) == ("resnet18", "resnet10t")
    assert (data["data"]["source"], data["data"]["root"]) == ("photos", str(photos))
    assert data["select"]["top_k_ratio"] == 0.2 and data["validate"]["target"] == "x86-avx2" and data["distill"]["qat"]["enabled"]
    digits = cli("init", "-o", "plain.yaml")
    assert digits.exit_code == 0
    assert cli("check", "plain.yaml").exit_code == 0


def test_init_refuses_a_name_and_flags_together_and_unknown_names(cli, in_tmp: Path) -> None:
    both = cli("init", NAME, "--student", "resnet10t")
    assert both.exit_code == 2 and "not both" in one_error(both)
    unknown = cli("init", "resnet10t_digits")
    assert unknown.exit_code == 2 and "did you mean" in one_error(unknown)
    assert not list(in_tmp.iterdir())


def test_check_reports_every_problem_on_one_line(cli, write_recipe) -> None:
    result = cli("check", write_recipe(student={"arch": "resnet10tt"}, distill={"epochs": -1}))
    assert result.exit_code == 2
    err = one_error(result)
    assert "distill.epochs" in err and result.stdout == ""
