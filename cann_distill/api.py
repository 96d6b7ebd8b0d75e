"""Library entry points: what the CLI calls, usable from Python too."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from rich.markup import escape

from cann_distill.core.errors import ArtifactError, GateError, UsageError
from cann_distill.core.files import sha256_json
from cann_distill.core.recipe import Recipe
from cann_distill.core.recipe_load import load_recipe, read_yaml
from cann_distill.data.loading import forget_listings
from cann_distill.reporting.guard import strict_failure
from cann_distill.runtime import distributed
from cann_distill.runtime.devices import Runtime, channels_last_for, resolve_device, usable_cores
from cann_distill.runtime.terminal import ui
from cann_distill.stages import STAGE_ORDER, STAGES, Observe, Stage, StageResult, is_current, run_stage, stage_for
from cann_distill.stages.beside import Beside, start_beside
from cann_distill.store.rundir import RunDir


def run_dir_of(recipe: Recipe, run_dir: Union[str, Path, None] = None) -> RunDir:
    return RunDir(run_dir or recipe.run_dir or Path("runs") / (recipe.name or "recipe"))


def run_stages(
    recipe: Union[Recipe, str, Path, None],
    stages: Sequence[str] = STAGE_ORDER,
    run_dir: Union[str, Path, None] = None,
    force: Union[bool, Iterable[str]] = False,
    overrides: Optional[list[str]] = None,
    resume: bool = False,
    budget_check: bool = True,
    observe: Observe = Observe(),
    jobs: Optional[int] = None,
) -> list[StageResult]:
    """Run `stages` in order, skipping those whose inputs have not changed.

    `force=True` reruns all of them; an iterable of names reruns just those. `resume=True` lets
    distill continue from its resume checkpoint (saved every epoch and on Ctrl-C). On a damaged
    or foreign manifest, `force` instead rebuilds it (see `recover_manifest`). With `budget_check`, a student
    that cannot meet the target's parameter/size budget stops the run before any stage trains.

    Under torchrun (`cann_distill.runtime.distributed`) rank 0 holds the lock and decides; teacher, select and
    distill run on every rank, validate and report on rank 0 alone. `observe` is handed to every stage (an epoch
    hook, the trackers' naming: `stages.base.Observe`). `jobs`: whether the CE-only baseline trains beside distill
    in a second process (`beside_cores`); it is started with multiprocessing's spawn, so a script calling this with
    `jobs=2` needs the usual `if __name__ == "__main__":` guard.
    """
    from cann_distill.quant.profiles import check_student_budget
    from cann_distill.stages.distill import resume_pending, resuming
    from cann_distill.teaching.targets import check_recipe

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    if recipe.task == "classify":
        check_recipe(recipe)  # what the teacher-target source cannot give the losses: exit 2 before any work
    budget_check = budget_check and recipe.task == "classify"  # task: detect has no INT8 budget check yet
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise UsageError(f"unknown stage(s) {', '.join(unknown)} (known: {', '.join(STAGE_ORDER)})")
    forced = set(stages) if force is True else set(force or ())
    runtime = make_runtime(recipe)  # an absent device fails here, before any work
    forget_listings()
    run = run_dir_of(recipe, run_dir)
    results = []
    if resume and "distill" in stages and resume_pending(run):
        forced.add("distill")  # an interrupted --force run leaves the older, still valid outputs in place
    rt = recipe.runtime
    with distributed.session(runtime.device, rt.backend, rt.dist_timeout_s), contextlib.ExitStack() as held, resuming(resume):
        distributed.check_same("recipe", sha256_json(recipe.to_dict()))
        distributed.check_divisible(training_batch_sizes(recipe, stages))

        def prepare() -> set[str]:  # rank 0 alone under torchrun; the others get its decision
            held.enter_context(run.lock())
            nonlocal forced
            if run.manifest_problem():
                recover_manifest(run, recipe, stages, repair=bool(forced))
                forced = {"distill"} & forced if resume else set()
            if budget_check and "distill" in stages and ("distill" in forced or not is_current(STAGES["distill"], recipe, run)):
                check_student_budget(recipe)
            run.write_resolved_recipe(recipe.to_dict())
            return forced

        forced = distributed.lead(prepare)
        cores = beside_cores(jobs, recipe, stages)
        beside: Optional[Beside] = None
        try:
            for name in stages:
                stage = stage_for(name, recipe)  # the task's own stage (task: detect)
                if len(stages) > 1 and not stage.enabled(recipe):
                    continue  # off in this recipe (e.g. baseline without report.baseline): only its own command reports that
                if name == "distill" and cores and ("distill" in forced or not is_current(stage, recipe, run)):
                    beside = start_beside(STAGES["baseline"], recipe, run, runtime, "baseline" in forced, cores)
                if name == "baseline" and beside is not None:
                    results.append(beside.finish())
                    beside = None
                    continue
                results.append(_run_one(stage, recipe, run, name in forced, runtime, observe))
        finally:
            if beside is not None:  # a stage failed or was interrupted while the baseline trained beside it
                beside.abort()
    return results


def beside_cores(jobs: Optional[int], recipe: Recipe, stages: Sequence[str]) -> int:
    """The cores to split between distill and the CE-only baseline trained beside it; 0: one stage at a time.

    `jobs` 2: the baseline beside distill; 1 or None: one stage at a time. Not the default: it is measured faster only
    for small models on a 2-core CPU (`stages.beside`), where a second thread gains little; with more cores or a larger
    model, halving distill's threads can cost more than the overlap gives, and on an accelerator the two trainings
    would share its memory. Torch's results depend on its thread count, so it also gives other weights than one stage
    at a time. Never on one core, under torchrun or for task: detect, and only when both stages are asked for."""
    if jobs is not None and jobs not in (1, 2):
        raise UsageError(f"--jobs must be 1 (one stage at a time) or 2 (the baseline beside distill), got {jobs}")
    cores = usable_cores()
    if jobs != 2 or cores < 2 or distributed.active() or recipe.task != "classify" or not recipe.report.baseline:
        return 0
    return cores if "distill" in stages and "baseline" in stages else 0


def _run_one(stage: Stage, recipe: Recipe, run: RunDir, force: bool, runtime: Runtime, observe: Observe = Observe()) -> StageResult:
    """`run_stage`; under torchrun a stage that does not shard its work runs on rank 0 alone."""
    if not distributed.active() or stage.all_ranks:
        return run_stage(stage, recipe, run, force=force, runtime=runtime, observe=observe)
    if not distributed.is_main():
        return StageResult(stage.name, "skipped", str(run.root), {}, {}, 0.0, "runs on rank 0 only under torchrun")
    ui.info(f"[dim]{stage.name}: runs on rank 0 only under torchrun (the other {distributed.world() - 1} process(es) have finished)[/dim]")
    with distributed.alone():
        return run_stage(stage, recipe, run, force=force, runtime=runtime, observe=observe)


def training_batch_sizes(recipe: Recipe, stages: Sequence[str]) -> dict[str, int]:
    """The global batch sizes the requested stages train with (torchrun splits each over the ranks): the teacher,
    select's student probe (distill's batch size, for the strategy's default epochs too), distill, and QAD."""
    from cann_distill.selection import SELECTORS
    from cann_distill.stages.select import probe_epochs

    r, default = recipe, recipe.data.batch_size
    sizes = {}
    if "teacher" in stages and (r.teacher.checkpoint is None or r.teacher.train_when_checkpoint) and r.teacher.train.epochs:
        sizes["teacher.train.batch_size" if r.teacher.train.batch_size else "data.batch_size"] = r.teacher.train.batch_size or default
    strategy = SELECTORS.get(r.select.strategy) if r.select.strategy in SELECTORS else None
    probe = "select" in stages and strategy is not None and (strategy.needs_student or strategy.needs_history) and probe_epochs(r) > 0
    if ("distill" in stages and r.distill.epochs) or probe:
        sizes["distill.batch_size" if r.distill.batch_size else "data.batch_size"] = r.distill.batch_size or default
    if "distill" in stages and r.distill.qat.enabled:
        sizes["distill.qat.batch_size" if r.distill.qat.batch_size else "data.batch_size"] = r.distill.qat.batch_size or default
    return sizes


def make_runtime(recipe: Recipe) -> Runtime:
    """The device (under torchrun: the local rank's), memory format, compile and SyncBatchNorm switches."""
    rt = recipe.runtime
    device = distributed.local_device(resolve_device(rt.device))
    if rt.sync_bn and distributed.launched() and device.type == "cpu":
        raise UsageError(
            "runtime.sync_bn: torch's SyncBatchNorm has no CPU kernel; use it with CUDA or NPU devices "
            "(on the CPU each rank keeps its own BatchNorm statistics)"
        )
    return Runtime(device, channels_last=channels_last_for(device, rt.channels_last), compile=rt.compile, sync_bn=rt.sync_bn)


def recover_manifest(run: RunDir, recipe: Recipe, stages: Sequence[str], repair: bool) -> None:
    """Rebuild a damaged or foreign manifest from the stage records whose artifacts verify.

    Without `repair` (no --force), raise an error that says what --force would do; with it, move
    the manifest aside, write the rebuilt one and say which stages this command reruns.
    """
    problem = run.manifest_problem()
    kept = run.verified_records(STAGE_ORDER)
    with run.provisional(kept):
        rerun = [s for s in stages if stage_for(s, recipe).enabled(recipe) and not is_current(STAGES[s], recipe, run)]
    rebuilt = (
        f"{', '.join(kept)} from {'its' if len(kept) == 1 else 'their'} verified artifacts" if kept else "no stage (none could be verified)"
    )
    if not repair:
        raise ArtifactError(
            f"{run.manifest_path} {problem}; rerun with --force: it is moved aside, rebuilt with {rebuilt}, "
            f"and {', '.join(rerun) or 'nothing'} rerun{'s' if len(rerun) == 1 else ''}"
        )
    aside = run.rebuild_manifest(kept)
    ui.warn(
        escape(
            f"{run.manifest_path} {problem}; moved to {aside.name}; rebuilt {rebuilt}; "
            f"{'rerunning ' + ', '.join(rerun) if rerun else 'nothing to rerun'}"
        )
    )


def run_pipeline(recipe: Union[Recipe, str, Path, None] = None, **kwargs) -> list[StageResult]:
    """All stages, teacher → report."""
    return run_stages(recipe, STAGE_ORDER, **kwargs)


def failed_budgets(results: Sequence[StageResult]) -> list[dict]:
    return [line for r in results if r.stage == "validate" for line in r.summary.get("gate", []) if not line["pass"]]


def check_gate(results: Sequence[StageResult]) -> None:
    """Raise GateError naming every failed budget and a distillation that measurably hurt (for --strict)."""
    failed = failed_budgets(results)
    lines = ["deployment gate failed: " + "; ".join(f"{f['budget']} {f['value']:.4g} > {f['limit']:.4g}" for f in failed)] if failed else []
    verdict = next((r.summary.get("distillation") for r in results if r.stage == "report"), None)
    if (line := strict_failure(verdict)) is not None:
        lines.append(line)
    if lines:
        raise GateError("; ".join(lines))


def apply_feedback(recipe_path: Union[str, Path], results: Sequence[StageResult]) -> Optional[Path]:
    """Write `<recipe>.feedback.yaml` next to the recipe with validate's suggested changes (never the original)."""
    from cann_distill.quant.feedback import recipe_key, write_patched_recipe

    fb = next((r.summary.get("feedback") for r in results if r.stage == "validate"), None)
    if not fb or not fb.get("apply"):
        return None
    recipe_path = Path(recipe_path)
    changes = ", ".join(recipe_key(k) for k in fb["apply"])
    return write_patched_recipe(recipe_path, read_yaml(recipe_path), fb["apply"], f"feedback applied: {changes}")
