"""Library entry points: what the CLI calls, usable from Python too."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from rich.markup import escape

from cann_distill.data import forget_listings
from cann_distill.devices import Runtime, resolve_device
from cann_distill.errors import ArtifactError, GateError, UsageError
from cann_distill.recipe import Recipe, load_recipe, read_yaml
from cann_distill.rundir import RunDir
from cann_distill.stages import STAGE_ORDER, STAGES, StageResult, is_current, run_stage
from cann_distill.ui import ui


def run_dir_of(recipe: Recipe, run_dir: Union[str, Path, None] = None) -> RunDir:
    return RunDir(run_dir or recipe.run_dir or Path("runs") / (recipe.name or "recipe"))


def run_stages(
    recipe: Union[Recipe, str, Path, None],
    stages: Sequence[str] = STAGE_ORDER,
    run_dir: Union[str, Path, None] = None,
    force: Union[bool, Iterable[str]] = False,
    overrides: Optional[list[str]] = None,
    resume: bool = False,
) -> list[StageResult]:
    """Run `stages` in order, skipping those whose inputs have not changed.

    `force=True` reruns all of them; an iterable of names reruns just those. `resume=True` lets
    distill continue from its resume checkpoint (saved every epoch and on Ctrl-C). On a damaged
    or foreign manifest, `force` instead rebuilds it (see `recover_manifest`).
    """
    from cann_distill.stages.distill import resume_path, resuming
    from cann_distill.targets import check_recipe

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    check_recipe(recipe)  # what the teacher-target source cannot give the losses: exit 2 before any work
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise UsageError(f"unknown stage(s) {', '.join(unknown)} (known: {', '.join(STAGE_ORDER)})")
    forced = set(stages) if force is True else set(force or ())
    runtime = make_runtime(recipe)  # an absent device fails here, before any work
    forget_listings()
    run = run_dir_of(recipe, run_dir)
    results = []
    if resume and "distill" in stages and resume_path(run).exists():
        forced.add("distill")  # an interrupted --force run leaves the older, still valid outputs in place
    with run.lock(), resuming(resume):
        if run.manifest_problem():
            recover_manifest(run, recipe, stages, repair=bool(forced))
            forced = {"distill"} & forced if resume else set()
        run.write_resolved_recipe(recipe.to_dict())
        for name in stages:
            if len(stages) > 1 and not STAGES[name].enabled(recipe):
                continue  # off in this recipe (e.g. baseline without report.baseline): only its own command reports that
            results.append(run_stage(STAGES[name], recipe, run, force=name in forced, runtime=runtime))
    return results


def make_runtime(recipe: Recipe) -> Runtime:
    rt = recipe.runtime
    return Runtime(resolve_device(rt.device), channels_last=rt.channels_last, compile=rt.compile)


def recover_manifest(run: RunDir, recipe: Recipe, stages: Sequence[str], repair: bool) -> None:
    """Rebuild a damaged or foreign manifest from the stage records whose artifacts verify.

    Without `repair` (no --force), raise an error that says what --force would do; with it, move
    the manifest aside, write the rebuilt one and say which stages this command reruns.
    """
    problem = run.manifest_problem()
    kept = run.verified_records(STAGE_ORDER)
    with run.provisional(kept):
        rerun = [s for s in stages if STAGES[s].enabled(recipe) and not is_current(STAGES[s], recipe, run)]
    rebuilt = f"{', '.join(kept)} from {'its' if len(kept) == 1 else 'their'} verified artifacts" if kept else "no stage (none could be verified)"
    if not repair:
        raise ArtifactError(f"{run.manifest_path} {problem}; rerun with --force: it is moved aside, rebuilt with {rebuilt}, "
                            f"and {', '.join(rerun) or 'nothing'} rerun{'s' if len(rerun) == 1 else ''}")
    aside = run.rebuild_manifest(kept)
    ui.warn(escape(f"{run.manifest_path} {problem}; moved to {aside.name}; rebuilt {rebuilt}; "
                   f"{'rerunning ' + ', '.join(rerun) if rerun else 'nothing to rerun'}"))


def run_pipeline(recipe: Union[Recipe, str, Path, None] = None, **kwargs) -> list[StageResult]:
    """All stages, teacher → report."""
    return run_stages(recipe, STAGE_ORDER, **kwargs)


def failed_budgets(results: Sequence[StageResult]) -> list[dict]:
    return [line for r in results if r.stage == "validate" for line in r.summary.get("gate", []) if not line["pass"]]


def check_gate(results: Sequence[StageResult]) -> None:
    """Raise GateError naming every failed budget (for --strict)."""
    failed = failed_budgets(results)
    if failed:
        raise GateError("deployment gate failed: " + "; ".join(f"{f['budget']} {f['value']:.4g} > {f['limit']:.4g}" for f in failed))


def apply_feedback(recipe_path: Union[str, Path], results: Sequence[StageResult]) -> Optional[Path]:
    """Write `<recipe>.feedback.yaml` next to the recipe with validate's suggested changes (never the original)."""
    from cann_distill.quant.feedback import write_patched_recipe

    fb = next((r.summary.get("feedback") for r in results if r.stage == "validate"), None)
    if not fb or not fb.get("apply"):
        return None
    recipe_path = Path(recipe_path)
    changes = ", ".join(f"validate.{k}" for k in fb["apply"])
    return write_patched_recipe(recipe_path, read_yaml(recipe_path), fb["apply"], f"feedback applied: {changes}")
