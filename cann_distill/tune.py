"""`cann-distill tune`: a hyper-parameter search over the recipe's `tune:` keys with Optuna (docs/guides/tune.md).

The teacher and select stages run once in the run dir, as `run` would (skipped when up to date). Each trial applies
its sampled values to the recipe, as `--set` would, and runs distill in its own run dir, `<tune dir>/trial_NNNN/`,
which starts from the run dir's teacher and select (`RunDir.adopt`: hard links and their records); a trial whose
values change what select writes reruns select there, the runner deciding by fingerprint as always. The objective
is the distilled student's val top-1; each epoch's val top-1 goes to the pruner through the stage's epoch hook
(`stages.base.Observe`), and a pruned trial's distill writes nothing. The study is kept in `<run_dir>/tune/study.db`
(SQLite), so a rerun continues it and several processes can share it. The test split is never read for choosing:
`report_test` reads the best trial's test top-1 after the search, and nothing else does.
"""

from __future__ import annotations

import copy
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import yaml
from rich.markup import escape

from cann_distill.api import run_dir_of, run_stages
from cann_distill.core.errors import CannDistillError, StageError, UsageError, preview
from cann_distill.core.files import sha256_json, write_json_atomic, write_text_atomic
from cann_distill.core.recipe import Recipe
from cann_distill.core.recipe_load import TUNABLE, apply_overrides, recipe_data, resolve, split_key
from cann_distill.core.recipe_tune import ParamSpec, TuneConfig
from cann_distill.runtime import distributed
from cann_distill.runtime.terminal import ui
from cann_distill.stages import Observe
from cann_distill.stages.status import changed_keys
from cann_distill.store.rundir import RunDir

INSTALL = "pip install 'cann-distill[tune]'"
STARTUP_TRIALS = 5  # the median pruner stops nothing until this many trials are complete (Optuna's default)
_STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}  # as listed
_STUDY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def require_optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise UsageError(f"tune needs optuna, which is not installed: {INSTALL}") from None
    return optuna


@dataclass
class Search:
    """One `tune` call: the recipe as data and resolved, where the study and its trials live."""

    data: dict[str, Any]  # raw recipe data (defaults merged, --set applied), tune: included
    written: dict[str, Any]  # the recipe file as written
    source: Path  # that file
    overrides: list[str]  # the command's --set items
    recipe: Recipe
    tune: TuneConfig
    run: RunDir
    folder: Path  # <run_dir>/tune, or <run_dir>/tune/<study> for a study named otherwise than the recipe
    study_name: str

    @property
    def storage(self) -> str:
        return f"sqlite:///{(self.run.root / 'tune' / 'study.db').resolve()}"

    def base(self) -> dict[str, Any]:
        """The recipe data every trial starts from: the `tune:` section removed."""
        return {k: v for k, v in self.data.items() if k != "tune"}

    def trial_recipe(self, params: dict[str, Any]) -> Recipe:
        return resolve(apply_overrides(self.base(), overrides_of(params)), source="tune trial", name=self.recipe.name)

    def identity(self) -> dict[str, Any]:
        """What a study is tied to: the recipe sections its trials' results depend on (not runtime: where a trial
        runs changes no result; not validate, report: they run after the trials) and the metric."""
        recipe = {k: v for k, v in self.recipe.to_dict().items() if k in (*TUNABLE, "task") and k != "runtime"}
        return {"recipe": recipe, "metric": self.tune.metric}


def overrides_of(params: dict[str, Any]) -> list[str]:
    """Trial values as `--set` items (JSON is YAML, so each value reads back as itself)."""
    return [f"{key}={json.dumps(value)}" for key, value in params.items()]


