"""What a large ImageFolder adds to an up-to-date `cann-distill run`.

Builds two ImageFolder trees of symlinks to one tiny PNG (`bench_listing.build_tree`: 80% train,
20% val): a small one (`--small`, default 1,000 files) and a large one (`-n`, default 100,000). For
each, runs the whole pipeline once with tiny models (8 px, 1 distill epoch on a 1% critical subset,
so the first run stays short), then times `cann-distill run RECIPE --json` in a fresh process
`--repeats` times (every stage skipped). The difference of the medians is what the 99,000 extra
files cost an up-to-date run.

    python scripts/bench_uptodate.py --out runs/bench_uptodate.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from bench_listing import build_tree  # noqa: E402  (scripts/ is on sys.path)


def recipe(root: Path, work: Path) -> Path:
    r = {
        "name": f"uptodate_{root.name}",
        "seed": 0,
        "run_dir": str(work / f"run_{root.name}"),
        "runtime": {"device": "cpu"},
        "data": {
            "source": "imagefolder",
            "root": str(root),
            "image_size": 8,
            "channels": 1,
            "batch_size": 256,
            "num_workers": 2,
            "augment": {"enabled": False},
        },
        "teacher": {"arch": "test_resnet", "train": {"epochs": 0}},
        "student": {"arch": "test_efficientnet"},
        "select": {"top_k_ratio": 0.01, "cache_dir": str(work / "cache")},
        "distill": {"epochs": 1, "critical": {"mode": "subset"}},
        "validate": {
            "calibration": {"samples": 32},
            "latency": {"warmup": 1, "runs": 5},
            "gap": {"samples": 16},
            "feedback": {"search": False},
        },
    }
    path = work / f"{root.name}.yaml"
    path.write_text(yaml.safe_dump(r, sort_keys=False))
    return path


def cli_run(path: Path) -> tuple[float, list[str]]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "cann_distill", "run", str(path), "--json"], capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"run failed ({out.returncode}): {out.stderr.strip().splitlines()[-1:]}")
    return seconds, [s["status"] for s in json.loads(out.stdout)["stages"]]


def measure(n: int, work: Path, repeats: int) -> dict[str, Any]:
    root = work / f"tree{n}"
    root.mkdir()
    build_tree(root, n, 100, copies=False)
    path = recipe(root, work)
    first, statuses = cli_run(path)
    assert set(statuses) == {"done"}, statuses
    runs = []
    for _ in range(repeats):
        seconds, statuses = cli_run(path)
        assert set(statuses) == {"skipped"}, statuses
        runs.append(seconds)
    print(f"{n:>7,} files: first run {first:.1f}s, up-to-date run median {statistics.median(runs):.2f}s {runs}", flush=True)
    return {"files": n, "first_run_s": first, "uptodate_s": runs, "uptodate_median_s": statistics.median(runs)}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: python scripts/bench_uptodate.py --out runs/bench_uptodate.json",
    )
    ap.add_argument("-n", type=int, default=100_000, help="files in the large tree (default 100,000)")
    ap.add_argument("--small", type=int, default=1_000, help="files in the reference tree (default 1,000)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_uptodate.") as tmp:
        small, large = measure(args.small, Path(tmp), args.repeats), measure(args.n, Path(tmp), args.repeats)
    result = {
        "command": " ".join([sys.executable, *sys.argv]),
        "small": small,
        "large": large,
        "added_s": large["uptodate_median_s"] - small["uptodate_median_s"],
    }
    print(f"{args.n - args.small:,} more files add {result['added_s']:.2f}s to an up-to-date run")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
