import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cann_distill.data import Split
from cann_distill.errors import ArtifactError
from cann_distill.recipe import TrainConfig
from cann_distill.stages.distill import read_index
from cann_distill.stages.select import INDEX_FIELDS
from cann_distill.train import SubsetSampler, ce_step, cosine_factor, fit


def toy_split(n: int = 20) -> Split:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    targets = (x[:, 0] > 0).long().numpy()
    return Split([f"toy/{i}" for i in range(n)], targets, ["a", "b"], lambda i: x[i])


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

    cfg = TrainConfig(epochs=3, lr=0.1)
    history = fit(torch.nn.Linear(4, 2), split, cfg, 4, step, 0, "toy", sampler=sampler,
                  on_epoch_start=on_start, on_epoch_end=lambda e, row: ends.append(row["epoch"]))
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
