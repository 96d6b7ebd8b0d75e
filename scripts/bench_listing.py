"""Time listing and checking an ImageFolder tree: scan_tree and find_bad_images (cold, then memoised).

Builds `train/<class>/*.png` + `val/<class>/*.png` with N entries (80% train) that are symlinks to
one tiny valid PNG (`--copies`: real files), in a temp dir or `--root DIR` (must be empty or absent),
then times each step. "first" is the first call in this process; the tree was just written, so the
OS's directory cache is warm either way: dropping it needs root, so a truly cold disk is not measured.
For scale it also times the pathlib walk that data.py used before (rglob + is_file + stat).

    python scripts/bench_listing.py                  # 100,000 symlinks, table on stdout
    python scripts/bench_listing.py -n 20000 --copies --json > listing.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from cann_distill.data.images import IMAGE_EXTS, find_bad_images, scan_tree


def build_tree(root: Path, n: int, classes: int, copies: bool) -> None:
    """N image entries spread over classes, 80% in train/ and 20% in val/."""
    src = root / ".source.png"  # hidden, so scan_tree does not list it
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(src)
    n_train = n * 4 // 5
    for i in range(n):
        split, j = ("train", i) if i < n_train else ("val", i - n_train)
        folder = root / split / f"class_{j % classes:03d}"
        if j < classes:
            folder.mkdir(parents=True)
        dest = folder / f"{j:07d}.png"
        if copies:
            shutil.copyfile(src, dest)
        else:
            os.symlink(src, dest)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def pathlib_walk(root: Path) -> list[tuple[str, int, int]]:
    """The previous approach, for comparison: rglob, then is_file and stat per path (hidden skipped)."""
    out = []
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if p.suffix.lower() in IMAGE_EXTS and not any(s.startswith(".") for s in rel.parts) and p.is_file():
            st = p.stat()
            out.append((rel.as_posix(), st.st_size, st.st_mtime_ns))
    return sorted(out)


def bench(root: Path, cache: Path, repeats: int) -> dict[str, Any]:
    first_s, entries = timed(lambda: scan_tree(root))
    warm = [timed(lambda: scan_tree(root))[0] for _ in range(repeats)]
    old_s, old = timed(lambda: pathlib_walk(root))
    assert [e.rel for e in entries] == [r[0] for r in old], "scan_tree and the pathlib walk disagree"
    cold_s, bad = timed(lambda: find_bad_images(root, entries, cache_dir=cache))
    memo_s, bad_again = timed(lambda: find_bad_images(root, entries, cache_dir=cache))
    assert bad == bad_again == {}, f"unexpected bad images: {list(bad)[:3]}"
    return {
        "files": len(entries),
        "threads": os.cpu_count(),
        "scan_tree_first_s": first_s,
        "scan_tree_warm_median_s": statistics.median(warm),
        "scan_tree_warm_s": warm,
        "pathlib_walk_s": old_s,
        "find_bad_images_cold_s": cold_s,
        "find_bad_images_memo_s": memo_s,
        "memo_bytes": sum(p.stat().st_size for p in (cache / "image_checks").iterdir()),
    }


def table(r: dict[str, Any]) -> str:
    n = r["files"]
    rows = [
        ("scan_tree, first call", r["scan_tree_first_s"]),
        (f"scan_tree, warm (median of {len(r['scan_tree_warm_s'])})", r["scan_tree_warm_median_s"]),
        ("pathlib rglob+is_file+stat (old)", r["pathlib_walk_s"]),
        (f"find_bad_images, cold ({r['threads']} threads)", r["find_bad_images_cold_s"]),
        ("find_bad_images, memoised", r["find_bad_images_memo_s"]),
    ]
    lines = [f"{n:,} files ({r['layout']}); memo {r['memo_bytes'] / 1e6:.1f} MB", f"{'step':<40} {'seconds':>8} {'µs/file':>8}"]
    lines += [f"{name:<40} {s:>8.3f} {1e6 * s / max(n, 1):>8.1f}" for name, s in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", type=int, default=100_000, help="image entries in total (default 100,000)")
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--root", type=Path, help="build the tree here (kept) instead of a temp dir (removed)")
    ap.add_argument("--copies", action="store_true", help="real file copies instead of symlinks")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="the result as JSON on stdout (the table goes to stderr)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_listing.") as tmp:
        root = args.root or Path(tmp) / "tree"
        root.mkdir(parents=True, exist_ok=True)
        if any(root.iterdir()):
            sys.exit(f"Error: {root} is not empty")
        build_s, _ = timed(lambda: build_tree(root, args.n, args.classes, args.copies))
        result = {
            "n": args.n,
            "classes": args.classes,
            "layout": "copies" if args.copies else "symlinks",
            "build_s": build_s,
            **bench(root, Path(tmp) / "cache", args.repeats),
        }
    print(table(result), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
