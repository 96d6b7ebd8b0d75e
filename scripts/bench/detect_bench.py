"""Detection distillation measured on the packaged demo set: the teacher, the student alone (the baseline stage:
the boxes only), the distilled student (FGD feature imitation + KD on the class scores), and the distilled
student's INT8 ONNX (mAP drop, batch-1 latency against FP32). The teacher is trained once (the recipe's seed) and
given to every seed's runs as a checkpoint; each seed runs distill, baseline and validate in a fresh run dir with
the same budget. One JSON line per seed, appended as each finishes (rerunning skips the seeds already there).

The demo set has a train and a val split only, and nothing here is chosen on val: every number is COCO mAP
on val, and the settings are the recipe's (plus --set).

Example:
  python scripts/bench/detect_bench.py --seeds 0,1,2 --set distill.epochs=24 --set teacher.train.epochs=24 \\
      --out runs/detect_demo.jsonl
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
from typing import Any

from bench import git_commit, machine_info, project_versions  # the accuracy benchmark's records of machine and versions

DEFAULT_RECIPE = "resnet10t_from_resnet18_detect_demo"  # the packaged recipe, by name


def cli(args: argparse.Namespace, step: str, run: Path, extra: list[str], log: Path) -> int:
    sets = [x for kv in [*args.overrides, *extra] for x in ("--set", kv)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    with log.open("a") as f:
        return subprocess.run(
            [sys.executable, "-m", "cann_distill", step, args.recipe, "--run-dir", str(run), *sets],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
        ).returncode


def coco(metrics: dict[str, Any]) -> dict[str, Any]:
    keep = ("mAP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")
    return {k: metrics["val"].get(k) for k in keep}


def run_seed(args: argparse.Namespace, teacher: Path, seed: int) -> dict[str, Any]:
    run = args.work / f"s{seed}"
    shutil.rmtree(run, ignore_errors=True)
    log = args.work / f"s{seed}.log"
    log.write_text("")
    extra = [f"seed={seed}", f"teacher.checkpoint={teacher}", "teacher.train_when_checkpoint=false"]
    started = time.perf_counter()
    for step in ("teacher", "distill", "baseline", "validate"):
        rc = cli(args, step, run, extra, log)
        if rc != 0:
            return {"seed": seed, "error": f"{step} exited {rc} (see {log.name})"}
    read = lambda *p: json.loads(run.joinpath(*p).read_text())  # noqa: E731
    validation = read("validate", "validation.json")
    return {
        "seed": seed,
        "teacher": coco(read("teacher", "metrics.json")),
        "baseline": coco(read("baseline", "metrics.json")),
        "distill": coco(read("distill", "metrics.json")),
        "onnx_map": validation["map"],
        "int8_map_drop": validation["int8_map_drop"],
        "int8_over_fp32_latency": validation["latency_batch1"]["int8_over_fp32"],
        "latency_ms": {k: validation["latency_batch1"][k] for k in ("fp32", "int8")},
        "size_bytes": validation["size_bytes"],
        "secs": int(time.perf_counter() - started),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[-1]
    )
    ap.add_argument("--recipe", default=DEFAULT_RECIPE, help="a detection recipe (default: the packaged %(default)s)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="applied to every run")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (default %(default)s)")
    ap.add_argument("--out", type=Path, required=True, help="JSON lines, appended to; seeds already there are skipped")
    ap.add_argument("--work-dir", type=Path, default=None, help="run dirs and logs (default: next to --out)")
    ap.add_argument("--render", type=Path, default=None, metavar="PAGE.md", help="only write the page from --out's results")
    args = ap.parse_args(argv)
    if args.render:
        from detect_report import page, read  # noqa: PLC0415 (the page's layout, kept apart from running)

        args.render.write_text(page(read(args.out), args.out))
        print(f"wrote {args.render}", file=sys.stderr)
        return 0
    args.work = (args.work_dir or args.out.with_suffix("")).resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    lines = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()] if args.out.exists() else []
    done = {item["seed"] for item in lines if "seed" in item and "error" not in item}
    meta = {"command": " ".join(["python", *sys.argv]), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info()}
    with args.out.open("a") as f:
        f.write(json.dumps({"meta": {**meta, "versions": project_versions()}}) + "\n")
    teacher_run = args.work / "teacher"
    started = time.perf_counter()
    if cli(args, "teacher", teacher_run, [], args.work / "teacher.log") != 0:
        print(f"error: the teacher stage failed (see {args.work / 'teacher.log'})", file=sys.stderr)
        return 1
    teacher = teacher_run / "teacher" / "teacher.pt"
    print(
        f"teacher: {coco(json.loads((teacher_run / 'teacher' / 'metrics.json').read_text()))} ({time.perf_counter() - started:.0f}s)",
        file=sys.stderr,
    )
    for seed in (int(s) for s in args.seeds.split(",")):
        if seed in done:
            continue
        row = {**run_seed(args, teacher, seed), "commit": git_commit()}
        with args.out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        shown = (
            f"baseline mAP {100 * row['baseline']['mAP']:.2f}, distilled {100 * row['distill']['mAP']:.2f}, INT8 drop "
            f"{100 * (row['int8_map_drop'] or 0):.2f} pt ({row['secs']}s)"
            if "error" not in row
            else row["error"]
        )
        print(f"seed {seed}: {shown}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
