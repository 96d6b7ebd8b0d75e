"""Mutual learning: the dml loss on hand-made logits, the peers' summed step with detached targets, the best peer."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from cann_distill.core.recipe import LossSpec
from cann_distill.models.build import create_model
from cann_distill.teaching.distiller import Distiller
from cann_distill.teaching.losses import LOSSES
from cann_distill.teaching.mutual import MutualStep, PeerModels, PeerStudents, evaluate_peers


def kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return (p * (p.log() - q.log())).sum(-1)


def test_dml_is_the_mean_kl_from_every_other_peer() -> None:
    s = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    peers = torch.tensor([[[0.0, 1.0, 0.0], [1.0, 1.0, 1.0]], [[2.0, 0.0, 0.0], [0.0, 3.0, 0.0]]])
    got = LOSSES.build("dml")({"student.logits": s, "peers.logits": peers})
    q = torch.softmax(s, 1)
    by_hand = (kl(torch.softmax(peers[0], 1), q) + kl(torch.softmax(peers[1], 1), q)) / 2
    torch.testing.assert_close(got, by_hand, rtol=1e-5, atol=1e-6)
    tempered = LOSSES.build("dml", temperature=2.0)({"student.logits": s, "peers.logits": peers[:1]})
    torch.testing.assert_close(tempered, kl(torch.softmax(peers[0] / 2, 1), torch.softmax(s / 2, 1)) * 4, rtol=1e-5, atol=1e-6)
    assert LOSSES.build("dml")({"student.logits": s, "peers.logits": s.unsqueeze(0)}).abs().max() < 1e-6
    with pytest.raises(ValueError, match=r"dml needs 'peers.logits' \[P, B, C\]"):
        LOSSES.build("dml")({"student.logits": s, "peers.logits": s})


def peer(arch: str, seed: int) -> Distiller:
    torch.manual_seed(seed)
    specs = [LossSpec(kind="ce", weight=1.0), LossSpec(kind="dml", weight=1.0)]
    return Distiller(specs, create_model(arch, 4, 1), student_arch=arch, sample=torch.randn(2, 1, 16, 16))


def test_each_peer_learns_from_the_others_through_its_own_loss_only() -> None:
    peers = [peer("test_efficientnet", 0), peer("test_resnet", 1)]
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(4, 1, 16, 16, generator=g), torch.tensor([0, 1, 2, 3])
    step = MutualStep(peers, torch.ones(4))
    for d in peers:
        d.model.eval()  # no BatchNorm statistics moving between the two forwards
    total, parts = step(PeerModels(peers), (x, y, torch.arange(4)), {})
    assert {"ce", "dml", "peer1.ce", "peer1.dml"} == set(parts)
    total.backward()
    grads = [p.grad.clone() for p in peers[1].student.parameters()]
    # peer 1's gradient is that of its own loss, with peer 0's logits as a fixed target
    for p in peers[1].student.parameters():
        p.grad = None
    with torch.no_grad():
        target = peers[0].student(x).unsqueeze(0)
    own, _ = peers[1].loss({**peers[1].student_outputs(x), "targets": y, "peers.logits": target}, torch.ones(4))
    own.backward()
    for a, p in zip(grads, peers[1].student.parameters()):
        torch.testing.assert_close(a, p.grad)
    assert PeerStudents(peers)(x).shape == (4, 4) and len(list(PeerModels(peers).parameters())) > 0


def test_the_best_peer_on_val_is_exported_and_the_first_wins_a_tie(monkeypatch: pytest.MonkeyPatch) -> None:
    peers = [peer("test_efficientnet", 0), peer("test_efficientnet", 1), peer("test_efficientnet", 2)]
    val = SimpleNamespace(name="val", targets=torch.zeros(3, dtype=torch.long).numpy())
    scores = iter([0.5, 0.75, 0.75])
    monkeypatch.setattr("cann_distill.teaching.mutual.predict", lambda *a, **k: None)
    monkeypatch.setattr("cann_distill.teaching.mutual.accuracy", lambda *a: next(scores))
    best, rows = evaluate_peers(peers, ["a", "b", "c"], SimpleNamespace(val=val, test=None))  # type: ignore[arg-type]
    assert best == 1 and [r["exported"] for r in rows] == [False, True, False] and [r["val_acc"] for r in rows] == [0.5, 0.75, 0.75]
