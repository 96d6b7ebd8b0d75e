"""Benchmark critical-sample selection: does distilling on the mined 35% beat a random 35%, and what does the cache save?

Arms, each over several student seeds with the teacher and the split held fixed (one teacher is
trained once, then every arm loads it as `teacher.checkpoint` in its own run dir):

  critical  distill.critical.mode=subset on the recipe's strategy (top `select.top_k_ratio`)
  random    the same subset size drawn by `select.strategy=random` (seeded by the recipe seed)
  full      distill.critical.mode=none: every training sample

It also measures the warm-cache `select` time against the first (cold) one, and distill
training steps/s with cached teacher logits against the same loop re-running the teacher
forward every step (that variant exists only here).

Example (the reduced run reported in the pull request):
    .venv/bin/python scripts/bench_select.py --epochs 10 --seeds 3 --out runs/bench_select.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from bench_common import epoch_overrides, mean_std, run_arm, scratch_dir, train_base_teacher, write_results  # noqa: E402  (scripts/ is on sys.path)

from cann_distill.api import run_stages
from cann_distill.core.recipe import Recipe, default_recipe_path
from cann_distill.data.loading import load_splits
from cann_distill.data.transforms import channels_of
from cann_distill.models.build import build_model
from cann_distill.runtime.terminal import ui
from cann_distill.teaching.losses import LOSSES
from cann_distill.training.loop import fit, seed_everything

ARMS: dict[str, list[str]] = {
    "critical": ["distill.critical.mode=subset"],
    "random": ["distill.critical.mode=subset", "select.strategy=random", "select.strategy_args={}"],
    "full": ["distill.critical.mode=none"],
}


def timed_select(recipe: Recipe, run_dir: Path, force: bool) -> tuple[float, str]:
    result = run_stages(recipe, ["select"], run_dir=run_dir, force=force)[0]
    return result.seconds, result.summary["cache"]


def steps_per_second(recipe: Recipe, teacher_ckpt: Path | None, cached_logits: np.ndarray, epochs: int) -> dict[str, float]:
    """Distill's training loop (same losses, optimizer, loader) with cached logits vs a teacher forward per step.

    With `teacher_ckpt=None` the teacher keeps its random init: only its cost matters here.
    """
    train = load_splits(recipe.data).train
    n_classes, chans = len(train.classes), channels_of(recipe.data)
    teacher = build_model(recipe.teacher, n_classes, chans, checkpoint=teacher_ckpt).eval()
    logits = torch.from_numpy(cached_logits)
    losses = [(s.weight, LOSSES.build(s.kind, **s.kwargs())) for s in recipe.distill.losses]
    cfg = recipe.distill.model_copy(update={"epochs": epochs})
    batch_size = cfg.batch_size or recipe.data.batch_size

    def make_step(teacher_logits: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        def step(model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
            x, y, idx = batch
            outputs = {"student.logits": model(x), "teacher.logits": teacher_logits(x, idx), "targets": y}
            total = sum(w * loss(outputs).mean() for w, loss in losses)
            return total, {}

        return step

    def rerun_teacher(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return teacher(x)

    variants = {"cached": make_step(lambda x, idx: logits[idx]), "teacher_forward": make_step(rerun_teacher)}
    steps = epochs * -(-len(train) // batch_size)
    best: dict[str, float] = {}
    for _ in range(2):  # alternate the variants and keep each one's best, so load from elsewhere hurts both alike
        for name, step in variants.items():
            seed_everything(recipe.seed)
            student = build_model(recipe.student, n_classes, chans, role="student")
            t0 = time.perf_counter()
            fit(student, train, cfg, batch_size, step, recipe.seed, f"throughput {name}")
            best[name] = max(best.get(name, 0.0), steps / (time.perf_counter() - t0))
    return {
        "cached_steps_per_s": best["cached"],
        "teacher_forward_steps_per_s": best["teacher_forward"],
        "ratio": best["cached"] / best["teacher_forward"],
        "steps": steps,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: .venv/bin/python scripts/bench_select.py --epochs 10 --seeds 3 --out runs/bench_select.json",
    )
    ap.add_argument("--recipe", type=Path, default=default_recipe_path(), help="default: the packaged default recipe")
    ap.add_argument("--epochs", type=int, default=None, help="distill epochs per arm (default: the recipe's)")
    ap.add_argument("--seeds", type=int, default=3, help="student seeds per arm: recipe seed, +1, ... (default 3)")
    ap.add_argument("--teacher-epochs", type=int, default=None, help="teacher training epochs (default: the recipe's)")
    ap.add_argument("--throughput-epochs", type=int, default=1, help="epochs per steps/s measurement (default 1)")
    ap.add_argument(
        "--temperature",
        choices=["fixed", "per-sample"],
        default="fixed",
        help="fixed (default): KD's own temperature in every arm, so only the subset differs; "
        "per-sample: select.temperature.per_sample=true (the random arm then gets random temperatures)",
    )
    ap.add_argument("--work-dir", type=Path, default=None, help="run dirs and the cache (default: a fresh temp dir, removed after)")
    ap.add_argument(
        "--speed-teachers",
        default="resnet34,resnet50",
        help="also time the cached vs teacher-forward loop with these (untrained) teachers; '' for none",
    )
    ap.add_argument("--out", type=Path, required=True, help="write the results here as JSON")
    ap.add_argument("--verbose", action="store_true", help="show the stages' progress messages")
    args = ap.parse_args(argv)
    if args.seeds < 1:
        ap.error("--seeds must be >= 1")
    ui.configure(quiet=not args.verbose)

    with scratch_dir(args.work_dir, "bench_select.") as work:
        cache = work / "cache"
        shutil.rmtree(cache, ignore_errors=True)  # the first select must be a cold one
        common = [f"select.cache_dir={cache}", f"select.temperature.per_sample={str(args.temperature == 'per-sample').lower()}"]
        common += epoch_overrides(args)
        started = time.perf_counter()
        base_recipe, base, teacher, ckpt = train_base_teacher(args.recipe, common, work)

        cold, cold_status = timed_select(base_recipe, base, force=True)
        warm_runs = [timed_select(base_recipe, base, force=True) for _ in range(3)]
        warm = statistics.median(s for s, _ in warm_runs)
        cache_result = {
            "cold_s": cold,
            "cold_status": cold_status,
            "warm_s": warm,
            "warm_runs_s": [s for s, _ in warm_runs],
            "warm_status": sorted({st for _, st in warm_runs}),
            "warm_over_cold": warm / cold,
        }
        print(
            f"select: cold {cold:.2f}s ({cold_status}), warm {warm:.3f}s (median of 3, {'/'.join(cache_result['warm_status'])}) "
            f"= {100 * warm / cold:.1f}% of cold (target < 10%)",
            flush=True,
        )

        seeds = [base_recipe.seed + i for i in range(args.seeds)]
        arms: dict[str, Any] = {}
        for arm, overrides in ARMS.items():
            accs, samples = [], None
            for seed in seeds:
                recipe, res = run_arm(args.recipe, [*common, *overrides], ckpt, seed, work / arm / f"seed{seed}")
                if res["select"].summary["cache"] != "hit":
                    raise RuntimeError(f"arm {arm} seed {seed}: select did not hit the teacher-output cache")
                accs.append(res["distill"].summary["val_acc"])
                hist = json.loads((work / arm / f"seed{seed}" / "distill" / "metrics.json").read_text())["history"]
                samples = hist[0]["samples"] if hist else None
                print(f"  {arm:8s} seed {seed}: val {100 * accs[-1]:.2f}%", flush=True)
            arms[arm] = {**mean_std(accs), "train_samples_per_epoch": samples}
            print(
                f"{arm:8s} {100 * arms[arm]['mean']:.2f} ± {100 * arms[arm]['std']:.2f} % ({len(seeds)} seeds, {samples} samples/epoch)",
                flush=True,
            )

        logits = np.load(base / "select" / "teacher_logits.npy", allow_pickle=False)
        throughput = steps_per_second(base_recipe, ckpt, logits, args.throughput_epochs)
        print(
            f"distill steps/s: cached {throughput['cached_steps_per_s']:.2f}, teacher forward per step "
            f"{throughput['teacher_forward_steps_per_s']:.2f}: {throughput['ratio']:.2f}x (target >= 1.5x)",
            flush=True,
        )
        by_teacher = {base_recipe.teacher.arch: throughput}
        for arch in [a for a in args.speed_teachers.split(",") if a]:
            other = base_recipe.model_copy(
                update={"teacher": base_recipe.teacher.model_copy(update={"arch": arch, "checkpoint": None, "pretrained": False})}
            )
            by_teacher[arch] = steps_per_second(other, None, logits, args.throughput_epochs)
            print(
                f"distill steps/s with teacher {arch}: cached {by_teacher[arch]['cached_steps_per_s']:.2f}, teacher forward "
                f"{by_teacher[arch]['teacher_forward_steps_per_s']:.2f}: {by_teacher[arch]['ratio']:.2f}x",
                flush=True,
            )

        write_results(
            args.out,
            args.recipe,
            base_recipe,
            teacher,
            seeds,
            started,
            top_k_ratio=base_recipe.select.top_k_ratio,
            strategy=base_recipe.select.strategy,
            temperature=args.temperature,
            arms=arms,
            cache=cache_result,
            throughput=throughput,
            throughput_by_teacher=by_teacher,
            targets={
                "warm_over_cold_below_0.10": cache_result["warm_over_cold"] < 0.10,
                "steps_ratio_at_least_1.5": throughput["ratio"] >= 1.5,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
