"""Several teachers (`teachers:`): their models as distill runs them, the checks that need their checkpoints, and
how each one did against the labels and the student (what report.json shows per teacher)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from torch import nn

from cann_distill.core.recipe import Recipe, TeacherSpec
from cann_distill.core.recipe_load import class_folders
from cann_distill.data.loading import Split, Splits
from cann_distill.data.unlabeled import PREFIX as UNLABELED_PREFIX
from cann_distill.models.build import build_model, read_checkpoint, teacher_input, with_teacher_input
from cann_distill.runtime.devices import CPU, Runtime
from cann_distill.teaching.ensemble import combined_logits
from cann_distill.training.loop import accuracy, predict


def teacher_model(recipe: Recipe, spec: TeacherSpec, checkpoint: Path, classes: Sequence[str], in_chans: int) -> nn.Module:
    """Teacher `spec` from its checkpoint, behind its own input re-normalisation (each teacher may expect other statistics)."""
    cfg = spec.section()
    model = build_model(cfg, len(classes), in_chans, checkpoint=checkpoint, classes=list(classes))
    return with_teacher_input(model, recipe.data, cfg)


def renormalized(recipe: Recipe) -> list[bool]:
    """Per teacher: whether its inputs are re-normalised from the data's statistics to its own."""
    return [not teacher_input(recipe.data, t.section()).identity for t in recipe.teachers or ()]


def _agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean())


def evaluate_teachers(
    recipe: Recipe,
    models: Sequence[nn.Module],
    splits: Splits,
    student: dict[str, np.ndarray],
    runtime: Runtime = CPU,
) -> dict[str, Any]:
    """Each teacher's accuracy and top-1 agreement with the student on val (and test), and the same for their
    weighted mean distribution; `student` holds the student's logits per split name."""
    specs = recipe.teachers or []
    evaluated = [s for s in (splits.val, splits.test) if s is not None]
    logits: dict[str, list[np.ndarray]] = {s.name: [] for s in evaluated}
    for k, model in enumerate(models):
        for split in evaluated:
            logits[split.name].append(predict(model, split, desc=f"teacher {k} {split.name}", runtime=runtime))
    flags = renormalized(recipe)
    teachers = []
    for k, spec in enumerate(specs):
        row: dict[str, Any] = {"index": k, "arch": spec.arch, "weight": spec.weight, "renormalized": flags[k]}
        for split in evaluated:
            row[f"{split.name}_acc"] = accuracy(logits[split.name][k], split.targets)
            row[f"{split.name}_agreement"] = _agreement(logits[split.name][k], student[split.name])
        teachers.append(row)
    combined: dict[str, Any] = {"weights": [t.weight for t in specs]}
    for split in evaluated:
        mean = combined_logits(logits[split.name], [t.weight for t in specs])
        combined[f"{split.name}_acc"] = accuracy(mean, split.targets)
        combined[f"{split.name}_agreement"] = _agreement(mean, student[split.name])
    return {"teachers": teachers, "combined": combined}


def unlabelled_counts(train: Split) -> dict[str, int]:
    """Labelled and unlabelled training images (label -1, `data.unlabeled`), and unlabelled ones skipped as bad."""
    labelled = int((train.targets >= 0).sum())
    skipped = sum(1 for sid in train.skipped if sid.startswith(UNLABELED_PREFIX))
    return {"labelled": labelled, "unlabelled": len(train) - labelled, "unlabelled_skipped": skipped}


def checkpoint_classes(path: Path) -> Optional[list[str]]:
    """The class list a cann-distill checkpoint records (None for a bare state_dict)."""
    saved = (read_checkpoint(path).get("meta") or {}).get("classes")
    return [str(c) for c in saved] if isinstance(saved, list) else None


def teacher_input_errors(recipe: Recipe, classes: Optional[Sequence[str]] = None) -> list[str]:
    """Teachers whose checkpoints were trained on another class list than the data (or than each other): their
    output i would not mean class i, so no target could combine them. Each with its key path, before any work."""
    if not recipe.teachers:
        return []
    expected = list(classes) if classes is not None else dataset_classes(recipe)
    errors = []
    for i, t in enumerate(recipe.teachers):
        if not t.checkpoint or not Path(t.checkpoint).is_file():
            continue
        saved = checkpoint_classes(Path(t.checkpoint))
        if saved is None or expected is None or saved == expected:
            continue
        order = " (the same classes in another order)" if sorted(saved) == sorted(expected) else ""
        errors.append(
            f"teachers[{i}].checkpoint: trained on other classes than the data{order}: "
            f"{len(saved)} classes ({', '.join(saved[:4])}{', …' if len(saved) > 4 else ''}), the data has {len(expected)}"
        )
    return errors


def chain_errors(recipe: Recipe) -> list[str]:
    """A teacher-assistant chain whose hops do not shrink: each model must have fewer parameters than the one before
    (TAKD's assistants bridge a gap; a hop that grows teaches nothing the previous model could not)."""
    chain = recipe.distill.chain
    if not chain:
        return []
    from cann_distill.data.loading import count_classes
    from cann_distill.data.transforms import channels_of

    params = _param_counts(tuple(chain), max(1, count_classes(recipe.data)), channels_of(recipe.data))
    for k in range(1, len(chain)):
        if params[k] >= params[k - 1]:
            return [
                f"distill.chain: hop {k} does not shrink: {chain[k - 1]} ({params[k - 1]:,} parameters) -> {chain[k]} "
                f"({params[k]:,}); each model must be smaller than the one before it"
            ]
    return []


@functools.lru_cache(maxsize=8)
def _param_counts(archs: tuple[str, ...], classes: int, channels: int) -> list[int]:
    from cann_distill.models.build import count_params, create_model

    return [count_params(create_model(arch, classes, channels)) for arch in archs]


def dataset_classes(recipe: Recipe) -> Optional[list[str]]:
    """The data's class list without loading an image (None when it cannot be listed)."""
    data = recipe.data
    if data.source == "digits":
        return [str(c) for c in range(10)]
    if data.source == "photos":
        from cann_distill.data.photos import class_name, photo_files, photos_dir

        root = photos_dir(data.root)
        return [class_name(f) for f in photo_files(root)] if root.is_dir() else None
    train = Path(data.root or "") / "train"
    return class_folders(train) if train.is_dir() else None
