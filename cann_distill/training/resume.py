"""Resumable training: the checkpoint `fit` writes after every epoch and on Ctrl-C, and restoring it bit for bit.

The loader's and sampler's generators are restored to the start of the interrupted epoch, the
batches already trained on are skipped, and the global RNG is restored to where the interrupted
batch began.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn

from cann_distill.core.errors import ArtifactError, UsageError
from cann_distill.core.files import atomic_path
from cann_distill.runtime import distributed
from cann_distill.runtime.terminal import ui
from cann_distill.training.epoch import History
from cann_distill.training.update import Update

RESUME_FORMAT = 2  # 2: the sampler owns the shuffle generator (keyed, worker-independent sampling)
Best = tuple[float, int, dict[str, torch.Tensor]]  # (val_acc, 1-based epoch, the evaluated weights when select_best)
EpochEnd = Callable[[int, dict[str, float]], None]


def state_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


@dataclass
class Checkpointing:
    """Where `fit` keeps its resumable state and the fingerprint that state must carry."""

    path: Path
    fingerprint: str  # of everything the training depends on; a checkpoint with another one is refused
    resume: bool = False  # continue from `path` when it exists
    command: str = ""  # how to resume, for messages


def read_resume(ckpt: Checkpointing) -> Optional[dict[str, Any]]:
    """The resume state at `ckpt.path`, None when there is none; refuses another recipe's checkpoint."""
    if not ckpt.path.exists():
        return None
    try:
        state = torch.load(ckpt.path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ArtifactError(
            f"{ckpt.path}: not a loadable resume checkpoint ({str(exc).splitlines()[0][:160]}); delete it or rerun without --resume"
        ) from None
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise ArtifactError(f"{ckpt.path}: not a cann-distill resume checkpoint; delete it or rerun without --resume")
    if state.get("fingerprint") != ckpt.fingerprint:
        raise UsageError(
            f"--resume: {ckpt.path} was saved by another configuration (recipe, data or upstream artifacts "
            "changed since); rerun without --resume to start over"
        )
    return state


def rng_state() -> dict[str, Any]:
    """Global RNG states as plain tensors/lists, so the checkpoint loads with weights_only=True."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "random": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    *internal, version, gauss = state["random"]
    random.setstate((version, tuple(internal), gauss))


@dataclass
class Position:
    """Where the loop is, for the Ctrl-C checkpoint; `buffers`: the model's buffers as the current batch found them
    (its forward pass moves BatchNorm statistics before an interrupt can land, and the resumed run repeats that batch)."""

    epoch: int
    batch: int
    epoch_rng: Optional[dict[str, Any]] = None
    rng: Optional[dict[str, Any]] = None
    sums: dict[str, float] = field(default_factory=dict)  # the epoch's loss sums so far (under torchrun: every rank's)
    n: int = 0  # the samples they cover (the job's)
    buffers: Optional[dict[str, torch.Tensor]] = None

    def update(self, **changes: Any) -> None:
        for name, value in changes.items():
            setattr(self, name, value)


class Resume:
    """One `fit`'s resumable state: what a checkpoint restores, and the checkpoints it writes."""

    def __init__(
        self,
        checkpoint: Optional[Checkpointing],
        desc: str,
        model: nn.Module,
        update: Update,
        generators: Callable[[], dict[str, torch.Generator]],
    ) -> None:
        self.checkpoint, self.desc, self.model, self.update, self.generators = checkpoint, desc, model, update, generators
        self.restored: Optional[dict[str, Any]] = None
        self.start_epoch, self.start_batch = 0, 0
        self.partial: tuple[dict[str, float], int] = ({}, 0)
        self.last_saved: Optional[int] = None  # the epoch the last good checkpoint ends

    def restore(self, history: History, on_epoch_end: Optional[EpochEnd]) -> Optional[Best]:
        """Load the checkpoint into the model, optimizer, EMA, scaler and `history`; the best epoch it recorded."""
        checkpoint, restored = self.checkpoint, None
        if checkpoint is not None and checkpoint.resume:
            restored = read_resume(checkpoint)
            if restored is None:
                ui.info(f"[dim]{self.desc}: no resume checkpoint at {checkpoint.path}; starting from scratch[/dim]")
        elif checkpoint is not None and checkpoint.path.exists():
            ui.info(f"[dim]{self.desc}: starting over; {checkpoint.path} will be replaced (--resume continues it)[/dim]")
        if restored is None or checkpoint is None:
            return None
        self.restored = restored
        update = self.update
        self.model.load_state_dict(restored["model"])
        update.opt.load_state_dict(restored["optimizer"])
        if update.ema is not None and restored.get("ema") is not None:
            update.ema.module.load_state_dict(restored["ema"])
            update.ema.updates = int(restored.get("ema_updates") or 0)
        if update.scaler is not None and restored.get("scaler"):
            update.scaler.load_state_dict(restored["scaler"])
        best = None
        if restored.get("best") is not None:
            b = restored["best"]
            best = (float(b["val_acc"]), int(b["epoch"]), b["state"])
        history.extend(restored["history"])
        self.start_epoch, self.start_batch = int(restored["epoch"]), int(restored["batch"])
        self.partial = (dict(restored["sums"]), int(restored["n"]))
        self.last_saved = self.start_epoch if self.start_batch == 0 else None
        if on_epoch_end is not None:
            for e, row in enumerate(history):
                on_epoch_end(e, row)
        history.resumed_from = {"epoch": self.start_epoch + 1, "step": self.start_batch + 1}
        ui.info(f"{self.desc}: resuming from {checkpoint.path} at epoch {self.start_epoch + 1} step {self.start_batch + 1}")
        return best

    def epoch_start(self, epoch: int) -> tuple[int, dict[str, float], int]:
        """(batches to skip, loss sums, samples) for `epoch`: the interrupted epoch continues where it stopped."""
        if self.restored is None or epoch != self.start_epoch:
            return 0, {}, 0
        for name, gen in self.generators().items():
            gen.set_state(self.restored["epoch_rng"][name])
        set_rng_state(self.restored["rng"])
        sums, n = self.partial  # the job's sums so far (every rank's, summed after each step), on every rank
        return self.start_batch, dict(sums), n

    def generator_states(self) -> dict[str, torch.Tensor]:
        return {name: gen.get_state() for name, gen in self.generators().items()}

    def buffers(self) -> Optional[dict[str, torch.Tensor]]:
        return {k: v.detach().clone() for k, v in self.model.named_buffers()} if self.checkpoint is not None else None

    def epoch_done(self, epoch: int, best: Optional[Best], history: History) -> None:
        """The checkpoint at the end of an epoch (`epoch` counts the finished ones)."""
        if self.checkpoint is not None:
            self.save(Position(epoch, 0, self.generator_states(), rng_state()), best, history)
            self.last_saved = epoch

    def interrupted(self, pos: Position, epochs: int, best: Optional[Best], history: History) -> None:
        """Ctrl-C: save where the loop stood, so `--resume` continues at that batch."""
        checkpoint = self.checkpoint
        if checkpoint is None or pos.epoch >= epochs:
            return
        if pos.epoch_rng is None:  # between epochs: the next one starts from the current generators
            pos.epoch_rng = self.generator_states()
        self.save(Position(pos.epoch, pos.batch, pos.epoch_rng, pos.rng or rng_state(), pos.sums, pos.n, pos.buffers), best, history)
        ui.warn(
            f"{self.desc}: interrupted at epoch {pos.epoch + 1} step {pos.batch + 1}; saved {checkpoint.path}"
            + (f"; continue with `{checkpoint.command}`" if checkpoint.command else "")
        )

    def save(self, at: Position, best: Optional[Best], history: History) -> None:
        checkpoint, update = self.checkpoint, self.update
        assert checkpoint is not None
        if not distributed.is_main():
            return  # rank 0 writes; every rank holds the same weights
        model_state = state_copy(self.model)
        model_state.update({k: v.cpu() for k, v in (at.buffers or {}).items() if k in model_state})
        state = {
            "format": RESUME_FORMAT,
            "fingerprint": checkpoint.fingerprint,
            "epoch": at.epoch,
            "batch": at.batch,
            "model": model_state,
            "optimizer": update.opt.state_dict(),
            "ema": state_copy(update.ema.module) if update.ema else None,
            "ema_updates": update.ema.updates if update.ema else 0,
            "scaler": update.scaler.state_dict() if update.scaler is not None else None,
            "best": {"val_acc": best[0], "epoch": best[1], "state": best[2]} if best else None,
            "history": [dict(r) for r in history[: at.epoch]],
            "sums": dict(at.sums),
            "n": at.n,
            "epoch_rng": at.epoch_rng,
            "rng": at.rng,
        }
        with atomic_path(checkpoint.path) as tmp:
            torch.save(state, tmp)
