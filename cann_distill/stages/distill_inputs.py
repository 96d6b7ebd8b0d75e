"""What distill reads: the data (with `data.unlabeled`'s images), select's critical-sample index, summary and
temperatures, its cached logits and the replay draws it names; each checked against the recipe's training split."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from cann_distill.core.errors import ArtifactError
from cann_distill.core.paths import resolve_cache_dir
from cann_distill.core.recipe import Recipe
from cann_distill.data.loading import Split, Splits, load_splits
from cann_distill.stages.base import Context
from cann_distill.stages.select import INDEX, INDEX_FIELDS, SUMMARY
from cann_distill.teaching.plans import CriticalIndex
from cann_distill.teaching.replay import ReplayStore
from cann_distill.teaching.targets import ReplayTargets


def read_index(path: Path, train: Split) -> CriticalIndex:
    """Critical mask and temperatures in split order; the index must have been made for this very split."""
    return read_index_of(path, train.ids)


def read_index_of(path: Path, split_ids: Sequence[str]) -> CriticalIndex:
    """`read_index` for the sample ids of any training split (a detection set's image ids too)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != INDEX_FIELDS:
            raise ArtifactError(
                f"{path}: not a critical-sample index (columns {reader.fieldnames}, expected {list(INDEX_FIELDS)}); "
                "rerun `cann-distill select --force`"
            )
        rows = list(reader)
    ids = [row["id"] for row in rows]
    if ids != list(split_ids):
        raise ArtifactError(f"{path}: index was made for a different dataset than the recipe names; rerun `cann-distill select --force`")
    try:
        temperature = np.array([float(row["temperature"]) for row in rows])
    except (TypeError, ValueError):
        raise ArtifactError(f"{path}: temperature column is not numeric; rerun `cann-distill select --force`") from None
    if not (np.all(np.isfinite(temperature)) and np.all(temperature > 0)):
        raise ArtifactError(f"{path}: temperatures must be finite and > 0; rerun `cann-distill select --force`")
    return CriticalIndex(np.array([row["critical"] == "1" for row in rows]), temperature)


def read_select_summary(path: Path) -> dict[str, Any]:
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError:
        summary = None
    if not isinstance(summary, dict):
        raise ArtifactError(f"{path}: not a select summary; rerun `cann-distill select --force`")
    return summary


def read_temperature_config(path: Path) -> dict[str, Any]:
    """select.temperature as select recorded it in its summary."""
    temp = read_select_summary(path).get("temperature")
    if not isinstance(temp, dict) or not {"per_sample", "t_min", "t_max"} <= set(temp):
        raise ArtifactError(f"{path}: no temperature settings in the select summary; rerun `cann-distill select --force`")
    return temp


@dataclass
class DistillInputs:
    """What distill reads: the data and select's artifacts."""

    splits: Splits
    index: CriticalIndex
    select_temperature: dict[str, Any]  # select.temperature as select recorded it
    select_summary: dict[str, Any]

    @property
    def train(self) -> Split:
        return self.splits.train


def read_inputs(ctx: Context) -> DistillInputs:
    splits = load_splits(ctx.recipe.data, unlabeled=True)
    return DistillInputs(
        splits,
        read_index(ctx.artifacts[INDEX], splits.train),
        read_temperature_config(ctx.artifacts[SUMMARY]),
        read_select_summary(ctx.artifacts[SUMMARY]),
    )


def read_cached_logits(path: Path, train: Split) -> torch.Tensor:
    logits = torch.from_numpy(np.load(path, allow_pickle=False))
    if logits.shape != (len(train), len(train.classes)):
        raise ArtifactError(f"{path}: shape {tuple(logits.shape)} does not fit {len(train)} samples × {len(train.classes)} classes")
    return logits


def open_replay(recipe: Recipe, summary_path: Path, summary: dict[str, Any], train: Split, k: Optional[int] = None) -> ReplayTargets:
    """The replayed targets select stored (its summary names the cache entry; `k`: teacher k's of several)."""
    entry = summary.get("replay") if k is None else ((summary.get("teachers") or [{}] * (k + 1))[k] or {}).get("replay")
    if not isinstance(entry, dict) or "key" not in entry:
        raise ArtifactError(f"{summary_path}: select stored no replay draws; rerun `cann-distill select --force`")
    n_classes = len(train.classes)
    shape = tuple(entry.get("shape") or ())
    if len(shape) != 3 or shape[1] != len(train):
        raise ArtifactError(
            f"{summary_path}: replay draws of shape {shape} do not fit {len(train)} samples; rerun `cann-distill select --force`"
        )
    draws, problem = ReplayStore(resolve_cache_dir(recipe.select.cache_dir)).open(entry["key"], shape, n_classes, verify=False)  # type: ignore[arg-type]
    if draws is None:
        raise ArtifactError(
            f"replay draws named by {summary_path}: {problem or 'no longer in the cache'}; rerun `cann-distill select --force`"
        )
    return ReplayTargets(draws, n_classes)
