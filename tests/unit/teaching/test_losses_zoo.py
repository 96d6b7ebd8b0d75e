"""Hand-computed values for the loss zoo (dkd, feature, relation losses) and connectors."""

from __future__ import annotations

import math
from typing import Any, Iterator, Mapping

import pytest
import torch
from torch import nn

from cann_distill.models.connectors import Connector, build_connector
from cann_distill.teaching.losses import LOSSES
from cann_distill.teaching.losses.feature import channel_sensitivity


def t4(rows: list[list[list[float]]]) -> torch.Tensor:
    """One sample [C, H, W] from nested lists -> [1, C, H, W]."""
    return torch.tensor([rows], dtype=torch.float32)


def feats(s: torch.Tensor, t: torch.Tensor, **extra: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"student.feat.a": s, "teacher.feat.a": t, **extra}


# ---------------------------------------------------------------- dkd


def _softmax(z: list[float]) -> list[float]:
    m = max(z)
    e = [math.exp(v - m) for v in z]
    return [v / sum(e) for v in e]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


def _dkd_by_hand(s: list[float], t: list[float], y: int, alpha: float, beta: float, T: float) -> float:
    ps, pt = _softmax([v / T for v in s]), _softmax([v / T for v in t])
    tckd = _kl([pt[y], 1 - pt[y]], [ps[y], 1 - ps[y]])
    qs = _softmax([v / T for i, v in enumerate(s) if i != y])
    qt = _softmax([v / T for i, v in enumerate(t) if i != y])
    return (alpha * tckd + beta * _kl(qt, qs)) * T * T


def test_dkd_matches_hand_computed_value() -> None:
    s, t, y = [2.0, 1.0, 0.0, -1.0], [1.0, 2.0, 0.5, 0.0], [0, 2]
    out = {"student.logits": torch.tensor([s, s]), "teacher.logits": torch.tensor([t, t]), "targets": torch.tensor(y)}
    got = LOSSES.build("dkd", alpha=1.0, beta=8.0, temperature=2.0)(out)
    assert got.shape == (2,)
    for i in range(2):
        assert got[i].item() == pytest.approx(_dkd_by_hand(s, t, y[i], 1.0, 8.0, 2.0), rel=1e-5)


def test_dkd_reassembles_kd_and_honours_per_sample_temperature() -> None:
    # Zhao et al., Eq. 7: KD = TCKD + (1 - p_t[target]) * NCKD
    torch.manual_seed(0)
    s, t, y = torch.randn(5, 6), torch.randn(5, 6), torch.tensor([0, 1, 2, 3, 5])
    out = {"student.logits": s, "teacher.logits": t, "targets": y}
    T = 3.0
    tckd = LOSSES.build("dkd", alpha=1.0, beta=0.0, temperature=T)(out)
    nckd = LOSSES.build("dkd", alpha=0.0, beta=1.0, temperature=T)(out)
    pt = torch.softmax(t / T, 1)[torch.arange(5), y]
    kd = LOSSES.build("kd", temperature=T)(out)
    torch.testing.assert_close(tckd + (1 - pt) * nckd, kd, rtol=1e-5, atol=1e-6)
    dkd = LOSSES.build("dkd", temperature=1.0)
    per = dkd({**out, "temperature": torch.full((5,), T)})
    torch.testing.assert_close(per, LOSSES.build("dkd", temperature=T)(out))


def test_dkd_is_zero_for_equal_logits_and_rejects_mismatched_shapes() -> None:
    x = torch.randn(4, 10)
    dkd = LOSSES.build("dkd")
    assert dkd.requires == ("student.logits", "teacher.logits", "targets")
    assert dkd({"student.logits": x, "teacher.logits": x, "targets": torch.arange(4)}).abs().max().item() < 1e-5
    with pytest.raises(ValueError, match=r"student\.logits.*teacher\.logits.*\(4, 10\).*\(4, 9\)"):
        dkd({"student.logits": x, "teacher.logits": x[:, :9], "targets": torch.arange(4)})
    with pytest.raises(ValueError):
        LOSSES.build("dkd", temperature=0.0)


