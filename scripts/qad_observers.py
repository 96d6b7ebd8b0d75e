"""Quick check: QAD with activation observers frozen after the first epoch vs never frozen.

Per student seed, one float student is distilled (QAD off); then the same QAD phase runs from it twice,
`freeze_observers_epoch` 1 and null (the rest of the recipe's `distill.qat`, `keep_start` on: the best of
the PTQ start and every QAD epoch on val ships), each exported with its learned ranges and scored with
onnxruntime INT8 on val and on test (the headline, never used to choose).

Example (the run reported in docs/guides/qad.md):
    .venv/bin/python scripts/qad_observers.py --epochs 8 --teacher-epochs 5 --qad-epochs 3 --seeds 3 --out runs/qad_observers.json
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from bench_common import add_common_args, epoch_overrides, mean_std, scratch_dir, train_base_teacher  # noqa: E402

from cann_distill.api import run_stages
from cann_distill.core.recipe import resource_dir
from cann_distill.core.recipe_load import load_recipe
from cann_distill.data.loading import load_splits
from cann_distill.data.transforms import channels_of
from cann_distill.models.build import build_model
from cann_distill.quant import qad
from cann_distill.runtime.terminal import ui

RECIPE = "mobilenetv3_small_050_from_resnet18_digits_qad.yaml"


def one_arm(recipe: Any, splits: Any, student: Any, freeze: Optional[int], epochs: int) -> dict[str, Any]:
    cfg = recipe.distill.qat.model_copy(update={"enabled": True, "epochs": epochs, "freeze_observers_epoch": freeze})
    prepared, history, seconds = qad.train(student, recipe, splits, cfg=cfg)
    classes, in_chans = len(splits.train.classes), channels_of(recipe.data)
    evaluated = {"val": splits.val, "test": splits.test}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        got = qad.validate_qat(
            prepared.model, recipe, classes, in_chans, qad.calibration(recipe, splits), work / "q.onnx", work, evaluated, []
        )
    acc = {name: float((got["logits"][name].argmax(1) == split.targets).mean()) for name, split in evaluated.items()}
    return {
        "freeze_observers_epoch": freeze,
        "int8_val": acc["val"],
        "int8_test": acc["test"],
        "start_fake_quant_val": prepared.start_val_acc,
        "epoch_val": [row.get("val_acc") for row in history],
        "kept_start": prepared.kept_start,
        "best_epoch": history.best_epoch,
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(ap, resource_dir("recipes") / RECIPE, "the QAD recipe (default: %(default)s)")
    ap.add_argument("--qad-epochs", type=int, default=3, help="distill.qat.epochs of both arms (default 3)")
    args = ap.parse_args(argv)
    ui.configure(quiet=not args.verbose)
    started = time.perf_counter()
    rows = []
    with scratch_dir(args.work_dir, "qad_observers.") as work:
        overrides = [*epoch_overrides(args), f"select.cache_dir={work / 'cache'}", "distill.qat.enabled=false", "report.baseline=false"]
        _, _, teacher, ckpt = train_base_teacher(args.recipe, overrides, work)
        base_seed = load_recipe(args.recipe, overrides).seed
        for seed in range(base_seed, base_seed + args.seeds):
            recipe = load_recipe(args.recipe, [*overrides, f"seed={seed}", f"teacher.checkpoint={ckpt}"])
            run = work / f"seed{seed}"
            run_stages(recipe, ["teacher", "select", "distill"], run_dir=run)
            splits = load_splits(recipe.data)
            student = build_model(
                recipe.student, len(splits.train.classes), channels_of(recipe.data), checkpoint=run / "distill" / "student.pt"
            )
            for freeze in (None, 1):
                row = {"seed": seed, **one_arm(recipe, splits, student, freeze, args.qad_epochs)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    arms = {
        str(freeze): {k: mean_std([100 * r[k] for r in rows if r["freeze_observers_epoch"] == freeze]) for k in ("int8_val", "int8_test")}
        for freeze in (None, 1)
    }
    out = {
        "command": "scripts/qad_observers.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
        "recipe": args.recipe.name,
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine()},
        "teacher_val": teacher.get("val_acc"),
        "arms": arms,
        "rows": rows,
        "seconds": time.perf_counter() - started,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(json.dumps(arms, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
