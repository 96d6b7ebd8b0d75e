"""report.trackers on a plain run: distill logs each epoch to TensorBoard under <run_dir>/tensorboard/distill, and
turning the trackers off again leaves every stage up to date (they are in no fingerprint)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import TINY

pytest.importorskip("tensorboard", reason="report.trackers: tensorboard needs the tensorboard package")

RECIPE = {**TINY, "data": {**TINY["data"], "max_samples": 200}, "teacher": {"arch": "test_resnet", "train": {"epochs": 1}}}


def test_distill_logs_its_epochs_and_trackers_change_no_fingerprint(cli, write_recipe, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tracked = write_recipe(RECIPE, report={"trackers": ["tensorboard"]})
    result = cli("run", tracked, "--to", "distill", "--json")
    assert result.exit_code == 0, result.stderr
    (event,) = (tmp_path / "run" / "tensorboard" / "distill").glob("events.out.tfevents.*")
    acc = EventAccumulator(str(event))
    acc.Reload()
    assert {"loss", "kd", "ce", "val_acc", "lr"} <= set(acc.Tags()["scalars"])
    assert [s.step for s in acc.Scalars("val_acc")] == list(range(1, RECIPE["distill"]["epochs"] + 1))

    plain = write_recipe(RECIPE, name="plain.yaml")
    again = cli("run", plain, "--to", "distill", "--json")
    assert again.exit_code == 0, again.stderr
    assert [s["status"] for s in json.loads(again.stdout)["stages"]] == ["skipped", "skipped", "skipped"]