# ---------------------------------------------------------------- dist, and kd with standardized logits


def _pearson(a: list[float], b: list[float]) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    num = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    return num / (math.sqrt(sum((x - ma) ** 2 for x in a)) * math.sqrt(sum((y - mb) ** 2 for y in b)))


def _dist_by_hand(s: list[list[float]], t: list[list[float]], beta: float, gamma: float, T: float) -> list[float]:
    ps = [_softmax([v / T for v in row]) for row in s]
    pt = [_softmax([v / T for v in row]) for row in t]
    classes = range(len(s[0]))
    intra = sum(1 - _pearson([r[c] for r in ps], [r[c] for r in pt]) for c in classes) / len(s[0])
    return [T * T * (beta * (1 - _pearson(a, b)) + gamma * intra) for a, b in zip(ps, pt)]


def test_dist_matches_hand_computed_value_and_its_batch_mean_is_the_papers_loss() -> None:
    s = [[2.0, 1.0, 0.0, -1.0], [0.5, -0.5, 1.5, 0.0], [1.0, 1.0, -2.0, 0.3]]
    t = [[1.0, 2.0, 0.5, 0.0], [0.0, 0.2, 2.5, -1.0], [2.0, 0.1, -1.0, 0.4]]
    out = {"student.logits": torch.tensor(s), "teacher.logits": torch.tensor(t)}
    for beta, gamma, T in [(1.0, 1.0, 1.0), (2.0, 2.0, 4.0), (1.0, 0.0, 2.0)]:
        got = LOSSES.build("dist", beta=beta, gamma=gamma, temperature=T)(out)
        assert got.shape == (3,)
        for g, want in zip(got.tolist(), _dist_by_hand(s, t, beta, gamma, T)):
            assert g == pytest.approx(want, rel=1e-5)
    # teacher log-probabilities (replayed targets) give the same loss: only softmax(t / T) is read
    logp = torch.log_softmax(torch.tensor(t), dim=1)
    torch.testing.assert_close(LOSSES.build("dist")({**out, "teacher.logits": logp}), LOSSES.build("dist")(out), rtol=1e-5, atol=1e-6)


def test_dist_is_zero_for_equal_logits_is_relational_and_rejects_bad_input() -> None:
    x = torch.randn(6, 5)
    dist = LOSSES.build("dist", beta=1.0, gamma=1.0, temperature=4.0)
    assert dist.relational and dist.teacher_logits == "distribution"
    assert dist({"student.logits": x, "teacher.logits": x}).abs().max().item() < 1e-4  # float32 rounding, times T^2 = 16
    with pytest.raises(ValueError, match=r"dist needs .*\(6, 5\).*\(6, 4\)"):
        dist({"student.logits": x, "teacher.logits": x[:, :4]})
    with pytest.raises(ValueError, match="temperature"):
        LOSSES.build("dist", temperature=0.0)
    with pytest.raises(ValueError, match="beta and gamma"):
        LOSSES.build("dist", gamma=-1.0)


def test_kd_standardize_z_scores_both_logits_before_the_temperature() -> None:
    # Sun et al. (CVPR 2024): KD on (z - mean) / std per sample; a shift or scale of either logit vector changes nothing
    s, t, T = [2.0, 1.0, 0.0, -1.0], [1.0, 4.0, 0.5, 0.0], 2.0

    def z(v: list[float]) -> list[float]:
        m = sum(v) / len(v)
        sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))  # unbiased, as the authors' torch.std
        return [(x - m) / (sd + 1e-7) for x in v]

    want = _kl(_softmax([v / T for v in z(t)]), _softmax([v / T for v in z(s)])) * T * T
    kd = LOSSES.build("kd", temperature=T, standardize=True)
    got = kd({"student.logits": torch.tensor([s]), "teacher.logits": torch.tensor([t])})
    assert got.item() == pytest.approx(want, rel=1e-5)
    moved = kd({"student.logits": torch.tensor([s]) * 3 + 5, "teacher.logits": torch.log_softmax(torch.tensor([t]) * 0.5, dim=1)})
    assert moved.item() == pytest.approx(want, rel=1e-4)
    plain = LOSSES.build("kd", temperature=T)({"student.logits": torch.tensor([s]), "teacher.logits": torch.tensor([t])})
    assert abs(plain.item() - want) > 1e-3  # off by default
    with pytest.raises(ValueError, match="standardize"):
        LOSSES.build("kd", standardize="yes")


