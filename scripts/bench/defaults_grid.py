"""The grid docs/defaults.md chose the defaults on: one distill (or baseline) run per arm and seed, each in a
fresh run dir with the same trained teacher, results appended to a JSON-lines file as each run finishes
(rerunning skips the names already there, so an interrupted grid resumes).

Every arm starts from the recipe as written plus `distill.warmup_epochs=0` (the earlier default) and adds
its own overrides. One torch thread per run, so two grids can share a 2-core machine.

Example (the photo set built by photo_sets.py, a teacher trained once by `cann-distill teacher`):
  python scripts/bench/defaults_grid.py --recipe scripts/bench/recipes/mobilenetv3_small_050_from_resnet18_photos.yaml \\
      --set data.root=runs/photo_sets/ubuntu15 --set distill.epochs=8 --teacher runs/u15/teacher/teacher.pt \\
      --seeds 0,1,2 --arms def,warm1,warm1_none,base,base_warm1 --out runs/defaults_grid.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

WARM = ["distill.warmup_epochs=1"]
ADAMW = ["distill.optimizer=adamw", "distill.lr=0.002", "distill.weight_decay=0.05", *WARM]
SUBSET = [*WARM, "distill.critical.mode=subset"]
ARMS: dict[str, tuple[str, list[str]]] = {  # name: (stage, overrides)
    "def": ("distill", []),
    "warm1": ("distill", WARM),
    "warm1_none": ("distill", [*WARM, "distill.critical.mode=none"]),
    "adamw": ("distill", [*ADAMW, "distill.critical.mode=none"]),
    "base": ("baseline", []),
    "base_warm1": ("baseline", WARM),
    "base_adamw": ("baseline", ADAMW),
    "subset": ("distill", [*SUBSET, "select.policy=hard"]),
    "subset_mix": ("distill", [*SUBSET, "select.policy=mix"]),
    "subset_auto": ("distill", [*SUBSET, "select.policy=auto"]),
    "random": ("distill", [*SUBSET, "select.strategy=random", "select.refresh_every=null"]),
    # the KD weighting at the default budget (warmup on): CE 0.1 + KD 0.9, KD alone, T = 2
    "kd9": ("distill", [*WARM, "distill.losses[0].weight=0.1", "distill.losses[1].weight=0.9"]),
    "kdonly": ("distill", [*WARM, "distill.losses[0].weight=0.0", "distill.losses[1].weight=1.0"]),
    "t2": ("distill", [*WARM, "distill.losses[1].temperature=2.0"]),
    # twice the epochs with replayed views (10 labelled views per image), and the baseline at the same epochs
    "replay30": ("distill", [*WARM, "distill.teacher_targets=replay", "distill.epochs=30"]),
    "base30": ("baseline", [*WARM, "distill.epochs=30"]),
    # at the 30-epoch default: EMA weights with the best validation epoch, and decoupled KD (Zhao et al., CVPR 2022)
    "ema_best": ("distill", [*WARM, "distill.ema_decay=0.998", "distill.select_best=true"]),
    "dkd8": ("distill", [*WARM, "distill.losses[1].kind=dkd", "distill.losses[1].beta=8.0"]),
    "dkd2": ("distill", [*WARM, "distill.losses[1].kind=dkd", "distill.losses[1].beta=2.0"]),
    # logit standardization (Sun et al., CVPR 2024): the paper's T = 2, CE 0.1 + KD 9; and at the default weights
    "ls": (
        "distill",
        [
            *WARM,
            "distill.losses[1].standardize=true",
            "distill.losses[1].temperature=2.0",
            "distill.losses[0].weight=0.1",
            "distill.losses[1].weight=9.0",
        ],
    ),
    "ls_w1": ("distill", [*WARM, "distill.losses[1].standardize=true", "distill.losses[1].temperature=2.0"]),
    # DIST (Huang et al., NeurIPS 2022): ImageNet's T = 1, beta = gamma = 1, CE 1 : DIST 2; CIFAR's T = 4, beta = gamma = 2
    "dist1": ("distill", [*WARM, "distill.losses[1].kind=dist", "distill.losses[1].temperature=1.0", "distill.losses[1].weight=1.0"]),
    "dist4": ("distill", [*WARM, "distill.losses[1].kind=dist", "distill.losses[1].beta=2.0", "distill.losses[1].gamma=2.0"]),
    # at the 30-epoch default: mixup on the student's batch with the teacher labelling the mixed images (online),
    # KD alone at mixup alpha 1 ("function matching", Beyer et al., CVPR 2022) and the default weights at alpha 0.2;
    # and the learning rate doubled
    "fm": ("distill", [*WARM, "data.augment.mixup_alpha=1.0", "distill.losses[0].weight=0.0", "distill.losses[1].weight=1.0"]),
    "mix02": ("distill", [*WARM, "data.augment.mixup_alpha=0.2"]),
    "lr01": ("distill", [*WARM, "distill.lr=0.1"]),
    "base_lr01": ("baseline", [*WARM, "distill.lr=0.1"]),
    # the default's time spent on replayed targets instead: twice the epochs (10 labelled views per image), and the
    # baseline at the same 60 epochs
    "replay60": ("distill", [*WARM, "distill.teacher_targets=replay", "distill.epochs=60"]),
    "base60": ("baseline", [*WARM, "distill.epochs=60"]),
    # the 60 epochs with the teacher on every augmented batch (the default's target source)
    "online60": ("distill", [*WARM, "distill.epochs=60", "distill.teacher_targets=online"]),
    # the earlier default (30 epochs, online targets), named so that it stays the same arm whatever the recipe says
    "online30": ("distill", [*WARM, "distill.epochs=30", "distill.teacher_targets=online"]),
    # training augmentation off (the evaluation transform for training images too), distilled and baseline
    "noaug": ("distill", [*WARM, "data.augment.enabled=false"]),
    "base_noaug": ("baseline", [*WARM, "data.augment.enabled=false"]),
}


def cli(python: str, *args: str) -> list[str]:
    return [python, "-m", "cann_distill", *args]


def run_arm(python: str, recipe: str, base: list[str], teacher: str, arm: str, seed: int, work: Path) -> dict[str, object]:
    stage, extra = ARMS[arm]
    run = work / f"s{seed}_{arm}"
    shutil.rmtree(run, ignore_errors=True)
    sets = [x for kv in [*base, f"teacher.checkpoint={teacher}", f"seed={seed}", "distill.warmup_epochs=0", *extra] for x in ("--set", kv)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started = time.perf_counter()
    log = (work / f"s{seed}_{arm}.log").open("w")
    for step in ("teacher", "select", stage):  # teacher: evaluates the given checkpoint, no training
        rc = subprocess.run(
            cli(python, step, recipe, "--run-dir", str(run), *sets), stdout=log, stderr=subprocess.STDOUT, env=env
        ).returncode
        if rc != 0:
            return {"name": f"s{seed}_{arm}", "stage": stage, "error": f"{step} exited {rc} (see {log.name})", "args": " ".join(extra)}
    metrics = json.loads((run / stage / "metrics.json").read_text())
    return {
        "name": f"s{seed}_{arm}",
        "stage": stage,
        "val": round(metrics["val_acc"], 4),
        "test": round(metrics.get("test_acc") or 0.0, 4),
        "curve": [round(h["val_acc"], 3) for h in metrics["history"]],
        "secs": int(time.perf_counter() - started),
        "args": f"seed={seed} " + " ".join(f"--set {kv}" for kv in extra),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[-1]
    )
    ap.add_argument("--recipe", required=True)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="applied to every arm")
    ap.add_argument("--teacher", required=True, help="a trained teacher checkpoint (teacher/teacher.pt of a run dir)")
    ap.add_argument("--arms", default=",".join(ARMS), help="comma-separated (default: all: %(default)s)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", type=Path, required=True, help="JSON lines, appended to; names already there are skipped")
    ap.add_argument("--work-dir", type=Path, default=None, help="run dirs and logs (default: next to --out)")
    args = ap.parse_args(argv)
    arms = [a for a in args.arms.split(",") if a]
    if bad := [a for a in arms if a not in ARMS]:
        ap.error(f"unknown arm(s) {', '.join(bad)} (known: {', '.join(ARMS)})")
    if not Path(args.teacher).is_file():
        ap.error(f"--teacher: no such file: {args.teacher}")
    work = args.work_dir or args.out.with_suffix("")
    work.mkdir(parents=True, exist_ok=True)
    done = {json.loads(line)["name"] for line in args.out.read_text().splitlines() if line.strip()} if args.out.exists() else set()
    for seed in (int(s) for s in args.seeds.split(",")):
        for arm in arms:
            if f"s{seed}_{arm}" in done:
                continue
            row = run_arm(sys.executable, args.recipe, args.overrides, args.teacher, arm, seed, work)
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            shown = f"val {100 * row['val']:.2f}% test {100 * row['test']:.2f}%" if "val" in row else row["error"]
            print(f"{row['name']}: {shown}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
