"""`cann-distill tune`: the hyper-parameter search over a recipe's `tune:` keys (library: `cann_distill.tune`).
Nothing here imports torch or optuna until the command runs."""

from __future__ import annotations

from typing import Any, Optional

import typer
from rich.markup import escape
from rich.table import Table
from typing_extensions import Annotated

from cann_distill.cli.app import (
    PIPELINE,
    DebugOpt,
    DeviceOpt,
    ForceOpt,
    JsonOpt,
    QuietOpt,
    RecipeArg,
    RunDirOpt,
    SetOpt,
    command,
    invoke,
    overrides,
)
from cann_distill.cli.render import inert
from cann_distill.runtime.terminal import ui


def _pct(value: Optional[float]) -> str:
    return f"{100 * value:.2f}%" if value is not None else ""


def render_tune(result: dict[str, Any]) -> None:
    """The trials as a table (the best marked), where the best recipe went, and the test top-1 when asked."""
    best = (result.get("best") or {}).get("number")
    table = Table(title=f"tune: study '{inert(result['study'])}' ({result['metric']}, higher is better)", title_justify="left")
    for col in ("trial", "state", "val top-1", "epochs", *(inert(k, 40) for k in result["keys"]), "seconds"):
        table.add_column(col)
    for row in result["trials"]:
        params = [inert(f"{v:.4g}" if isinstance(v, float) else str(v), 40) if k in row["params"] else "" for k, v in _params(row, result)]
        mark = " ★" if row["number"] == best else ""
        seconds = f"{row['seconds']:.0f}" if row.get("seconds") is not None else ""
        table.add_row(f"{row['number']}{mark}", row["state"], _pct(row["value"]), str(row["epochs"]), *params, seconds)
    ui.console.print(table)
    if result.get("best"):
        b = result["best"]
        ui.console.print(
            f"best: trial {b['number']}, {result['metric']} {_pct(b['value'])}; recipe: {inert(b['recipe'], 200)}", highlight=False
        )
    test = result.get("test")
    if test is not None:
        shown = _pct(test["test_acc"]) if test["test_acc"] is not None else f"not measured ({test['why']})"
        ui.console.print(f"test top-1 of the best trial's student (reported, never used to choose): {shown}", highlight=False)


def _params(row: dict[str, Any], result: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(k, row["params"].get(k)) for k in result["keys"]]


@command(
    "tune",
    PIPELINE,
    "Search the recipe's `tune:` keys (ranges or choices) with Optuna: teacher and select run once in the run dir, each "
    "trial distills with its values in <run_dir>/tune/trial_NNNN/ and is judged on the distilled student's val top-1 "
    "(median pruning on each epoch's val top-1, TPE sampler seeded by the recipe). The study is kept in "
    "<run_dir>/tune/study.db: --trials N is the study's total, so a rerun continues it up to N trials (finished, "
    "pruned or failed) and several processes may share it. Writes tune/trials.json and tune/best.yaml (the recipe with "
    "the best values, tune: removed). Needs optuna: pip install 'cann-distill[tune]'.",
    "cann-distill tune my_recipe.yaml --trials 20 --report-test",
)
def tune_cmd(
    recipe: RecipeArg = None,
    trials: Annotated[
        Optional[int], typer.Option("--trials", help="Trials in the study in all (default: tune.trials).", metavar="N", min=1)
    ] = None,
    run_dir: RunDirOpt = None,
    study_name: Annotated[
        Optional[str],
        typer.Option(
            "--study-name",
            help="Study in study.db (default: the recipe's name); another name keeps its files in tune/<name>/.",
            metavar="NAME",
        ),
    ] = None,
    timeout: Annotated[
        Optional[float], typer.Option("--timeout", help="Start no trial after this many seconds.", metavar="SECONDS", min=0)
    ] = None,
    report_test: Annotated[
        bool,
        typer.Option("--report-test", help="After the search, also show the best trial's test top-1 (never used to choose)."),
    ] = False,
    set_: SetOpt = None,
    force: ForceOpt = False,
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
    quiet: QuietOpt = False,
    debug: DebugOpt = False,
) -> None:
    def go() -> dict[str, Any]:
        from cann_distill.core.recipe_find import find_recipe
        from cann_distill.tune import tune

        found = find_recipe(recipe)
        if found.note:
            ui.info(f"[dim]{escape(found.note)}[/dim]")
        return tune(found.path, overrides(set_, device), trials, run_dir, study_name, timeout, report_test, force)

    invoke(go, as_json, quiet, debug, render=render_tune)


__all__ = ["tune_cmd"]
