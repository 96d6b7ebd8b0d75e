import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cann_distill.core.errors import ArtifactError, StageError, UsageError
from cann_distill.core.recipe import TrainConfig
from cann_distill.data.loading import Split
from cann_distill.stages.distill import read_index
from cann_distill.stages.select import INDEX_FIELDS
from cann_distill.training.loop import Checkpointing, SubsetSampler, ce_step, fit
from cann_distill.training.update import cosine_factor, lr_factor


def toy_split(n: int = 20) -> Split:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    targets = (x[:, 0] > 0).long().numpy()
    return Split("train", [f"toy/{i}" for i in range(n)], targets, ["a", "b"], lambda i: x[i], lambda t: t)


def test_epoch_hooks_change_the_sampler_and_extend_the_history() -> None:
    split = toy_split()
    sampler = SubsetSampler(range(5), seed=0)
    seen: list[set[int]] = []
    ends: list[int] = []

    def on_start(epoch: int) -> dict[str, float]:
        sampler.indices = list(range(5)) if epoch == 0 else list(range(20))
        seen.append(set())
        return {"samples": len(sampler.indices)}

    def step(model, batch):
        seen[-1].update(batch[2].tolist())
        return ce_step(model, batch)

    cfg = TrainConfig(epochs=3, lr=0.1, warmup_epochs=0)  # the cosine alone (the default warms up for 1 epoch)
    history = fit(
        torch.nn.Linear(4, 2),
        split,
        cfg,
        5,
        step,
        0,
        "toy",
        sampler=sampler,
        on_epoch_start=on_start,
        on_epoch_end=lambda e, row: ends.append(row["epoch"]),
    )
    assert seen == [set(range(5)), set(range(20)), set(range(20))]
    assert [row["samples"] for row in history] == [5, 20, 20]
    assert ends == [1, 2, 3]
    # the cosine follows epoch progress whatever each epoch's length
    assert [row["lr"] for row in history] == pytest.approx([0.1 * cosine_factor(e / 3) for e in (1, 2, 3)])
    assert history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_cosine_factor() -> None:
    assert cosine_factor(0) == 1 and cosine_factor(0.5) == pytest.approx(0.5) and cosine_factor(1) == pytest.approx(0)
    assert cosine_factor(2) == cosine_factor(1)


def test_subset_sampler_is_seeded_and_covers_its_indices() -> None:
    a, b = SubsetSampler([3, 5, 7, 9], seed=1), SubsetSampler([3, 5, 7, 9], seed=1)
    assert list(a) == list(b) and sorted(a) == [3, 5, 7, 9] and len(a) == 4


def write_index(path: Path, ids: list[str], temperature: str = "3") -> None:
    lines = [",".join(INDEX_FIELDS)] + [f"{sid},0,0.5,{i + 1},{int(i % 2 == 0)},{temperature}" for i, sid in enumerate(ids)]
    path.write_text("\n".join(lines) + "\n")


def test_read_index(tmp_path: Path) -> None:
    split = toy_split(4)
    write_index(tmp_path / "index.csv", split.ids, "2.5")
    index = read_index(tmp_path / "index.csv", split)
    assert index.critical.tolist() == [True, False, True, False]
    assert index.temperature.tolist() == [2.5] * 4


def test_index_for_another_dataset_or_format_is_refused(tmp_path: Path) -> None:
    split = toy_split(4)
    path = tmp_path / "index.csv"
    write_index(path, [f"other/{i}" for i in range(4)])
    with pytest.raises(ArtifactError, match=r"index\.csv: index was made for a different dataset than the recipe names"):
        read_index(path, split)
    path.write_text("id,target,score,rank,critical\ntoy/0,0,0.5,1,1\n")  # made before the temperature column
    with pytest.raises(ArtifactError, match=r"index\.csv: not a critical-sample index .*select --force"):
        read_index(path, split)
    for bad in ("hot", "0", "nan"):
        write_index(path, split.ids, bad)
        with pytest.raises(ArtifactError, match=r"index\.csv: temperature"):
            read_index(path, split)


# ---------------------------------------------------------------- production loop: warmup, clipping, EMA, best, AMP, resume


def toy_images(n: int = 24) -> Split:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 1, 6, 6, generator=g)
    targets = (x.mean((1, 2, 3)) > 0).long().numpy()
    return Split("train", [f"img/{i}" for i in range(n)], targets, ["a", "b"], lambda i: x[i], lambda t: t)


