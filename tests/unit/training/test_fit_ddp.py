"""`fit` on 2 gloo ranks against one process on the same global batches: one SGD step gives the same weights, a
Ctrl-C checkpoint holds the job's loss sums (both ranks' samples), and resuming it gives the uninterrupted history."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.gloo import spawn_ranks

# float32 weights: the ranks differ from one process in summation order only (each rank's slice mean, then DDP's
# average of the two); a step that missed the average (each rank its own slice's gradient) differs by ~0.2 here
ATOL = 1e-6
AT = 4  # Ctrl-C at global step 4: epoch 2, batch 2 of 3


def _split(n: int):
    from cann_distill.data.loading import Split

    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    targets = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return Split("train", [f"toy/{i}" for i in range(n)], targets.numpy(), ["a", "b", "c"], lambda i: x[i], lambda t: t)


def _net() -> torch.nn.Module:
    torch.manual_seed(1)  # no BatchNorm: DDP's step is the one-process step exactly
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


class _Interrupt:
    """ce_step that raises KeyboardInterrupt at global step `at` (on every rank: Ctrl-C reaches each process)."""

    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0

    def __call__(self, model, batch):
        from cann_distill.training.loop import ce_step

        self.calls += 1
        if self.calls == self.at + 1:
            raise KeyboardInterrupt
        return ce_step(model, batch)


def _one_step(rank: int, world: int, out: Path) -> None:
    from cann_distill.core.recipe import TrainConfig
    from cann_distill.runtime import distributed
    from cann_distill.training.loop import ce_step, fit

    cfg = TrainConfig(epochs=1, lr=0.5, momentum=0.9, weight_decay=5e-4, warmup_epochs=0)
    split = _split(8)  # one global batch of 8: one optimizer step, 4 samples per rank
    two = _net()
    fit(two, split, cfg, 8, ce_step, 0, "toy")
    with distributed.alone():
        one = _net()
        fit(one, split, cfg, 8, ce_step, 0, "toy")
    torch.save({"two": two.state_dict(), "one": one.state_dict(), "start": _net().state_dict()}, out / f"step{rank}.pt")


def _resume(rank: int, world: int, out: Path) -> None:
    import torch.distributed as dist

    from cann_distill.core.recipe import TrainConfig
    from cann_distill.runtime import distributed
    from cann_distill.training.loop import Checkpointing, ce_step, fit

    cfg = TrainConfig(epochs=3, lr=0.1, warmup_epochs=0)
    split = _split(24)  # 3 global batches of 8 per epoch
    straight = fit(_net(), split, cfg, 8, ce_step, 0, "toy")
    ckpt = Checkpointing(out / "two.pt", "fp")
    with pytest.raises(KeyboardInterrupt):
        fit(_net(), split, cfg, 8, _Interrupt(AT), 0, "toy", checkpoint=ckpt)
    if rank == 0:
        (out / "two_interrupted.pt").write_bytes(ckpt.path.read_bytes())  # the resumed fit replaces it every epoch
    dist.barrier()  # rank 0 has written the checkpoint
    resumed = fit(_net(), split, cfg, 8, ce_step, 0, "toy", checkpoint=Checkpointing(ckpt.path, "fp", resume=True))
    rows = {"straight": list(straight), "resumed": list(resumed)}
    if rank == 0:  # one process, interrupted at the same step (rank 0 alone writes checkpoints)
        with distributed.alone():
            rows["one"] = list(fit(_net(), split, cfg, 8, ce_step, 0, "toy"))
            with pytest.raises(KeyboardInterrupt):
                fit(_net(), split, cfg, 8, _Interrupt(AT), 0, "toy", checkpoint=Checkpointing(out / "one.pt", "fp"))
    torch.save(rows, out / f"rows{rank}.pt")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fit_ddp")
    spawn_ranks(_both, out)
    return out


def _both(rank: int, world: int, out: Path) -> None:
    _one_step(rank, world, out)
    _resume(rank, world, out)


def test_one_sgd_step_on_two_ranks_is_the_one_process_step(ranks: Path) -> None:
    for rank in (0, 1):
        got = torch.load(ranks / f"step{rank}.pt", weights_only=True)
        for k, v in got["one"].items():
            assert (v - got["start"][k]).abs().max() > 1e-3, k  # the step moved every tensor
            assert torch.allclose(got["two"][k], v, rtol=0, atol=ATOL), (rank, k, (got["two"][k] - v).abs().max().item())


def test_ctrl_c_checkpoint_holds_the_job_sums_and_resumes_to_the_same_history(ranks: Path) -> None:
    two = torch.load(ranks / "two_interrupted.pt", weights_only=True)
    one = torch.load(ranks / "one.pt", weights_only=True)
    assert (two["epoch"], two["batch"]) == (one["epoch"], one["batch"]) == divmod(AT, 3)
    assert two["n"] == one["n"] == 8  # the job's samples of the epoch so far, not rank 0's 4
    assert two["sums"].keys() == one["sums"].keys()
    for k, v in one["sums"].items():
        assert two["sums"][k] == pytest.approx(v, rel=1e-5), k
    rows = [torch.load(ranks / f"rows{rank}.pt", weights_only=False) for rank in (0, 1)]
    for r in rows:  # every rank's history: the resumed run's rows are the uninterrupted run's
        for got, want in zip(r["resumed"], r["straight"], strict=True):
            assert got["loss"] == pytest.approx(want["loss"], rel=1e-9), (got, want)
    for got, want in zip(rows[0]["straight"], rows[0]["one"], strict=True):  # and the one-process history
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
