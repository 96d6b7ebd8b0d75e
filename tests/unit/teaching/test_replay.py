"""Replayed teacher targets on disk: complete-or-absent entries, the disk-space check, keys that follow the augmentation."""

from __future__ import annotations

from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

from cann_distill.core.errors import StageError
from cann_distill.core.recipe import resource_dir
from cann_distill.core.recipe_load import load_recipe
from cann_distill.data.loading import load_splits
from cann_distill.models.build import create_model, save_checkpoint
from cann_distill.runtime.devices import CPU
from cann_distill.stages.select import make_replay, teacher_loader
from cann_distill.teaching import replay
from cann_distill.teaching.replay import ReplayStore

DIGITS = resource_dir("recipes") / "resnet10t_from_resnet18_digits.yaml"

SHAPE = (2, 5, 3)


def fill(values: np.ndarray, indices: np.ndarray) -> None:
    values[:] = np.float16(0.25)
    indices[:] = np.arange(3, dtype=indices.dtype)


def leftovers(store: ReplayStore) -> list[str]:
    return sorted(p.name for p in store.dir.iterdir()) if store.dir.exists() else []


def test_an_interrupted_write_leaves_nothing_half_used(tmp_path: Path) -> None:
    store = ReplayStore(tmp_path)

    def interrupted(values: np.ndarray, indices: np.ndarray) -> None:
        values[0] = np.float16(0.5)
        raise KeyboardInterrupt  # Ctrl-C while the draws are being labelled

    with pytest.raises(KeyboardInterrupt):
        store.get_or_compute("k", SHAPE, 10, interrupted)
    assert leftovers(store) == []  # no folder, no sidecar, no temporary folder
    assert store.open("k", SHAPE, 10) == (None, None)
    draws, status = store.get_or_compute("k", SHAPE, 10, fill)
    assert status == "miss" and leftovers(store) == ["k", "k.json"]
    assert isinstance(draws.values, np.memmap) and draws.values.dtype == np.float16 and draws.indices.dtype == np.int16
    assert store.get_or_compute("k", SHAPE, 10, fill)[1] == "hit"


def test_a_damaged_or_unfinished_entry_is_recomputed_not_used(tmp_path: Path, capsys) -> None:
    store = ReplayStore(tmp_path)
    store.get_or_compute("k", SHAPE, 10, fill)
    folder, side = store.paths("k")
    arr = np.load(folder / "values.npy")
    arr[0, 0, 0] = np.float16(0.9)
    np.save(folder / "values.npy", arr)
    assert "sha256 does not match" in store.open("k", SHAPE, 10)[1]
    draws, status = store.get_or_compute("k", SHAPE, 10, fill)
    assert status == "invalid" and float(draws.values[0, 0, 0]) == 0.25
    side.unlink()  # a folder without its sidecar: an interrupted rename/sidecar step
    assert "missing" in store.open("k", SHAPE, 10)[1]
    assert store.get_or_compute("k", SHAPE, 10, fill)[1] == "invalid"
    assert store.open("k", (3, 5, 3), 10)[1].endswith("(3, 5, 3) expected")  # another K under the same key is refused


def test_too_little_disk_stops_before_writing_with_the_numbers(tmp_path: Path, monkeypatch) -> None:
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(replay.shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 5000, 5000))
    shape = (100, 1000, 10)  # 100 draws x 1000 samples x top-10: 4 MB at fp16 + int16
    with pytest.raises(StageError) as err:
        ReplayStore(tmp_path).get_or_compute("k", shape, 1000, fill)
    msg = str(err.value)
    assert "replay draws need 3.8 MiB (100 draws × 1000 samples × top-10" in msg and "only 4.9 KiB are free" in msg
    assert "distill.replay.draws" in msg and leftovers(ReplayStore(tmp_path)) == []
    assert replay.replay_bytes(shape, 1000) == 100 * 1000 * 10 * 4 + 2 * 4096
    assert replay.index_dtype(40000) == np.int32


def test_the_cache_key_follows_the_augmentation_draws_and_top_k(tmp_path: Path) -> None:
    base = [
        "data.max_samples=60",
        "data.image_size=16",
        "teacher.arch=test_resnet",
        "student.arch=test_efficientnet",
        f"select.cache_dir={tmp_path / 'cache'}",
        "distill.teacher_targets=replay",
        "distill.replay.draws=2",
        "distill.replay.top_k=3",
        "data.augment.scale=[0.5, 1.0]",
    ]
    ckpt = tmp_path / "teacher.pt"
    save_checkpoint(ckpt, create_model("test_resnet", 10, 1), "test_resnet", 10, 1)

    def status(*overrides: str) -> tuple[str, str]:
        r = load_recipe(DIGITS, base + list(overrides))
        splits = load_splits(r.data)
        entry, st = make_replay(r, splits, teacher_loader(r, splits.train, ckpt), "weights", CPU)
        return entry["key"], st

    key, st = status()
    assert st == "miss"
    assert status() == (key, "hit")
    for changed in (
        ["data.augment.scale=[0.6, 1.0]"],
        ["data.augment.hflip=0.5"],
        ["distill.replay.draws=3"],
        ["distill.replay.top_k=4"],
        ["seed=1"],
    ):
        other, st = status(*changed)
        assert st == "miss" and other != key, changed
    # mixing happens in distill on the replayed distributions: it does not change the stored labels
    assert status("data.augment.mixup_alpha=0.4") == (key, "hit")