def prepare(
    recipe_path: Union[str, Path, None],
    overrides: Optional[list[str]] = None,
    trials: Optional[int] = None,
    run_dir: Union[str, Path, None] = None,
    study_name: Optional[str] = None,
) -> tuple[Search, int]:
    """Everything checked before any work: optuna, the recipe and its tune: section, the trial count, the study name."""
    require_optuna()
    if distributed.launched():
        raise UsageError("tune runs its trials in one process each; start it without torchrun (several tune processes can share a study)")
    data, doc, path = recipe_data(recipe_path, overrides)
    recipe = resolve(data, source=str(path), name=path.stem, doc=doc)
    if recipe.tune is None:
        raise UsageError(f"{path}: no tune: section; add one, e.g. tune: {{distill.lr: {{low: 0.01, high: 0.2, log: true}}}}")
    total = trials if trials is not None else recipe.tune.trials
    if total is None:
        raise UsageError("how many trials? pass --trials N or set tune.trials in the recipe")
    if total < 1:
        raise UsageError(f"--trials: needs at least 1 trial, got {total}")
    name = recipe.name or "recipe"
    if study_name is not None and not _STUDY_NAME.match(study_name):
        raise UsageError(f"--study-name: letters, digits, '_', '.' and '-' only (a folder is named after it), got {preview(study_name)}")
    run = run_dir_of(recipe, run_dir)
    folder = run.root / "tune" if study_name in (None, name) else run.root / "tune" / str(study_name)
    return Search(data, doc.data, path, list(overrides or []), recipe, recipe.tune, run, folder, study_name or name), total


# ----------------------------------------------------------------------------- the study


def pruner_warmup_epochs(asked: Optional[int], epochs: int) -> int:
    """Epochs every trial runs before the pruner may stop it: as asked, else a quarter of the epochs, rounded up."""
    return asked if asked is not None else -(-epochs // 4)


def open_study(search: Search) -> Any:
    """The study in <run_dir>/tune/study.db (created, or loaded to continue); refused when it was made for another recipe."""
    optuna = require_optuna()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # trials are reported here, one line each
    search.folder.mkdir(parents=True, exist_ok=True)
    if search.tune.pruner == "median":
        # Optuna prunes from the step equal to n_warmup_steps on; steps are epochs counted from 1
        warmup = pruner_warmup_epochs(search.tune.pruner_warmup_epochs, search.recipe.distill.epochs)
        pruner = optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS, n_warmup_steps=warmup + 1)
    else:
        pruner = optuna.pruners.NopPruner()
    study = optuna.create_study(
        study_name=search.study_name, storage=search.storage, direction="maximize", pruner=pruner, load_if_exists=True
    )
    identity = search.identity()
    recorded = study.user_attrs.get("identity")
    if recorded is None:
        study.set_user_attr("identity", identity)
    elif sha256_json(recorded) != sha256_json(identity):
        changed = changed_keys(recorded, identity)
        raise UsageError(
            f"study '{search.study_name}' in {search.run.root / 'tune' / 'study.db'} was made with another recipe "
            f"({'; '.join(changed[:4]) or 'changed'}); continue it with that recipe, or start another with --study-name NAME"
        )
    # seeded by the recipe; a continued study offsets the seed by its trials so far (else it would redraw them)
    seed = search.recipe.seed + len(study.trials)
    sampler = search.tune.sampler
    study.sampler = optuna.samplers.TPESampler(seed=seed) if sampler == "tpe" else optuna.samplers.RandomSampler(seed=seed)
    return study


def suggest(trial: Any, key: str, spec: ParamSpec) -> Any:
    """The trial's value for `key` from its range or choices."""
    if spec.choices is not None:
        return trial.suggest_categorical(key, spec.choices)
    if spec.integer:
        return trial.suggest_int(key, spec.low, spec.high, step=spec.step or 1, log=spec.log)
    step = float(spec.step) if spec.step is not None else None
    return trial.suggest_float(key, float(spec.low), float(spec.high), step=step, log=spec.log)  # type: ignore[arg-type]


class TrialReporter:
    """distill's epoch hook in a trial: each epoch's val top-1 to the study; stop the trial when the pruner says
    so (never after the last epoch: a finished trial is worth its result)."""

    def __init__(self, trial: Any, epochs: int) -> None:
        self.trial, self.epochs = trial, epochs
        self.curve: list[float] = []

    def __call__(self, epoch: int, row: dict[str, float]) -> None:
        if "val_acc" not in row:
            return
        step = int(row.get("epoch", epoch + 1))
        self.curve = self.curve[: step - 1] + [float(row["val_acc"])]
        self.trial.report(float(row["val_acc"]), step)
        if step < self.epochs and self.trial.should_prune():
            optuna = require_optuna()
            raise optuna.TrialPruned(f"epoch {step}: val top-1 {row['val_acc']:.4f} is below the median of earlier trials")


def trial_dir(search: Search, number: int) -> Path:
    return search.folder / f"trial_{number:04d}"