def toy_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.2),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 2),
    )


def test_lr_warmup_then_cosine() -> None:
    assert lr_factor(0.0, 10, warmup=2, step=0.25) == pytest.approx(0.125)  # end of the first step, never 0
    assert lr_factor(1.0, 10, warmup=2) == pytest.approx(0.5)
    assert lr_factor(2.0, 10, warmup=2) == pytest.approx(1.0)
    assert lr_factor(6.0, 10, warmup=2) == pytest.approx(cosine_factor(0.5))
    assert lr_factor(10.0, 10, warmup=2) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(3.0, 10) == pytest.approx(cosine_factor(0.3))  # no warmup: the old schedule
    history = fit(toy_net(), toy_images(), TrainConfig(epochs=4, lr=0.1, warmup_epochs=2), 8, ce_step, 0, "toy")
    assert [r["lr"] for r in history] == pytest.approx([0.05, 0.1, 0.05, 0.0], abs=1e-9)


def test_grad_clip_bounds_the_update_and_records_the_norm() -> None:
    model = torch.nn.Linear(4, 2)
    before = torch.cat([model.weight.detach().flatten(), model.bias.detach().flatten()])
    cfg = TrainConfig(epochs=1, lr=1.0, momentum=0.0, weight_decay=0.0, grad_clip=1e-3)

    def huge(m, batch):
        loss = 1e6 * m(batch[0]).pow(2).mean()
        return loss, {"mse": loss.item()}

    history = fit(model, toy_split(4), cfg, 4, huge, 0, "clip")
    assert history[0]["grad_norm"] > 1.0
    after = torch.cat([model.weight.detach().flatten(), model.bias.detach().flatten()])
    assert (after - before).norm().item() == pytest.approx(1e-3, rel=1e-3)  # one step of lr 1, gradient clipped to norm 1e-3


def test_ema_and_select_best_decide_the_final_weights() -> None:
    split = toy_images()
    cfg = TrainConfig(epochs=3, lr=0.05, ema_decay=0.5)
    ema_model = toy_net()
    fit(ema_model, split, cfg, 8, ce_step, 0, "ema", val=split)
    plain = toy_net()
    fit(plain, split, cfg.model_copy(update={"ema_decay": None}), 8, ce_step, 0, "plain", val=split)
    assert not torch.allclose(ema_model[0].weight, plain[0].weight)  # EMA weights were exported

    accs = iter([0.5, 0.9, 0.7])
    states: list[dict] = []

    def fake_predict(model, val, **_):  # val accuracy by epoch, remembering the weights evaluated
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        acc = next(accs)
        return np.eye(2)[np.where(np.arange(len(val)) < acc * len(val), val.targets, 1 - val.targets)]

    import cann_distill.training.loop as train_mod

    model = toy_net()
    original = train_mod.predict
    train_mod.predict = fake_predict
    try:
        history = fit(model, split, TrainConfig(epochs=3, lr=0.05, select_best=True), 8, ce_step, 0, "best", val=split)
    finally:
        train_mod.predict = original
    assert history.best_epoch == 2 and history.selected == "best"
    assert [r["best_val_acc"] for r in history] == pytest.approx([0.5, 0.9, 0.9], abs=0.05)
    for k, v in model.state_dict().items():
        assert torch.equal(v, states[1][k]), k


def test_bf16_autocast_trains() -> None:
    history = fit(toy_net(), toy_images(), TrainConfig(epochs=1, lr=0.05, amp="bf16"), 8, ce_step, 0, "bf16")
    assert math.isfinite(history[0]["loss"])


class Interrupt:
    """A step function that raises KeyboardInterrupt once, at global step `at` (0-based), before or after its forward pass."""

    def __init__(self, at: int, after_forward: bool = False) -> None:
        self.at, self.calls, self.after_forward = at, 0, after_forward

    def __call__(self, model, batch):
        self.calls += 1
        if self.calls == self.at + 1:
            if self.after_forward:
                ce_step(model, batch)  # the forward moves BatchNorm statistics before Ctrl-C lands
            raise KeyboardInterrupt
        return ce_step(model, batch)


