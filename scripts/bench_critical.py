"""Benchmark critical-sample selection policies at 35% of the full set's steps, against random and the full set.

Two datasets where the teacher clearly beats the student alone:

  digits        scikit-learn digits at 32 px (the shipped mobilenetv3 recipe's split: 60/20/20)
  digits_hard   the same images made harder and written as an ImageFolder (see `write_hard_digits`):
                each image shifted by up to ±2 px, its contrast scaled by U(0.6, 1), Gaussian pixel
                noise σ = 0.15, and with probability 0.3 a 10×10 patch painted a random grey; every
                split is corrupted, and 20% of the *training* labels are replaced by another class
                (symmetric label noise; val/test labels are clean)

Per dataset one resnet18 teacher is trained once (with the recipe's augmentation) and every run
loads it. Students (mobilenetv3_small_050, CE 0.5 + KD 0.5 at T = 4, cached teacher logits, no
training augmentation): the full set trains for the recipe's epochs (or --epochs); every subset arm
keeps 35% of the samples (`select.top_k_ratio`) and trains for as many epochs as make
--step-budget (default 35%) of the full set's optimizer steps (rounded to whole epochs; each arm's
step share is in the JSON). Arms:

  full       every sample (`critical.mode=none`)                      — the reference
  alone      every sample, CE only, no teacher                        — does the teacher help?
  random     35% drawn at random, all classes pooled                  — the baseline to beat
  margin     35% highest teacher margin score, classes pooled         — the old default
  margin_bal the same score, class-balanced (the new default balance)
  view_hard  `view_loss` (teacher on 4 augmented views), hard, class-balanced
  view_mix   `view_loss`, mix 1/3 hard + 1/3 medium + 1/3 easy (stratified, Zheng et al. 2023)
  view_auto  `view_loss`, auto (Sorscher et al. 2022: easy when < 500 kept per class, hard otherwise)
  el2n_auto  `el2n` from a 2-epoch CE student probe (Paul et al. 2021), auto
  refresh    `view_loss` hard, then re-mined every 2 epochs by teacher–student disagreement
  refresh1_hard / refresh1_mix   the same policy (hard / mix), re-mined at every epoch: a different
             35% each epoch, chosen by what the current student still gets wrong against the teacher
             (dynamic pruning; cf. RHO-LOSS, Mindermann et al. ICML 2022, with the teacher as the
             irreducible-loss model). The re-mining pass (a forward over the whole split) is counted
             in the arm's time.
  refresh1_rho  hard by the reducible loss CE_student(y) − CE_teacher(y), at the start (student at
             init) and re-mined at every epoch: RHO-LOSS with the teacher as the irreducible-loss model
  refresh1_hard_half  refresh1_hard keeping 50% of the samples (fewer epochs for the same steps)
  full_short every sample, for the step budget's share of the full set's epochs: no selection, a
             shorter schedule (the reference a subset has to beat to be worth choosing)

Accuracy is top-1 on each dataset's test split (never used to choose anything); time is each run's
select + distill wall time (select includes the probe and the view scoring; the teacher is loaded).

Example (the run reported in the README):
    .venv/bin/python scripts/bench_critical.py --epochs 10 --seeds 3 --out runs/bench_critical.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_common import add_common_args, epoch_overrides, mean_std, run_arm, scratch_dir, train_base_teacher, write_results  # noqa: E402

from cann_distill.core.recipe import resource_dir
from cann_distill.runtime.terminal import ui
from cann_distill.selection.remining import steps_in_epoch

SUBSET = "distill.critical.mode=subset"
POOLED = "select.class_balanced=false"
ARMS: dict[str, list[str]] = {
    "full": ["distill.critical.mode=none"],
    "alone": ["distill.critical.mode=none", "distill.losses=[{kind: ce, weight: 1.0}]"],
    "random": [SUBSET, "select.strategy=random", POOLED],
    "margin": [SUBSET, "select.strategy=margin", "select.policy=hard", POOLED],
    "margin_bal": [SUBSET, "select.strategy=margin", "select.policy=hard"],
    "view_hard": [SUBSET, "select.strategy=view_loss", "select.policy=hard"],
    "view_mix": [SUBSET, "select.strategy=view_loss", "select.policy=mix"],
    "view_auto": [SUBSET, "select.strategy=view_loss", "select.policy=auto"],
    "el2n_auto": [SUBSET, "select.strategy=el2n", "select.policy=auto", "select.probe_epochs=2"],
    "refresh": [SUBSET, "select.strategy=view_loss", "select.policy=hard", "select.refresh_every=2"],
    "refresh1_hard": [SUBSET, "select.strategy=view_loss", "select.policy=hard", "select.refresh_every=1"],
    "refresh1_mix": [SUBSET, "select.strategy=view_loss", "select.policy=mix", "select.refresh_every=1"],
    "refresh1_rho": [
        SUBSET,
        "select.strategy=reducible_loss",
        "select.policy=hard",
        "select.refresh_every=1",
        "select.refresh_by=reducible_loss",
    ],
    "refresh1_hard_half": [SUBSET, "select.strategy=view_loss", "select.policy=hard", "select.refresh_every=1", "select.top_k_ratio=0.5"],
    "full_short": ["distill.critical.mode=none"],
}
# arms that train on every sample: the full set's epochs, except full_short (the step budget's share of them)
EVERY_SAMPLE = ("full", "alone", "full_short")
DATASETS = ("digits", "digits_hard")


def write_hard_digits(root: Path, seed: int = 0, noise: float = 0.15, label_noise: float = 0.2, occlude: float = 0.3) -> dict[str, Any]:
    """digits_hard as an ImageFolder at `root` (train/val/test, 60/20/20 stratified); returns its description."""
    import torch
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    marker = root / "info.json"
    if marker.is_file():  # written before: reuse it (rewriting would change the files' mtimes and retrain the teacher)
        return json.loads(marker.read_text())
    bunch = load_digits()
    y = bunch.target.astype(np.int64)
    idx = np.arange(len(y))
    tr, rest = train_test_split(idx, test_size=0.4, stratify=y, random_state=0)
    va, te = train_test_split(rest, test_size=0.5, stratify=y[rest], random_state=0)
    x = torch.from_numpy(bunch.images.astype(np.float32) / 16.0).unsqueeze(1)
    x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).squeeze(1).numpy()
    rng = np.random.default_rng(seed)
    flipped = 0
    for split, members in (("train", tr), ("val", va), ("test", te)):
        for c in range(10):
            (root / split / str(c)).mkdir(parents=True, exist_ok=True)
        for i in members:
            img = np.roll(x[i], tuple(rng.integers(-2, 3, size=2)), axis=(0, 1)) * rng.uniform(0.6, 1.0)
            img = img + rng.normal(0.0, noise, img.shape)
            if rng.random() < occlude:
                r0, c0 = rng.integers(0, 32 - 10, size=2)
                img[r0 : r0 + 10, c0 : c0 + 10] = rng.uniform(0.0, 1.0)
            label = int(y[i])
            if split == "train" and rng.random() < label_noise:
                label = int(rng.choice([c for c in range(10) if c != label]))
                flipped += 1
            Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8), mode="L").save(root / split / str(label) / f"{i:04d}.png")
    info = {
        "root": str(root),
        "train": len(tr),
        "val": len(va),
        "test": len(te),
        "train_labels_flipped": flipped,
        "corruption": f"shift ±2 px, contrast U(0.6, 1), Gaussian noise σ={noise}, 10×10 grey patch p={occlude}",
        "label_noise": label_noise,
    }
    marker.write_text(json.dumps(info, indent=2))
    return info


def dataset_overrides(name: str, work: Path) -> tuple[list[str], dict[str, Any]]:
    if name == "digits":
        return [], {"source": "sklearn load_digits, the recipe's split (60/20/20, split_seed 0)"}
    info = write_hard_digits(work / "digits_hard")
    return [
        "data.source=imagefolder",
        f"data.root={info['root']}",
        "data.channels=1",
        "data.mean=[0.5]",
        "data.std=[0.5]",
        "data.num_workers=0",
        "data.test_fraction=0.0",
    ], info


def machine() -> dict[str, Any]:
    flags = ""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        pass
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "avx512_vnni": "avx512_vnni" in flags,
        "avx2": " avx2" in flags,
        "load_average_start": os.getloadavg(),
        "note": "other agents were loading the machine (see load averages)",
    }


def run_dataset(name: str, args: argparse.Namespace, arms: list[str], work: Path) -> dict[str, Any]:
    data_over, info = dataset_overrides(name, work)
    base_over = [f"select.cache_dir={work / 'cache'}", "runtime.device=cpu", *data_over, *epoch_overrides(args)]
    base_recipe, _, teacher, ckpt = train_base_teacher(args.recipe, base_over, work / name)
    common = [*base_over, "data.augment.enabled=false"]
    seeds = [base_recipe.seed + i for i in range(args.seeds)]
    results: dict[str, Any] = {}
    budget: dict[str, Any] = {}
    for arm in ["full", *[a for a in arms if a != "full"]]:  # full first: its step count sets the subset arms' epochs
        accs, walls, per = [], [], []
        epochs = arm_epochs(arm, budget, base_recipe.distill.epochs)
        for seed in seeds[: args.alone_seeds] if arm == "alone" and args.alone_seeds else seeds:
            t0 = time.perf_counter()
            _, res = run_arm(args.recipe, [*common, *ARMS[arm], f"distill.epochs={epochs}"], ckpt, seed, work / name / arm / f"seed{seed}")
            if arm == "full" and not budget:
                budget = step_budget(res["select"].summary, base_recipe, args.step_budget)
            walls.append(time.perf_counter() - t0)
            d, s = res["distill"].summary, res["select"].summary
            accs.append(d["test_acc"] if d["test_acc"] is not None else d["val_acc"])
            per.append(
                {
                    "seed": seed,
                    "acc": accs[-1],
                    "select_s": res["select"].seconds,
                    "distill_s": res["distill"].seconds,
                    "cost": d["cost"],
                    "selection": s.get("selection"),
                    "refresh": d.get("refresh"),
                }
            )
            print(
                f"  {name} {arm:9s} seed {seed}: test {100 * accs[-1]:.2f}%  steps {d['cost']['steps']}/{budget['full_steps']}"
                f"  {walls[-1]:.0f}s",
                flush=True,
            )
        steps = per[0]["cost"]["steps"]
        results[arm] = {
            **mean_std(accs),
            "wall_s": mean_std(walls),
            "epochs": epochs,
            "steps": steps,
            "full_set_steps": budget["full_steps"],
            "step_share": steps / budget["full_steps"],
            "runs": per,
        }
        print(
            f"{name} {arm:9s} {100 * results[arm]['mean']:.2f} ± {100 * results[arm]['std']:.2f} %  "
            f"wall {results[arm]['wall_s']['mean']:.0f}s",
            flush=True,
        )
    if "full" not in arms:
        results.pop("full")
    full = results.get("full", {}).get("mean")
    rand = results.get("random", {}).get("mean")
    policies = [a for a in arms if a not in ("random", *EVERY_SAMPLE)]
    best = max(policies, key=lambda a: results[a]["mean"]) if policies else None
    verdict: dict[str, Any] = {"best_policy": best}
    if best and full:
        verdict["best_over_full"] = results[best]["mean"] / full
        verdict["reaches_99pct_of_full"] = results[best]["mean"] >= 0.99 * full
        verdict["short_of_99pct_by_pt"] = max(0.0, 100 * (0.99 * full - results[best]["mean"]))
    if best and rand is not None:
        verdict["beats_random_by_pt"] = 100 * (results[best]["mean"] - rand)
    for a in policies:
        if full:
            results[a]["over_full"] = results[a]["mean"] / full
        if rand is not None:
            results[a]["vs_random_pt"] = 100 * (results[a]["mean"] - rand)
    return {
        "dataset": info,
        "teacher": teacher,
        "teacher_test_acc": teacher.get("test_acc"),
        "arms": results,
        "verdict": verdict,
        "recipe_epochs": base_recipe.distill.epochs,
        "seeds": seeds,
        "budget": budget,
    }


def step_budget(select_summary: dict[str, Any], recipe: Any, share: float) -> dict[str, Any]:
    """The full set's optimizer steps and the epochs that give a subset arm (and `full_short`) `share` of them."""
    batch = recipe.distill.batch_size or recipe.data.batch_size
    n, kept, epochs = int(select_summary["num_samples"]), int(select_summary["num_critical"]), recipe.distill.epochs
    full_steps = epochs * steps_in_epoch(n, batch)
    subset_epochs = max(1, round(share * full_steps / steps_in_epoch(kept, batch)))
    return {
        "share": share,
        "full_epochs": epochs,
        "full_steps": full_steps,
        "samples": n,
        "subset_samples": kept,
        "subset_epochs": subset_epochs,
        "full_short_epochs": max(1, round(share * epochs)),
        "batch": batch,
    }


