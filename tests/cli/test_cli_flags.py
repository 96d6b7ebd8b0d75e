"""Recipe flags (`--teacher --student --data --critical-samples --hardware --quant-aware`): compiled into the recipe
(the packaged default without one, overriding it with one), recorded in the run dir, checked with close names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml


def one_error(result) -> str:
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def resolved(cli, *args: str) -> dict:
    result = cli("check", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_flags_without_a_recipe_compile_onto_the_default_and_name_the_run(cli) -> None:
    out = resolved(cli, "--teacher", "resnet18", "--student", "resnet10t", "--data", "digits", "--critical-samples", "35%")
    r = out["resolved"]
    assert (r["teacher"]["arch"], r["student"]["arch"], r["data"]["source"], r["select"]["top_k_ratio"]) == (
        "resnet18",
        "resnet10t",
        "digits",
        0.35,
    )
    assert out["name"] == "resnet10t_from_resnet18_digits" and out["run_dir"] == str(Path("runs") / out["name"])
    r = resolved(cli, "--hardware", "ascend310p", "--quant-aware", "--critical-samples", "0.2")["resolved"]
    assert r["validate"]["target"] == "ascend310p" and r["distill"]["qat"]["enabled"] and r["select"]["top_k_ratio"] == 0.2


def test_flags_override_a_recipe_and_set_wins_over_flags(cli, write_recipe) -> None:
    recipe = write_recipe()
    out = resolved(cli, str(recipe), "--student", "resnet10t", "--critical-samples", "50%", "--set", "select.top_k_ratio=0.4")
    assert out["name"] == "tiny"  # a recipe keeps its name and run dir
    assert out["resolved"]["student"]["arch"] == "resnet10t" and out["resolved"]["select"]["top_k_ratio"] == 0.4


def test_data_flag_tells_imagefolder_from_photos(cli, tmp_path: Path) -> None:
    folder = tmp_path / "set"
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (folder / split / cls).mkdir(parents=True)
    r = resolved(cli, "--data", str(folder), "--teacher", "resnet18")["resolved"]
    assert (r["data"]["source"], r["data"]["root"]) == ("imagefolder", str(folder))
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli("check", "--data", str(empty))
    assert result.exit_code == 2 and "holds neither train/<class>/*" in one_error(result)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--critical-samples", "150%"], "--critical-samples: must be more than 0% and at most 100%"),
        (["--critical-samples", "0%"], "--critical-samples: must be more than 0%"),
        (["--critical-samples", "lots"], "--critical-samples: expected a share"),
        (["--student", "mobilenetv3"], "--student: unknown timm architecture 'mobilenetv3' (did you mean: mobilenetv3_"),
        (["--teacher", "resnt18"], "--teacher: unknown timm architecture 'resnt18' (did you mean: resnet18"),
        (["--hardware", "ascend_310p"], "--hardware: unknown hardware profile 'ascend_310p' (did you mean: ascend310p"),
        (["--data", "nowhere"], "--data: folder not found: nowhere"),
    ],
)
def test_bad_flag_values_are_one_line_exit_2(cli, write_recipe, args: list[str], expected: str) -> None:
    for command in ("select", "distill", "check"):
        result = cli(command, write_recipe(), *args)
        assert result.exit_code == 2
        assert expected in one_error(result)


def test_a_stage_run_with_flags_records_them_in_the_run_dir(cli, write_recipe, tmp_path: Path) -> None:
    recipe = write_recipe(teacher={"arch": "test_resnet", "train": {"epochs": 1, "lr": 0.05}})
    result = cli("teacher", recipe, "--student", "test_byobnet", "--critical-samples", "20%", "-q")
    assert result.exit_code == 0, result.stderr
    saved = yaml.safe_load((tmp_path / "run" / "recipe.resolved.yaml").read_text())
    assert saved["student"]["arch"] == "test_byobnet" and saved["select"]["top_k_ratio"] == 0.2
