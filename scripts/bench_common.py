"""Shared set-up for the benchmark scripts (not part of the package)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cann_distill.pipeline import run_stages
from cann_distill.recipe import Recipe, load_recipe


def epoch_overrides(args: argparse.Namespace) -> list[str]:
    """`--epochs` / `--teacher-epochs` as recipe overrides."""
    out = []
    if args.epochs is not None:
        out.append(f"distill.epochs={args.epochs}")
    if args.teacher_epochs is not None:
        out.append(f"teacher.train.epochs={args.teacher_epochs}")
    return out


def train_base_teacher(recipe_path: Path, overrides: list[str], work: Path) -> tuple[Recipe, Path, dict[str, Any], Path]:
    """Train the recipe's teacher once in `<work>/base`; every arm then loads its checkpoint."""
    base_recipe = load_recipe(recipe_path, overrides)
    base = work / "base"
    teacher = run_stages(base_recipe, ["teacher"], run_dir=base)[0].summary
    print(f"teacher {base_recipe.teacher.arch}: val {100 * teacher['val_acc']:.2f}% ({teacher['epochs']} epochs)", flush=True)
    return base_recipe, base, teacher, base / "teacher" / "teacher.pt"
