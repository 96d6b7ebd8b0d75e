"""The data layer: timm transforms, resolved defaults, per-sample seeded augmentation, loaders, drop_last, mixup."""

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import Mixup
from timm.data.auto_augment import RandAugment
from timm.data.random_erasing import RandomErasing
from timm.data.transforms import RandomResizedCropAndInterpolation
from torchvision import transforms as T

from cann_distill.core.errors import RecipeError
from cann_distill.core.recipe import (
    DataConfig,
    TrainConfig,
    resource_dir,
)
from cann_distill.core.recipe_load import load_recipe
from cann_distill.data.jitter import FastColorJitter
from cann_distill.data.loading import Split, load_splits, loader, sample_seed
from cann_distill.data.transforms import PixelNorm, build_transforms, make_mixup
from cann_distill.training.loop import ce_step, fit

DIGITS = resource_dir("recipes") / "resnet10t_from_resnet18_digits.yaml"


def ops(transform) -> dict[type, object]:
    return {type(t): t for t in transform.transforms}


def test_training_and_evaluation_transforms_come_from_timm() -> None:
    cfg = DataConfig(
        image_size=48,
        channels=3,
        mean=[0.1, 0.2, 0.3],
        std=[0.5, 0.5, 0.5],
        crop_pct=0.75,
        interpolation="bicubic",
        augment={"scale": [0.3, 1.0], "hflip": 0.25, "auto_augment": "rand-m9-mstd0.5", "re_prob": 0.4},
    )
    train_tf, eval_tf = build_transforms(cfg)
    t = ops(train_tf)
    rrc = t[RandomResizedCropAndInterpolation]
    assert rrc.size == (48, 48) and rrc.scale == (0.3, 1.0)
    assert t[T.RandomHorizontalFlip].p == 0.25 and RandAugment in t and t[RandomErasing].probability == 0.4
    assert torch.allclose(t[T.Normalize].mean, torch.tensor([0.1, 0.2, 0.3]))
    e = ops(eval_tf)
    assert e[T.Resize].size == 64 and e[T.CenterCrop].size == (48, 48)  # 48 / 0.75
    assert e[T.Resize].interpolation == T.InterpolationMode.BICUBIC
    off_train, _ = build_transforms(cfg.model_copy(update={"augment": cfg.augment.model_copy(update={"enabled": False})}))
    assert off_train is None


def test_defaults_resolve_from_the_teachers_pretrained_cfg(tmp_path: Path, write_recipe) -> None:
    for split in ("train", "val"):
        (tmp_path / "ds" / split / "a").mkdir(parents=True)
    recipe = load_recipe(write_recipe(data={"source": "imagefolder", "root": str(tmp_path / "ds")}, teacher={"arch": "resnet18"}))
    d = recipe.data
    assert d.image_size == 224 and d.crop_pct == 0.95 and d.interpolation == "bicubic"
    assert d.mean == pytest.approx([0.485, 0.456, 0.406]) and d.std == pytest.approx([0.229, 0.224, 0.225])
    own = load_recipe(
        write_recipe(
            data={"source": "imagefolder", "root": str(tmp_path / "ds"), "image_size": 96, "crop_pct": 1.0}, teacher={"arch": "resnet18"}
        )
    )
    assert own.data.image_size == 96 and own.data.crop_pct == 1.0
    gray = load_recipe(
        write_recipe(data={"source": "imagefolder", "root": str(tmp_path / "ds"), "channels": 1}, teacher={"arch": "resnet18"})
    )
    assert gray.data.mean == pytest.approx([(0.485 + 0.456 + 0.406) / 3])


def digits(**data) -> DataConfig:
    return load_recipe(DIGITS, [f"data.{k}={v}" for k, v in {"max_samples": 120, **data}.items()]).data


