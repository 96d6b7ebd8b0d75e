"""One stage trained in a child process beside the stages the parent runs, the two sharing the CPU cores.

On a CPU, a small model's training step gains little from a second intra-op thread (the packaged photo recipe's
baseline: 56 s with two threads, 58 s with one, on a 2-core machine), so two stages with one thread each finish
sooner than the same two one after the other. `cann-distill run --jobs 2` uses this for the CE-only baseline, which
needs nothing upstream, beside distill (`api.run_stages`, `jobs`; not the default, see `api.beside_cores`). The thread counts are fixed for each stage's whole
run (the parent takes its threads back only when the stage beside is recorded, not when it happens to end): torch's
results depend on the thread count, and a count that changed mid-training with the timing of the other process would
make a rerun of the same recipe on the same machine give other weights.

The child writes into the stage's staging folder and sends back its summary or its error; the parent, which holds
the run-dir lock, hashes the outputs, swaps the folder into place and writes the manifest record, exactly as for a
stage run in order. A failure in either process discards the staging folder: nothing half-written is left.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Optional

import torch

from cann_distill.core.errors import CannDistillError, StageError
from cann_distill.core.recipe import Recipe
from cann_distill.runtime.devices import Runtime
from cann_distill.runtime.terminal import ui
from cann_distill.stages.base import Plan, Stage, StageResult, plan_stage, record_stage, stage_context, stage_for, staged_outputs
from cann_distill.store.rundir import RunDir


def thread_split(cores: int) -> tuple[int, int]:
    """(parent's threads, child's threads) while both train: the cores halved, the parent keeping the odd one."""
    child = max(1, cores // 2)
    return max(1, cores - child), child


@dataclass
class Beside:
    """A stage running in a child process; `finish` waits for it and records it."""

    stage: Stage
    run: RunDir
    plan: Plan
    process: Any  # multiprocessing's SpawnProcess
    conn: Connection
    staging: contextlib.ExitStack
    out: Path
    started: float
    threads: int  # the parent's intra-op threads before the child started; given back by `finish` or `abort`
    reply: Optional[tuple[str, Any, float]] = field(default=None)

    def finish(self) -> StageResult:
        """Wait for the child and give the parent its threads back; record the stage, or discard its staging folder and
        raise its error."""
        while self.reply is None and self.process.is_alive():
            if self.conn.poll(0.2):
                self.reply = self._receive()
        if self.reply is None and self.conn.poll():
            self.reply = self._receive()
        self.process.join()
        self.conn.close()
        torch.set_num_threads(self.threads)
        if self.reply is None or self.reply[0] != "ok":
            why = self.reply[1] if self.reply is not None else f"its process ended with exit code {self.process.exitcode}"
            self.abort()
            raise StageError(f"{self.stage.name} (trained beside the other stages): {why}")
        _, summary, seconds = self.reply
        outputs = staged_outputs(self.stage.name, self.out)
        self.run.forget(self.stage.name)  # the old record must not vouch for the folder being replaced
        self.staging.close()  # swaps the staging folder into place
        return record_stage(self.stage.name, self.run, self.plan, outputs, summary, self.started, seconds)

    def _receive(self) -> Optional[tuple[str, Any, float]]:
        """The child's reply; None when it ended without one (killed: its end of the pipe closed unwritten)."""
        try:
            reply: tuple[str, Any, float] = self.conn.recv()
        except EOFError:
            return None
        return reply

    def abort(self) -> None:
        """Stop the child (if still running) and discard what it wrote."""
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(10)
            if self.process.is_alive():
                self.process.kill()
                self.process.join()
        torch.set_num_threads(self.threads)
        with contextlib.suppress(StageError):  # the staging generator re-raises what it is handed
            self.staging.__exit__(StageError, StageError("discarded"), None)


def start_beside(stage: Stage, recipe: Recipe, run: RunDir, runtime: Runtime, force: bool, cores: int) -> Optional[Beside]:
    """Start `stage` in a child process with half of `cores` threads, the parent keeping the rest until it ends.
    None when the stage is up to date (the caller runs it in order, which reports the skip)."""
    stage = stage_for(stage, recipe)
    plan = plan_stage(stage, recipe, run, force)
    if plan.current is not None:
        return None
    mine, theirs = thread_split(cores)
    staging = contextlib.ExitStack()
    out = staging.enter_context(run.staging(stage.name))
    ctx = multiprocessing.get_context("spawn")  # fork would copy the parent's OpenMP and torch thread state
    receive, send = ctx.Pipe(duplex=False)
    process = ctx.Process(
        target=_child,
        args=(stage, recipe, run.root, out, plan, runtime, theirs, send),
        name=f"cann-distill-{stage.name}",
        daemon=False,  # a daemonic process may not start DataLoader workers; `abort` stops it on any failure
    )
    threads = torch.get_num_threads()
    try:
        process.start()
    except BaseException:
        staging.__exit__(*sys.exc_info())
        raise
    send.close()
    torch.set_num_threads(mine)
    ui.info(f"[bold cyan]{stage.name}[/bold cyan]: running beside the next stages ({theirs} of {cores} cores; output when done)")
    return Beside(stage, run, plan, process, receive, staging, out, time.time(), threads)


def _child(stage: Stage, recipe: Recipe, root: Path, out: Path, plan: Plan, runtime: Runtime, threads: int, conn: Connection) -> None:
    """The child: the stage's work into `out`, then ("ok", summary, seconds) or ("error", message, seconds)."""
    torch.set_num_threads(threads)
    ui.configure(quiet=True)  # its progress would interleave with the parent's; warnings still show
    t0 = time.perf_counter()
    try:
        summary = stage.execute(stage_context(recipe, RunDir(root), out, plan, runtime))
        conn.send(("ok", summary, time.perf_counter() - t0))
    except KeyboardInterrupt:
        conn.send(("error", "interrupted", time.perf_counter() - t0))
    except Exception as exc:  # the parent raises it as one line
        why = str(exc) if isinstance(exc, CannDistillError) else f"{type(exc).__name__}: {exc}"
        conn.send(("error", why, time.perf_counter() - t0))
    finally:
        conn.close()
