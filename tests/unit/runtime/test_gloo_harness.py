"""The two-rank test harness (tests/gloo.py) forgives only a teardown abort after every rank has finished."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from tests.gloo import spawn_ranks


def _abort_mid_work(rank: int, world: int, out: Path) -> None:
    if rank == 1:
        os.abort()  # killed by a signal before its work is done and before the last barrier
    (out / f"rank{rank}").write_text("done")


def _finish(rank: int, world: int, out: Path) -> None:
    (out / f"rank{rank}").write_text("done")


def test_a_rank_killed_before_its_work_is_done_fails_the_call(tmp_path: Path) -> None:
    with pytest.raises(mp.ProcessExitedException, match="SIGABRT"):
        spawn_ranks(_abort_mid_work, tmp_path)
    assert not (tmp_path / "rank1").exists()


def test_ranks_that_finish_return_and_leave_their_files(tmp_path: Path) -> None:
    spawn_ranks(_finish, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0", "rank1"]
