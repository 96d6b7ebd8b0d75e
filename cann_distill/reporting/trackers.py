"""Experiment trackers (`report.trackers`): TensorBoard and MLflow record a training run's recipe and epochs.

`Trackers` is an epoch hook (`fit`'s `on_epoch_end` signature) and a context manager: opened before training, it
logs the recipe as flattened parameters (`distill.losses.1.temperature`), every epoch's numeric history as metrics
at step = epoch, and closes each tracker with the run's outcome. TensorBoard writes `<root>/tensorboard/<run>/`
(scalars, and the parameters through the HParams plugin); MLflow logs to `MLFLOW_TRACKING_URI` when it is set, else to
a local store in `<root>/mlruns/` (SQLite, `mlruns/mlflow.db`: MLflow refuses plain file stores since 3.x), one
experiment per recipe name, one MLflow run per stage or trial. A tracker that fails to open stops the stage before
training; one that fails while logging is dropped with a warning (training never fails for it).
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Optional, Protocol, Sequence, Union

from rich.markup import escape

from cann_distill.core.errors import CannDistillError, StageError
from cann_distill.runtime.terminal import ui

Param = Union[str, int, float, bool]
_MLFLOW_KEY = re.compile(r"[^\w\-./ :]")  # the characters MLflow takes in a param or metric name


def flatten(data: Any, prefix: str = "") -> dict[str, Param]:
    """Nested recipe data as flat parameters: mapping keys joined by `.`, list items by their index; null as `null`."""
    if isinstance(data, dict):
        out: dict[str, Param] = {}
        for k, v in data.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(data, (list, tuple)):
        if not data:
            return {prefix: "[]"}
        return {k: v for i, item in enumerate(data) for k, v in flatten(item, f"{prefix}.{i}").items()}
    if data is None:
        return {prefix: "null"}
    return {prefix: data if isinstance(data, (str, int, float, bool)) else str(data)}


def numeric(row: dict[str, Any]) -> dict[str, float]:
    """The numbers of a history row (the epoch number is the step, not a metric)."""
    return {k: float(v) for k, v in row.items() if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class Tracker(Protocol):
    name: str

    def epoch(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self, status: str) -> None: ...


class TensorBoardTracker:
    """SummaryWriter under `<root>/tensorboard/<run>`: one scalar per history key, the recipe as HParams."""

    name = "tensorboard"

    def __init__(self, root: Path, run: str, params: dict[str, Param]) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self.writer = SummaryWriter(log_dir=str(root / "tensorboard" / run))
        experiment, start, self._end = hparams(params, {"val_acc": 0.0})
        writer = self.writer._get_file_writer()
        writer.add_summary(experiment)
        writer.add_summary(start)

    def epoch(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self, status: str) -> None:
        if status == "FINISHED":
            self.writer._get_file_writer().add_summary(self._end)
        self.writer.close()


class MlflowTracker:
    """One MLflow run in the recipe's experiment: the parameters at the start, the metrics per epoch."""

    name = "mlflow"

    def __init__(self, root: Path, run: str, experiment: str, params: dict[str, Param]) -> None:
        from mlflow.entities import Param as MlflowParam
        from mlflow.tracking import MlflowClient

        for noisy in ("mlflow.store.db.utils", "alembic"):  # table creation, said once per new store
            logging.getLogger(noisy).setLevel(logging.WARNING)
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        location = None
        if not uri:
            store = (root / "mlruns").resolve()
            store.mkdir(parents=True, exist_ok=True)
            uri, location = f"sqlite:///{store / 'mlflow.db'}", (store / "artifacts").as_uri()
        self.client = MlflowClient(tracking_uri=uri)
        self.run_id = self.client.create_run(self._experiment(experiment, location), run_name=run).info.run_id
        items = [MlflowParam(_MLFLOW_KEY.sub("_", k)[:250], str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 parameters per call
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def _experiment(self, name: str, location: Optional[str]) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(self.client.create_experiment(name, artifact_location=location))
        except Exception:  # another process created it between the two calls
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)

    def epoch(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(_MLFLOW_KEY.sub("_", k)[:250], v, now, step) for k, v in metrics.items()])

    def close(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


class Trackers:
    """The recipe's trackers for one training run, as `fit`'s epoch hook; `with` closes them with the outcome."""

    def __init__(self, names: Sequence[str], root: Path, run: str, experiment: str, params: dict[str, Param]) -> None:
        self.open: list[Tracker] = []
        for name in dict.fromkeys(names):
            try:
                self.open.append(
                    TensorBoardTracker(root, run, params) if name == "tensorboard" else MlflowTracker(root, run, experiment, params)
                )
            except Exception as exc:
                self.close("FAILED")
                raise StageError(f"report.trackers: {name} could not start: {type(exc).__name__}: {exc}") from exc

    def __call__(self, epoch: int, row: dict[str, Any]) -> None:
        step, metrics = int(row.get("epoch", epoch + 1)), numeric(row)
        for tracker in list(self.open):
            try:
                tracker.epoch(step, metrics)
            except Exception as exc:  # a tracker is a convenience: training goes on without it
                ui.warn(escape(f"report.trackers: {tracker.name} stopped logging: {type(exc).__name__}: {exc}"))
                self.open.remove(tracker)

    def close(self, status: str) -> None:
        for tracker in self.open:
            try:
                tracker.close(status)
            except Exception as exc:
                ui.warn(escape(f"report.trackers: {tracker.name} did not close cleanly: {type(exc).__name__}: {exc}"))
        self.open = []

    def __enter__(self) -> "Trackers":
        return self

    def __exit__(self, kind: Optional[type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        # a stage's own failure: FAILED; stopped from outside (Ctrl-C, a pruned tune trial): KILLED
        self.close("FINISHED" if kind is None else "FAILED" if issubclass(kind, CannDistillError) else "KILLED")
