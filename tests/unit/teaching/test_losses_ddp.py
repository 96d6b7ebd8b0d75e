"""Relational losses (sp, rkd) on 2 gloo ranks see the global batch: the loss and the DDP-averaged gradient equal the
one-process ones on the whole batch, also when the ranks' slices differ by a row."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.gloo import spawn_ranks

# float32 everywhere; the ranks differ from one process only in summation order (the gathered Gram / distance
# matrices are the same numbers, the weighted sum is split in two and re-added)
RTOL, ATOL = 1e-5, 1e-6
CASES = [("sp", {"student": "logits", "teacher": "logits"}), ("rkd", {})]


def _batch(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    return torch.randn(n, 6, generator=g), torch.randn(n, 5, generator=g), torch.rand(n, generator=g) + 0.5


def _excess(got: torch.Tensor, want: torch.Tensor) -> float:
    """How far `got` lies outside torch.allclose(got, want, RTOL, ATOL): <= 0 inside."""
    return float((got - want).abs().sub(ATOL + RTOL * want.abs()).max())


def _worker(rank: int, world: int, out: str) -> None:
    import torch.distributed as dist

    from cann_distill.runtime import distributed
    from cann_distill.teaching.losses import LOSSES, rank_rows

    rows = []
    for kind, kwargs in CASES:
        loss = LOSSES.build(kind, **kwargs)
        for n in (8, 7):  # 4 + 4 rows, and 4 + 3 (a short last batch)
            x, t, w = _batch(n)
            torch.manual_seed(0)
            one = torch.nn.Linear(6, 5)
            two = torch.nn.Linear(6, 5)
            two.load_state_dict(one.state_dict())

            with distributed.alone():  # the reference: one process, the whole batch
                full = rank_rows(loss, {"student.logits": one(x), "teacher.logits": t})
                want = (full * w).sum() / w.sum()
                want.backward()

            lo = [0, 4][rank]
            mine = slice(lo, lo + [4, n - 4][rank])

            def step(model: torch.nn.Module, xs: torch.Tensor, ts: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
                per = rank_rows(loss, {"student.logits": model(xs), "teacher.logits": ts})
                assert per.shape == (len(xs),)
                return (per * ws).sum() / distributed.weight_share(ws)

            ddp = distributed.ddp_step(two, step, torch.device("cpu"))  # held until backward: its hooks average
            got = ddp(x[mine], t[mine], w[mine])
            got.backward()  # DDP averages the gradients over the ranks
            value = got.detach().clone()
            dist.all_reduce(value)
            value /= world
            grads = dict(one.named_parameters())
            # the data makes the difference visible: each rank's slice alone gives another loss
            sliced = loss({"student.logits": one(x[mine]).detach(), "teacher.logits": t[mine]})
            alone = (sliced * w[mine]).sum() / distributed.weight_share(w[mine])
            dist.all_reduce(alone)
            rows.append(
                {
                    "kind": kind,
                    "n": n,
                    "rows": len(x[mine]),
                    "loss_excess": _excess(value, want.detach()),
                    "grad_excess": max(_excess(p.grad, grads[name].grad) for name, p in two.named_parameters()),
                    "alone_vs_global": float(((alone / world) - want.detach()).abs() / want.detach().abs()),
                }
            )
    Path(out, f"rank{rank}.json").write_text(json.dumps(rows))


def test_relational_losses_see_the_global_batch_on_two_ranks(tmp_path: Path) -> None:
    spawn_ranks(_worker, str(tmp_path))
    for rank in range(2):
        rows = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert [(r["kind"], r["n"]) for r in rows] == [(k, n) for k, _ in CASES for n in (8, 7)]
        assert [r["rows"] for r in rows] == [[4, 4][rank], [4, 3][rank]] * len(CASES)
        for r in rows:
            assert r["loss_excess"] <= 0, r  # the DDP loss is the one-process loss on the whole batch
            assert r["grad_excess"] <= 0, r  # and so is the averaged gradient
            assert r["alone_vs_global"] > 1e-3, r  # while each slice alone gives another loss
