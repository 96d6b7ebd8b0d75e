"""Library entry points: what the CLI calls, usable from Python too."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from cann_distill.errors import UsageError
from cann_distill.recipe import Recipe, load_recipe
from cann_distill.rundir import RunDir
from cann_distill.stages import STAGE_ORDER, STAGES, StageResult, run_stage


def run_dir_of(recipe: Recipe, run_dir: Union[str, Path, None] = None) -> RunDir:
    return RunDir(run_dir or recipe.run_dir or Path("runs") / (recipe.name or "recipe"))


def run_stages(
    recipe: Union[Recipe, str, Path, None],
    stages: Sequence[str] = STAGE_ORDER,
    run_dir: Union[str, Path, None] = None,
    force: Union[bool, Iterable[str]] = False,
    overrides: Optional[list[str]] = None,
) -> list[StageResult]:
    """Run `stages` in order, skipping those whose inputs have not changed.

    `force=True` reruns all of them; an iterable of names reruns just those.
    """
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise UsageError(f"unknown stage(s) {', '.join(unknown)} (known: {', '.join(STAGE_ORDER)})")
    forced = set(stages) if force is True else set(force or ())
    run = run_dir_of(recipe, run_dir)
    results = []
    with run.lock():
        run.write_resolved_recipe(recipe.to_dict())
        for name in stages:
            results.append(run_stage(STAGES[name], recipe, run, force=name in forced))
    return results


def run_pipeline(recipe: Union[Recipe, str, Path, None] = None, **kwargs) -> list[StageResult]:
    """All stages, teacher → report."""
    return run_stages(recipe, STAGE_ORDER, **kwargs)