# ---------------------------------------------------------------- feature losses


def test_feature_losses_read_the_named_taps() -> None:
    for name in ("fitnet", "cw_mse", "at", "attn_mse"):
        loss = LOSSES.build(name, student="2", teacher="3")
        assert loss.requires == ("student.feat.2", "teacher.feat.3")
    with pytest.raises(ValueError, match="quote"):
        LOSSES.build("fitnet", student=2, teacher="3")
    assert LOSSES.check_kwargs("fitnet", {"student": "2"}) == [("teacher", "missing argument for loss 'fitnet'")]


def test_fitnet_is_per_sample_mse() -> None:
    s = torch.cat([t4([[[1.0, 2.0], [3.0, 4.0]]]), t4([[[1.0, 1.0], [1.0, 1.0]]])])
    t = torch.zeros(2, 1, 2, 2)
    got = LOSSES.build("fitnet", student="a", teacher="a")(feats(s, t))
    assert got.tolist() == pytest.approx([(1 + 4 + 9 + 16) / 4, 1.0])
    assert LOSSES.build("fitnet", student="a", teacher="a")(feats(s, s)).abs().max().item() == 0


def test_element_wise_feature_losses_reject_mismatched_shapes() -> None:
    s, t = torch.zeros(2, 3, 4, 4), torch.zeros(2, 5, 4, 4)
    for name in ("fitnet", "cw_mse", "attn_mse"):
        loss = LOSSES.build(name, student="a", teacher="a")
        msg = r"'student\.feat\.a' \(2, 3, 4, 4\) and 'teacher\.feat\.a' \(2, 5, 4, 4\)"
        with pytest.raises(ValueError, match=msg):
            loss(feats(s, t))


def test_cw_mse_weights_channels_by_normalised_sensitivity() -> None:
    s = t4([[[1.0]], [[2.0]]])  # C=2, H=W=1; s - t = [1, 2]
    t = torch.zeros(1, 2, 1, 1)
    loss = LOSSES.build("cw_mse", student="a", teacher="a")
    assert loss(feats(s, t)).item() == pytest.approx((1 + 4) / 2)  # uniform fallback = fitnet
    # weights [1, 3] -> mean 1 -> [0.5, 1.5]
    weighted = loss(feats(s, t, **{"teacher.chw.a": torch.tensor([1.0, 3.0])}))
    assert weighted.item() == pytest.approx((0.5 * 1 + 1.5 * 4) / 2)
    assert loss(feats(s, s, **{"teacher.chw.a": torch.tensor([1.0, 3.0])})).item() == 0
    with pytest.raises(ValueError, match="non-negative"):
        loss(feats(s, t, **{"teacher.chw.a": torch.tensor([-1.0, 3.0])}))
    with pytest.raises(ValueError, match=r"teacher\.chw\.a.*\(3,\)"):
        loss(feats(s, t, **{"teacher.chw.a": torch.ones(3)}))


def test_channel_sensitivity_on_a_hand_made_case() -> None:
    # logit = sum f^2  ->  grad = 2f, |grad * f| = 2 f^2, averaged over positions then batch
    f = torch.tensor([[[[1.0, -2.0]], [[3.0, 0.0]]], [[[1.0, 1.0]], [[1.0, 1.0]]]], requires_grad=True)
    logit = f.pow(2).flatten(1).sum(1)
    sens = channel_sensitivity(f, logit)
    # sample 0: ch0 (2 + 8) / 2 = 5, ch1 (18 + 0) / 2 = 9; sample 1: 2, 2
    assert sens.tolist() == pytest.approx([(5 + 2) / 2, (9 + 2) / 2])
    assert not sens.requires_grad
    with pytest.raises(ValueError, match="require grad"):
        channel_sensitivity(f.detach(), logit.detach())


