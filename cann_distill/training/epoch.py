"""What `fit` keeps and shows per epoch: the history, where the time went, the progress line,
early stopping, and holding Ctrl-C while an update and its bookkeeping happen together."""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import torch

from cann_distill.runtime.devices import Runtime, peak_rss_mb


class History(list):
    """Per-epoch rows (a plain list to JSON) plus what `fit` selected."""

    best_epoch: Optional[int] = None  # 1-based epoch with the best val accuracy (None without validation)
    selected: str = "last"  # which weights the model holds after fit: last | best
    resumed_from: Optional[dict[str, int]] = None  # {"epoch": e, "step": s} when fit resumed a checkpoint
    stopped_early: Optional[int] = None  # the last epoch trained when early stopping ended the run


@contextlib.contextmanager
def deferred_interrupt() -> Iterator[None]:
    """Hold Ctrl-C until the block ends, so an optimizer update and its bookkeeping happen together or not at all."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if pending:
            raise KeyboardInterrupt


class EarlyStop:
    """Stop when validation accuracy has not improved for `patience` epochs (None: never)."""

    def __init__(self, patience: Optional[int]) -> None:
        self.patience = patience

    def should_stop(self, history: Sequence[dict[str, float]]) -> bool:
        accs = [row["val_acc"] for row in history if "val_acc" in row]
        if self.patience is None or len(accs) <= self.patience:
            return False
        best_at = int(np.argmax(accs))  # first epoch reaching the best
        return len(accs) - 1 - best_at >= self.patience


def nonfinite_message(
    desc: str, epoch: int, step: int, loss: torch.Tensor, parts: dict[str, float], saved: Optional[Path], last_saved: Optional[int]
) -> str:
    bad = [k for k, v in parts.items() if not math.isfinite(v)]
    shown = ", ".join(f"{k}={v:.4g}" for k, v in parts.items())
    which = f"non-finite component(s): {', '.join(bad)}" if bad else "the weighted sum overflowed"
    msg = f"{desc}: loss is {loss.item()} at epoch {epoch + 1} step {step + 1}, {which} ({shown})"
    if saved is not None and last_saved is not None:
        msg += f"; the last good checkpoint ({saved}, end of epoch {last_saved}) is kept"
    return msg + "; lower the learning rate or set grad_clip"


def status_line(
    epoch: int,
    epochs: int,
    means: dict[str, float],
    lr: float,
    extra: dict[str, float],
    last_val: Optional[float],
    best: Optional[tuple[float, int]],
) -> str:
    """The live progress line: every loss component, lr, temperature and validation accuracy."""
    parts = [f"epoch {epoch + 1}/{epochs}", f"loss {means.get('loss', float('nan')):.4f}"]
    comps = " ".join(f"{k} {v:.3g}" for k, v in means.items() if k not in ("loss", "grad_norm") and not k.startswith("balance."))
    if comps:
        parts.append(comps)
    parts.append(f"lr {lr:.3g}")
    if "temperature_mean" in extra:
        parts.append(f"T {extra['temperature_mean']:.2f}")
    if last_val is not None:
        parts.append(f"val {100 * last_val:.1f}%" + (f" (best {100 * best[0]:.1f}% @{best[1]})" if best else ""))
    return " | ".join(parts)


class EpochTimes:
    """Where one epoch's training time goes, for its history row.

    data: waiting on the loader; teacher: in the teacher-target source; student: the rest of each step
    (transfer, mixing, forward, backward, update). The device is synchronised after the teacher so
    queued accelerator work is not billed to the student.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.start()

    def start(self) -> None:
        self.data = self.teacher = self.step = 0.0
        self.samples = 0
        self.runtime.reset_peak_memory()

    @contextlib.contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if phase == "teacher":
                self.runtime.synchronize()
            setattr(self, phase, getattr(self, phase) + time.perf_counter() - t0)

    def row(self) -> dict[str, float]:
        total = self.data + self.step
        share = (lambda v: v / total) if total > 0 else (lambda v: 0.0)
        student = max(self.step - self.teacher, 0.0)
        row = {
            "samples_per_s": self.samples / total if total > 0 else 0.0,
            "train_s": total,
            "data_share": share(self.data),
            "teacher_share": share(self.teacher),
            "student_share": share(student),
            "peak_rss_mb": peak_rss_mb(),
        }
        device_peak = self.runtime.peak_memory_mb()
        if device_peak is not None:
            row["peak_device_mb"] = device_peak
        return row
