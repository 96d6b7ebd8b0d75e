"""report.trackers: TensorBoard event files and MLflow runs hold the recipe as parameters and each epoch's history
as metrics, read back with the trackers' own readers."""

from __future__ import annotations

from pathlib import Path

import pytest

from cann_distill.core.errors import StageError
from cann_distill.reporting.trackers import Trackers, flatten

RECIPE = {"name": "tiny", "distill": {"lr": 0.05, "losses": [{"kind": "ce"}, {"kind": "kd", "temperature": 4.0}]}, "data": {"mean": None}}
ROWS = [{"epoch": 1, "loss": 1.5, "val_acc": 0.25, "lr": 0.05}, {"epoch": 2, "loss": 0.9, "val_acc": 0.5, "lr": 0.01}]


def test_the_recipe_flattens_to_dotted_parameters() -> None:
    flat = flatten(RECIPE)
    assert flat == {
        "name": "tiny",
        "distill.lr": 0.05,
        "distill.losses.0.kind": "ce",
        "distill.losses.1.kind": "kd",
        "distill.losses.1.temperature": 4.0,
        "data.mean": "null",
    }


def test_tensorboard_writes_scalars_per_epoch_and_the_recipe_as_hparams(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="report.trackers: tensorboard needs the tensorboard package")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    with Trackers(["tensorboard"], tmp_path, "distill", "tiny", flatten(RECIPE)) as track:
        for e, row in enumerate(ROWS):
            track(e, row)
    (event,) = (tmp_path / "tensorboard" / "distill").glob("events.out.tfevents.*")
    acc = EventAccumulator(str(event))
    acc.Reload()
    assert {"loss", "val_acc", "lr"} <= set(acc.Tags()["scalars"]) and "epoch" not in acc.Tags()["scalars"]
    assert [(s.step, round(s.value, 6)) for s in acc.Scalars("val_acc")] == [(1, 0.25), (2, 0.5)]
    start = plugin_data_pb2.HParamsPluginData.FromString(acc.PluginTagToContent("hparams")["_hparams_/session_start_info"])
    assert start.session_start_info.hparams["distill.losses.1.temperature"].number_value == 4.0
    assert "_hparams_/session_end_info" in acc.PluginTagToContent("hparams")  # closed as finished


def test_mlflow_logs_a_run_with_params_and_metric_history_in_the_local_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow", reason="report.trackers: mlflow needs the mlflow package")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(RuntimeError), Trackers(["mlflow"], tmp_path, "trial_0001", "tiny", flatten(RECIPE)) as track:
        track(0, ROWS[0])
        raise RuntimeError("stopped from outside")  # e.g. a pruned trial: the run is closed as KILLED
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "trial_0001" and run.info.status == "KILLED"
    assert run.data.params["distill.losses.1.temperature"] == "4.0" and run.data.params["data.mean"] == "null"
    assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_acc")] == [(1, 0.25)]


def test_a_tracker_that_cannot_start_stops_the_stage_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow", reason="report.trackers: mlflow needs the mlflow package")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuchscheme://nowhere")
    with pytest.raises(StageError, match="report.trackers: mlflow could not start: ") as info:
        Trackers(["mlflow"], tmp_path, "distill", "tiny", {})
    assert "\n" not in str(info.value)