def test_at_matches_hand_computed_value_across_channel_counts() -> None:
    s = t4([[[1.0, 1.0]]])  # C=1: map [1, 1] -> [1, 1] / sqrt 2
    t = t4([[[3.0, 0.0]], [[1.0, 0.0]]])  # C=2: map [(9 + 1) / 2, 0] -> [1, 0]
    expected = (1 - 1 / math.sqrt(2)) ** 2 + (1 / math.sqrt(2)) ** 2  # = 2 - sqrt 2
    got = LOSSES.build("at", student="a", teacher="a")(feats(s, t))
    assert got.shape == (1,)
    assert got.item() == pytest.approx(expected, rel=1e-6)
    scaled = LOSSES.build("at", student="a", teacher="a", beta=3.0)(feats(s, t))
    assert scaled.item() == pytest.approx(3 * expected, rel=1e-6)
    # |f|^p with p=1: map s [1, 1], t [(3 + 1) / 2, 0] -> same normalised maps here
    assert LOSSES.build("at", student="a", teacher="a", p=1.0)(feats(s, t)).item() == pytest.approx(expected, rel=1e-6)
    assert LOSSES.build("at", student="a", teacher="a")(feats(t, t)).item() == pytest.approx(0.0, abs=1e-7)


def test_at_resizes_the_student_map_and_rejects_batch_mismatch() -> None:
    s = torch.full((1, 3, 1, 1), 2.0)  # constant map, resized to 2x2 -> [.5, .5, .5, .5]
    t = torch.zeros(1, 1, 2, 2)
    t[0, 0, 0, 0] = 1.0  # -> [1, 0, 0, 0]
    got = LOSSES.build("at", student="a", teacher="a")(feats(s, t))
    assert got.item() == pytest.approx(0.5**2 + 3 * 0.5**2, rel=1e-6)
    with pytest.raises(ValueError, match=r"'student\.feat\.a' \(2, 3, 1, 1\) and 'teacher\.feat\.a' \(1, 1, 2, 2\)"):
        LOSSES.build("at", student="a", teacher="a")(feats(s.repeat(2, 1, 1, 1), t))


def test_attn_mse_weights_positions_by_teacher_attention() -> None:
    t = t4([[[1.0, 2.0]]])  # map [1, 4] -> mask [.2, .8]
    s = torch.zeros(1, 1, 1, 2, requires_grad=True)
    loss = LOSSES.build("attn_mse", student="a", teacher="a")
    got = loss(feats(s, t))
    assert got.item() == pytest.approx(0.2 * 1 + 0.8 * 4, rel=1e-6)
    assert loss(feats(t, t)).item() == 0
    # all-zero teacher map -> uniform mask
    assert loss(feats(t4([[[1.0, 3.0]]]), torch.zeros(1, 1, 1, 2))).item() == pytest.approx(0.5 * 1 + 0.5 * 9)
    # mask is detached: the teacher's gradient is only the MSE term's, -2 (s - t) * mask
    tg = t.clone().requires_grad_(True)
    loss(feats(s, tg)).sum().backward()
    assert tg.grad is not None
    assert tg.grad.flatten().tolist() == pytest.approx([2 * 1 * 0.2, 2 * 2 * 0.8])


# ---------------------------------------------------------------- relation losses


def test_sp_matches_hand_computed_value() -> None:
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # G_s = I
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # G_t = all ones -> rows [1, 1] / sqrt 2
    row = (1 - 1 / math.sqrt(2)) ** 2 + (1 / math.sqrt(2)) ** 2  # = 2 - sqrt 2
    got = LOSSES.build("sp", student="logits", teacher="logits")({"student.logits": s, "teacher.logits": t})
    assert got.tolist() == pytest.approx([row / 2, row / 2], rel=1e-6)
    paper = 2 * row / 2**2  # ||G_t - G_s||_F^2 / B^2
    assert got.mean().item() == pytest.approx(paper, rel=1e-6)


