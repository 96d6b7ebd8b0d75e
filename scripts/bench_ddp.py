"""Distill training throughput: one process vs two under torchrun (DistributedDataParallel, gloo on the CPU).

Arms (same recipe, same global batch, same epochs, same seeds):
  1p x 2t   one process, torch on 2 threads (intra-op parallelism, the default on 2 cores)
  1p x 1t   one process, 1 thread
  2p x 1t   torchrun --nproc_per_node=2, 1 thread each (torchrun's default OMP_NUM_THREADS=1)
The teacher is trained once; select runs per seed in this process (the teacher pass comes from the
cache), then each arm runs `cann-distill distill --force` as a subprocess. Reported per arm, mean ±
std over seeds: samples/s of the training loop (distill's metrics: all ranks' samples over rank 0's
train time), the distill stage's seconds, the command's wall time (process start and imports
included) and val accuracy. The machine's CPU flags and load average are recorded: other work on
the machine changes every number here.

    python scripts/bench_ddp.py --out runs/bench_ddp.json --seeds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import mean_std  # noqa: E402

from cann_distill.api import run_stages  # noqa: E402
from cann_distill.core.recipe_load import load_recipe  # noqa: E402

RECIPE: dict[str, Any] = {
    "name": "bench_ddp",
    "data": {"source": "digits", "image_size": 32, "max_samples": 1000, "batch_size": 64, "augment": {"enabled": False}},
    "teacher": {"arch": "resnet10t", "train": {"epochs": 3, "lr": 0.05}},
    "student": {"arch": "mobilenetv3_small_050"},
    "select": {"strategy": "margin", "top_k_ratio": 0.35},
    "distill": {"epochs": 3, "lr": 0.05},
    "runtime": {"device": "cpu"},
}
ARMS = {"1p x 2t": (1, "2"), "1p x 1t": (1, "1"), "2p x 1t": (2, "1")}


def cpu_info() -> dict[str, Any]:
    flags: list[str] = []
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1].split()
            if line.startswith("model name") and not model:
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
    return {"model": model, "cores": len(os.sched_getaffinity(0)), "flags": {f: f in flags for f in wanted}}


def distill_arm(recipe: Path, seed: int, procs: int, threads: str) -> dict[str, float]:
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"] if procs > 1 else [sys.executable]
    )
    cmd = [*launcher, "-m", "cann_distill", "distill", str(recipe), "--force", "-q"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": threads})
    wall = time.perf_counter() - t0
    if res.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
    return {"wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None, help="distill epochs (default 3)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work-dir", type=Path, default=None)
    args = ap.parse_args()
    started = time.perf_counter()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="bench_ddp_"))
    work.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    base = {**RECIPE, "run_dir": str(work / "run"), "select": {**RECIPE["select"], "cache_dir": str(work / "cache")}}
    if args.epochs:
        base["distill"] = {**base["distill"], "epochs": args.epochs}
    rows: dict[str, list[dict[str, float]]] = {arm: [] for arm in ARMS}
    seeds = list(range(args.seeds))
    teacher_ckpt = work / "teacher.pt"
    for seed in seeds:
        recipe_path = work / f"seed{seed}.yaml"
        recipe = {**base, "seed": seed}
        if teacher_ckpt.exists():
            recipe["teacher"] = {**recipe["teacher"], "checkpoint": str(teacher_ckpt)}
        recipe_path.write_text(yaml.safe_dump(recipe, sort_keys=False))
        run_stages(load_recipe(recipe_path), ["teacher", "select"])  # one process; the arms time distill only
        if not teacher_ckpt.exists():
            shutil.copy(work / "run" / "teacher" / "teacher.pt", teacher_ckpt)
        for arm, (procs, threads) in ARMS.items():
            row = distill_arm(recipe_path, seed, procs, threads)
            m = json.loads((work / "run" / "distill" / "metrics.json").read_text())
            row.update(
                samples_per_s=m["throughput"]["samples_per_s"], distill_s=sum(h["train_s"] for h in m["history"]), val_acc=m["val_acc"]
            )
            rows[arm].append(row)
            print(
                f"seed {seed} {arm}: {row['samples_per_s']:.0f} samples/s, train {row['distill_s']:.1f}s, "
                f"wall {row['wall_s']:.1f}s, val {100 * row['val_acc']:.1f}%",
                flush=True,
            )
    results = {
        "command": " ".join([sys.executable, *sys.argv]),
        "recipe": base,
        "seeds": seeds,
        "std": "sample std (ddof=1) over seeds",
        "machine": cpu_info(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "arms": {arm: {k: mean_std([r[k] for r in rs]) for k in rs[0]} for arm, rs in rows.items()},
        "seconds": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for arm, stats in results["arms"].items():
        print(f"{arm}: " + ", ".join(f"{k} {v['mean']:.3g} ± {v['std']:.2g}" for k, v in stats.items()))
    print(f"wrote {args.out} ({results['seconds']:.0f}s)")


if __name__ == "__main__":
    main()
