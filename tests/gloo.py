"""Two (or more) CPU processes joined in a gloo group, started with `spawn` (a forked child must not run torch
compute: it would enter the parent's OpenMP pool), for tests of what holds under torchrun.

`spawn_ranks(worker, *args)` runs `worker(rank, world, *args)` in every process with the process group joined and
`cann_distill.runtime.distributed` believing it runs under torchrun. `worker` must be a module-level function. An
exception in any rank fails the call with that rank's traceback (the other ranks are stopped).
"""

from __future__ import annotations

import datetime
import os
import tempfile
from typing import Any, Callable

TIMEOUT_S = 60.0


def _enter(rank: int, world: int, store: str, worker: Callable[..., Any], args: tuple[Any, ...]) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch
    import torch.distributed as dist

    from cann_distill.runtime import distributed

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", store=dist.FileStore(store, world), rank=rank, world_size=world, timeout=datetime.timedelta(seconds=TIMEOUT_S)
    )
    distributed._group = distributed.Group(rank, world, rank, "gloo", torch.device("cpu"), TIMEOUT_S)
    try:
        worker(rank, world, *args)
        dist.barrier()  # leave together: a rank that tears gloo down while a peer still works can abort at exit
        with open(_done(store, rank), "w"):
            pass
    finally:
        distributed._group = None
        dist.destroy_process_group()


def _done(store: str, rank: int) -> str:
    return f"{store}.done{rank}"


def spawn_ranks(worker: Callable[..., Any], *args: Any, world: int = 2) -> None:
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        store = os.path.join(tmp, "store")
        try:
            mp.start_processes(_enter, args=(world, store, worker, args), nprocs=world, start_method="spawn")
        except mp.ProcessExitedException:
            # gloo can abort a rank in destroy_process_group when its peer closed the connection first ("terminate
            # called without an active exception"); once every rank has finished its work and passed the last
            # barrier, that teardown is not what the tests check. A rank killed before that still fails the call.
            if not all(os.path.exists(_done(store, r)) for r in range(world)):
                raise
