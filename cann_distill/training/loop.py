"""One training loop, shared by the teacher and distill stages.

`fit` runs SGD/AdamW with linear warmup then cosine decay, optional gradient clipping, bf16
autocast and an exponential moving average (EMA) of the weights, evaluates on the validation
split after every epoch and can keep the best epoch's weights. Given a `Checkpointing`, it
saves a resumable state after every epoch and on Ctrl-C (mid-epoch, at the batch it reached),
and resumes from it bit for bit: the loader's and sampler's generators are restored to the
start of the interrupted epoch, the batches already trained on are skipped, and the global RNG
is restored to where the interrupted batch began.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cann_distill.core.errors import ArtifactError, StageError, UsageError
from cann_distill.core.files import atomic_path
from cann_distill.core.recipe import TrainConfig
from cann_distill.data.loading import BatchMixup, Split, Transform, loader
from cann_distill.runtime import distributed
from cann_distill.runtime.devices import CPU, Runtime, peak_rss_mb
from cann_distill.runtime.terminal import ui

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
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

RESUME_FORMAT = 2  # 2: the sampler owns the shuffle generator (keyed, worker-independent sampling)


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


def make_optimizer(model: nn.Module, cfg: TrainConfig, no_decay: Sequence[str] = ()) -> torch.optim.Optimizer:
    """Parameters whose name starts with a `no_decay` prefix get no weight decay (e.g. loss-balance log-variances)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    plain = [p for n, p in named if not n.startswith(tuple(no_decay))] if no_decay else [p for _, p in named]
    exempt = [p for n, p in named if n.startswith(tuple(no_decay))] if no_decay else []
    groups: list[dict[str, Any]] = [{"params": plain}] + ([{"params": exempt, "weight_decay": 0.0}] if exempt else [])
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)


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


def cosine_factor(progress: float) -> float:
    """Learning-rate factor 0.5 * (1 + cos(pi * progress)), progress in [0, 1] over the whole run."""
    return 0.5 * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def lr_factor(epoch_progress: float, epochs: int, warmup: float = 0.0, step: float = 0.0) -> float:
    """Linear warmup over the first `warmup` epochs, then cosine decay over the rest.

    `epoch_progress` counts epochs (2.5 = halfway through the third). During warmup the factor is
    that of the end of the current step (`step` = one batch in epochs), so the first step does not
    run at lr 0.
    """
    if warmup > 0 and epoch_progress < warmup:
        return min(1.0, (epoch_progress + step) / warmup)
    if epochs <= warmup:
        return 1.0
    return cosine_factor((epoch_progress - warmup) / (epochs - warmup))