def arm_epochs(arm: str, budget: dict[str, Any], full_epochs: int) -> int:
    """Epochs of an arm: the full set's for full / alone, the step budget's for the others (an arm that keeps
    another share of the samples, `select.top_k_ratio=…`, gets the epochs that make the same steps)."""
    if arm in ("full", "alone"):
        return full_epochs
    if arm == "full_short":
        return budget["full_short_epochs"]
    ratio = next((float(o.split("=", 1)[1]) for o in ARMS[arm] if o.startswith("select.top_k_ratio=")), None)
    if ratio is None:
        return budget["subset_epochs"]
    kept = max(1, round(ratio * budget["samples"]))
    return max(1, round(budget["share"] * budget["full_steps"] / steps_in_epoch(kept, budget["batch"])))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: .venv/bin/python scripts/bench_critical.py --epochs 10 --seeds 3 --out runs/bench_critical.json",
    )
    add_common_args(
        ap,
        resource_dir("recipes") / "mobilenetv3_small_050_from_resnet18_digits.yaml",
        "recipe (default: the shipped mobilenetv3 digits recipe)",
    )
    ap.add_argument("--arms", default=",".join(ARMS), help="comma-separated subset of %(default)s")
    ap.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated subset of %(default)s")
    ap.add_argument(
        "--step-budget",
        type=float,
        default=0.35,
        help="share of the full set's optimizer steps every subset arm (and full_short) trains for (default %(default)s)",
    )
    ap.add_argument("--alone-seeds", type=int, default=None, help="seeds of the `alone` arm (default: --seeds)")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: on a shared 2-core machine 2 threads made an epoch 9x slower)"
    )
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    if unknown := [a for a in arms if a not in ARMS] + [d for d in datasets if d not in DATASETS]:
        ap.error(f"unknown arm(s)/dataset(s) {', '.join(unknown)}")
    ui.configure(quiet=not args.verbose)
    with scratch_dir(args.work_dir, "bench_critical.") as work:
        started = time.perf_counter()
        host = machine()
        by_dataset = {}
        for name in datasets:
            by_dataset[name] = run_dataset(name, args, arms, work)
            args.out.parent.mkdir(parents=True, exist_ok=True)
        first = by_dataset[datasets[0]]
        host["load_average_end"] = os.getloadavg()
        from cann_distill.core.recipe_load import load_recipe

        write_results(
            args.out,
            args.recipe,
            load_recipe(args.recipe, epoch_overrides(args)),
            first["teacher"],
            first["seeds"],
            started,
            machine=host,
            threads=args.threads,
            arms_run=arms,
            datasets=by_dataset,
            step_budget=args.step_budget,
        )
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
