"""Shared set-up for the benchmark scripts (not part of the package)."""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Optional

from cann_distill.api import run_stages
from cann_distill.core.recipe import Recipe
from cann_distill.core.recipe_load import load_recipe


def add_common_args(ap: argparse.ArgumentParser, recipe: Path, recipe_help: str) -> None:
    """The options every benchmark takes: recipe, epochs, teacher epochs, seeds, work dir, output, verbosity."""
    ap.add_argument("--recipe", type=Path, default=recipe, help=recipe_help)
    ap.add_argument("--epochs", type=int, default=None, help="distill epochs per run (default: the recipe's)")
    ap.add_argument("--teacher-epochs", type=int, default=None, help="teacher training epochs (default: the recipe's)")
    ap.add_argument("--seeds", type=int, default=3, help="student seeds per arm: recipe seed, +1, ... (default 3)")
    ap.add_argument("--work-dir", type=Path, default=None, help="run dirs and the cache (default: a fresh temp dir, removed after)")
    ap.add_argument("--out", type=Path, required=True, help="write the results here as JSON")
    ap.add_argument("--verbose", action="store_true", help="show the stages' progress messages")


@contextlib.contextmanager
def scratch_dir(work_dir: Optional[Path], prefix: str) -> Iterator[Path]:
    """The benchmark's work dir: `work_dir` (kept) or a temporary one, removed when the benchmark ends."""
    work = work_dir or Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    try:
        yield work
    finally:
        if work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


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


def run_arm(recipe_path: Path, overrides: list[str], ckpt: Path, seed: int, run_dir: Path) -> tuple[Recipe, dict[str, Any]]:
    """One arm and seed: teacher (loading the shared checkpoint), select and distill; the recipe and results by stage."""
    recipe = load_recipe(recipe_path, [*overrides, f"seed={seed}", f"teacher.checkpoint={ckpt}"])
    return recipe, {r.stage: r for r in run_stages(recipe, ["teacher", "select", "distill"], run_dir=run_dir)}


def mean_std(values: list[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof=1) over seeds."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "values": values}


def write_results(
    out: Path, recipe_path: Path, base_recipe: Recipe, teacher: dict[str, Any], seeds: list[int], started: float, **fields: Any
) -> None:
    """The fields every benchmark reports, then the script's own, as JSON at `out`."""
    results = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "recipe": str(recipe_path),
        "teacher": base_recipe.teacher.arch,
        "student": base_recipe.student.arch,
        "distill_epochs": base_recipe.distill.epochs,
        "teacher_epochs": teacher["epochs"],
        "teacher_val_acc": teacher["val_acc"],
        "seeds": seeds,
        "std": "sample standard deviation (ddof=1) over seeds",
        **fields,
        "seconds": time.perf_counter() - started,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out} ({results['seconds']:.0f}s)")