def run_trial(search: Search, trial: Any, observe_root: Path) -> float:
    """The objective: the trial's values applied, its distill run (teacher and select taken from the run dir)."""
    params = {key: suggest(trial, key, spec) for key, spec in search.tune.space().items()}
    shown = ", ".join(f"{k}={_short(v)}" for k, v in params.items())
    ui.info(f"[bold]tune[/bold]: trial {trial.number}: {escape(shown)}")
    root = trial_dir(search, trial.number)
    trial.set_user_attr("run_dir", str(root))
    reporter = TrialReporter(trial, search.recipe.distill.epochs)
    # trackers: <run_dir>/tensorboard/trial_NNNN (another study's: <study>/trial_NNNN), one MLflow run per trial
    observe = Observe(on_epoch_end=reporter, tracker_root=observe_root, tracker_run=root.relative_to(search.run.root / "tune").as_posix())
    started = time.perf_counter()
    try:
        recipe = search.trial_recipe(params)
        reporter.epochs = recipe.distill.epochs
        run = RunDir(root)
        with run.lock():
            for stage in ("teacher", "select"):
                run.adopt(search.run, stage)
        results = run_stages(recipe, ["teacher", "select", "distill"], run_dir=root, observe=observe, budget_check=False)
    except CannDistillError as exc:
        trial.set_user_attr("error", str(exc))
        ui.warn(escape(f"tune: trial {trial.number} failed: {exc}"))
        raise
    except require_optuna().TrialPruned:
        for state in root.glob(".distill*.resume.pt"):  # a pruned trial is never continued
            state.unlink(missing_ok=True)
        raise
    finally:
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 2))
        trial.set_user_attr("curve", reporter.curve)
    summary = results[-1].summary
    curve = reporter.curve or _recorded_curve(root)  # a distill already up to date in this folder reports no epochs
    trial.set_user_attr("curve", curve)
    trial.set_user_attr("val_acc", summary["val_acc"])
    value = float(summary["val_acc"]) if search.tune.metric == "val_acc" else max(curve, default=float(summary["val_acc"]))
    return value


def _recorded_curve(root: Path) -> list[float]:
    try:
        history = json.loads((root / "distill" / "metrics.json").read_text()).get("history", [])
    except (OSError, ValueError):
        return []
    return [float(row["val_acc"]) for row in history if isinstance(row, dict) and "val_acc" in row]


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def search_study(search: Search, study: Any, total: int, timeout: Optional[float] = None) -> None:
    """Trials until the study holds `total` finished ones (from every process sharing it), or `timeout` seconds pass."""
    optuna = require_optuna()
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
    left = total - len(study.get_trials(deepcopy=False, states=finished))
    if left <= 0:
        ui.info(f"tune: study '{search.study_name}' already holds {total} finished trial(s); a larger --trials continues it")
        return

    def report(study: Any, trial: Any) -> None:
        value = f"val top-1 {trial.value:.4f}" if trial.value is not None else _STATES.get(trial.state.name, "")
        best = f" (best: trial {study.best_trial.number}, {study.best_value:.4f})" if _has_complete(study) else ""
        ui.info(f"tune: trial {trial.number}: {value}{best}")

    callbacks = [optuna.study.MaxTrialsCallback(total, states=finished), report]
    objective = lambda trial: run_trial(search, trial, search.run.root)  # noqa: E731
    study.optimize(objective, n_trials=left, timeout=timeout, catch=(CannDistillError,), callbacks=callbacks)


