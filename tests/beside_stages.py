"""Stages for the tests of `cann_distill.stages.beside`: importable by name, so a spawned child can unpickle them."""

from __future__ import annotations

import time
from typing import Any

from cann_distill.core.errors import StageError
from cann_distill.stages.base import Context, Stage


class WritesThenFails(Stage):
    name = "baseline"

    def execute(self, ctx: Context) -> dict[str, Any]:
        (ctx.out / "half.pt").write_bytes(b"half-written")
        raise StageError("the labels folder is empty")


class Sleeps(Stage):
    name = "baseline"

    def execute(self, ctx: Context) -> dict[str, Any]:
        (ctx.out / "partial.pt").write_bytes(b"partial")
        time.sleep(120)
        return {}


class Writes(Stage):
    name = "baseline"

    def execute(self, ctx: Context) -> dict[str, Any]:
        import torch

        (ctx.out / "metrics.json").write_text('{"threads": %d}' % torch.get_num_threads())
        return {"threads": torch.get_num_threads()}