@pytest.mark.parametrize("after_forward", [False, True])
@pytest.mark.parametrize("at", [4, 6])  # mid-epoch (3 batches per epoch) and at an epoch's first batch
def test_ctrl_c_saves_and_resume_is_bit_exact(tmp_path: Path, at: int, after_forward: bool) -> None:
    split = toy_images()
    cfg = TrainConfig(epochs=3, lr=0.05, warmup_epochs=1, ema_decay=0.9, select_best=True)
    sampler_seed = 3
    straight = toy_net()
    ref = fit(straight, split, cfg, 8, ce_step, 0, "toy", val=split, sampler=SubsetSampler(range(24), sampler_seed))

    ckpt = Checkpointing(tmp_path / "resume.pt", "fp-1", command="resume me")
    model = toy_net()
    with pytest.raises(KeyboardInterrupt):
        fit(
            model,
            split,
            cfg,
            8,
            Interrupt(at, after_forward),
            0,
            "toy",
            val=split,
            sampler=SubsetSampler(range(24), sampler_seed),
            checkpoint=ckpt,
        )
    saved = torch.load(ckpt.path, weights_only=True)
    assert (saved["epoch"], saved["batch"]) == divmod(at, 3)

    resumed = toy_net()  # fresh weights: everything comes from the checkpoint
    torch.manual_seed(123)  # and whatever the global RNG holds
    history = fit(
        resumed,
        split,
        cfg,
        8,
        ce_step,
        0,
        "toy",
        val=split,
        sampler=SubsetSampler(range(24), sampler_seed),
        checkpoint=Checkpointing(ckpt.path, "fp-1", resume=True),
    )
    assert history.resumed_from == {"epoch": at // 3 + 1, "step": at % 3 + 1}
    assert [r["loss"] for r in history] == pytest.approx([r["loss"] for r in ref], rel=0, abs=0)
    assert history.best_epoch == ref.best_epoch
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_resume_refuses_another_fingerprint_and_nan_keeps_the_last_checkpoint(tmp_path: Path) -> None:
    split = toy_images()
    ckpt = Checkpointing(tmp_path / "resume.pt", "fp-1")
    calls = {"n": 0}

    def nan_in_epoch_two(model, batch):
        calls["n"] += 1
        loss, parts = ce_step(model, batch)
        if calls["n"] == 5:
            return loss * float("nan"), {"ce": parts["ce"], "fitnet": float("nan")}
        return loss, parts

    with pytest.raises(StageError) as exc:
        fit(toy_net(), split, TrainConfig(epochs=3, lr=0.05), 8, nan_in_epoch_two, 0, "distill", checkpoint=ckpt)
    msg = str(exc.value)
    assert "distill: loss is nan at epoch 2 step 2, non-finite component(s): fitnet" in msg
    assert f"last good checkpoint ({ckpt.path}, end of epoch 1) is kept" in msg and "\n" not in msg
    assert torch.load(ckpt.path, weights_only=True)["epoch"] == 1
    with pytest.raises(UsageError, match=r"--resume: .*resume\.pt was saved by another configuration"):
        fit(
            toy_net(),
            split,
            TrainConfig(epochs=3, lr=0.05),
            8,
            ce_step,
            0,
            "distill",
            checkpoint=Checkpointing(ckpt.path, "fp-2", resume=True),
        )


def test_default_warmup_is_one_epoch_or_a_quarter_of_a_short_run() -> None:
    assert TrainConfig(epochs=10).warmup() == 1.0
    assert TrainConfig(epochs=2).warmup() == 0.5
    assert TrainConfig(epochs=10, warmup_epochs=0).warmup() == 0.0
    assert TrainConfig(epochs=10, warmup_epochs=2.5).warmup() == 2.5


def test_ema_decay_warms_up_so_the_initial_batchnorm_statistics_leave_the_average() -> None:
    from cann_distill.training.update import EmaWeights

    bn = torch.nn.BatchNorm1d(4)
    ema = EmaWeights(bn, 0.998)
    assert ema.current_decay() == pytest.approx(0.1)
    bn.running_var.fill_(1e-3)  # a channel whose variance fell far below the initial 1
    for _ in range(2250):  # a 30-epoch run of 75 steps
        ema.update(bn)
    assert ema.updates == 2250 and ema.current_decay() == pytest.approx(2251 / 2260)  # still warming: 0.998 from update 4,491
    # warmed up: the initial variance's share is gone; a fixed 0.998 would keep 0.998**2250 = 1.1% of it (12x too high)
    assert ema.module.running_var.max().item() == pytest.approx(1e-3, rel=1e-3)
    fixed = 0.998**2250 * 1.0 + (1 - 0.998**2250) * 1e-3
    assert fixed > 10 * 1e-3
