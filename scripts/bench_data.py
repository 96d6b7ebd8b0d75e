"""Benchmark the data pipeline: does timm augmentation with an online (consistent) teacher help distillation,
and what do DataLoader workers buy?

One teacher is trained once (with the recipe's augmentation) and loaded by every run as
`teacher.checkpoint`. Each arm trains the student for the same number of epochs with the same
optimizer, over several seeds, on every sample (`distill.critical.mode=none`):

  alone        ce only, no augmentation: the student without a teacher
  alone_aug    ce only, with the recipe's augmentation: what augmentation alone buys
  kd           ce 0.5 + kd 0.5 (T = 4), no augmentation: the teacher's logits come from select's cache
  kd_aug       ce 0.5 + kd 0.5 (T = 4), with the recipe's augmentation: the teacher labels every
               augmented view online ("consistent teaching", Beyer et al. 2022)

Accuracies are top-1 on the recipe's test split (the epoch is never chosen on it). Then one
augmented KD epoch is timed with `data.num_workers` 0 and 2, interleaved, `--timing-repeats` times.

Example (the run reported in the README):
    .venv/bin/python scripts/bench_data.py --epochs 15 --seeds 3 --out runs/bench_data.json
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from bench_common import add_common_args, epoch_overrides, mean_std, run_arm, scratch_dir, train_base_teacher, write_results  # noqa: E402  (scripts/ is on sys.path)

from cann_distill.api import run_stages
from cann_distill.core.recipe import resource_dir
from cann_distill.core.recipe_load import load_recipe
from cann_distill.runtime.terminal import ui

KD = "distill.losses=[{kind: ce, weight: 0.5}, {kind: kd, weight: 0.5, temperature: 4.0}]"
CE = "distill.losses=[{kind: ce, weight: 1.0}]"
NO_AUG = "data.augment.enabled=false"
ARMS: dict[str, list[str]] = {"alone": [CE, NO_AUG], "alone_aug": [CE], "kd": [KD, NO_AUG], "kd_aug": [KD]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: .venv/bin/python scripts/bench_data.py --epochs 15 --seeds 3 --out runs/bench_data.json",
    )
    add_common_args(
        ap,
        resource_dir("recipes") / "mobilenetv3_small_050_from_resnet18_digits.yaml",
        "recipe with the augmentation to test (default: the shipped mobilenetv3 digits recipe)",
    )
    ap.add_argument("--arms", default=",".join(ARMS), help="comma-separated subset of %(default)s")
    ap.add_argument("--timing-repeats", type=int, default=2, help="interleaved 0/2-worker epoch timings (default 2; 0 skips them)")
    args = ap.parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if unknown := [a for a in arms if a not in ARMS]:
        ap.error(f"unknown arm(s) {', '.join(unknown)} (known: {', '.join(ARMS)})")
    ui.configure(quiet=not args.verbose)

    with scratch_dir(args.work_dir, "bench_data.") as work:
        common = [f"select.cache_dir={work / 'cache'}", "distill.critical.mode=none", "runtime.device=cpu", *epoch_overrides(args)]
        started = time.perf_counter()
        base_recipe, _, teacher, ckpt = train_base_teacher(args.recipe, common, work)
        seeds = [base_recipe.seed + i for i in range(args.seeds)]
        by_arm: dict[str, Any] = {}
        for arm in arms:
            accs, vals, seconds = [], [], []
            for seed in seeds:
                _, res = run_arm(args.recipe, [*common, *ARMS[arm]], ckpt, seed, work / arm / f"seed{seed}")
                d = res["distill"].summary
                accs.append(d["headline"]["acc"])
                vals.append(d["val_acc"])
                seconds.append(res["distill"].seconds)
                print(
                    f"{arm:10s} seed {seed}: {d['headline']['split']} {100 * d['headline']['acc']:.2f}% "
                    f"(val {100 * d['val_acc']:.2f}%, teacher {d['teacher']['logits']}) {seconds[-1]:.0f}s",
                    flush=True,
                )
            by_arm[arm] = {
                "overrides": ARMS[arm],
                "test_acc": mean_std(accs),
                "val_acc": mean_std(vals),
                "distill_seconds": mean_std(seconds),
            }
            print(f"{arm:10s} {100 * by_arm[arm]['test_acc']['mean']:.2f} ± {100 * by_arm[arm]['test_acc']['std']:.2f}%", flush=True)

        # one augmented KD epoch with 0 and 2 workers, interleaved so machine load hits both alike
        timing: dict[str, list[float]] = {"0": [], "2": []}
        for rep in range(args.timing_repeats):
            for workers in ("0", "2"):
                recipe = load_recipe(
                    args.recipe, [*common, f"teacher.checkpoint={ckpt}", KD, "distill.epochs=1", f"data.num_workers={workers}"]
                )
                run_dir = work / "timing" / f"w{workers}_{rep}"
                run_stages(recipe, ["teacher", "select"], run_dir=run_dir)
                res = run_stages(recipe, ["distill"], run_dir=run_dir)[0]
                timing[workers].append(res.seconds)
                print(f"distill epoch, {workers} workers: {res.seconds:.2f}s", flush=True)
        epoch_seconds: dict[str, Any] = {}
        if args.timing_repeats:
            ratio = statistics.median(timing["2"]) / statistics.median(timing["0"])
            print(f"epoch time 2 workers / 0 workers: {ratio:.2f}", flush=True)
            epoch_seconds = {
                "workers_0": mean_std(timing["0"]),
                "workers_2": mean_std(timing["2"]),
                "ratio_2_over_0": ratio,
                "note": "one distill stage of 1 epoch incl. its validation pass",
            }
        write_results(
            args.out,
            args.recipe,
            base_recipe,
            teacher,
            seeds,
            started,
            arms=by_arm,
            augment=base_recipe.data.augment.model_dump(mode="json"),
            headline_split="test" if base_recipe.data.test_fraction else "val",
            epoch_seconds=epoch_seconds,
            torch_threads=torch.get_num_threads(),
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