class EmaWeights:
    """Exponential moving average of a module's floating-point state (parameters and BN statistics).

    ema = decay * ema + (1 - decay) * current after each optimizer step; integer buffers are copied.
    """

    def __init__(self, module: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(module).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        current = module.state_dict()
        for name, avg in self.module.state_dict().items():
            value = current[name].detach()
            if avg.dtype.is_floating_point:
                avg.mul_(self.decay).add_(value.to(avg.dtype), alpha=1 - self.decay)
            else:
                avg.copy_(value)


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


def state_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


class History(list):
    """Per-epoch rows (a plain list to JSON) plus what `fit` selected."""

    best_epoch: Optional[int] = None  # 1-based epoch with the best val accuracy (None without validation)
    selected: str = "last"  # which weights the model holds after fit: last | best
    resumed_from: Optional[dict[str, int]] = None  # {"epoch": e, "step": s} when fit resumed a checkpoint
    stopped_early: Optional[int] = None  # the last epoch trained when early stopping ended the run


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


def _nonfinite_message(
    desc: str, epoch: int, step: int, loss: torch.Tensor, parts: dict[str, float], ckpt: Optional[Checkpointing], last_saved: Optional[int]
) -> str:
    bad = [k for k, v in parts.items() if not math.isfinite(v)]
    shown = ", ".join(f"{k}={v:.4g}" for k, v in parts.items())
    which = f"non-finite component(s): {', '.join(bad)}" if bad else "the weighted sum overflowed"
    msg = f"{desc}: loss is {loss.item()} at epoch {epoch + 1} step {step + 1}, {which} ({shown})"
    if ckpt is not None and last_saved is not None:
        msg += f"; the last good checkpoint ({ckpt.path}, end of epoch {last_saved}) is kept"
    return msg + "; lower the learning rate or set grad_clip"


def _status(
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


def _rng_state() -> dict[str, Any]:
    """Global RNG states as plain tensors/lists, so the checkpoint loads with weights_only=True."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "random": list(random.getstate()[1]) + [random.getstate()[0], random.getstate()[2]],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    *internal, version, gauss = state["random"]
    random.setstate((version, tuple(internal), gauss))


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
    base_lrs = [g["lr"] for g in opt.param_groups]
    batches = loader(train, batch_size, train=True, seed=seed, sampler=sampler, transform=transform, runtime=runtime, period=period)
    keyed = batches.batch_sampler.sampler  # the keyed sampler, also under torchrun (`distributed.RankSlices`)
    ema = EmaWeights(deploy, cfg.ema_decay) if cfg.ema_decay else None
    if runtime.compile:
        deploy.compile()  # in place, so the state dict keeps its keys; in distill this is the student's forward
    scaler = runtime.grad_scaler(cfg.amp)
    params = [p for p in model.parameters() if p.requires_grad]
    stopper = EarlyStop(cfg.patience if val is not None else None)

    def set_lr(progress: float, step_size: float = 0.0) -> float:
        factor = lr_factor(progress, cfg.epochs, cfg.warmup_epochs, step_size)
        for g, lr in zip(opt.param_groups, base_lrs):
            g["lr"] = lr * factor
        return base_lrs[0] * factor

    def generators() -> dict[str, Any]:
        return {"sampler": keyed.generator} if isinstance(getattr(keyed, "generator", None), torch.Generator) else {}

    history = History()
    best: Optional[tuple[float, int, dict[str, torch.Tensor]]] = None  # (val_acc, epoch, deploy state)
    start_epoch, start_batch = 0, 0
    partial: tuple[dict[str, float], int] = ({}, 0)
    restored: Optional[dict[str, Any]] = None
    last_saved: Optional[int] = None

    if checkpoint is not None and checkpoint.resume:
        restored = read_resume(checkpoint)
        if restored is None:
            ui.info(f"[dim]{desc}: no resume checkpoint at {checkpoint.path}; starting from scratch[/dim]")
    elif checkpoint is not None and checkpoint.path.exists():
        ui.info(f"[dim]{desc}: starting over; {checkpoint.path} will be replaced (--resume continues it)[/dim]")
    if restored is not None:
        model.load_state_dict(restored["model"])
        opt.load_state_dict(restored["optimizer"])
        if ema is not None and restored.get("ema") is not None:
            ema.module.load_state_dict(restored["ema"])
        if scaler is not None and restored.get("scaler"):
            scaler.load_state_dict(restored["scaler"])
        if restored.get("best") is not None:
            b = restored["best"]
            best = (float(b["val_acc"]), int(b["epoch"]), b["state"])
        history.extend(restored["history"])
        start_epoch, start_batch = int(restored["epoch"]), int(restored["batch"])
        partial = (dict(restored["sums"]), int(restored["n"]))
        last_saved = start_epoch if start_batch == 0 else None
        if on_epoch_end is not None:
            for e, row in enumerate(history):
                on_epoch_end(e, row)
        history.resumed_from = {"epoch": start_epoch + 1, "step": start_batch + 1}
        ui.info(f"{desc}: resuming from {checkpoint.path} at epoch {start_epoch + 1} step {start_batch + 1}")  # type: ignore[union-attr]

    # where the loop is, for the Ctrl-C checkpoint; `buffers`: the model's buffers as the current batch found them
    # (its forward pass moves BatchNorm statistics before an interrupt can land, and the resumed run repeats that batch)
    pos: dict[str, Any] = {"epoch": start_epoch, "batch": start_batch, "epoch_rng": None, "rng": None, "sums": {}, "n": 0, "buffers": None}

    def buffers() -> Optional[dict[str, torch.Tensor]]:
        return {k: v.detach().clone() for k, v in model.named_buffers()} if checkpoint is not None else None

    def save(
        epoch: int,
        batch: int,
        epoch_rng: dict[str, torch.Tensor],
        rng: dict[str, Any],
        sums: dict[str, float],
        n: int,
        batch_buffers: Optional[dict[str, torch.Tensor]] = None,
    ) -> None:
        assert checkpoint is not None
        if not distributed.is_main():
            return  # rank 0 writes; every rank holds the same weights
        model_state = state_copy(model)
        model_state.update({k: v.cpu() for k, v in (batch_buffers or {}).items() if k in model_state})
        state = {
            "format": RESUME_FORMAT,
            "fingerprint": checkpoint.fingerprint,
            "epoch": epoch,
            "batch": batch,
            "model": model_state,
            "optimizer": opt.state_dict(),
            "ema": state_copy(ema.module) if ema else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "best": {"val_acc": best[0], "epoch": best[1], "state": best[2]} if best else None,
            "history": [dict(r) for r in history[:epoch]],
            "sums": dict(sums),
            "n": n,
            "epoch_rng": epoch_rng,
            "rng": rng,
        }
        with atomic_path(checkpoint.path) as tmp:
            torch.save(state, tmp)

    times = EpochTimes(runtime)

    def to_device(batch: Batch) -> tuple[Batch, Optional[float]]:
        x, y, idx = batch[0], runtime.to(batch[1]), runtime.to(batch[2])  # images: `loader` moved them
        lam = None
        if mix is not None:
            x, y, lam = mix.mix_batch(x, y)  # y becomes class probabilities [B, C]
        return (x, y, idx), lam

    def forward_backward(batch: Batch, lam: Optional[float]) -> tuple[torch.Tensor, dict[str, float]]:
        with runtime.autocast(cfg.amp):
            if teacher is None:
                loss, parts = run_step(batch)
            else:
                with times.timed("teacher"):
                    taught = teacher(batch, pos["epoch"], lam)
                loss, parts = run_step(batch, taught)  # a TaughtStepFn with a teacher
        if not torch.isfinite(loss):
            raise StageError(_nonfinite_message(desc, pos["epoch"], pos["batch"], loss, parts, checkpoint, last_saved))
        opt.zero_grad(set_to_none=True)
        (scaler.scale(loss) if scaler is not None else loss).backward()
        return loss, parts

    def update(parts: dict[str, float]) -> dict[str, float]:
        """Clip, step, scale and average; the caller holds Ctrl-C so the update and its bookkeeping stay together."""
        if scaler is not None:
            scaler.unscale_(opt)
        if cfg.grad_clip is not None:
            parts = {**parts, "grad_norm": float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))}
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        if ema is not None:
            ema.update(deploy)
        return parts

    last_val: Optional[float] = history[-1].get("val_acc") if history else None
    stopped_early = False
    run_step = distributed.ddp_step(model, step, runtime.device, runtime.sync_bn)  # DDP under torchrun: gradients averaged
    with ui.progress() as prog:
        task = prog.add_task(desc, total=max(1, cfg.epochs * len(batches)), status="") if prog else None
        done = start_epoch * len(batches) + start_batch
        if prog is not None and task is not None:
            prog.update(task, completed=done)
        try:
            for epoch in range(start_epoch, cfg.epochs):
                if stopper.should_stop(history):
                    stopped_early = True
                    break
                pos.update(epoch=epoch, batch=0)
                extra = on_epoch_start(epoch) if on_epoch_start is not None else {}
                if hasattr(keyed, "set_epoch"):
                    keyed.set_epoch(epoch)
                n_batches = len(batches)
                if prog is not None and task is not None:
                    prog.update(task, total=max(1, done + (cfg.epochs - epoch) * n_batches))
                skip = 0
                if restored is not None and epoch == start_epoch:
                    for name, gen in generators().items():
                        gen.set_state(restored["epoch_rng"][name])
                    _set_rng_state(restored["rng"])
                    skip = start_batch
                    sums, n = partial if distributed.is_main() else ({}, 0)  # rank 0 saved the sums so far
                else:
                    sums, n = {}, 0
                pos["epoch_rng"] = {name: gen.get_state() for name, gen in generators().items()}
                model.train()
                times.start()
                waited = time.perf_counter()
                for bi, batch in enumerate(batches):
                    if bi < skip:
                        waited = time.perf_counter()
                        continue  # trained on before the interruption; iterating keeps the order
                    times.data += time.perf_counter() - waited
                    with times.timed("step"):
                        pos.update(batch=bi, rng=_rng_state(), sums=dict(sums), n=n, buffers=buffers())
                        lr = set_lr(epoch + bi / n_batches, 1 / n_batches)
                        loss, parts = forward_backward(*to_device(batch))
                        with deferred_interrupt():
                            parts = update(parts)
                            bs = batch[0].shape[0]
                            n += bs
                            times.samples += bs
                            done += 1
                            for k, v in {"loss": loss.item(), **parts}.items():
                                sums[k] = sums.get(k, 0.0) + v * bs
                            pos.update(batch=bi + 1, rng=None, buffers=None)
                    if prog is not None and task is not None:
                        means = {k: v / n for k, v in sums.items()}
                        prog.update(
                            task, advance=1, status=_status(epoch, cfg.epochs, means, lr, extra, last_val, best[:2] if best else None)
                        )
                    waited = time.perf_counter()
                pos.update(batch=n_batches, rng=_rng_state(), sums=dict(sums), n=n)
                if distributed.active():  # every rank's samples: the epoch's means and throughput are the job's
                    total = distributed.all_reduce_sums({**{f"sum.{k}": v for k, v in sums.items()}, "n": n, "samples": times.samples})
                    sums = {k[4:]: v for k, v in total.items() if k.startswith("sum.")}
                    n, times.samples = int(total["n"]), int(total["samples"])
                row = {"epoch": epoch + 1, "lr": set_lr(epoch + 1), **extra, **{k: v / max(n, 1) for k, v in sums.items()}, **times.row()}
                evaluated = ema.module if ema is not None else deploy
                if val is not None:
                    row["val_acc"] = last_val = evaluate(evaluated, val, f"{desc} eval", runtime)
                    if best is None or row["val_acc"] > best[0]:
                        best = (row["val_acc"], epoch + 1, state_copy(evaluated) if cfg.select_best else {})
                    row["best_val_acc"] = best[0]
                with deferred_interrupt():  # the row, the hook's state and the checkpoint move on together
                    history.append(row)
                    if on_epoch_end is not None:
                        on_epoch_end(epoch, row)
                    pos.update(epoch=epoch + 1, batch=0, epoch_rng=None, rng=None, sums={}, n=0)
                    if checkpoint is not None:
                        save(epoch + 1, 0, {name: gen.get_state() for name, gen in generators().items()}, _rng_state(), {}, 0)
                        last_saved = epoch + 1
        except KeyboardInterrupt:
            if checkpoint is not None and pos["epoch"] < cfg.epochs:
                if pos["epoch_rng"] is None:  # between epochs: the next one starts from the current generators
                    pos["epoch_rng"] = {name: gen.get_state() for name, gen in generators().items()}
                save(pos["epoch"], pos["batch"], pos["epoch_rng"], pos["rng"] or _rng_state(), pos["sums"], pos["n"], pos["buffers"])
                ui.warn(
                    f"{desc}: interrupted at epoch {pos['epoch'] + 1} step {pos['batch'] + 1}; saved {checkpoint.path}"
                    + (f"; continue with `{checkpoint.command}`" if checkpoint.command else "")
                )
            raise
        finally:
            if prog is not None and task is not None:
                prog.remove_task(task)
    if stopped_early:
        ui.info(f"{desc}: stopped early after epoch {len(history)} (no better val accuracy for {cfg.patience} epochs)")
        history.stopped_early = len(history)
    if ema is not None:
        deploy.load_state_dict(ema.module.state_dict())
    if best is not None:
        history.best_epoch = best[1]
        if cfg.select_best and best[2]:
            deploy.load_state_dict(best[2])
            history.selected = "best"
    model.eval()
    return history