def test_digits_have_an_optional_test_split_without_overlap() -> None:
    splits = load_splits(digits(val_fraction=0.2, test_fraction=0.25))
    assert splits.test is not None and splits.headline is splits.test
    sizes = [len(s) for s in (splits.train, splits.val, splits.test)]
    assert sum(sizes) == 120 and sizes[2] == 30
    ids = [set(s.ids) for s in (splits.train, splits.val, splits.test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert load_splits(digits(test_fraction=0)).test is None


def test_augmentation_is_a_function_of_seed_epoch_and_index() -> None:
    splits = load_splits(digits())
    ds = loader(splits.train, 8, train=True, seed=3, transform=splits.train_transform).dataset
    a, b = ds[(1, 5)][0], ds[(1, 5)][0]
    assert torch.equal(a, b)  # replayable
    assert not torch.equal(a, ds[(2, 5)][0])  # another epoch, another view
    state = torch.get_rng_state()
    ds[(4, 7)]
    assert torch.equal(state, torch.get_rng_state())  # the main process's RNG is untouched
    assert sample_seed(0, 1, 2) != sample_seed(0, 2, 1) and 0 <= sample_seed(2**40, 3, 4) < 2**32


def test_worker_count_does_not_change_the_batches() -> None:
    cfg = digits(num_workers=0)
    splits = load_splits(cfg)

    def epoch(workers: int) -> list[torch.Tensor]:
        splits.train.workers = workers
        batches = loader(splits.train, 16, train=True, seed=1, transform=splits.train_transform)
        batches.sampler.set_epoch(2)
        return [torch.cat([x.flatten(), idx.float()]) for x, _, idx in batches]

    zero, two = epoch(0), epoch(2)
    assert len(zero) == len(two) == len(splits.train) // 16  # drop_last
    assert all(torch.equal(a, b) for a, b in zip(zero, two))


def test_drop_last_keeps_a_last_batch_of_one_from_crashing_batchnorm() -> None:
    x = torch.randn(33, 3, 8, 8)
    split = Split("train", [str(i) for i in range(33)], np.array([i % 2 for i in range(33)]), ["a", "b"], lambda i: x[i], lambda t: t)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2)
    )  # the BatchNorm after pooling, as in classifier heads
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):  # what drop_last prevents
        net.train()(torch.randn(1, 3, 8, 8)).sum()
    history = fit(net, split, TrainConfig(epochs=1, lr=0.01), 32, ce_step, 0, "bn")
    assert len(history) == 1 and np.isfinite(history[0]["loss"])


def test_mixup_comes_from_timm_and_ce_trains_on_soft_targets() -> None:
    cfg = digits(**{"augment.mixup_alpha": 0.8, "augment.cutmix_alpha": 1.0, "augment.label_smoothing": 0.1})
    mix = make_mixup(cfg, 10)
    assert isinstance(mix, Mixup) and mix.mixup_alpha == 0.8 and mix.cutmix_alpha == 1.0
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    mx, my = mix(x, y)
    assert my.shape == (4, 10) and torch.allclose(my.sum(1), torch.ones(4))
    assert make_mixup(digits(), 10) is None
    splits = load_splits(cfg)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 10))
    history = fit(net, splits.train, TrainConfig(epochs=1, lr=0.01), 16, ce_step, 0, "mix", transform=splits.train_transform, mix=mix)
    assert np.isfinite(history[0]["loss"])


def test_mixup_needs_losses_that_take_soft_targets_and_even_batches() -> None:
    with pytest.raises(RecipeError) as err:
        load_recipe(
            DIGITS, ["data.augment.mixup_alpha=0.2", "data.batch_size=33", "distill.losses=[{kind: ce}, {kind: dkd, temperature: 4}]"]
        )
    msg = str(err.value)
    assert "distill.losses[1].kind: 'dkd' needs hard labels" in msg and "data.batch_size: mixup/cutmix" in msg


def test_mixup_check_leaves_bad_loss_arguments_to_the_loss_check() -> None:
    with pytest.raises(RecipeError) as err:  # was a TypeError from building the loss inside the mixup check
        load_recipe(DIGITS, ["data.augment.mixup_alpha=0.2", "distill.losses=[{kind: ce}, {kind: kd, bogus: 1}]"])
    assert "distill.losses[1].bogus: unexpected argument" in str(err.value)


def test_bad_augmentation_settings_are_recipe_errors() -> None:
    with pytest.raises(RecipeError, match=r"data\.augment\.auto_augment: timm does not accept 'bogus'"):
        load_recipe(DIGITS, ["data.augment.auto_augment=bogus"])
    with pytest.raises(RecipeError, match=r"data\.augment\.scale: needs 0 < low <= high <= 1, got \[0.9, 0.2\]"):
        load_recipe(DIGITS, ["data.augment.scale=[0.9, 0.2]"])


def float_path(transform, cfg: DataConfig):
    """The per-sample float transform the uint8 one replaced: timm's ops with torchvision's own ColorJitter,
    then ToTensor + Normalize (timm's non-prefetcher tail)."""
    from timm.data.transforms import MaybePILToTensor, MaybeToTensor

    mean, std = cfg.mean or [0.5] * (cfg.channels or 1), cfg.std or [0.5] * (cfg.channels or 1)
    assert isinstance(transform.transforms[-1], MaybePILToTensor)  # the uint8 path stops at pixels
    steps = [t.jitter if isinstance(t, FastColorJitter) else t for t in transform.transforms[:-1]]
    return T.Compose([*steps, MaybeToTensor(), T.Normalize(torch.tensor(mean), torch.tensor(std))])


