"""Benchmark distillation objectives: CE from scratch vs Hinton KD vs multi-granularity (logits + features + attention).

Arms, each over several student seeds with one teacher trained once and loaded by every run as
`teacher.checkpoint` (its own run dir per arm and seed; select's teacher-output cache is shared):

  scratch          distill.losses = ce (1.0): the student without a teacher
  kd               ce 0.5 + kd 0.5 (T = 4): Hinton et al. 2015
  mgd              the recipe's losses; the shipped recipe: ce 0.3 + kd 0.3 (logits 0.6), fitnet on
                   layer3 (features 0.3), at on layer2 (attention 0.1)
  mgd_uncertainty  (opt-in) mgd with distill.loss_balance=uncertainty

Every arm shares the recipe's other distill settings (optimizer, lr, warmup, grad clip, epochs) and
trains on every sample (distill.critical.mode=none), so only the objective differs.

Example (the reduced run reported in the pull request):
    .venv/bin/python scripts/bench_distill.py --epochs 10 --seeds 3 --out runs/bench_distill.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from bench_common import add_common_args, epoch_overrides, mean_std, run_arm, scratch_dir, train_base_teacher, write_results  # noqa: E402  (scripts/ is on sys.path)

from cann_distill.core.recipe import resource_dir
from cann_distill.runtime.terminal import ui

ARMS: dict[str, list[str]] = {
    "scratch": ["distill.losses=[{kind: ce, weight: 1.0}]"],
    "kd": ["distill.losses=[{kind: ce, weight: 0.5}, {kind: kd, weight: 0.5, temperature: 4.0}]"],
    "mgd": [],
    "mgd_uncertainty": ["distill.loss_balance=uncertainty"],
}
DEFAULT_ARMS = ("scratch", "kd", "mgd")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: .venv/bin/python scripts/bench_distill.py --epochs 10 --seeds 3 --out runs/bench_distill.json",
    )
    add_common_args(
        ap,
        resource_dir("recipes") / "resnet10t_from_resnet18_digits_mgd.yaml",
        "the multi-granularity recipe; its losses are the mgd arm (default: the shipped digits one)",
    )
    ap.add_argument("--arms", default=",".join(DEFAULT_ARMS), help=f"comma-separated, from {', '.join(ARMS)} (default: %(default)s)")
    args = ap.parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if args.seeds < 1:
        ap.error("--seeds must be >= 1")
    if unknown := [a for a in arms if a not in ARMS]:
        ap.error(f"unknown arm(s) {', '.join(unknown)} (known: {', '.join(ARMS)})")
    ui.configure(quiet=not args.verbose)

    with scratch_dir(args.work_dir, "bench_distill.") as work:
        common = [f"select.cache_dir={work / 'cache'}", "distill.critical.mode=none"]
        common += epoch_overrides(args)
        started = time.perf_counter()
        base_recipe, base, teacher, ckpt = train_base_teacher(args.recipe, common, work)

        seeds = [base_recipe.seed + i for i in range(args.seeds)]
        results_by_arm: dict[str, Any] = {}
        for arm in arms:
            accs, seconds, losses = [], [], None
            for seed in seeds:
                recipe, res = run_arm(args.recipe, [*common, *ARMS[arm]], ckpt, seed, work / arm / f"seed{seed}")
                losses = [s.model_dump() for s in recipe.distill.losses]
                accs.append(res["distill"].summary["val_acc"])
                seconds.append(res["distill"].seconds)
                print(f"  {arm:16s} seed {seed}: val {100 * accs[-1]:.2f}% ({seconds[-1]:.0f}s)", flush=True)
            results_by_arm[arm] = {
                **mean_std(accs),
                "losses": losses,
                "loss_balance": recipe.distill.loss_balance,
                "distill_seconds_mean": statistics.fmean(seconds),
            }
            print(
                f"{arm:16s} {100 * results_by_arm[arm]['mean']:.2f} ± {100 * results_by_arm[arm]['std']:.2f} % ({len(seeds)} seeds)",
                flush=True,
            )

        print(f"teacher          {100 * teacher['val_acc']:.2f} %", flush=True)
        write_results(args.out, args.recipe, base_recipe, teacher, seeds, started, critical_mode="none", arms=results_by_arm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