def _has_complete(study: Any) -> bool:
    optuna = require_optuna()
    return bool(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


# ----------------------------------------------------------------------------- results


def trial_rows(search: Search, study: Any) -> list[dict[str, Any]]:
    """Every trial of the study (from every process that shared it), for trials.json and the table. No test numbers."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        curve = t.user_attrs.get("curve") or [t.intermediate_values[k] for k in sorted(t.intermediate_values)]
        rows.append(
            {
                "number": t.number,
                "state": _STATES.get(t.state.name, t.state.name.lower()),
                "params": dict(t.params),
                "value": t.value,
                "val_acc": t.user_attrs.get("val_acc"),
                "val_curve": curve,
                "epochs": len(curve),
                "seconds": t.user_attrs.get("seconds"),
                "run_dir": t.user_attrs.get("run_dir", str(trial_dir(search, t.number))),
                "error": t.user_attrs.get("error"),
            }
        )
    return rows


def graft(raw: Any, merged: Any, parts: list[Union[str, int]]) -> None:
    """Copy into `raw` (the recipe as written) the part of `merged` (defaults filled in) that a key path passes
    through and `raw` leaves to the defaults, so the key can be set in `raw` (`distill.losses[1].temperature` under
    the default loss list)."""
    node, full = raw, merged
    for part in parts[:-1]:
        if isinstance(node, dict) and isinstance(full, dict) and part in full and (part not in node or node[part] is None):
            node[part] = copy.deepcopy(full[part])
        try:
            node, full = node[part], full[part]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            return


def best_recipe_text(search: Search, best: Any) -> str:
    """The recipe as written, with the command's --set items and the best trial's values applied and tune: removed."""
    data = copy.deepcopy(search.written)
    data.pop("tune", None)
    items = [*search.overrides, *overrides_of(best.params)]
    for item in items:
        graft(data, search.data, split_key(item.split("=", 1)[0].strip()))
    data = apply_overrides(data, items)
    data.setdefault("name", search.recipe.name)
    data["run_dir"] = str(search.run.root)  # `cann-distill run` on this file reuses the run dir's teacher and select
    values = ", ".join(f"{k}={_short(v)}" for k, v in best.params.items())
    head = (
        f"# the best trial of tune study '{search.study_name}' (trial {best.number}, {search.tune.metric} {best.value:.4f}) "
        f"over {search.source.name}: {values}\n# generated by `cann-distill tune`; its tune: section removed\n"
    )
    return head + yaml.safe_dump(data, sort_keys=False)


def best_test_top1(row: dict[str, Any]) -> dict[str, Any]:
    """The best trial's student on the test split, read from its distill metrics (asked for after the search only)."""
    try:
        metrics = json.loads((Path(row["run_dir"]) / "distill" / "metrics.json").read_text())
    except (OSError, ValueError):
        return {"trial": row["number"], "test_acc": None, "why": "the best trial's distill/metrics.json is missing"}
    acc = metrics.get("test_acc")
    why = None if acc is not None else "this recipe's data has no test split (digits: data.test_fraction; imagefolder: test/)"
    return {"trial": row["number"], "test_acc": acc, **({"why": why} if why else {})}


def write_results(search: Search, study: Any, report_test: bool = False) -> dict[str, Any]:
    """trials.json, best.yaml (when a trial completed) and the command's result."""
    rows = trial_rows(search, study)
    write_json_atomic(search.folder / "trials.json", {"study": search.study_name, "metric": search.tune.metric, "trials": rows})
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    result: dict[str, Any] = {
        "study": search.study_name,
        "storage": search.storage,
        "dir": str(search.folder),
        "metric": search.tune.metric,
        "keys": list(search.tune.space()),
        "counts": counts,
        "trials": rows,
        "best": None,
    }
    if not _has_complete(study):
        return result
    best = study.best_trial
    path = search.folder / "best.yaml"
    write_text_atomic(path, best_recipe_text(search, best))
    row = next(r for r in rows if r["number"] == best.number)
    result["best"] = {
        "number": best.number,
        "value": best.value,
        "params": dict(best.params),
        "recipe": str(path),
        "run_dir": row["run_dir"],
    }
    if report_test:
        result["test"] = best_test_top1(row)
    return result


def tune(
    recipe_path: Union[str, Path, None],
    overrides: Optional[list[str]] = None,
    trials: Optional[int] = None,
    run_dir: Union[str, Path, None] = None,
    study_name: Optional[str] = None,
    timeout: Optional[float] = None,
    report_test: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Search the recipe's `tune:` space until the study holds `trials` finished trials; the result `--json` prints.

    A rerun continues the study up to that total; several processes may share it. Raises StageError when no trial
    completed (trials.json says why)."""
    search, total = prepare(recipe_path, overrides, trials, run_dir, study_name)
    run_stages(search.recipe, ["teacher", "select"], run_dir=search.run.root, force=force, budget_check=False)
    study = open_study(search)
    try:
        search_study(search, study, total, timeout)
    finally:  # an interrupted search still leaves its trials listed
        result = write_results(search, study, report_test)
    if result["best"] is None:
        counts = ", ".join(f"{n} {state}" for state, n in result["counts"].items())
        raise StageError(f"tune: no trial completed ({counts}); see {search.folder / 'trials.json'}")
    return result