def test_sp_on_feature_maps_of_different_sizes_is_scale_invariant() -> None:
    torch.manual_seed(0)
    t = torch.randn(4, 5, 2, 2)
    loss = LOSSES.build("sp", student="a", teacher="b")
    assert loss.requires == ("student.feat.a", "teacher.feat.b")
    same = loss({"student.feat.a": 3.0 * t, "teacher.feat.b": t})
    assert same.shape == (4,) and same.abs().max().item() < 1e-6
    other = loss({"student.feat.a": torch.randn(4, 3, 1, 1), "teacher.feat.b": t})
    assert other.shape == (4,) and (other > 0).all()
    with pytest.raises(ValueError, match=r"'student\.feat\.a' \(3, 3, 1, 1\) and 'teacher\.feat\.b' \(4, 5, 2, 2\)"):
        loss({"student.feat.a": torch.randn(3, 3, 1, 1), "teacher.feat.b": t})


def _huber(x: float) -> float:
    return 0.5 * x * x if abs(x) < 1 else abs(x) - 0.5


def _rkd_by_hand(s: list[list[float]], t: list[list[float]], w_dist: float, w_angle: float) -> list[float]:
    b = len(s)

    def dist(x: list[list[float]]) -> list[list[float]]:
        d = [[math.dist(x[i], x[j]) for j in range(b)] for i in range(b)]
        mu = sum(d[i][j] for i in range(b) for j in range(b) if i != j) / (b * (b - 1))
        return [[v / mu for v in row] for row in d]

    def cos(x: list[list[float]], i: int, j: int, k: int) -> float:
        u = [a - c for a, c in zip(x[j], x[i])]
        v = [a - c for a, c in zip(x[k], x[i])]
        nu, nv = math.hypot(*u), math.hypot(*v)
        return 0.0 if nu == 0 or nv == 0 else sum(a * c for a, c in zip(u, v)) / (nu * nv)

    ds, dt = dist(s), dist(t)
    out = []
    for i in range(b):
        d_term = sum(_huber(ds[i][j] - dt[i][j]) for j in range(b)) / b
        a_term = sum(_huber(cos(s, i, j, k) - cos(t, i, j, k)) for j in range(b) for k in range(b)) / b**2
        out.append(w_dist * d_term + w_angle * a_term)
    return out


def test_rkd_matches_hand_computed_value() -> None:
    s = [[0.0, 0.0], [2.0, 0.0], [0.0, 1.0], [1.0, 3.0]]
    t = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.5]]
    loss = LOSSES.build("rkd")
    assert loss.requires == ("student.logits", "teacher.logits")
    got = loss({"student.logits": torch.tensor(s), "teacher.logits": torch.tensor(t)})
    assert got.shape == (4,)
    assert got.tolist() == pytest.approx(_rkd_by_hand(s, t, 25.0, 50.0), rel=1e-5)
    only_dist = LOSSES.build("rkd", w_angle=0.0)({"student.logits": torch.tensor(s), "teacher.logits": torch.tensor(t)})
    assert only_dist.tolist() == pytest.approx(_rkd_by_hand(s, t, 25.0, 0.0), rel=1e-5)


def test_rkd_is_zero_under_similarity_transforms_and_handles_edge_batches() -> None:
    torch.manual_seed(0)
    t = torch.randn(5, 3, 2, 2)
    loss = LOSSES.build("rkd", student="x", teacher="y")
    assert loss.requires == ("student.feat.x", "teacher.feat.y")
    same = loss({"student.feat.x": 2.0 * t + 1.0, "teacher.feat.y": t})
    assert same.abs().max().item() < 1e-5
    # duplicated samples and a batch of one: finite values and gradients
    s = torch.randn(4, 6, requires_grad=True)
    dup = torch.cat([s[:2], s[:2]])
    out = LOSSES.build("rkd")({"student.logits": dup, "teacher.logits": torch.randn(4, 6)})
    out.mean().backward()
    assert torch.isfinite(out).all() and s.grad is not None and torch.isfinite(s.grad).all()
    one = LOSSES.build("rkd")({"student.logits": s[:1], "teacher.logits": torch.randn(1, 6)})
    assert one.tolist() == [0.0]
    with pytest.raises(ValueError, match=r"'student\.logits' \(4, 6\) and 'teacher\.logits' \(3, 6\)"):
        LOSSES.build("rkd")({"student.logits": s, "teacher.logits": torch.randn(3, 6)})


