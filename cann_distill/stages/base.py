"""Stage protocol and the runner: fingerprint inputs, skip if up to date, stage outputs atomically."""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Union

from cann_distill.core.errors import MissingInputError, StageError
from cann_distill.core.files import sha256_file, sha256_json
from cann_distill.core.recipe import Recipe
from cann_distill.data.loading import SAMPLE_INVARIANT
from cann_distill.runtime import distributed
from cann_distill.runtime.devices import CPU, Runtime
from cann_distill.runtime.terminal import ui
from cann_distill.store.rundir import RunDir, StageRecord, library_versions


@dataclass
class StageResult:
    stage: str
    status: Literal["done", "skipped"]
    run_dir: str
    outputs: dict[str, str]
    summary: dict[str, Any]
    seconds: float
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Observe:
    """Who watches a training stage's epochs beside the stage itself (`cann-distill tune`'s trial), and under which
    name the recipe's experiment trackers (report.trackers) record the run. None of it is part of a fingerprint."""

    on_epoch_end: Optional[Callable[[int, dict[str, float]], None]] = None
    """Called after each training epoch with its history row (`val_acc` among them); an exception it raises stops
    the stage, which then writes nothing (the runner's staging folder is discarded)."""
    tracker_root: Optional[Path] = None  # where report.trackers write (default: the run dir)
    tracker_run: Optional[str] = None  # the trackers' name for this run (default: the stage's name)


@dataclass
class Context:
    """What a stage gets: the recipe, the run dir and the upstream artifacts it declared."""

    recipe: Recipe
    run: RunDir
    out: Path  # staging folder: write outputs here
    artifacts: dict[str, Path] = field(default_factory=dict)  # "select/index.csv" -> path
    hashes: dict[str, str] = field(default_factory=dict)  # "select/index.csv" -> sha256, as verified by the runner
    fingerprint: str = ""  # of this stage's inputs, as the manifest will record it
    runtime: Runtime = CPU  # the device torch work runs on (not part of the fingerprint)
    missing: dict[str, str] = field(default_factory=dict)  # optional artifact -> why it is not available
    stale: dict[str, str] = field(default_factory=dict)  # optional artifact used although its stage is not current
    observe: Observe = Observe()  # the epoch hook and tracker naming the caller passed to the runner


class Stage:
    """A stage declares its recipe sections and upstream artifacts; `execute` does the work."""

    name: str = ""
    version: int = 1  # bump when the stage's code changes what it writes
    sections: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()  # artifacts "stage/file" produced upstream
    ignore: tuple[str, ...] = ()  # "section.key" paths that cannot change this stage's outputs
    all_ranks: bool = False  # under torchrun: every rank runs it (rank 0 writes); otherwise rank 0 alone
    optional: tuple[str, ...] = ()  # artifacts used when available; why one is not lands in Context.missing
    off_summary: dict[str, Any] = {}  # the summary its command reports when `enabled` is false

    def enabled(self, recipe: Recipe) -> bool:
        """False: the recipe turns this stage off; the runner skips it and writes nothing."""
        return True

    def extra_inputs(self, recipe: Recipe) -> dict[str, Any]:
        """Inputs beyond recipe sections and artifacts (file listings, external checkpoints)."""
        return {}

    def needs_for(self, recipe: Recipe) -> tuple[str, ...]:
        """The upstream artifacts this recipe makes the stage read (default: `needs`)."""
        return self.needs

    def execute(self, ctx: Context) -> dict[str, Any]:
        """Write outputs into ctx.out; return a small JSON summary for the manifest."""
        raise NotImplementedError


def _checkpoint_hashes(recipe: Recipe) -> dict[str, Optional[str]]:
    out = {}
    for role in ("teacher", "student"):
        ckpt = getattr(recipe, role).checkpoint
        out[role] = sha256_file(Path(ckpt)) if ckpt and Path(ckpt).is_file() else None
    return out


ALWAYS_IGNORED = tuple(f"data.{key}" for key in SAMPLE_INVARIANT)


def _section(recipe: Recipe, name: str, ignore: tuple[str, ...]) -> Any:
    section = recipe.section(name)
    for path in ignore + ALWAYS_IGNORED:
        head, _, key = path.partition(".")
        if head == name:
            section.pop(key, None)
    return section


