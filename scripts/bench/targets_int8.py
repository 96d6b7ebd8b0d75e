"""Teacher-target sources through to INT8: the packaged default job (`cann-distill run --to validate`) with each
`distill.teacher_targets` mode and seed, FP32 and INT8 top-1 on val and test, and where validate's per-layer gap
puts the INT8 loss (the worst layer's SQNR and its outlier-channel ratio). One run dir per (mode, seed); a line per
run appended to a JSON-lines file as each finishes (rerunning skips the names already there). `--seed` changes the
teacher too: each seed is the whole job a user would run with that seed.

Example:
  python scripts/bench/targets_int8.py --modes online,replay --seeds 0,1,2 --out docs/data/targets_int8_photos.jsonl
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def commit() -> str:
    """The checkout's commit, with `-dirty` when the working tree differs from it."""
    root = Path(__file__).resolve().parents[2]
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout
    return head + ("-dirty" if dirty.strip() else "") if head else "unknown"


def row_of(name: str, mode: str, seed: int, validation: dict[str, Any], seconds: float, made_at: str) -> dict[str, Any]:
    """The JSON line for one finished run: top-1 per split and model, the worst layer of the gap."""
    by = validation["by_split"]
    acc = {
        f"{split}_{model}": round(by[split]["accuracy"][key], 4)
        for split in by
        for model, key in (("fp32", "onnx_fp32"), ("int8", "onnx_int8"))
    }
    worst = (validation.get("layer_gap") or {}).get("worst") or [{}]
    w = worst[0]
    return {
        "name": name,
        "mode": mode,
        "seed": seed,
        **acc,
        "worst_layer": w.get("module"),
        "worst_sqnr_db": None if w.get("sqnr_db") is None else round(w["sqnr_db"], 1),
        "worst_outlier_ratio": None if w.get("outlier_ratio") is None else round(w["outlier_ratio"], 1),
        "gate": {g["budget"]: g["pass"] for g in validation.get("gate", [])},
        "secs": int(seconds),
        "commit": made_at,
    }


def run_one(mode: str, seed: int, work: Path, extra: list[str]) -> dict[str, Any]:
    name = f"{mode}_{seed}"
    run = work / name
    sets = [x for kv in [f"seed={seed}", f"distill.teacher_targets={mode}", *extra] for x in ("--set", kv)]
    started = time.perf_counter()
    with (work / f"{name}.log").open("w") as log:
        rc = subprocess.run(
            [sys.executable, "-m", "cann_distill", "run", "-q", "--run-dir", str(run), "--to", "validate", *sets],
            stdout=log,
            stderr=subprocess.STDOUT,
        ).returncode
    if rc != 0:
        return {"name": name, "mode": mode, "seed": seed, "error": f"exited {rc} (see {name}.log)"}
    validation = json.loads((run / "validate" / "validation.json").read_text())
    return row_of(name, mode, seed, validation, time.perf_counter() - started, commit())


def table(rows: list[dict[str, Any]]) -> list[str]:
    """Mean ± std per mode of each top-1 column, and the count of runs whose gate failed."""
    lines = []
    for mode in dict.fromkeys(r["mode"] for r in rows if "error" not in r):
        ok = [r for r in rows if r.get("mode") == mode and "error" not in r]
        cells = []
        for key in ("val_fp32", "val_int8", "test_fp32", "test_int8"):
            values = [100 * r[key] for r in ok if key in r]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{key} {statistics.mean(values):.2f} ± {std:.2f}")
        failed = sum(1 for r in ok if not all(r["gate"].values()))
        lines.append(f"{mode} ({len(ok)} seeds): " + ", ".join(cells) + f"; gate failed in {failed}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[-1]
    )
    ap.add_argument("--modes", default="online,replay", help="comma-separated teacher_targets modes (default: %(default)s)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="applied to every run")
    ap.add_argument("--out", type=Path, required=True, help="JSON lines, appended to; names already there are skipped")
    ap.add_argument("--work-dir", type=Path, default=None, help="run dirs and logs (default: next to --out, without .jsonl)")
    args = ap.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    if bad := [m for m in modes if m not in ("online", "replay", "cached")]:
        ap.error(f"unknown mode(s) {', '.join(bad)} (known: online, replay, cached)")
    work = args.work_dir or args.out.with_suffix("")
    work.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()] if args.out.exists() else []
    done = {r["name"] for r in rows}
    for seed in (int(s) for s in args.seeds.split(",")):
        for mode in modes:
            if f"{mode}_{seed}" in done:
                continue
            row = run_one(mode, seed, work, args.overrides)
            rows.append(row)
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            shown = row.get("error") or f"val {100 * row['val_fp32']:.2f} → INT8 {100 * row['val_int8']:.2f}%"
            print(f"{row['name']}: {shown}", file=sys.stderr, flush=True)
    print("\n".join(table(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
