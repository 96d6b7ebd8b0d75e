"""What `cann-distill status` shows: each stage up to date, stale (and why) or missing, from the runner's own
skip decision (`base.freshness`), without running or locking anything; and the check that `--resume` would
continue the checkpoint it finds rather than a run of another recipe."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from cann_distill.core.errors import MissingInputError, StageError, UsageError, preview
from cann_distill.core.recipe import Recipe
from cann_distill.core.registry import suggest
from cann_distill.stages.base import STAGES, Stage, freshness, plan_stage
from cann_distill.store.rundir import RESOLVED, STAGE_ORDER, RunDir

MAX_CHANGES = 4  # changed keys named per reason; the rest are counted


@dataclass
class StageStatus:
    stage: str
    state: Literal["up to date", "stale", "missing", "off"]
    why: list[str] = field(default_factory=list)
    finished: Optional[float] = None  # epoch seconds the recorded run ended

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fmt(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    text = text.removesuffix("...").strip()
    return text if len(text) <= 40 else text[:39] + "…"


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """`a.b: 3 → 4` for every leaf that differs between two nested mappings (lists compare whole)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                out.append(f"{path}: added ({_fmt(new[key])})")
            elif key not in new:
                out.append(f"{path}: removed")
            else:
                out += changed_keys(old[key], new[key], path)
        return out
    return [] if old == new else [f"{prefix or 'value'}: {_fmt(old)} → {_fmt(new)}"]


def _listed(kind: str, items: list[str]) -> str:
    shown = ", ".join(items[:MAX_CHANGES])
    more = f" (+{len(items) - MAX_CHANGES} more)" if len(items) > MAX_CHANGES else ""
    return f"{kind}: {shown}{more}"


def input_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why a stage's fingerprint moved: the parts of its recorded inputs that differ from the inputs now."""
    why = []
    if old.get("stage_version") != new.get("stage_version"):
        why.append(f"the stage's code changed (version {old.get('stage_version')} → {new.get('stage_version')})")
    sections = changed_keys(old.get("sections", {}), new.get("sections", {}))
    if sections:
        why.append(_listed("recipe changed", sections))
    old_art, new_art = old.get("artifacts", {}), new.get("artifacts", {})
    artifacts = sorted(rel for rel in set(old_art) | set(new_art) if old_art.get(rel) != new_art.get(rel))
    if artifacts:
        why.append(_listed("upstream output changed", artifacts))
    extra = changed_keys(old.get("extra", {}), new.get("extra", {}))
    if extra:
        why.append(_listed("other input changed", extra))
    for key, label in (("missing", "optional input unavailable"), ("stale", "optional input from a stale stage")):
        if old.get(key, {}) != new.get(key, {}):
            why.append(_listed(label, sorted(set(old.get(key, {})) ^ set(new.get(key, {}))) or sorted(new.get(key, {}))))
    return why or ["its inputs changed"]


def _damaged_outputs(run: RunDir, outputs: dict[str, str]) -> list[str]:
    out = []
    for rel, digest in outputs.items():
        path = run.path(rel)
        if not path.is_file():
            out.append(f"{rel} missing")
        elif run.file_hash(path) != digest:
            out.append(f"{rel} modified")
    return out


def _waits_on(stage: Stage, recipe: Recipe, earlier: dict[str, StageStatus], detail: str) -> str:
    """`needs distill, which is stale` from the upstream stages' own status (the runner's message names a command)."""
    for rel in stage.needs_for(recipe):
        up = earlier.get(rel.split("/", 1)[0])
        if up is not None and up.state != "up to date":
            return f"needs {up.stage}, which is {up.state}"
    return detail