def compute_inputs(stage: Stage, recipe: Recipe, run: RunDir) -> tuple[dict[str, Any], dict[str, Path]]:
    """Fingerprint inputs and upstream artifact paths; raises if an upstream stage is missing or stale."""
    artifacts: dict[str, Path] = {}
    hashes: dict[str, str] = {}
    for rel in stage.needs_for(recipe):
        upstream = rel.split("/", 1)[0]
        if not is_current(stage_for(upstream, recipe), recipe, run):
            rec = run.record(upstream)
            why = "has not run" if rec is None else "is out of date for this recipe"
            raise MissingInputError(
                f"{stage.name} needs {rel}, but the '{upstream}' stage {why}: run `cann-distill {upstream}` first (or `cann-distill run`)"
            )
        path, digest = run.require(upstream, rel, stage.name)
        artifacts[rel], hashes[rel] = path, digest
    missing: dict[str, str] = {}
    stale: dict[str, str] = {}
    for rel in stage.optional:
        try:
            artifacts[rel], hashes[rel], why = _optional_input(stage, recipe, run, rel)
        except StageError as exc:
            missing[rel] = str(exc)
            continue
        if why:
            stale[rel] = why
    inputs = {
        "stage_version": stage.version,
        "sections": {s: (_section(recipe, s, stage.ignore) if s != "seed" else recipe.seed) for s in stage.sections},
        "artifacts": hashes,
        "extra": stage.extra_inputs(recipe),
    }
    if missing:
        inputs["missing"] = missing
    if stale:
        inputs["stale"] = stale
    return inputs, artifacts


def _optional_input(stage: Stage, recipe: Recipe, run: RunDir, rel: str) -> tuple[Path, str, Optional[str]]:
    """Path and hash of an intact optional artifact, and why its stage is not current (None when it is).

    The file itself must be there and hash right; a stage made stale by a changed recipe or a
    damaged sibling output is used as it is, and the caller is told.
    """
    upstream = stage_for(rel.split("/", 1)[0], recipe)
    if not upstream.enabled(recipe):
        raise MissingInputError(f"the '{upstream.name}' stage is off in this recipe")
    path, digest = run.require(upstream.name, rel, stage.name)
    stale = None
    if not is_current(upstream, recipe, run):
        stale = (
            f"the '{upstream.name}' stage is not current for this recipe (its recipe sections, upstream artifacts or another "
            f"of its outputs changed); used as it is, `cann-distill run` brings it up to date"
        )
    return path, digest, stale


@dataclass
class Freshness:
    """Whether a stage's record still vouches for its outputs, and what decided it (`cann-distill status` explains it)."""

    record: Optional[StageRecord]
    inputs: Optional[dict[str, Any]]  # the stage's inputs now; None when an upstream stage is not current
    problem: Literal["", "not run", "upstream", "inputs", "outputs"]
    detail: str = ""  # for "upstream": which upstream stage and what to run

    @property
    def current(self) -> bool:
        return self.problem == ""


def freshness(stage: Stage, recipe: Recipe, run: RunDir) -> Freshness:
    """The runner's skip decision: a record whose fingerprint matches the inputs now, with its outputs intact."""
    stage = stage_for(stage, recipe)
    rec = run.record(stage.name)
    if rec is None:
        return Freshness(None, None, "not run")
    try:
        inputs, _ = compute_inputs(stage, recipe, run)
    except MissingInputError as exc:
        return Freshness(rec, None, "upstream", str(exc))
    if rec.fingerprint != sha256_json(inputs):
        return Freshness(rec, inputs, "inputs")
    return Freshness(rec, inputs, "" if run.outputs_intact(rec) else "outputs")


def is_current(stage: Stage, recipe: Recipe, run: RunDir) -> bool:
    return freshness(stage, recipe, run).current


@dataclass
class Plan:
    """What rank 0 decided about a stage: its inputs and, when it is up to date, its record."""

    inputs: dict[str, Any]
    artifacts: dict[str, Path]
    fingerprint: str
    current: Optional[StageRecord]


def plan_stage(stage: Stage, recipe: Recipe, run: RunDir, force: bool = False) -> Plan:
    inputs, artifacts = compute_inputs(stage, recipe, run)
    fingerprint = sha256_json(inputs)
    rec = run.record(stage.name)
    current = rec if not force and rec is not None and rec.fingerprint == fingerprint and run.outputs_intact(rec) else None
    return Plan(inputs, artifacts, fingerprint, current)


