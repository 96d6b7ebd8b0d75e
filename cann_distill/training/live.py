"""Per-epoch history of a stage while it trains, for the dashboard.

A training stage's history reaches `<stage>/metrics.json` only when the stage succeeds (outputs are
staged atomically). `EpochLog` is a `fit` epoch-end hook that rewrites `<run_dir>/.live/<stage>.json`
(atomically) after every epoch with all rows so far, so a reader sees whole rows or the previous
file, never a half-written one. It is idempotent under fit's resume replay (row e replaces row e).
Under torchrun rank 0 alone writes it (the rows are the job's on every rank).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Optional

from cann_distill.core.files import write_json_atomic
from cann_distill.runtime import distributed
from cann_distill.training.loop import EpochEnd

LIVE = ".live"


def live_path(run_root: Path, stage: str) -> Path:
    return Path(run_root) / LIVE / f"{stage}.json"


class EpochLog:
    """fit's `on_epoch_end`: record the row, then call `then` (the stage's own hook) if given."""

    def __init__(self, run_root: Path, stage: str, epochs: int, then: Optional[EpochEnd] = None) -> None:
        self.path, self.stage, self.epochs, self.then = live_path(run_root, stage), stage, epochs, then
        self.rows: list[dict[str, float]] = []
        self.started = time.time()
        self._write()

    def _write(self) -> None:
        if not distributed.is_main():
            return
        try:
            write_json_atomic(
                self.path,
                {"stage": self.stage, "epochs": self.epochs, "started": self.started, "updated": time.time(), "history": self.rows},
            )
        except OSError:
            pass  # the dashboard is a convenience; training never fails for it

    def __call__(self, epoch: int, row: dict[str, float]) -> None:
        self.rows = self.rows[:epoch] + [dict(row)]
        self._write()
        if self.then is not None:
            self.then(epoch, row)


def read_live(run_root: Path, stage: str) -> Optional[dict[str, Any]]:
    """The live history of `stage`, None when absent or unreadable."""
    try:
        data = json.loads(live_path(run_root, stage).read_text())
    except (OSError, ValueError, RecursionError):  # RecursionError: a file nested too deeply to parse
        return None
    return data if isinstance(data, dict) and isinstance(data.get("history"), list) else None