def stage_status(stage: Stage, recipe: Recipe, run: RunDir, earlier: Optional[dict[str, StageStatus]] = None) -> StageStatus:
    """One stage's state; `earlier`: the status of the stages before it, to say which upstream stage it waits on."""
    if not stage.enabled(recipe):
        return StageStatus(stage.name, "off", ["off in this recipe"])
    try:
        fresh = freshness(stage, recipe, run)
    except StageError as exc:  # an upstream artifact that no longer matches its hash
        rec = run.record(stage.name)
        return StageStatus(stage.name, "stale" if rec else "missing", [str(exc)])
    rec = fresh.record
    finished = rec.started + rec.seconds if rec is not None else None
    if fresh.problem == "":
        return StageStatus(stage.name, "up to date", [], finished)
    if fresh.problem == "not run":
        return StageStatus(stage.name, "missing", ["has not run"])
    if fresh.problem == "upstream":
        return StageStatus(stage.name, "stale", [_waits_on(stage, recipe, earlier or {}, fresh.detail)], finished)
    if fresh.problem == "outputs":
        return StageStatus(
            stage.name, "stale", [_listed("outputs changed on disk", _damaged_outputs(run, rec.outputs if rec else {}))], finished
        )
    assert rec is not None and fresh.inputs is not None
    return StageStatus(stage.name, "stale", input_changes(rec.inputs, fresh.inputs), finished)


def run_status(recipe: Recipe, run: RunDir) -> list[StageStatus]:
    """Every stage in pipeline order. A damaged manifest is reported as the runner would report it."""
    problem = run.manifest_problem()
    if problem:
        raise StageError(f"{run.manifest_path} {problem}; `cann-distill run --force` rebuilds it from the verified stage records")
    done: dict[str, StageStatus] = {}
    for name in STAGE_ORDER:
        done[name] = stage_status(STAGES[name], recipe, run, done)
    return list(done.values())


def recorded_recipe(run: RunDir) -> Optional[dict[str, Any]]:
    """The resolved recipe the last command wrote into the run dir, None when there is none (or it does not parse)."""
    try:
        data = yaml.safe_load((run.root / RESOLVED).read_text())
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


def resume_problem(recipe: Recipe, run: RunDir) -> Optional[str]:
    """Why `--resume` cannot continue the distill checkpoint in `run` with this recipe; None when it can (or there is none).

    Checked before any stage runs, so a changed recipe is refused before the teacher retrains; the
    message names the recipe keys that changed since the interrupted run.
    """
    from cann_distill.stages.distill import resume_path
    from cann_distill.training.resume import Checkpointing, read_resume

    path = resume_path(run)
    if not path.exists():
        return None
    try:
        fingerprint = plan_stage(STAGES["distill"], recipe, run).fingerprint  # what the runner will hand distill
    except MissingInputError:  # teacher or select must rerun first: their new outputs change distill's inputs
        fingerprint = ""
    try:
        read_resume(Checkpointing(path, fingerprint))
    except UsageError:
        old = recorded_recipe(run)
        keys = changed_keys(old, recipe.to_dict()) if old is not None else []
        what = _listed("changed", keys) if keys else "its data or an upstream stage's outputs changed"
        return (
            f"--resume: {path.name} was saved by another configuration ({what}); "
            "undo the change to continue, or rerun without --resume to start distill over"
        )
    return None


def run_dir_recipe(folder: Path) -> Path:
    """The recipe a run dir records (its recipe.resolved.yaml); a usage error when the folder is no run dir."""
    path = folder / RESOLVED
    if not path.is_file():
        raise UsageError(f"{folder} is a folder but not a run dir (no {RESOLVED}); pass a RECIPE or a run dir")
    return path


def stage_span(first: Optional[str], last: Optional[str]) -> list[str]:
    """The stages from `first` to `last` in pipeline order (`run --from/--to`); a usage error for a name or order that is wrong."""
    for flag, name in (("--from", first), ("--to", last)):
        if name is not None and name not in STAGE_ORDER:
            raise UsageError(f"{flag}: unknown stage {preview(name)}{suggest(name, list(STAGE_ORDER))} (stages: {' → '.join(STAGE_ORDER)})")
    i = STAGE_ORDER.index(first) if first else 0
    j = STAGE_ORDER.index(last) if last else len(STAGE_ORDER) - 1
    if i > j:
        raise UsageError(f"--from {first} comes after --to {last} (stages run {' → '.join(STAGE_ORDER)})")
    return list(STAGE_ORDER[i : j + 1])
