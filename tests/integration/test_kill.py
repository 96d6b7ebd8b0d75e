"""SIGKILL `cann-distill run` while the teacher trains, mid-way through distill and while validate runs:
the run dir never holds an artifact its manifest does not vouch for, `distill --resume` continues
from the last finished epoch, and a plain rerun completes with every manifest hash matching.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import pytest
import torch

from cann_distill.core.files import sha256_file

pytestmark = pytest.mark.slow

DISTILL_EPOCHS = 6
TINIER = {  # conftest's TINY, smaller and quicker to validate
    "data": {"source": "digits", "image_size": 16, "max_samples": 200, "batch_size": 32},
    "teacher": {"arch": "test_resnet", "train": {"epochs": 3, "lr": 0.05}},
    "distill": {"epochs": DISTILL_EPOCHS, "lr": 0.05},
    "validate": {
        "calibration": {"samples": 32},
        "latency": {"warmup": 1, "runs": 5},
        "throughput_batch": 8,
        "gap": {"samples": 16},
        "feedback": {"search": False},
    },
}
STEP_TIMEOUT = 150.0


class Command:
    """`python -m cann_distill ...` with its stderr read line by line."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cann_distill", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line.rstrip("\n"))

    def _drain(self) -> None:
        while True:
            try:
                self.seen.append(self.lines.get_nowait())
            except queue.Empty:
                return

    def kill_when(self, ready: Callable[[list[str]], bool], delay: float = 0.0) -> None:
        """SIGKILL once `ready(lines so far)` holds (checked every 20 ms); fail if the command ends first."""
        deadline = time.monotonic() + STEP_TIMEOUT
        while not ready(self.seen):
            self._drain()
            assert self.proc.poll() is None, f"ended before the kill point: {self.seen[-5:]}"
            assert time.monotonic() < deadline, f"kill point not reached: {self.seen[-5:]}"
            time.sleep(0.02)
        time.sleep(delay)
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(STEP_TIMEOUT) == -signal.SIGKILL

    def finish(self) -> list[str]:
        assert self.proc.wait(STEP_TIMEOUT) == 0, self.proc.stderr
        time.sleep(0.1)
        self._drain()
        return self.seen


def line(text: str) -> Callable[[list[str]], bool]:
    return lambda seen: any(text in s for s in seen)


def manifest_stages(run: Path) -> dict:
    path = run / "manifest.json"
    return json.loads(path.read_text())["stages"] if path.exists() else {}


def assert_consistent(run: Path) -> dict:
    """Every recorded output is on disk with its hash; every stage folder on disk is recorded."""
    stages = manifest_stages(run)
    for name, rec in stages.items():
        for rel, digest in rec["outputs"].items():
            assert sha256_file(run / rel) == digest, rel
        assert json.loads((run / ".records" / f"{name}.json").read_text())["outputs"] == rec["outputs"]
    for folder in ("teacher", "select", "distill", "validate", "report"):
        assert not (run / folder).exists() or folder in stages, f"{folder}/ is on disk but not in the manifest"
    return stages


def test_killed_runs_resume_and_complete(write_recipe, tmp_path: Path) -> None:
    recipe = str(write_recipe(**TINIER))
    run = tmp_path / "run"
    resume = run / ".distill.resume.pt"

    # 1. killed while the teacher trains: nothing of the teacher is left that looks valid
    Command("run", recipe).kill_when(line("teacher: running"), delay=0.5)
    assert "teacher" not in assert_consistent(run)

    # 2. killed in distill after its first epoch: teacher and select are kept, distill is not recorded
    Command("run", recipe).kill_when(lambda seen: resume.exists())
    assert list(assert_consistent(run)) == ["teacher", "select"]
    saved = torch.load(resume, map_location="cpu", weights_only=True)
    assert saved["epoch"] >= 1 and saved["batch"] == 0  # the end of the last finished epoch

    # 3. --resume continues from there
    Command("distill", recipe, "--resume").finish()
    metrics = json.loads((run / "distill" / "metrics.json").read_text())
    assert metrics["resumed_from"] == {"epoch": saved["epoch"] + 1, "step": 1}
    assert len(metrics["history"]) == DISTILL_EPOCHS and not resume.exists()
    assert list(assert_consistent(run)) == ["teacher", "select", "distill"]

    # 4. killed while validate runs
    Command("run", recipe).kill_when(line("validate: running"), delay=0.2)
    assert list(assert_consistent(run)) == ["teacher", "select", "distill"]

    # 5. a plain rerun finishes the job, reusing what is intact
    seen = Command("run", recipe).finish()
    for stage in ("teacher", "select", "distill"):
        assert any(s.startswith(f"{stage}: up to date, skipped") for s in seen), seen
    assert list(assert_consistent(run)) == ["teacher", "select", "distill", "validate", "report"]
    # no leftovers; .live holds the per-epoch rows the dashboard reads (rewritten atomically, see live.py)
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".")) == [".live", ".lock", ".records"]
    assert not [p for p in (run / ".live").iterdir() if p.suffix != ".json"]
