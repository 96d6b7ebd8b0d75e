"""Teacher targets: the three sources, replayed views, top-k targets, mixing with λ, recipe checks, fit's timing rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from timm.data import Mixup

from cann_distill.core.errors import RecipeError
from cann_distill.core.recipe import (
    LossSpec,
    Recipe,
    TrainConfig,
    resource_dir,
)
from cann_distill.core.recipe_load import load_recipe
from cann_distill.data.loading import draw_loader, load_splits, loader
from cann_distill.data.transforms import make_mixup, mix_distributions
from cann_distill.models.build import create_model
from cann_distill.teaching.distiller import Distiller
from cann_distill.teaching.replay import ReplayDraws, index_dtype
from cann_distill.teaching.targets import (
    CachedTargets,
    OnlineTargets,
    ReplaySpec,
    ReplayTargets,
    check_recipe,
    label_draws,
    recipe_errors,
    replay_spec,
    resolve_mode,
    topk_distribution,
)
from cann_distill.training.loop import ce_step, fit

DIGITS = resource_dir("recipes") / "resnet10t_from_resnet18_digits.yaml"

AUGMENT = [
    "data.max_samples=60",
    "data.image_size=16",
    "teacher.arch=test_resnet",
    "student.arch=test_efficientnet",
    "data.augment.scale=[0.4, 1.0]",
    "data.augment.hflip=0.5",
    "data.augment.color_jitter=0.3",
]


def recipe(*overrides: str) -> Recipe:
    return load_recipe(DIGITS, AUGMENT + list(overrides))


def labelled(r: Recipe, draws: int, top_k: int) -> tuple[Any, torch.nn.Module, ReplayDraws]:
    """Splits, an (untrained, seeded) teacher and its replayed labels of `draws` views, top-k."""
    splits = load_splits(r.data)
    torch.manual_seed(0)
    teacher = create_model("test_resnet", 10, 1).eval()
    n = len(splits.train)
    values = np.zeros((draws, n, top_k), np.float16)
    indices = np.zeros((draws, n, top_k), index_dtype(10))
    label_draws(teacher, splits.train, splits.train_transform, r.seed, ReplaySpec(draws, top_k), values, indices, batch_size=7)
    return splits, teacher, ReplayDraws("test", values, indices)


def test_a_replayed_view_is_bit_identical_to_the_view_the_teacher_labelled() -> None:
    r = recipe()
    splits, teacher, draws = labelled(r, draws=2, top_k=3)
    batches = draw_loader(splits.train, 7, 2, seed=r.seed, transform=splits.train_transform)
    labelled_views = torch.cat([x for x, _, _ in batches]).view(2, len(splits.train), *splits.train.fetch(0).shape)
    # distill's loader in replay mode: epoch e shows view e mod K
    train = loader(splits.train, 8, train=True, seed=r.seed, transform=splits.train_transform, period=2)
    for epoch in (0, 1, 2, 3):
        train.sampler.set_epoch(epoch)
        for x, _, idx in train:
            d = epoch % 2
            assert torch.equal(x, labelled_views[d, idx])  # bit for bit
            with torch.no_grad():
                top = teacher(x).log_softmax(1).topk(3, dim=1)  # stored as fp16 log-probabilities
            assert torch.equal(top.indices, torch.from_numpy(draws.indices[d][idx.numpy()]).long())
            torch.testing.assert_close(top.values.half(), torch.from_numpy(draws.values[d][idx.numpy()]), rtol=1e-3, atol=1e-4)
    # another epoch of the plain loader (no period) is another view: the period is what replays them
    plain = loader(splits.train, 8, train=True, seed=r.seed, transform=splits.train_transform)
    plain.sampler.set_epoch(2)
    x, _, idx = next(iter(plain))
    assert not torch.equal(x, labelled_views[0, idx])


def test_top_k_targets_sum_to_one_and_spread_the_rest_uniformly() -> None:
    logits = torch.randn(5, 10) * 3
    p = logits.softmax(1)
    for k in (1, 3, 10):
        top = p.topk(k, dim=1)
        full = topk_distribution(top.values.half(), top.indices.to(torch.int16), 10)
        torch.testing.assert_close(full.sum(1), torch.ones(5))
        torch.testing.assert_close(full.gather(1, top.indices), top.values, rtol=2e-3, atol=1e-4)
        if k < 10:
            rest = full.scatter(1, top.indices, float("nan"))
            others = rest[~rest.isnan()].view(5, 10 - k)
            torch.testing.assert_close(others, others[:, :1].expand_as(others))  # uniform
            torch.testing.assert_close(others[:, 0], (1 - top.values.sum(1)) / (10 - k), rtol=5e-3, atol=1e-4)
    # fp16 values that sum past one are renormalised, never negative
    over = topk_distribution(torch.tensor([[0.6, 0.5]], dtype=torch.float16), torch.tensor([[0, 1]]), 4)
    assert over.min() >= 0 and torch.allclose(over.sum(1), torch.ones(1))


def _distiller(teacher: torch.nn.Module, sample: torch.Tensor) -> Distiller:
    torch.manual_seed(1)
    student = create_model("test_efficientnet", 10, 1)
    return Distiller(
        [LossSpec(kind="kd", temperature=4.0)],
        student,
        student_arch="test_efficientnet",
        sample=sample,
        teacher=teacher,
        teacher_arch="test_resnet",
        force_teacher=True,
    )


def test_online_and_replay_give_the_same_loss_with_one_draw_and_every_class() -> None:
    r = recipe()
    splits, teacher, draws = labelled(r, draws=1, top_k=10)
    distiller = _distiller(teacher, torch.stack([splits.train.fetch(0), splits.train.fetch(1)]))
    online, replay = OnlineTargets(distiller), ReplayTargets(draws, 10)
    assert replay.period == 1 and not replay.runs_teacher and online.runs_teacher
    train = loader(splits.train, 8, train=True, seed=r.seed, transform=splits.train_transform, period=replay.period)
    train.sampler.set_epoch(3)  # epoch 3 replays view 0
    x, y, idx = next(iter(train))
    distiller.model.eval()
    with torch.no_grad():
        student = distiller.student_outputs(x)
        losses = {}
        for name, source in (("online", online), ("replay", replay)):
            losses[name], _ = distiller.loss({**student, **source.for_batch((x, y, idx), 3), "targets": y})
    assert online.forwards == 1
    torch.testing.assert_close(losses["replay"], losses["online"], rtol=2e-3, atol=1e-5)  # fp16 storage of the probabilities


def test_mixup_returns_lambda_and_mixes_as_timm_does() -> None:
    r = recipe("data.augment.mixup_alpha=0.8", "data.augment.cutmix_alpha=1.0")
    mix = make_mixup(r.data, 10)
    assert isinstance(mix, Mixup)
    x, y = torch.rand(6, 1, 16, 16), torch.arange(6)
    for seed in range(4):
        np.random.seed(seed)
        ours = mix.mix_batch(x.clone(), y)
        np.random.seed(seed)
        theirs = Mixup.__call__(mix, x.clone(), y)  # timm's own call draws the same λ
        assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
        lam = ours[2]
        onehot = torch.nn.functional.one_hot(y, 10).float()
        torch.testing.assert_close(mix_distributions(onehot, lam), ours[1])  # labels mixed the way distributions are
    # cached targets under mixing: the two images' distributions mixed with the batch's λ, as log-probabilities
    logits = torch.randn(6, 10)
    out = CachedTargets(logits, augmented=True).for_batch((x, y, torch.arange(6)), 0, lam=0.3)["teacher.logits"]
    torch.testing.assert_close(out.exp(), 0.3 * logits.softmax(1) + 0.7 * logits.softmax(1).flip(0))
    assert torch.equal(CachedTargets(logits, augmented=False).for_batch((x, y, torch.arange(6)), 0)["teacher.logits"], logits)


def test_mode_defaults_and_replay_spec() -> None:
    assert resolve_mode(recipe()) == "online"  # random views
    assert resolve_mode(recipe("data.augment.enabled=false")) == "cached"
    assert resolve_mode(recipe("data.augment.enabled=false", "distill.losses=[{kind: at, student: '1', teacher: '1'}]")) == "online"
    assert replay_spec(recipe("distill.epochs=7"), 10) == ReplaySpec(7, 10)
    assert replay_spec(recipe("distill.epochs=50"), 10) == ReplaySpec(10, 10)  # a patient schedule reuses 10 views
    assert replay_spec(recipe("distill.epochs=50", "distill.replay.draws=50"), 10) == ReplaySpec(50, 10)
    assert replay_spec(recipe("distill.replay.draws=3", "distill.replay.top_k=4"), 10) == ReplaySpec(3, 4)
    assert replay_spec(recipe("data.augment.enabled=false", "distill.epochs=7"), 100) == ReplaySpec(1, 10)  # one view when none is random


def test_targets_the_source_cannot_give_are_recipe_errors() -> None:
    with pytest.raises(RecipeError, match=r"distill\.replay\.top_k: 11 is more than the 10 classes"):
        check_recipe(recipe("distill.teacher_targets=replay", "distill.replay.top_k=11"))
    errors = recipe_errors(
        recipe("distill.teacher_targets=replay", "distill.losses=[{kind: kd}, {kind: fitnet, student: '2', teacher: '2'}, {kind: rkd}]")
    )
    assert len(errors) == 2
    assert errors[0].startswith("distill.losses[1] (fitnet): reads teacher features, which only distill.teacher_targets: online")
    assert errors[1].startswith("distill.losses[2] (rkd): needs the teacher's raw logits, but replayed targets are top-k")
    assert recipe_errors(recipe("distill.teacher_targets=cached", "distill.losses=[{kind: rkd}]")) == []  # raw logits are cached
    mixed = recipe_errors(
        recipe("distill.teacher_targets=cached", "data.augment.mixup_alpha=0.2", "distill.losses=[{kind: ce}, {kind: rkd}]")
    )
    assert mixed and "mixup/cutmix mixes the cached distributions" in mixed[0]
    assert recipe_errors(recipe("distill.teacher_targets=online", "distill.losses=[{kind: rkd}]")) == []


def test_fit_records_throughput_time_shares_and_peak_memory() -> None:
    x = torch.randn(40, 4)
    from cann_distill.data.loading import Split

    split = Split("train", [str(i) for i in range(40)], (x[:, 0] > 0).long().numpy(), ["a", "b"], lambda i: x[i], lambda t: t)
    calls: list[tuple[int, Any]] = []

    def teacher(batch, epoch, lam):
        calls.append((epoch, lam))
        return {"teacher.logits": torch.zeros(batch[0].shape[0], 2)}

    def step(model, batch, taught):
        assert set(taught) == {"teacher.logits"}
        return ce_step(model, batch)

    history = fit(torch.nn.Linear(4, 2), split, TrainConfig(epochs=2, lr=0.1), 10, step, 0, "toy", teacher=teacher)
    assert [e for e, _ in calls] == [0] * 4 + [1] * 4 and all(lam is None for _, lam in calls)
    for row in history:
        assert row["samples_per_s"] > 0 and row["peak_rss_mb"] > 0
        assert row["data_share"] + row["teacher_share"] + row["student_share"] == pytest.approx(1.0)
        assert "peak_device_mb" not in row  # CPU


def test_top_k_over_the_class_count_is_exit_2_before_any_work(cli, write_recipe, tmp_path) -> None:
    recipe_path = write_recipe(distill={"epochs": 1, "teacher_targets": "replay", "replay": {"top_k": 12}})
    result = cli("run", recipe_path)
    assert result.exit_code == 2
    assert [line for line in result.stderr.splitlines() if line.startswith("Error:")] == [
        "Error: distill.replay.top_k: 12 is more than the 10 classes"
    ]
    assert not (tmp_path / "run" / "teacher").exists()