# ---------------------------------------------------------------- connectors


def test_connector_identity_when_shapes_match() -> None:
    assert isinstance(build_connector((8, 4, 4), (8, 4, 4)), nn.Identity)
    assert isinstance(build_connector((8,), (8,)), nn.Identity)


@pytest.mark.parametrize(("student", "teacher"), [((8, 8, 8), (16, 4, 4)), ((8, 2, 2), (16, 4, 4)), ((8, 4, 4), (8, 2, 3)), ((8,), (16,))])
def test_connector_maps_to_teacher_shape(student: tuple[int, ...], teacher: tuple[int, ...]) -> None:
    conn = build_connector(student, teacher)
    assert isinstance(conn, Connector)
    y = conn(torch.randn(2, *student))
    assert tuple(y.shape) == (2, *teacher)
    y.sum().backward()
    assert conn.conv.weight.grad is not None


def test_connector_rejects_unbridgeable_shapes() -> None:
    with pytest.raises(ValueError, match="feature map.*vector"):
        build_connector((8, 4, 4), (16,))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        build_connector((8, 4), (8, 4))
    with pytest.raises(ValueError, match="positive"):
        build_connector((0, 4, 4), (8, 4, 4))


# ---------------------------------------------------------------- one step with every registered loss

MINIMAL_KWARGS: dict[str, dict[str, Any]] = {
    "ce": {},
    "kd": {},
    "dkd": {},
    "dist": {},
    "fitnet": {"student": "a", "teacher": "a"},
    "cw_mse": {"student": "a", "teacher": "a"},
    "at": {"student": "a", "teacher": "a"},
    "attn_mse": {"student": "a", "teacher": "a"},
    "sp": {"student": "a", "teacher": "a"},
    "rkd": {},
    "dml": {},
}
OPTIONAL_KEYS = {"temperature", "teacher.chw.a"}


def test_minimal_kwargs_cover_every_registered_loss() -> None:
    assert set(MINIMAL_KWARGS) == set(LOSSES.names()), "add the new loss to MINIMAL_KWARGS"


class Recording(Mapping[str, torch.Tensor]):
    """Outputs that remember which keys a loss read."""

    def __init__(self, data: dict[str, torch.Tensor]) -> None:
        self.data = data
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> torch.Tensor:
        self.read.add(key)
        return self.data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


@pytest.mark.parametrize("name", LOSSES.names())
def test_one_step_with_every_registered_loss(name: str) -> None:
    torch.manual_seed(0)
    kwargs = MINIMAL_KWARGS[name]
    assert LOSSES.check_kwargs(name, kwargs) == []
    loss = LOSSES.build(name, **kwargs)
    b = 4
    student = {"student.logits": torch.randn(b, 10, requires_grad=True), "student.feat.a": torch.randn(b, 6, 3, 3, requires_grad=True)}
    outputs = Recording(
        {
            **student,
            "teacher.logits": torch.randn(b, 10),
            "teacher.feat.a": torch.randn(b, 6, 3, 3),
            "targets": torch.randint(0, 10, (b,)),
            "peers.logits": torch.randn(2, b, 10),
        }
    )
    assert set(loss.requires) <= set(outputs)
    value = loss(outputs)
    assert outputs.read <= set(loss.requires) | OPTIONAL_KEYS
    assert value.shape == (b,) and torch.isfinite(value).all()
    (value * torch.rand(b)).sum().backward()
    grads = [x.grad for k, x in student.items() if k in loss.requires]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads if g is not None)
