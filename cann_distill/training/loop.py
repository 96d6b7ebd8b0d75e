"""One training loop, shared by the teacher and distill stages.

`fit` runs SGD/AdamW with linear warmup then cosine decay, optional gradient clipping, bf16
autocast and an exponential moving average (EMA) of the weights (`update`), evaluates on the
validation split after every epoch, can keep the best epoch's weights and stop early (`epoch`).
Given a `Checkpointing`, it saves a resumable state after every epoch and on Ctrl-C (mid-epoch,
at the batch it reached), and resumes from it bit for bit (`resume`). Under torchrun each step is
a DDP step and the loss sums are the job's, summed over the ranks after every step.
"""

from __future__ import annotations

import random
import time
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cann_distill.core.errors import StageError
from cann_distill.core.recipe import TrainConfig
from cann_distill.data.loading import Split, loader
from cann_distill.data.transforms import BatchMixup, Transform
from cann_distill.runtime import distributed
from cann_distill.runtime.devices import CPU, Runtime
from cann_distill.runtime.terminal import ui
from cann_distill.training.epoch import EarlyStop, EpochTimes, History, deferred_interrupt, nonfinite_message, status_line
from cann_distill.training.resume import Best, Checkpointing, Position, Resume, rng_state, state_copy
from cann_distill.training.update import EmaWeights, Update, make_optimizer

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
_SAMPLES = " samples"  # the batch size among a step's sums (no loss component has a space in its name)
StepFn = Callable[[nn.Module, Batch], tuple[torch.Tensor, dict[str, float]]]
TeacherFn = Callable[[Batch, int, Optional[float]], dict[str, torch.Tensor]]
"""Teacher outputs for a batch as the student sees it (on the device, mixed), its epoch and the
mixing λ (None: not mixed). Given one, `fit` times it as teacher time and calls `step(model, batch, outputs)`."""
TaughtStepFn = Callable[[nn.Module, Batch, dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]
EpochStart = Callable[[int], dict[str, float]]
"""Called before epoch `e` (0-based); returns extra fields for that epoch's history row."""
EpochEnd = Callable[[int, dict[str, float]], None]
"""Called after epoch `e` with its finished history row. It must depend only on the rows it is
given: on resume it is replayed over the restored history to rebuild its state."""

__all__ = [
    "Batch",
    "Checkpointing",
    "EpochEnd",
    "History",
    "SubsetSampler",
    "accuracy",
    "ce_step",
    "chain_hooks",
    "evaluate",
    "fit",
    "predict",
]


def chain_hooks(*hooks: Optional[EpochEnd]) -> EpochEnd:
    """One epoch-end hook calling `hooks` in order (None skipped): a stage's own bookkeeping first, then observers
    (experiment trackers, a tune trial). An exception from one stops the rest and the training (fit re-raises it)."""
    present = [h for h in hooks if h is not None]

    def call(epoch: int, row: dict[str, float]) -> None:
        for hook in present:
            hook(epoch, row)

    return call


def ce_step(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
    """Plain cross-entropy against the labels, or against mixed soft targets [B, C] (teacher training, student probes)."""
    x, y, _ = batch
    loss = F.cross_entropy(model(x), y)  # class-probability targets are accepted as they are
    return loss, {"ce": loss.item()}


class SubsetSampler(torch.utils.data.Sampler[int]):
    """Shuffled subset of the split whose indices may change between epochs (subset / curriculum training)."""

    def __init__(self, indices: Sequence[int], seed: int) -> None:
        self.indices = list(indices)
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(len(self.indices), generator=self.generator).tolist()
        return iter([self.indices[i] for i in order])

    def __len__(self) -> int:
        return len(self.indices)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@torch.no_grad()
def predict(model: nn.Module, split: Split, batch_size: int = 256, desc: str = "predict", runtime: Runtime = CPU) -> np.ndarray:
    """Logits for every sample of a split, in split order (evaluation transform, on the runtime's device)."""
    runtime.model(model).eval()
    out = []
    batches = loader(split, batch_size, runtime=runtime)
    for x, _, _ in ui.track(batches, desc, total=len(batches)):
        out.append(model(x).float().cpu())  # `loader` batches arrive on the device
    return torch.cat(out).numpy()


def accuracy(logits: np.ndarray, targets: np.ndarray) -> float:
    return float((logits.argmax(1) == targets).mean())


def predict_all(model: nn.Module, split: Split, batch_size: int = 256, desc: str = "predict", runtime: Runtime = CPU) -> np.ndarray:
    """`predict`, sharded under torchrun: each rank takes whole batches of the split and every rank gets all the logits.

    Every sample is computed in the same batch as in one process, so a deterministic model gives the same values.
    """
    if not distributed.active():
        return predict(model, split, batch_size=batch_size, desc=desc, runtime=runtime)
    counts = distributed.shard_counts(len(split), batch_size)
    lo, hi = distributed.shard_range(len(split), batch_size)
    local = predict(model, split.rows(lo, hi), batch_size, desc, runtime) if hi > lo else np.zeros((0, 0), np.float32)
    width = distributed.broadcast_object(local.shape[1] if distributed.is_main() else None)  # rank 0 always has rows
    return distributed.gather_rows(local.reshape(-1, width), counts)


def evaluate(model: nn.Module, split: Split, desc: str, runtime: Runtime = CPU) -> float:
    """Accuracy on `split`; under torchrun of rank 0's weights, the split sharded across ranks (`predict_all`)."""
    if distributed.active():
        distributed.sync_module(model)
    return accuracy(predict_all(model, split, desc=desc, runtime=runtime), split.targets)


def fit(
    model: nn.Module,
    train: Split,
    cfg: TrainConfig,
    batch_size: int,
    step: Union[StepFn, TaughtStepFn],
    seed: int,
    desc: str,
    val: Optional[Split] = None,
    sampler: Optional[torch.utils.data.Sampler] = None,
    on_epoch_start: Optional[EpochStart] = None,
    on_epoch_end: Optional[EpochEnd] = None,
    *,
    deploy: Optional[nn.Module] = None,
    checkpoint: Optional[Checkpointing] = None,
    no_decay: Sequence[str] = (),
    runtime: Runtime = CPU,
    transform: Optional[Transform] = None,
    mix: Optional[BatchMixup] = None,
    teacher: Optional[TeacherFn] = None,
    period: Optional[int] = None,
) -> History:
    """Train `model`; per-epoch history of mean loss components, lr, val accuracy and where the time went.

    `deploy` is the part of `model` that is evaluated, averaged (EMA) and selected (best epoch);
    default the whole model. Distill passes the plain student while `model` also holds connectors
    and loss-balance parameters. After fit, `deploy` holds the EMA weights when `ema_decay` is set
    and the best epoch's weights when `select_best` is (best among the evaluated, i.e. EMA, weights).
    `transform` is the training transform (None: the split's evaluation transform); `mix` mixes a
    batch's images and labels (timm Mixup) before `step` sees it. Batches reach `step` on the
    runtime's device; `cfg.patience` stops early on the validation accuracy. `teacher` (see
    `TeacherFn`) supplies teacher outputs per batch; `period` makes epoch e show the views of epoch
    e mod period (`KeyedSampler`). Each history row has samples/s, the shares of data / teacher /
    student time (`EpochTimes`) and peak memory (process RSS; device memory on CUDA).

    The cosine follows epoch progress rather than a step count, so an epoch hook may change
    the sampler (and so the epoch length) without bending the schedule.
    """
    seed_everything(seed)
    runtime.check_amp(cfg.amp)
    deploy = deploy if deploy is not None else model
    runtime.model(model)
    opt = make_optimizer(model, cfg, no_decay)
    batches = loader(train, batch_size, train=True, seed=seed, sampler=sampler, transform=transform, runtime=runtime, period=period)
    keyed = batches.batch_sampler.sampler  # the keyed sampler, also under torchrun (`distributed.RankSlices`)
    ema = EmaWeights(deploy, cfg.ema_decay) if cfg.ema_decay else None
    if runtime.compile:
        deploy.compile()  # in place, so the state dict keeps its keys; in distill this is the student's forward
    update = Update(model, deploy, cfg, opt, ema, runtime.grad_scaler(cfg.amp))
    resume = Resume(checkpoint, desc, model, update, lambda: _generators(keyed))
    run = _Fit(model, deploy, cfg, desc, val, runtime, batches, update, resume, EarlyStop(cfg.patience if val is not None else None))
    run.mix, run.teacher, run.on_epoch_start, run.on_epoch_end = mix, teacher, on_epoch_start, on_epoch_end
    run.start(step)
    return run.run()


def _generators(keyed: Any) -> dict[str, torch.Generator]:
    return {"sampler": keyed.generator} if isinstance(getattr(keyed, "generator", None), torch.Generator) else {}


class _Bar:
    """The fit's progress bar; does nothing when progress is off (quiet, or not a terminal)."""

    def __init__(self, prog: Any, desc: str, total: int, done: int) -> None:
        self.prog = prog
        self.task = prog.add_task(desc, total=total, status="") if prog else None
        self.active = self.prog is not None and self.task is not None
        self.update(completed=done)

    def update(self, **fields: Any) -> None:
        if self.active:
            self.prog.update(self.task, **fields)

    def close(self) -> None:
        if self.active:
            self.prog.remove_task(self.task)


class _Fit:
    """One `fit` call: its collaborators and where it stands, so the loop reads as a short script of calls."""

    mix: Optional[BatchMixup] = None
    teacher: Optional[TeacherFn] = None
    on_epoch_start: Optional[EpochStart] = None
    on_epoch_end: Optional[EpochEnd] = None

    def __init__(
        self,
        model: nn.Module,
        deploy: nn.Module,
        cfg: TrainConfig,
        desc: str,
        val: Optional[Split],
        runtime: Runtime,
        batches: Any,
        update: Update,
        resume: Resume,
        stopper: EarlyStop,
    ) -> None:
        self.model, self.deploy, self.cfg, self.desc, self.val, self.runtime = model, deploy, cfg, desc, val, runtime
        self.batches, self.keyed = batches, batches.batch_sampler.sampler
        self.update, self.resume, self.stopper = update, resume, stopper
        self.history = History()
        self.stopped_early = False

    def start(self, step: Union[StepFn, TaughtStepFn]) -> None:
        """Restore a checkpoint if resuming, then wrap the step for DDP (which syncs the restored weights)."""
        self.best: Optional[Best] = self.resume.restore(self.history, self.on_epoch_end)
        self.pos = Position(self.resume.start_epoch, self.resume.start_batch)
        self.times = EpochTimes(self.runtime)
        self.last_val: Optional[float] = self.history[-1].get("val_acc") if self.history else None
        self.run_step = distributed.ddp_step(self.model, step, self.runtime.device, self.runtime.sync_bn)  # gradients averaged
        self.done = self.resume.start_epoch * len(self.batches) + self.resume.start_batch

    def run(self) -> History:
        with ui.progress() as prog:
            bar = _Bar(prog, self.desc, max(1, self.cfg.epochs * len(self.batches)), self.done)
            try:
                for epoch in range(self.resume.start_epoch, self.cfg.epochs):
                    if self.stopper.should_stop(self.history):
                        self.stopped_early = True
                        break
                    sums, n, extra = self.train_epoch(epoch, bar)
                    self.end_epoch(epoch, sums, n, extra)
            except KeyboardInterrupt:
                self.resume.interrupted(self.pos, self.cfg.epochs, self.best, self.history)
                raise
            finally:
                bar.close()
        return self.finish()

    def train_epoch(self, epoch: int, bar: _Bar) -> tuple[dict[str, float], int, dict[str, float]]:
        """One pass over the loader; (loss sums, samples, the epoch hook's extra fields)."""
        pos, times, batches = self.pos, self.times, self.batches
        pos.update(epoch=epoch, batch=0)
        extra = self.on_epoch_start(epoch) if self.on_epoch_start is not None else {}
        if hasattr(self.keyed, "set_epoch"):
            self.keyed.set_epoch(epoch)
        n_batches = len(batches)
        bar.update(total=max(1, self.done + (self.cfg.epochs - epoch) * n_batches))
        skip, sums, n = self.resume.epoch_start(epoch)
        pos.epoch_rng = self.resume.generator_states()
        self.model.train()
        times.start()
        waited = time.perf_counter()
        for bi, batch in enumerate(batches):
            if bi < skip:
                waited = time.perf_counter()
                continue  # trained on before the interruption; iterating keeps the order
            times.data += time.perf_counter() - waited
            with times.timed("step"):
                n, lr = self.train_batch(epoch, bi, n_batches, batch, sums, n)
            if bar.active:
                means = {k: v / n for k, v in sums.items()}
                best = self.best[:2] if self.best else None
                bar.update(advance=1, status=status_line(epoch, self.cfg.epochs, means, lr, extra, self.last_val, best))
            waited = time.perf_counter()
        pos.update(batch=n_batches, rng=rng_state(), sums=dict(sums), n=n)
        return sums, n, extra

    def train_batch(self, epoch: int, bi: int, n_batches: int, batch: Batch, sums: dict[str, float], n: int) -> tuple[int, float]:
        """Forward, backward and update on one batch; adds it to `sums`; (samples so far, lr)."""
        self.pos.update(batch=bi, rng=rng_state(), sums=dict(sums), n=n, buffers=self.resume.buffers())
        lr = self.update.set_lr(epoch + bi / n_batches, 1 / n_batches)
        loss, parts = self.forward_backward(*self.to_device(batch))
        with deferred_interrupt():
            parts = self.update(parts)
            bs = batch[0].shape[0]
            # the job's sums, step by step: a checkpoint at any batch (Ctrl-C) holds every rank's share without a
            # collective in the interrupt path, where the ranks may stand at different collectives
            step = distributed.all_reduce_sums({**{k: v * bs for k, v in {"loss": loss.item(), **parts}.items()}, _SAMPLES: bs})
            bs = int(step.pop(_SAMPLES))
            n += bs
            self.times.samples += bs
            self.done += 1
            for k, v in step.items():
                sums[k] = sums.get(k, 0.0) + v
            self.pos.update(batch=bi + 1, rng=None, buffers=None, sums=dict(sums), n=n)
        return n, lr

    def to_device(self, batch: Batch) -> tuple[Batch, Optional[float]]:
        x, y, idx = batch[0], self.runtime.to(batch[1]), self.runtime.to(batch[2])  # images: `loader` moved them
        lam = None
        if self.mix is not None:
            x, y, lam = self.mix.mix_batch(x, y)  # y becomes class probabilities [B, C]
        return (x, y, idx), lam

    def forward_backward(self, batch: Batch, lam: Optional[float]) -> tuple[torch.Tensor, dict[str, float]]:
        with self.runtime.autocast(self.cfg.amp):
            if self.teacher is None:
                loss, parts = self.run_step(batch)
            else:
                with self.times.timed("teacher"):
                    taught = self.teacher(batch, self.pos.epoch, lam)
                loss, parts = self.run_step(batch, taught)  # a TaughtStepFn with a teacher
        if not torch.isfinite(loss):
            saved = self.resume.checkpoint.path if self.resume.checkpoint is not None else None
            message = nonfinite_message(self.desc, self.pos.epoch, self.pos.batch, loss, parts, saved, self.resume.last_saved)
            raise StageError(message)
        self.update.backward(loss)
        return loss, parts

    def end_epoch(self, epoch: int, sums: dict[str, float], n: int, extra: dict[str, float]) -> None:
        """The epoch's history row (the job's means under torchrun: `sums`, `n` and the samples are the job's), validation,
        then hook and checkpoint together."""
        times = self.times
        row = {
            "epoch": epoch + 1,
            "lr": self.update.set_lr(epoch + 1),
            **extra,
            **{k: v / max(n, 1) for k, v in sums.items()},
            **times.row(),
        }
        evaluated = self.update.ema.module if self.update.ema is not None else self.deploy
        if self.val is not None:
            row["val_acc"] = self.last_val = evaluate(evaluated, self.val, f"{self.desc} eval", self.runtime)
            if self.best is None or row["val_acc"] > self.best[0]:
                self.best = (row["val_acc"], epoch + 1, state_copy(evaluated) if self.cfg.select_best else {})
            row["best_val_acc"] = self.best[0]
        with deferred_interrupt():  # the row, the hook's state and the checkpoint move on together
            self.history.append(row)
            if self.on_epoch_end is not None:
                self.on_epoch_end(epoch, row)
            self.pos.update(epoch=epoch + 1, batch=0, epoch_rng=None, rng=None, sums={}, n=0)
            self.resume.epoch_done(epoch + 1, self.best, self.history)

    def finish(self) -> History:
        """EMA or best-epoch weights into `deploy`, and what was selected into the history."""
        history, best = self.history, self.best
        if self.stopped_early:
            ui.info(f"{self.desc}: stopped early after epoch {len(history)} (no better val accuracy for {self.cfg.patience} epochs)")
            history.stopped_early = len(history)
        if self.update.ema is not None:
            self.deploy.load_state_dict(self.update.ema.module.state_dict())
        if best is not None:
            history.best_epoch = best[1]
            if self.cfg.select_best and best[2]:
                self.deploy.load_state_dict(best[2])
                history.selected = "best"
        self.model.eval()
        return history
