"""Benchmark quantization-aware distillation: float student vs PTQ INT8 vs PTQ + best feedback fix vs QAD INT8.

Per recipe, one teacher is trained once; per student seed one run distills the float student and then
runs the QAD phase (`distill.qat.enabled=true`), and validate measures, on the test split (the headline,
never used to choose anything):

  float      the distilled float student (ONNX FP32)
  ptq        onnxruntime static INT8 of it (validate's PTQ: per-channel, MinMax, the CPU's scheme)
  ptq_fix    PTQ with the fix validate's feedback search chose on val (combined when fixes add up); the
             float student's export quantized again with those settings, scored on test
  qad        the QAD student exported with its learned ranges (validate's `quantization: qat`, the shipped
             student_int8.onnx; PTQ is read from validation.json's `ptq`)

plus the INT8 drop of each against `float`, torch fake-quant vs onnxruntime INT8 agreement, and the
extra training time QAD costs (QAD phase seconds / float distillation seconds).

Example (the run reported in the README):
    .venv/bin/python scripts/bench_qad.py --epochs 8 --teacher-epochs 5 --qad-epochs 2 --seeds 3 --out runs/bench_qad.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import add_common_args, epoch_overrides, mean_std, scratch_dir, train_base_teacher, write_results  # noqa: E402

from cann_distill.api import run_stages
from cann_distill.core.recipe import resource_dir
from cann_distill.core.recipe_load import load_recipe
from cann_distill.data.loading import load_splits
from cann_distill.quant import ort as q
from cann_distill.quant.calibration import calibration_images
from cann_distill.runtime.terminal import ui
from cann_distill.stages.validate import Quantizer, apply_changes, onnx_logits, topk

RECIPES = ("mobilenetv3_small_050_from_resnet18_digits.yaml", "resnet10t_from_resnet18_digits.yaml")


def ptq_fix_accuracy(run: Path, recipe: Any, changes: dict[str, Any]) -> float:
    """Test top-1 of the float student's export quantized with the feedback's chosen changes."""
    splits = load_splits(recipe.data)
    cfg = apply_changes(recipe.validate_, changes)
    calib = calibration_images(splits.train, cfg.calibration.samples, recipe.seed)
    with tempfile.TemporaryDirectory() as tmp:
        quantizer = Quantizer(run / "validate" / "student_fp32.onnx", calib, Path(tmp))
        out = Path(tmp) / "fix.onnx"
        quantizer.quantize(cfg, out)
        logits = onnx_logits({"int8": q.session(out, "CPUExecutionProvider")}, splits.test)["int8"]
    return topk(logits, splits.test.targets, 1)


def one_seed(recipe_path: Path, overrides: list[str], ckpt: Path, seed: int, run: Path) -> dict[str, Any]:
    recipe = load_recipe(recipe_path, [*overrides, f"seed={seed}", f"teacher.checkpoint={ckpt}"])
    results = {r.stage: r for r in run_stages(recipe, ["teacher", "select", "distill", "validate"], run_dir=run)}
    v = json.loads((run / "validate" / "validation.json").read_text())
    d = results["distill"].summary
    acc = v["accuracy"]
    fb = v["feedback"]
    ptq = v["ptq"]["accuracy"]["onnx_int8"]  # the QAD model ships as student_int8.onnx; PTQ is kept beside it
    fix = ptq_fix_accuracy(run, recipe, fb["apply"]) if fb.get("apply") else ptq
    float_s = d["throughput"].get("samples_per_s")
    return {
        "seed": seed,
        "float": acc["onnx_fp32"],
        "ptq": ptq,
        "ptq_fix": fix,
        "qad": acc["onnx_int8"],
        "fix": fb.get("apply"),
        "agreement": v["qat"]["by_split"]["test"]["fake_quant_vs_onnx_int8_top1"],
        "ranges_exported_equal": f"{v['qat']['ranges']['exported_equal']}/{v['qat']['ranges']['learned']}",
        "distill_seconds": results["distill"].seconds,
        "qad_seconds": d["qat"]["seconds"],
        "float_samples_per_s": float_s,
    }


def parse_variant(text: str) -> tuple[str, str, list[str]]:
    """'LABEL=RECIPE:KEY=VALUE;KEY=VALUE' → (label, recipe file, overrides)."""
    label, _, rest = text.partition("=")
    recipe_file, _, sets = rest.partition(":")
    if not label or not recipe_file.endswith((".yaml", ".yml")):
        raise SystemExit(f"--variant {text!r}: expected LABEL=RECIPE.yaml:KEY=VALUE[;KEY=VALUE]")
    return label, recipe_file, [s.strip() for s in sets.split(";") if s.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: .venv/bin/python scripts/bench_qad.py --epochs 8 --teacher-epochs 5 --qad-epochs 2 --seeds 3 --out runs/bench_qad.json",
    )
    add_common_args(ap, resource_dir("recipes") / RECIPES[0], "ignored: both --recipes run")
    ap.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated shipped recipe files (default: %(default)s)")
    ap.add_argument("--qad-epochs", type=int, default=2, help="distill.qat.epochs (default 2)")
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="LABEL=RECIPE:KEY=VALUE[;KEY=VALUE]",
        help="one more case: a shipped recipe with overrides, reported under LABEL (repeatable), e.g. "
        "'mobilenetv3 per-tensor=mobilenetv3_small_050_from_resnet18_digits.yaml:validate.per_channel=false'",
    )
    args = ap.parse_args(argv)
    ui.configure(quiet=not args.verbose)
    with scratch_dir(args.work_dir, "bench_qad.") as work:
        started = time.perf_counter()
        seeds = []
        out: dict[str, Any] = {}
        base_info = None
        cases = [(name, name, []) for name in (r.strip() for r in args.recipes.split(",")) if name]
        cases += [parse_variant(v) for v in args.variant]
        for name, recipe_file, extra in cases:
            path = resource_dir("recipes") / recipe_file
            overrides = [
                *epoch_overrides(args),
                *extra,
                f"select.cache_dir={work / 'cache'}",
                "distill.qat.enabled=true",
                f"distill.qat.epochs={args.qad_epochs}",
                f"distill.qat.freeze_observers_epoch={max(args.qad_epochs - 1, 0)}",
                "validate.latency.runs=20",
                "validate.latency.warmup=2",
            ]
            base_recipe, _, teacher, ckpt = train_base_teacher(path, overrides, work / name)
            base_info = base_info or (path, base_recipe, teacher)
            seeds = [base_recipe.seed + i for i in range(args.seeds)]
            rows = []
            for seed in seeds:
                row = one_seed(path, overrides, ckpt, seed, work / name / f"seed{seed}")
                rows.append(row)
                print(json.dumps(row), flush=True)
            arms = {arm: mean_std([100 * r[arm] for r in rows]) for arm in ("float", "ptq", "ptq_fix", "qad")}
            out[name] = {
                "student": base_recipe.student.arch,
                "teacher_val_acc": teacher["val_acc"],
                "runs": rows,
                "accuracy_pct": arms,
                "int8_drop_pt": {arm: mean_std([100 * (r["float"] - r[arm]) for r in rows]) for arm in ("ptq", "ptq_fix", "qad")},
                "agreement_fake_quant_vs_onnx_int8": mean_std([r["agreement"] for r in rows]),
                "qad_extra_time_fraction": mean_std([r["qad_seconds"] / max(r["distill_seconds"] - r["qad_seconds"], 1e-9) for r in rows]),
            }
            print(name, json.dumps({k: v for k, v in out[name].items() if k != "runs"}, indent=1), flush=True)
    path, base_recipe, teacher = base_info  # type: ignore[misc]
    feats = q.cpu_features()
    write_results(
        args.out,
        path,
        base_recipe,
        teacher,
        seeds,
        started,
        qad_epochs=args.qad_epochs,
        recipes=out,
        machine={"cpu": feats, "platform": platform.platform(), "cores": os.cpu_count(), "loadavg": os.getloadavg()},
    )
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
