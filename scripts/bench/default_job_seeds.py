"""The packaged default job (`cann-distill run`, no recipe) over seeds and `--jobs` settings: how much of what one run
shows is the draw. Each (seed, jobs) runs in its own run dir with its own empty cache; one JSON line per run is
appended to --out as it finishes (rerunning skips the pairs already there).

Example:
  python scripts/bench/default_job_seeds.py --seeds 0,1,2 --jobs 1,2 --work-dir runs/default_job --out default_job.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional


def row(run: Path, seed: int, jobs: int, wall: Optional[float], extra: list[str]) -> dict[str, Any]:
    """One run's numbers, read back from its manifest (val and test top-1 in %, INT8 on test, stage seconds; the wall
    time of the command when it ran the stages, None when they were already up to date)."""
    stages = json.loads((run / "manifest.json").read_text())["stages"]

    def pct(stage: str, key: str) -> float:
        return round(100 * stages[stage]["summary"][key], 2)

    accuracy = stages["validate"]["summary"]["accuracy"]
    return {
        "seed": seed,
        "jobs": jobs,
        "overrides": extra,
        "teacher": {"val": pct("teacher", "val_acc"), "test": pct("teacher", "test_acc")},
        "distill": {"val": pct("distill", "val_acc"), "test": pct("distill", "test_acc")},
        "baseline": {"val": pct("baseline", "val_acc"), "test": pct("baseline", "test_acc")},
        "int8_test": round(100 * accuracy["onnx_int8"], 2),
        "int8_split": accuracy.get("split"),
        "stage_seconds": {name: round(rec["seconds"], 1) for name, rec in stages.items()},
        "wall_seconds": None if wall is None else round(wall, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--jobs", default="1,2", help="the `cann-distill run --jobs` values to run each seed with")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a recipe override for every run")
    ap.add_argument("--work-dir", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="JSON lines, appended to")
    args = ap.parse_args()
    done = set()
    if args.out.is_file():
        done = {(r["seed"], r["jobs"]) for r in map(json.loads, args.out.read_text().splitlines()) if r.get("overrides") == args.set}
    for seed in (int(s) for s in args.seeds.split(",")):
        for jobs in (int(j) for j in args.jobs.split(",")):
            if (seed, jobs) in done:
                continue
            run = args.work_dir / f"r_{seed}_{jobs}"
            sets = [a for kv in [f"seed={seed}", *args.set] for a in ("--set", kv)]
            cmd = [sys.executable, "-m", "cann_distill", "run", "--json", "--run-dir", str(run), "--jobs", str(jobs), *sets]
            env = {**os.environ, "XDG_CACHE_HOME": str(args.work_dir / f"cache_{seed}_{jobs}")}
            t0 = time.perf_counter()
            done_run = subprocess.run(cmd, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if done_run.returncode != 0:
                raise SystemExit(f"seed {seed} jobs {jobs}: exit {done_run.returncode}: {done_run.stderr.strip()[-500:]}")
            ran = any(s["status"] == "done" for s in json.loads(done_run.stdout)["stages"])
            line = row(run, seed, jobs, wall if ran else None, args.set)  # a run dir already up to date: no wall time
            with args.out.open("a") as f:
                f.write(json.dumps(line) + "\n")
            print(f"seed {seed} jobs {jobs}: distill {line['distill']} baseline {line['baseline']} ({wall:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
