"""CLI contract: help with examples, one-line errors, exit codes (0 ok, 1 stage failure, 2 bad recipe/usage)."""

from pathlib import Path

import pytest
import torch

from cann_distill.cli import app
from cann_distill.models.build import create_model, save_checkpoint

COMMANDS = [
    "teacher",
    "select",
    "distill",
    "baseline",
    "validate",
    "report",
    "run",
    "tune",
    "check",
    "status",
    "list",
    "inspect",
    "env",
    "dashboard",
    "init",
    "predict",
    "fit-student",
]


def one_line_error(result) -> str:
    stderr = result.stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, stderr
    return errors[0]


def test_every_command_is_registered_and_its_help_ends_with_an_example(cli) -> None:
    names = {c.name for c in app.registered_commands}
    assert names == set(COMMANDS)
    for name in COMMANDS:
        result = cli(name, "--help")
        assert result.exit_code == 0
        assert "Example: cann-distill " + name in " ".join(result.stdout.split())


def test_missing_recipe_file(cli, tmp_path: Path) -> None:
    result = cli("distill", tmp_path / "missing.yaml")
    assert result.exit_code == 2
    assert "recipe not found" in one_line_error(result)


def test_yaml_syntax_error_reports_line(cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  image_size: 32\n  source: [digits\n")
    result = cli("run", bad)
    assert result.exit_code == 2
    assert "bad.yaml:4:1: YAML syntax error" in one_line_error(result)


def test_unknown_arch_suggests(cli, write_recipe) -> None:
    result = cli("teacher", write_recipe(teacher={"arch": "resnet181"}))
    assert result.exit_code == 2
    err = one_line_error(result)
    assert "teacher.arch: unknown timm architecture 'resnet181'" in err and "resnet18" in err


def test_missing_dataset_folder(cli, write_recipe, tmp_path: Path) -> None:
    result = cli("teacher", write_recipe(data={"source": "imagefolder", "root": str(tmp_path / "nowhere")}))
    assert result.exit_code == 2
    assert "dataset folder not found" in one_line_error(result)


def test_bad_override(cli, write_recipe) -> None:
    result = cli("run", write_recipe(), "--set", "distill.losses[0].kind=kdd")
    assert result.exit_code == 2
    assert "distill.losses[0].kind: unknown loss 'kdd'" in one_line_error(result)


def test_stage_before_its_inputs_says_which_stage_to_run(cli, write_recipe, tmp_path: Path) -> None:
    for stage, upstream in [("select", "teacher"), ("distill", "select"), ("validate", "teacher"), ("report", "teacher")]:
        result = cli(stage, write_recipe())
        assert result.exit_code == 1
        assert f"run `cann-distill {upstream}` first" in one_line_error(result)
    # nothing was written for the stages that refused
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock", "recipe.resolved.yaml"]


def test_checkpoint_that_does_not_match_the_arch(cli, write_recipe, tmp_path: Path) -> None:
    ckpt = tmp_path / "other.pt"
    save_checkpoint(ckpt, create_model("test_efficientnet", 10, 1), "test_efficientnet", 10, 1)
    result = cli("teacher", write_recipe(teacher={"arch": "test_resnet", "checkpoint": str(ckpt)}))
    assert result.exit_code == 1
    assert "checkpoint is for arch 'test_efficientnet', not 'test_resnet'" in one_line_error(result)
    assert not (tmp_path / "run" / "teacher").exists()
    torch.save(create_model("test_efficientnet", 10, 1).state_dict(), ckpt)
    result = cli("teacher", write_recipe(teacher={"arch": "test_resnet", "checkpoint": str(ckpt)}))
    assert result.exit_code == 1
    assert "does not match arch 'test_resnet'" in one_line_error(result)


def test_debug_shows_traceback(cli, tmp_path: Path) -> None:
    result = cli("distill", tmp_path / "missing.yaml", "--debug")
    assert result.exit_code == 2
    assert "Traceback" in result.stderr


@pytest.mark.parametrize("flag", ["--version"])
def test_version(cli, flag: str) -> None:
    result = cli(flag)
    assert result.exit_code == 0 and result.stdout.startswith("cann-distill ")


def test_inspect_lists_taps_as_table_and_json(cli) -> None:
    result = cli("inspect", "test_resnet", "--image-size", "16")
    assert result.exit_code == 0, result.stderr
    text = " ".join(result.stderr.split())
    assert "layer2 │ 48 │ 8 │ 48x2x2" in text and "layer2.0" in text
    result = cli("inspect", "test_resnet", "--image-size", "16", "--json")
    import json

    info = json.loads(result.stdout)
    assert [r["tap"] for r in info["taps"]] == ["0", "1", "2", "3", "4", "logits"]
    assert info["taps"][3] == {"tap": "3", "module": "layer3", "channels": 192, "stride": 16, "shape": [192, 1, 1]}
    result = cli("inspect", "resnet181")
    assert result.exit_code == 2 and "unknown timm architecture 'resnet181'" in one_line_error(result)


def test_run_refuses_more_jobs_than_the_two_stages_it_can_overlap(cli, write_recipe) -> None:
    result = cli("run", write_recipe(), "--jobs", "3")
    assert result.exit_code == 2
    assert "Invalid value for '--jobs'" in " ".join(result.output.split())