def rgb_folder(root: Path, n: int = 12) -> DataConfig:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(n // 2):
                Image.fromarray(rng.integers(0, 256, (20 + i, 24, 3), dtype=np.uint8)).save(root / split / c / f"{i}.png")
    return DataConfig(
        source="imagefolder",
        root=str(root),
        image_size=16,
        channels=3,
        mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225],
        crop_pct=0.875,
        interpolation="bicubic",
        num_workers=0,
        augment={"scale": [0.5, 1.0], "hflip": 0.5, "color_jitter": 0.4},
    )


@pytest.mark.parametrize("source", ["digits", "rgb_folder"])
def test_uint8_batches_are_bit_identical_to_the_per_sample_float_path(source: str, tmp_path: Path) -> None:
    # digits: the mobilenetv3 digits recipe's augmentation; the folder: RGB, ImageNet mean/std, flips, crop_pct
    cfg = (
        digits(
            **{
                "image_size": 32,
                "augment.scale": "[0.8,1.0]",
                "augment.ratio": "[0.9,1.11]",
                "augment.hflip": 0.0,
                "augment.color_jitter": 0.1,
            }
        )
        if source == "digits"
        else rgb_folder(tmp_path / "ds")
    )
    splits = load_splits(cfg)
    train = splits.train
    ref_train, ref_eval = float_path(splits.train_transform, cfg), float_path(train.transform, cfg)
    rng = torch.get_rng_state()
    batches = loader(train, 4, train=True, seed=5, transform=splits.train_transform)
    batches.sampler.set_epoch(3)
    x, _, idx = next(iter(batches))
    assert torch.equal(rng, torch.get_rng_state())  # the batch's seeding left the main process's RNGs as they were
    raw, _, _ = next(iter(batches.data))  # what crosses from the workers: pixels
    assert raw.dtype == torch.uint8 and x.dtype == torch.float32
    expected = []
    for i in idx.tolist():
        random.seed(sample_seed(5, 3, i))
        np.random.seed(sample_seed(5, 3, i))
        torch.manual_seed(sample_seed(5, 3, i))
        expected.append(ref_train(train.images(i)))
    assert torch.equal(x, torch.stack(expected))  # same views, same float32 bits
    ev, _, _ = next(iter(loader(train, 6)))
    assert torch.equal(ev, torch.stack([ref_eval(train.images(i)) for i in range(6)]))
    assert torch.equal(train.fetch(2), ev[2])  # a single image is normalised like a batch


def test_pixel_norm_keeps_channels_last_and_leaves_float_batches_alone() -> None:
    norm = PixelNorm([0.1, 0.2, 0.3], [0.5, 0.25, 2.0])
    x = torch.randint(0, 256, (2, 3, 5, 5), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    y = norm(x)
    assert y.dtype == torch.float32 and y.is_contiguous(memory_format=torch.channels_last)
    want = (x.float() / 255 - torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1)) / torch.tensor([0.5, 0.25, 2.0]).view(3, 1, 1)
    assert torch.allclose(y, want, atol=1e-6) and y[0, 2, 0, 0] == (x[0, 2, 0, 0].float() / 255 - 0.3) / 2.0
    f = torch.randn(2, 3, 5, 5)
    assert norm(f) is f


def test_decoded_images_are_cached_within_the_budget_and_give_the_same_batches(tmp_path: Path, monkeypatch) -> None:
    """data.cache_mb: a file is decoded once per process, the cached pixels make the very same training batch,
    the budget caps what is held, and workers do not inherit a pickled cache."""
    import pickle

    import cann_distill.data.loading as data_mod

    cfg = rgb_folder(tmp_path / "ds")
    decoded: list[str] = []
    real = data_mod.open_image
    monkeypatch.setattr(data_mod, "open_image", lambda path, *a, **k: (decoded.append(Path(path).name), real(path, *a, **k))[1])

    def epoch3(cache_mb: int) -> tuple[torch.Tensor, int]:
        splits = load_splits(cfg.model_copy(update={"cache_mb": cache_mb}))
        decoded.clear()
        batches = loader(splits.train, 4, train=True, seed=5, transform=splits.train_transform)
        out = []
        for epoch in (2, 3):
            batches.sampler.set_epoch(epoch)
            out = [x for x, _, _ in batches]
        return torch.cat(out), len(decoded)

    cached, opened_cached = epoch3(1)
    plain, opened_plain = epoch3(0)
    assert torch.equal(cached, plain)  # cached pixels, same views
    assert opened_plain == 2 * 12 and opened_cached == 12  # two epochs of 12 files: decoded twice vs once
    images = load_splits(cfg.model_copy(update={"cache_mb": 1})).train.images
    images.cache_bytes = 20 * 24 * 3 + 1  # room for the first image (and not much more)
    for i in range(len(images.rels)):
        images(i)
    assert 1 <= len(images._cache) <= 2 and images._held >= images.cache_bytes
    assert pickle.loads(pickle.dumps(images))._cache == {}
