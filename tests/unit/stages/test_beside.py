"""The CE-only baseline trained in a second process beside distill: recorded as if run in order, nothing left behind
when either process fails, and the cores shared and given back."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from cann_distill.api import beside_cores, run_stages
from cann_distill.core.errors import StageError, UsageError
from cann_distill.core.recipe import Recipe
from cann_distill.core.recipe_load import load_recipe
from cann_distill.runtime.devices import CPU
from cann_distill.stages.base import Observe
from cann_distill.stages.beside import start_beside, thread_split
from cann_distill.store.rundir import RunDir
from tests.beside_stages import Sleeps, Writes, WritesThenFails
from tests.conftest import TINY

ALL = ["teacher", "select", "distill", "baseline"]


@pytest.mark.parametrize("cores, split", [(1, (1, 1)), (2, (1, 1)), (3, (2, 1)), (16, (8, 8))])
def test_the_cores_are_halved_and_the_parent_keeps_the_odd_one(cores: int, split: tuple[int, int]) -> None:
    assert thread_split(cores) == split


def test_the_baseline_goes_beside_distill_only_when_asked_and_where_it_can(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    recipe = Recipe(report={"baseline": True})
    assert beside_cores(2, recipe, ALL) == 2
    assert beside_cores(None, recipe, ALL) == 0 and beside_cores(1, recipe, ALL) == 0  # one stage at a time by default
    assert beside_cores(2, Recipe(report={"baseline": False}), ALL) == 0
    assert beside_cores(2, Recipe(task="detect", report={"baseline": True}), ALL) == 0
    assert beside_cores(2, recipe, ["distill"]) == 0 and beside_cores(2, recipe, ["teacher", "baseline"]) == 0
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0})
    assert beside_cores(2, recipe, ALL) == 0  # one core: nothing to share
    with pytest.raises(UsageError, match="--jobs must be 1 .* or 2"):
        beside_cores(3, recipe, ALL)


def _tiny(tmp_path: Path, name: str, workers: int = 0) -> Recipe:
    raw = {**TINY, "run_dir": str(tmp_path / name), "data": {**TINY["data"], "num_workers": workers}}
    raw["teacher"] = {**TINY["teacher"], "train": {"epochs": 1, "lr": 0.05}}
    raw["distill"] = {**TINY["distill"], "epochs": 1}
    raw["report"] = {"baseline": True}
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(raw))
    return load_recipe(path)


def test_a_baseline_trained_beside_distill_is_recorded_as_one_trained_after_it(tmp_path: Path) -> None:
    beside, in_order = _tiny(tmp_path, "beside", workers=1), _tiny(tmp_path, "in_order")  # the child starts a loader worker
    got = {r.stage: r for r in run_stages(beside, ALL, jobs=2)}
    ref = {r.stage: r for r in run_stages(in_order, ALL, jobs=1)}
    assert list(got) == ALL and got["baseline"].status == "done" and got["baseline"].seconds > 0
    assert set(got["baseline"].outputs) == set(ref["baseline"].outputs) == {"baseline/student.pt", "baseline/metrics.json"}
    a, b = RunDir(beside.run_dir).record("baseline"), RunDir(in_order.run_dir).record("baseline")
    assert a is not None and b is not None and a.fingerprint == b.fingerprint  # same inputs, so either run dir vouches the same
    assert 0.0 <= got["baseline"].summary["val_acc"] <= 1.0 and got["baseline"].summary["epochs"] == 1
    assert not list(Path(beside.run_dir).glob(".*.staging"))
    again = run_stages(beside, ALL, jobs=2)
    assert [r.status for r in again] == ["skipped"] * 4  # the record vouches for the outputs: nothing reruns


def test_the_child_gets_half_the_cores_and_the_parent_takes_its_back(tmp_path: Path) -> None:
    run, threads = RunDir(tmp_path / "run"), torch.get_num_threads()
    started = start_beside(Writes(), Recipe(), run, CPU, False, 4)
    assert started is not None and torch.get_num_threads() == 2  # the parent's share while both train
    result = started.finish()
    assert result.summary == {"threads": 2} and torch.get_num_threads() == threads
    assert json.loads((run.root / "baseline" / "metrics.json").read_text()) == {"threads": 2}
    assert run.record("baseline") is not None


def test_a_failure_beside_is_one_line_and_leaves_nothing_half_written(tmp_path: Path) -> None:
    run, threads = RunDir(tmp_path / "run"), torch.get_num_threads()
    started = start_beside(WritesThenFails(), Recipe(), run, CPU, False, 2)
    assert started is not None
    with pytest.raises(StageError, match=r"^baseline \(trained beside the other stages\): the labels folder is empty$"):
        started.finish()
    assert not (run.root / "baseline").exists() and not list(run.root.glob(".*.staging"))
    assert run.record("baseline") is None and torch.get_num_threads() == threads


def test_aborting_stops_the_child_and_discards_its_folder(tmp_path: Path) -> None:
    run, threads = RunDir(tmp_path / "run"), torch.get_num_threads()
    started = start_beside(Sleeps(), Recipe(), run, CPU, False, 2)
    assert started is not None
    deadline = time.time() + 60
    while not list(run.root.glob(".baseline.*.staging/partial.pt")) and time.time() < deadline:
        time.sleep(0.1)  # until the child is inside the stage's work
    t0 = time.perf_counter()
    started.abort()
    assert time.perf_counter() - t0 < 15 and not started.process.is_alive()
    assert not list(run.root.glob(".*.staging")) and not (run.root / "baseline").exists()
    assert torch.get_num_threads() == threads


def test_a_child_killed_without_a_reply_is_one_line_with_its_exit_code(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    started = start_beside(Sleeps(), Recipe(), run, CPU, False, 2)
    assert started is not None
    deadline = time.time() + 60
    while not list(run.root.glob(".baseline.*.staging/partial.pt")) and time.time() < deadline:
        time.sleep(0.1)
    os.kill(started.process.pid, signal.SIGKILL)  # as the kernel's OOM killer would
    with pytest.raises(StageError, match=r"^baseline \(trained beside the other stages\): its process ended with exit code -9$"):
        started.finish()
    assert not list(run.root.glob(".*.staging")) and run.record("baseline") is None


def test_distill_failing_stops_the_baseline_beside_it(tmp_path: Path) -> None:
    recipe = _tiny(tmp_path, "stopped")

    def stop(epoch: int, row: dict[str, float]) -> None:
        raise RuntimeError("stopped by the epoch hook")

    with pytest.raises(RuntimeError, match="stopped by the epoch hook"):
        run_stages(recipe, ALL, jobs=2, observe=Observe(on_epoch_end=stop))
    run = RunDir(recipe.run_dir)
    assert run.record("distill") is None and run.record("baseline") is None
    assert not list(run.root.glob(".*.staging")) and not (run.root / "baseline").exists()