def run_stage(
    stage: Stage, recipe: Recipe, run: RunDir, force: bool = False, runtime: Runtime = CPU, observe: Observe = Observe()
) -> StageResult:
    """Run one stage (the caller holds the run-dir lock; under torchrun rank 0 does and decides for every rank)."""
    stage = stage_for(stage, recipe)
    if not stage.enabled(recipe):
        return StageResult(stage.name, "skipped", str(run.root), {}, dict(stage.off_summary), 0.0, "off in this recipe")
    plan = distributed.lead(lambda: plan_stage(stage, recipe, run, force))
    rec = plan.current
    if rec is not None:
        ui.info(f"[dim]{stage.name}: up to date, skipped (--force reruns it)[/dim]")
        return StageResult(stage.name, "skipped", str(run.root), rec.outputs, rec.summary, 0.0, "up to date")
    ui.info(f"[bold cyan]{stage.name}[/bold cyan]: running")
    started = time.time()
    t0 = time.perf_counter()

    if not distributed.is_main():  # a follower: same work, outputs thrown away; rank 0 writes them
        with tempfile.TemporaryDirectory(prefix=f"cann-distill-rank{distributed.rank()}-") as tmp:
            summary = stage.execute(stage_context(recipe, run, Path(tmp), plan, runtime, observe))
        distributed.barrier()  # until rank 0 has recorded the stage
        return StageResult(stage.name, "done", str(run.root), {}, summary, time.perf_counter() - t0, "rank 0 wrote the outputs")
    with run.staging(stage.name) as out:
        summary = stage.execute(stage_context(recipe, run, out, plan, runtime, observe))
        outputs = staged_outputs(stage.name, out)
        run.forget(stage.name)  # the old record must not vouch for the folder being replaced
    seconds = time.perf_counter() - t0
    result = record_stage(stage.name, run, plan, outputs, summary, started, seconds)
    distributed.barrier()  # the other ranks wait until the outputs and the record are in place
    return result


def stage_context(recipe: Recipe, run: RunDir, out: Path, plan: Plan, runtime: Runtime = CPU, observe: Observe = Observe()) -> Context:
    """The stage's view of the job as `plan` found it, writing into `out`."""
    inputs = plan.inputs
    missing, stale = dict(inputs.get("missing", {})), dict(inputs.get("stale", {}))
    return Context(recipe, run, out, plan.artifacts, dict(inputs["artifacts"]), plan.fingerprint, runtime, missing, stale, observe)


def staged_outputs(name: str, out: Path) -> dict[str, str]:
    """Every file a stage wrote into its staging folder, as "stage/relative/path" -> sha256."""
    return {f"{name}/{p.relative_to(out).as_posix()}": sha256_file(p) for p in sorted(out.rglob("*")) if p.is_file()}


def record_stage(
    name: str, run: RunDir, plan: Plan, outputs: dict[str, str], summary: dict[str, Any], started: float, seconds: float
) -> StageResult:
    """Write the manifest record of a stage whose outputs are in place, and say it is done."""
    run.write_record(name, StageRecord(plan.fingerprint, plan.inputs, outputs, started, seconds, library_versions(), summary))
    ui.info(f"[green]{name}[/green]: done in {seconds:.1f}s")
    return StageResult(name, "done", str(run.root), outputs, summary, seconds)


STAGES: dict[str, Stage] = {}
TASK_STAGES: dict[tuple[str, str], Stage] = {}
"""(task, name) -> the stage doing `name`'s job for recipes of another task than classify (`register_stage(..., task=)`)."""


def register_stage(stage: Stage, task: str = "classify") -> Stage:
    """A stage for `task` (recipe key `task`); a classify stage is also the one every other task falls back on."""
    if task == "classify":
        STAGES[stage.name] = stage
    else:
        TASK_STAGES[(task, stage.name)] = stage
    return stage


def stage_for(stage: Union[str, Stage], recipe: Recipe) -> Stage:
    """The stage that does this stage's job for the recipe's task: its own for `task: detect`, else the one given."""
    name = stage if isinstance(stage, str) else stage.name
    found = TASK_STAGES.get((recipe.task, name))
    if found is not None:
        return found
    return STAGES[name] if isinstance(stage, str) else stage
