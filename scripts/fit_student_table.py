"""Markdown table of a fit_student.json (the README's fit-student table is made with this).

Usage: python scripts/fit_student_table.py runs/<name>/fit/fit_student.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def table(result: dict) -> str:
    lines = [
        f"profile `{result['target']}` ({result['basis']['kind']}{': ' + result['basis']['why'] if result['basis']['why'] else ''}), "
        f"{result['provider']}, {result['scheme']['activation_type']} activations, reduce_range={result['scheme']['reduce_range']}, "
        f"batch {result['batch']}, {result['threads']} thread(s), {result['image_size']} px; CPU {result['cpu']}",
        "",
        "| candidate | params (M) | MFLOPs | FP32 median ± spread (ms) | INT8 median ± spread (ms) | INT8 P99 (ms) | INT8/FP32 "
        "| INT8 img/s (batch 64) | INT8 size (MB) | ops left in float | fits |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def tail(lat: dict) -> str:  # P99 only from >= 100 timed runs; else the slowest run, labelled
        return f"{lat['p99_ms']:.2f}" if lat.get("p99_ms") is not None else f"max {lat['max_ms']:.2f}"

    for r in result["candidates"]:
        if r["status"] != "ok":
            lines.append(f"| {r['arch']} | {r['params'] / 1e6:.2f} | | | | | | | | | {r['status']} |")
            continue
        within = "" if r["comparison"]["significant"] else " (within spread)"
        flag = " ⚠" if r["fp32"]["unstable"] or r["int8"]["unstable"] else ""
        fits = (
            "**picked**"
            if r["arch"] == result["picked"]
            else ("yes" if r["fits"] else "no: " + ", ".join(m["budget"] for m in r["misses"]))
        )
        lines.append(
            f"| {r['arch']} | {r['params'] / 1e6:.2f} | {(r['flops'] or 0) / 1e6:.1f} | {r['fp32']['median_ms']:.3f} ± {r['fp32']['spread_ms']:.3f} "
            f"| {r['int8']['median_ms']:.3f} ± {r['int8']['spread_ms']:.3f}{flag} | {tail(r['int8'])} | {r['int8_over_fp32']:.2f}×{within} "
            f"| {r['throughput']['int8_img_s']:,.0f} | {r['size_bytes']['int8'] / 1e6:.2f} | {r['int8_float_ops']} | {fits} |"
        )
    loads = [r["load_avg"]["before"][0] for r in result["candidates"] if r.get("load_avg") and r["load_avg"].get("before")]
    if loads:
        lines += ["", f"1-minute load average while measuring: {min(loads):.1f}–{max(loads):.1f}"]
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(json.loads(Path(sys.argv[1]).read_text())))
