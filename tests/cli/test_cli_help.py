"""Help: commands grouped by panel, no `<bool>`-style type labels, one meaning of --force, completion installable;
usage errors (unknown command or option, missing argument) are one `Error:` line with exit 2."""

from __future__ import annotations

import re

import pytest
import typer

from cann_distill.cli import app

COMMANDS = sorted(c.name for c in app.registered_commands if c.name)
TYPE_LABEL = re.compile(r"<(bool|str|int|float|path|Path|datetime|list\[[^\]]*\])>")  # Typer's type labels


def error_lines(result) -> list[str]:
    assert "Traceback" not in result.stderr
    return [line for line in result.stderr.splitlines() if line.startswith("Error: ")]


def test_root_help_groups_commands_in_panels_pipeline_first(cli) -> None:
    result = cli("--help")
    assert result.exit_code == 0
    out = result.stdout
    panels = [out.index(f"─ {name} ") for name in ("Pipeline", "Inspect", "Tools")]
    assert panels == sorted(panels), out
    pipeline, inspect, tools = (out[a:b] for a, b in zip(panels, [*panels[1:], len(out)]))
    assert all(f" {c} " in pipeline for c in ("run", "teacher", "select", "distill", "baseline", "validate", "report"))
    assert all(f" {c} " in inspect for c in ("check", "status", "list", "inspect", "env"))
    assert all(f" {c} " in tools for c in ("init", "predict", "fit-student"))
    assert "--install-completion" in out and "--show-completion" in out


@pytest.mark.parametrize("name", COMMANDS)
def test_help_has_no_type_labels_and_ends_with_an_example(cli, name: str) -> None:
    result = cli(name, "--help")
    assert result.exit_code == 0, result.stderr
    assert not TYPE_LABEL.search(result.stdout), TYPE_LABEL.search(result.stdout)
    words = " ".join(result.stdout.split())
    assert words.rstrip().rsplit("Example: ", 1)[-1].startswith(f"cann-distill {name}")


def test_force_has_one_meaning_everywhere() -> None:
    root = typer.main.get_command(app)
    helps = {
        name: p.help
        for name, command in root.commands.items()  # type: ignore[attr-defined]
        for p in command.params
        if "--force" in getattr(p, "opts", [])
    }
    assert {"run", "teacher", "select", "distill", "validate", "report", "init", "fit-student"} <= set(helps)
    assert all(h.startswith("Redo and replace what already exists: ") for h in helps.values()), helps


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["runn"], "No such command 'runn'. Did you mean 'run'?"),
        (["nosuch"], "No such command 'nosuch'"),
        (["run", "--bogus"], "No such option: --bogus"),
        (["predict"], "Missing argument 'MODEL'"),
        (["predict", "m.onnx", "x.png", "--top-k", "0"], "--top-k"),
    ],
)
def test_usage_errors_are_one_line_exit_2(cli, args: list[str], expected: str) -> None:
    result = cli(*args)
    assert result.exit_code == 2
    errors = error_lines(result)
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert "╭" not in result.stderr  # no rich error panel


def test_no_arguments_shows_the_help(cli) -> None:
    result = cli()
    assert result.exit_code == 2
    assert "Usage: cann-distill" in result.stdout + result.stderr and not error_lines(result)


def test_completion_script_is_available(cli) -> None:
    result = cli("--show-completion", "bash")
    assert result.exit_code == 0, result.stderr
    assert "_CANN_DISTILL_COMPLETE" in result.stdout


def test_typer_app_keeps_completion_enabled() -> None:
    command = typer.main.get_command(app)
    assert {"install_completion", "show_completion"} <= {p.name for p in command.params}
