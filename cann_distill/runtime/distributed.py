"""Running under torchrun: one process per device, PyTorch's DistributedDataParallel, rank 0 writes.

`torchrun --nproc_per_node=N -m cann_distill run|teacher|select|distill RECIPE` sets WORLD_SIZE,
RANK and LOCAL_RANK; `session` then joins the process group (gloo on the CPU, nccl on CUDA, hccl
on Ascend NPUs, or `runtime.backend`) with `runtime.dist_timeout_s` as the collective timeout.

Who does what: rank 0 takes the run-dir lock, decides which stages are up to date (`lead`), writes
the manifest, the artifacts and every checkpoint; the other ranks follow its decisions, run the
same stage code into a throwaway folder, and wait on a barrier. Training shards every global batch
(`RankSlices`): each rank takes its contiguous slice of the batch one process would draw, so the
sample order, subsets, curricula and critical weights are those of one process, and DDP's gradient
average makes a step the one-process step up to BatchNorm statistics (per rank unless
`runtime.sync_bn`). Losses that relate the samples of a batch read the global batch (`gather_batch`), and
the loss sums are summed over the ranks after every step. Without torchrun every helper here is a no-op
and `active()` is False.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from cann_distill.core import errors
from cann_distill.core.errors import CannDistillError, RecipeError, StageError, UsageError

T = TypeVar("T")
BACKENDS = ("auto", "gloo", "nccl", "hccl")


@dataclass(frozen=True)
class Group:
    rank: int
    world: int
    local_rank: int
    backend: str
    device: torch.device  # where collectives' tensors live (the CPU for gloo)
    timeout_s: float


_group: Optional[Group] = None
_alone = False  # within `alone()`: rank 0 runs a stage by itself, no collectives


def launched() -> bool:
    """True when torchrun (or another env:// launcher) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and "RANK" in os.environ


def launched_rank() -> int:
    """This process's rank from the environment (0 without torchrun); known before the group is joined."""
    return int(os.environ.get("RANK", "0") or 0) if launched() else 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0") or 0) if launched() else 0


def active() -> bool:
    return _group is not None and not _alone


def rank() -> int:
    return _group.rank if active() else 0  # type: ignore[union-attr]


def world() -> int:
    return _group.world if active() else 1  # type: ignore[union-attr]


def is_main() -> bool:
    """Rank 0, or no process group (one process): the one that writes."""
    return _group is None or _group.rank == 0


def backend_name() -> str:
    return _group.backend if active() else ""  # type: ignore[union-attr]


def backend_for(device: torch.device, setting: str = "auto") -> str:
    if setting not in BACKENDS:
        raise UsageError(f"runtime.backend '{setting}' is not one of {', '.join(BACKENDS)}")
    if setting != "auto":
        return setting
    return {"cuda": "nccl", "npu": "hccl"}.get(device.type, "gloo")


def local_device(device: torch.device) -> torch.device:
    """Under torchrun, one device per local rank: cuda:LOCAL_RANK / npu:LOCAL_RANK (the CPU stays the CPU)."""
    if not launched() or device.type == "cpu":
        return device
    lr = local_rank()
    count = torch.cuda.device_count() if device.type == "cuda" else int(torch.npu.device_count())  # type: ignore[attr-defined]
    if lr >= count:
        raise UsageError(
            f"LOCAL_RANK {lr} has no {device.type} device (this node has {count}); "
            f"launch at most {count} processes per node (--nproc_per_node={count})"
        )
    (torch.cuda if device.type == "cuda" else torch.npu).set_device(lr)  # type: ignore[attr-defined]
    return torch.device(device.type, lr)


def is_comm_error(exc: BaseException) -> bool:
    """A failed collective: a peer died, hung up or timed out (gloo raises plain RuntimeErrors for some)."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(
        s in text
        for s in ("Connection closed by peer", "Connection reset", "gloo", "Timed out", "timed out", "NCCL", "HCCL", "Broken pipe")
    )


@contextlib.contextmanager
def session(device: torch.device, backend: str = "auto", timeout_s: float = 1800.0) -> Iterator[Optional[Group]]:
    """Join the torchrun process group for the block (nothing without torchrun); leave it at the end.

    A collective that fails because another rank died or did not answer within `timeout_s`
    becomes one StageError line naming this rank.
    """
    global _group
    if not launched() or _group is not None:
        yield _group
        return
    name = backend_for(device, backend)
    if name == "hccl":
        import torch_npu  # noqa: F401  (registers the hccl backend)
    dist.init_process_group(name, timeout=datetime.timedelta(seconds=timeout_s))
    comm = device if name in ("nccl", "hccl") else torch.device("cpu")
    _group = Group(dist.get_rank(), dist.get_world_size(), local_rank(), name, comm, timeout_s)
    try:
        yield _group
    except CannDistillError:
        raise
    except Exception as exc:
        if not is_comm_error(exc):
            raise
        first = (str(exc).strip().splitlines() or [""])[0].split(". ")[0][:160]
        raise StageError(
            f"rank {_group.rank}/{_group.world}: another process of this torchrun job stopped or did not answer "
            f"within runtime.dist_timeout_s={timeout_s:g}s ({first}); the running stage's outputs were discarded; "
            "rerun (distill: with --resume) to continue"
        ) from None
    finally:
        _group = None
        try:
            dist.destroy_process_group()
        except Exception:  # a broken group may not shut down cleanly; the process is ending anyway
            pass


@contextlib.contextmanager
def alone() -> Iterator[None]:
    """Within the block this process works as if it were the only one (rank 0 running a rank-0-only stage)."""
    global _alone
    previous, _alone = _alone, True
    try:
        yield
    finally:
        _alone = previous


# ----------------------------------------------------------------------------- collectives


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (a small, picklable decision)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=_group.device)  # type: ignore[union-attr]
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    if not active():
        return [obj]
    out: list[Any] = [None] * world()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sums(values: dict[str, float]) -> dict[str, float]:
    """Sum each value over the ranks (every rank must pass the same keys)."""
    if not active() or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_group.device)  # type: ignore[union-attr]
    dist.all_reduce(t)
    return dict(zip(keys, t.cpu().tolist()))


def weight_share(weights: torch.Tensor) -> torch.Tensor:
    """This rank's share of the global batch's weight sum (sum over every rank's slice / ranks), detached: dividing a
    slice's weighted loss sum by it makes DDP's average over the ranks the one-process weighted mean. Without
    torchrun: `weights.sum()`."""
    total = weights.detach().float().sum()
    if not active():
        return total
    total = total.to(_group.device)  # type: ignore[union-attr]
    dist.all_reduce(total)
    return total.to(weights.device) / world()


def batch_counts(rows: int) -> list[int]:
    """Every rank's row count of the current batch, in rank order (slices may differ by one row)."""
    if not active():
        return [rows]
    t = torch.tensor([rows], dtype=torch.int64, device=_group.device)  # type: ignore[union-attr]
    parts = [torch.empty_like(t) for _ in range(world())]
    dist.all_gather(parts, t)
    return [int(p.item()) for p in parts]


class _GatherRows(torch.autograd.Function):
    """All ranks' rows in rank order, forward; backward: the gradient of this rank's rows summed over every rank's
    loss (each rank's loss reads every row, so each row's owner must collect what every rank sends back)."""

    @staticmethod
    def forward(ctx: Any, local: torch.Tensor, counts: list[int]) -> torch.Tensor:  # type: ignore[override]
        comm = _group.device  # type: ignore[union-attr]
        wire = torch.float32 if comm.type == "cpu" and local.dtype in (torch.float16, torch.bfloat16) else local.dtype
        padded = torch.zeros((max(counts), *local.shape[1:]), dtype=wire, device=comm)
        padded[: len(local)] = local.detach().to(comm, wire)
        parts = [torch.empty_like(padded) for _ in counts]
        dist.all_gather(parts, padded)
        ctx.counts, ctx.rank, ctx.device, ctx.dtype = counts, rank(), local.device, local.dtype
        return torch.cat([p[:c] for p, c in zip(parts, counts)]).to(local.device, local.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        comm = _group.device  # type: ignore[union-attr]
        wire = torch.float32 if comm.type == "cpu" and grad.dtype in (torch.float16, torch.bfloat16) else grad.dtype
        summed = grad.detach().to(comm, wire, copy=True).contiguous()  # a copy: the all-reduce works in place
        dist.all_reduce(summed)
        lo = sum(ctx.counts[: ctx.rank])
        return summed[lo : lo + ctx.counts[ctx.rank]].to(ctx.device, ctx.dtype), None


def gather_batch(local: torch.Tensor, counts: Optional[Sequence[int]] = None) -> tuple[torch.Tensor, slice]:
    """Every rank's rows of `local` [b, ...], concatenated in rank order (the global batch one process sees), and
    where this rank's rows are in it. Differentiable: a loss of the global batch sends each rank's rows their
    gradient from every rank's loss, so DDP's average is the one-process gradient. Without torchrun: `local` itself.
    `counts`: every rank's rows (`batch_counts`), when the caller already has them."""
    if not active():
        return local, slice(0, len(local))
    counts = list(counts) if counts is not None else batch_counts(len(local))
    lo = sum(counts[: rank()])
    return _GatherRows.apply(local, counts), slice(lo, lo + counts[rank()])


def broadcast_array(arr: Optional[np.ndarray]) -> np.ndarray:
    """Rank 0's array on every rank (as a tensor, so large arrays are not pickled)."""
    if not active():
        assert arr is not None
        return arr
    meta = broadcast_object((arr.shape, arr.dtype.str) if arr is not None else None)
    t = (
        torch.from_numpy(np.ascontiguousarray(arr))
        if is_main()
        else torch.empty(meta[0], dtype=torch.from_numpy(np.zeros(0, meta[1])).dtype)
    )
    t = t.to(_group.device)  # type: ignore[union-attr]
    dist.broadcast(t, src=0)
    return t.cpu().numpy()


def gather_rows(local: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """Concatenate every rank's rows in rank order on every rank; rank r holds `counts[r]` rows."""
    if not active():
        return local
    longest = max(counts)
    t = torch.zeros((longest, *local.shape[1:]), dtype=torch.from_numpy(local[:0]).dtype)
    t[: len(local)] = torch.from_numpy(local)
    t = t.to(_group.device)  # type: ignore[union-attr]
    parts = [torch.empty_like(t) for _ in range(world())]
    dist.all_gather(parts, t)
    return np.concatenate([p.cpu().numpy()[:c] for p, c in zip(parts, counts)])


def check_same(what: str, value: str) -> None:
    """Every rank must have loaded the same `what` (e.g. the recipe's hash); UsageError naming the ranks that differ."""
    values = all_gather_object(value)
    if len(set(values)) > 1:
        odd = [r for r, v in enumerate(values) if v != values[0]]
        raise UsageError(
            f"the {what} differs across the ranks of this torchrun job (rank 0: {values[0][:12]}, "
            f"rank(s) {', '.join(map(str, odd))}: {', '.join(values[r][:12] for r in odd)}); "
            "launch every rank with the same recipe file, --set overrides and run dir"
        )


def check_divisible(batch_sizes: dict[str, int]) -> None:
    """Each global batch is split evenly over the ranks: refuse (RecipeError, exit 2) a batch size the world size
    does not divide, before any stage trains."""
    if not active():
        return
    bad = {k: v for k, v in batch_sizes.items() if v % world()}
    if bad:
        listing = ", ".join(f"{k}={v}" for k, v in bad.items())
        raise RecipeError(
            f"{listing}: not divisible by the {world()} processes of this torchrun job (each rank takes "
            f"batch_size / {world()} samples of every batch); use a multiple of {world()}"
        )


def lead(decide: Callable[[], T]) -> T:
    """Rank 0 runs `decide` and every rank gets its result; an error it raises is raised on every rank."""
    if not active():
        return decide()
    if is_main():
        try:
            result = decide()
        except CannDistillError as exc:
            broadcast_object(("error", type(exc).__name__, str(exc)))
            raise
        broadcast_object(("ok", result))
        return result
    outcome = broadcast_object(None)
    if outcome[0] == "error":
        cls = getattr(errors, outcome[1], StageError)
        raise cls(f"rank {rank()}: rank 0 stopped: {outcome[2]}")
    return outcome[1]


def follow_cache(
    get_or_compute: Callable[[Callable[[], np.ndarray]], tuple[np.ndarray, Any]], compute: Callable[[], np.ndarray]
) -> tuple[np.ndarray, Any]:
    """A cache that rank 0 alone reads and writes: on a miss every rank joins `compute` (a sharded pass,
    every rank gets the whole array); on a hit rank 0 sends the array. Returns (array, rank 0's status)."""
    if not active():
        return get_or_compute(compute)
    joined: list[np.ndarray] = []

    def create(announce: Callable[[], None]) -> tuple[np.ndarray, Any]:
        def announced() -> np.ndarray:
            announce()
            return compute()

        return get_or_compute(announced)

    found, filled = follow_entry(create, lambda: joined.append(compute()))
    if found is not None:  # rank 0
        if not filled:
            broadcast_array(found[0])
        return found
    return (joined[0], "miss") if filled else (broadcast_array(None), "hit")


def follow_entry(get_or_create: Callable[[Callable[[], None]], T], join: Callable[[], None]) -> tuple[Optional[T], bool]:
    """An entry that rank 0 alone opens and writes but every rank fills: rank 0 runs `get_or_create(announce)`,
    whose fill calls `announce()` first on a miss; the other ranks then run `join` (their share of the filling,
    sent to rank 0), and nothing on a hit. Returns (rank 0's result there, None elsewhere; whether it was filled)."""
    if not active():
        filled: list[bool] = []
        return get_or_create(lambda: filled.append(True)), bool(filled)
    if is_main():
        joined: list[bool] = []

        def announce() -> None:
            broadcast_object("fill")
            joined.append(True)

        out = get_or_create(announce)
        if not joined:
            broadcast_object("hit")
        return out, bool(joined)
    if broadcast_object(None) == "fill":
        join()
        return None, True
    return None, False


def gather_to_main(dest: Optional[np.ndarray], local: np.ndarray, counts: Sequence[int], chunk_bytes: int = 1 << 24) -> None:
    """The other ranks' `local` rows (rank r holds `counts[r]`) written into rank 0's `dest` (e.g. a memory map) at
    their rank-order offsets; rank 0's own rows are already in place (its `local` is its slice of `dest`), and
    `dest` is ignored elsewhere. Sent as raw bytes in chunks of about `chunk_bytes` per rank, so no rank holds more
    than world × chunk_bytes extra, whatever the array's size. A no-op without torchrun."""
    if not active():
        return
    row_bytes = int(np.prod(local.shape[1:], dtype=np.int64)) * local.itemsize or 1
    raw = np.ascontiguousarray(local).view(np.uint8).reshape(len(local), row_bytes)
    rows = max(1, chunk_bytes // row_bytes)
    offsets = np.cumsum([0, *counts])
    for start in range(0, max(counts), rows):
        t = torch.zeros((rows, row_bytes), dtype=torch.uint8)
        piece = raw[start : start + rows] if not is_main() else raw[:0]  # rank 0 sends nothing it needs
        t[: len(piece)] = torch.from_numpy(piece)
        t = t.to(_group.device)  # type: ignore[union-attr]
        parts = [torch.empty_like(t) for _ in range(world())] if is_main() else None
        dist.gather(t, parts, dst=0)
        if parts is None:
            continue
        assert dest is not None
        for r in range(1, world()):
            n = min(rows, counts[r] - start)
            if n > 0:
                at = int(offsets[r]) + start
                dest[at : at + n] = parts[r][:n].cpu().numpy().view(dest.dtype).reshape(n, *dest.shape[1:])


def shard_range(n: int, align: int = 1) -> tuple[int, int]:
    """This rank's contiguous rows [lo, hi) of n, cut at multiples of `align` (whole batches)."""
    counts = shard_counts(n, align)
    lo = sum(counts[: rank()])
    return lo, lo + counts[rank()]


def shard_counts(n: int, align: int = 1) -> list[int]:
    """Rows per rank: whole `align`-sized blocks dealt out as evenly as possible, the last block to the last holder."""
    blocks = -(-n // align) if n else 0
    per = [len(b) for b in np.array_split(np.arange(blocks), world())]
    counts, start = [], 0
    for b in per:
        counts.append(max(0, min(n, (start + b) * align) - start * align))
        start += b
    return counts


# ----------------------------------------------------------------------------- training


class RankSlices(torch.utils.data.Sampler[list]):
    """Each global batch of `batches`, cut into `world` contiguous slices; this rank yields slice `rank`.

    The union of the ranks' slices, in rank order, is exactly the batch one process draws.
    `sampler` is the wrapped batch sampler's sampler (the keyed sampler `fit` sets the epoch of).
    """

    def __init__(self, batches: torch.utils.data.BatchSampler, rank: int, world: int) -> None:
        self.batches, self.rank, self.world = batches, rank, world

    @property
    def sampler(self) -> Any:
        return self.batches.sampler

    def __iter__(self) -> Iterator[list]:
        for batch in self.batches:
            if len(batch) < self.world:
                raise UsageError(
                    f"a training batch of {len(batch)} sample(s) cannot be split over {self.world} processes; "
                    "use more data or fewer processes"
                )
            size, extra = divmod(len(batch), self.world)  # the first `extra` ranks take one more (np.array_split's cut)
            lo = self.rank * size + min(self.rank, extra)
            yield list(batch[lo : lo + size + (self.rank < extra)])

    def __len__(self) -> int:
        return len(self.batches)


def rank_batches(batches: torch.utils.data.BatchSampler) -> torch.utils.data.Sampler:
    """The batch sampler this process iterates: `batches` itself, or its rank slices under torchrun."""
    if not active():
        return batches
    if batches.batch_size % world():  # type: ignore[operator]
        check_divisible({"batch_size": int(batches.batch_size)})  # type: ignore[arg-type]
    return RankSlices(batches, rank(), world())


class _Step(nn.Module):
    """A training step as a module, so DistributedDataParallel sees the forward that builds the loss."""

    def __init__(self, model: nn.Module, step: Callable[..., Any]) -> None:
        super().__init__()
        self.model = model
        self.step = step

    def forward(self, *args: Any) -> Any:
        return self.step(self.model, *args)


def ddp_step(model: nn.Module, step: Callable[..., Any], device: torch.device, sync_bn: bool = False) -> Callable[..., Any]:
    """`step` run through DistributedDataParallel over `model` (gradients averaged over the ranks); `step` itself alone.

    The model keeps its own state-dict keys: DDP wraps a holder, never replaces `model`.
    """
    if not active():
        return lambda *args: step(model, *args)
    if sync_bn:
        from timm.layers import convert_sync_batchnorm

        for name, child in list(model.named_children()):
            setattr(model, name, convert_sync_batchnorm(child))  # in place: `deploy` (a child) sees the same modules
    ids = [device.index] if device.type in ("cuda", "npu") else None
    return nn.parallel.DistributedDataParallel(_Step(model, step), device_ids=ids)


@torch.no_grad()
def sync_module(module: nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (BatchNorm statistics drift per rank)."""
    if not active():
        return
    for t in [*module.parameters(), *module.buffers()]:
        if _group.device.type == "cpu" or t.device == _group.device:  # type: ignore[union-attr]
            dist.broadcast(t.data, src=0)
        else:
            moved = t.data.to(_group.device)  # type: ignore[union-attr]
            dist.broadcast(moved, src=0)
            t.data.copy_(moved)
