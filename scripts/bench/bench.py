"""Benchmark cann-distill against a plain PyTorch KD loop and torchdistill, on the same data, split,
teacher, student, epochs and augmentation, interleaved in one invocation; write raw JSON and
generate docs/benchmarks.md from it.

Arms (each run is a fresh process started from here, so no arm inherits another's state):

  student       arm_plain.py with the KD term off: the student alone (CE only), the reference for
                transfer efficiency
  baseline      arm_cann.py: cann-distill's own CE-only baseline stage (`cann-distill baseline`), the
                reference its report computes transfer efficiency against; TE is shown against both
  plain         arm_plain.py: a short Hinton-KD loop that runs the teacher on every batch
  ceiling       arm_plain.py with the teacher forward skipped (speed only): what dropping the
                teacher alone buys the plain loop
  torchdistill  arm_torchdistill.py, in the benchmark environment (--peer-python): its own YAML
                config and DistillationBox, run as its example script runs it
  online        arm_cann.py: cann-distill, teacher on every augmented batch
  cached        arm_cann.py: cann-distill, teacher logits from select's cache
  replay        arm_cann.py: cann-distill, FKD-style stored draws replayed without a teacher forward
  default       arm_cann.py: cann-distill with the recipe exactly as written (its distill.critical, its
                teacher_targets default); online/cached/replay switch critical-sample weighting off
  patient       arm_cann.py: cann-distill, teacher_targets replay, --patient-factor × the epochs
  plain_long    arm_plain.py for --plain-long-factor × the epochs: plain KD given the patient arm's time
  td_long       arm_torchdistill.py for --plain-long-factor × the epochs: torchdistill given that time
                (both compared with the patient arm only)

Every arm shares the recipe's data, transforms, batch, optimizer (sgd or adamw), lr, weight decay,
warmup and [ce, kd] loss; all use linear warmup per step then cosine decay per step.

Parts:
  speed     training-loop samples/s, untrained teachers (resnet50, resnet18) at each --speed-sizes, arms interleaved
            (A B C D E, B C D E A, ...) for --repeats; medians, spreads and ratios within the run;
            every arm decodes the PNGs every epoch (cann-distill with data.cache_mb: 0) and has its first
            epoch left out as warm-up; cann-distill's one-time select cost reported separately and amortised
  accuracy  the recipe's teacher trained once by cann-distill's teacher stage and given to every arm;
            test top-1 mean ± std over --seeds, transfer efficiency (arm − student) / (teacher − student)

Data: a `digits` recipe is exported once to an ImageFolder tree; an `imagefolder` recipe is read from
its data.root as it is (classes from the tree, image size, mean, std, crop and interpolation as
cann-distill resolves them). --resume keeps every arm result already saved for the same spec.
Accuracy runs are kept per seed (seedN/ in the work dir): invocations of different seeds (--first-seed)
can share one --work-dir side by side, and a last --resume invocation over all the seeds writes one page.
The torchdistill arm needs a separate environment (--peer-python), made with:
  python3 -m venv .benchenv && .benchenv/bin/pip install torch==2.14.1 torchvision==0.29.1 \
    && .benchenv/bin/pip install torchdistill timm

`distill.teacher_targets=<mode>` is passed only when the installed cann-distill has that key; an
older one gets its own behaviour (online: augmentation on; cached: `data.augment.enabled=false`)
and `replay` is reported as not available.

Examples:
  .venv/bin/python scripts/bench/bench.py --quick --out runs/bench/smoke.json --docs docs/benchmarks.md
  .venv/bin/python scripts/bench/bench.py --out runs/bench/full.json --docs docs/benchmarks.md
  .venv/bin/python scripts/bench/bench.py --parts accuracy --recipe scripts/bench/recipes/mobilenetv3_small_050_from_resnet18_photos.yaml \
      --set data.root=data/photos --resume --out runs/bench/photos.json --docs docs/benchmarks_photos.md
  .venv/bin/python scripts/bench/bench.py --render --out runs/bench/full.json --docs docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
import typing
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

import arm_common
import bench_report

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ARMS = bench_report.ARM_ORDER  # every arm, in the order the pages list them
SPEED_DEFAULT = ("plain", "ceiling", "torchdistill", "online", "cached", "replay")
ACCURACY_DEFAULT = ("student", "plain", "torchdistill", "default", "patient")
SPEED_ONLY = ("ceiling",)
CANN_ARMS = bench_report.CANN_ARMS
CANN_SCRIPT_ARMS = (*CANN_ARMS, "baseline")  # the arms arm_cann.py runs: they get the recipe and its overrides
NO_CRITICAL = ("online", "cached", "replay")  # these compare teacher targets alone: critical-sample weighting off
DEFAULT_PEER = str(REPO / ".benchenv" / "bin" / "python")  # the benchmark environment, beside the checkout
PEER_SETUP = (
    "python3 -m venv .benchenv && .benchenv/bin/pip install torch==2.14.1 torchvision==0.29.1 "
    "&& .benchenv/bin/pip install torchdistill timm"
)
SPEED_DATA_PATH = "decode"  # settings.speed.data_path: every speed arm reads and decodes the PNG files every epoch
SPEED_WARMUP_EPOCHS = 1  # left out of every arm's timing (bench_report.loop_rate)
QUICK = {"max_samples": 400, "speed_epochs": 2, "repeats": 1, "seeds": 1, "epochs": 2, "teacher_epochs": 2}


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[-1:]),
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK['max_samples']} digits (an imagefolder tree is used whole: point the recipe at a small one), {QUICK['speed_epochs']} speed epochs × {QUICK['repeats']} repeat, "
        f"{QUICK['seeds']} seed × {QUICK['epochs']} epochs, teacher {QUICK['teacher_epochs']} epochs; the page says so",
    )
    ap.add_argument("--parts", default="speed,accuracy", help="comma-separated: speed, accuracy (default: both)")
    ap.add_argument(
        "--arms",
        default=None,
        help=f"comma-separated subset of {','.join(ARMS)} (default: speed "
        f"{','.join(SPEED_DEFAULT)}; accuracy {','.join(ACCURACY_DEFAULT)})",
    )
    ap.add_argument("--patient-factor", type=int, default=5, help="the patient arm's epochs ÷ the others' (default %(default)s)")
    ap.add_argument(
        "--plain-long-factor",
        type=float,
        default=2.2,
        help="the plain_long and td_long arms' epochs ÷ the others' (rounded; default %(default)s: the patient arm's wall "
        "time over the plain arm's, measured on the photo sets)",
    )
    ap.add_argument(
        "--resume",
        action="store_true",
        help="keep every arm result already saved in the work dir for the same seed and spec (status done) and run only the missing ones",
    )
    ap.add_argument("--out", type=Path, default=Path("runs/bench/bench.json"), help="raw results (JSON; default %(default)s)")
    ap.add_argument("--docs", type=Path, default=None, help="write the generated page here, e.g. docs/benchmarks.md")
    ap.add_argument("--render", action="store_true", help="only regenerate --docs from an existing --out")
    ap.add_argument("--work-dir", type=Path, default=None, help="data export, checkpoints, run dirs, logs (default: next to --out)")
    ap.add_argument(
        "--peer-python", default=DEFAULT_PEER, help="python of the benchmark environment with torchdistill (default %(default)s)"
    )
    ap.add_argument(
        "--recipe",
        type=Path,
        default=None,
        help="cann-distill recipe giving data split, augmentation, batch, optimizer, loss, epochs "
        "(default: the shipped mobilenetv3_small_050_from_resnet18_digits.yaml)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="recipe override applied everywhere (as cann-distill's --set), e.g. data.root=/data/photos; repeatable",
    )
    ap.add_argument("--student", default=None, help="student arch (default: the recipe's)")
    ap.add_argument("--speed-teachers", default="resnet50,resnet18", help="untrained teachers timed (default %(default)s)")
    ap.add_argument(
        "--speed-sizes", default=None, help="comma-separated image sizes (px) the speed part runs at (default: the recipe's image size)"
    )
    ap.add_argument(
        "--speed-epochs",
        type=int,
        default=None,
        help="epochs per speed run, the first left out of every arm's timing as warm-up; at least 2 (default 4: 1 warm-up + 3 timed)",
    )
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats of the speed arms (default 3)")
    ap.add_argument("--seeds", type=int, default=None, help="accuracy seeds: recipe seed, +1, ... (default 3)")
    ap.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="offset of the first accuracy seed from the recipe's, to add "
        "seeds to an earlier run (its rounds' run dirs in --work-dir are reused by name) (default 0)",
    )
    ap.add_argument("--epochs", type=int, default=None, help="accuracy distill epochs (default: the recipe's)")
    ap.add_argument("--teacher-epochs", type=int, default=None, help="accuracy teacher training epochs (default: the recipe's)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads in every arm (default %(default)s)")
    ap.add_argument("--workers", type=int, default=1, help="DataLoader workers in every arm (default %(default)s)")
    ap.add_argument(
        "--replay-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra recipe override for the replay arm only, e.g. distill.replay.draws=10 if the installed cann-distill has it; repeatable",
    )
    ap.add_argument("--arm-timeout", type=float, default=3600, help="seconds before one arm run is stopped (default %(default)s)")
    args = ap.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    chosen = [a.strip() for a in args.arms.split(",") if a.strip()] if args.arms else None
    args.part_arms = {"speed": chosen or list(SPEED_DEFAULT), "accuracy": chosen or list(ACCURACY_DEFAULT)}
    args.arms = [a for a in ARMS if any(a in args.part_arms[p] for p in args.parts)] + [a for a in (chosen or []) if a not in ARMS]
    if bad := [p for p in args.parts if p not in ("speed", "accuracy")]:
        ap.error(f"unknown part(s) {', '.join(bad)} (known: speed, accuracy)")
    if args.patient_factor < 1:
        ap.error("--patient-factor must be at least 1")
    if not args.plain_long_factor >= 1:
        ap.error("--plain-long-factor must be at least 1")
    if bad := [a for a in args.arms if a not in ARMS]:
        ap.error(f"unknown arm(s) {', '.join(bad)} (known: {', '.join(ARMS)})")
    try:
        args.speed_sizes = [int(p) for p in args.speed_sizes.split(",") if p.strip()] if args.speed_sizes else []
    except ValueError:
        ap.error(f"--speed-sizes takes whole numbers of pixels, e.g. 32,96 (got {args.speed_sizes!r})")
    if any(px < 8 for px in args.speed_sizes):
        ap.error("--speed-sizes: every size must be at least 8 px")
    if args.speed_epochs is not None and args.speed_epochs < 1 + SPEED_WARMUP_EPOCHS:
        ap.error(f"--speed-epochs must be at least {1 + SPEED_WARMUP_EPOCHS} (the first epoch is warm-up; got {args.speed_epochs})")
    defaults = {"speed_epochs": 4, "repeats": 3, "seeds": 3}
    for key in ("speed_epochs", "repeats", "seeds", "epochs", "teacher_epochs"):
        if getattr(args, key) is None:
            setattr(args, key, QUICK[key] if args.quick else defaults.get(key))
    return args


# ----------------------------------------------------------------------------- machine and versions


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "machine": platform.machine(),
        "os": platform.platform(),
        "cores_total": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
    }
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")), "?")
        flags = set(next((ln.split(":", 1)[1].split() for ln in cpuinfo.splitlines() if ln.startswith("flags")), []))
        info["cpu_model"] = model
        info["flags"] = {f: f in flags for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")}
    except OSError:
        info["cpu_model"] = platform.processor() or "?"
    try:
        mem_kb = next(int(ln.split()[1]) for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal"))
        info["memory_gib"] = mem_kb / 2**20
    except (OSError, StopIteration):
        pass
    info["load_start"] = os.getloadavg()[0]
    return info


def git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        ).stdout.strip()
        return head + (" (not clean)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "?"


def set_stamp(data_root: Path) -> dict[str, Any]:
    """The digest of the tree's files and the Pillow that wrote them, from the set.json that
    `photo_sets.py` leaves in a set it built (nothing for other trees)."""
    try:
        info = json.loads((Path(data_root) / "set.json").read_text())
    except (OSError, ValueError):
        return {}
    return (
        {"files_sha256": info["sha256"], "built_with_pillow": info.get("pillow")} if isinstance(info, dict) and info.get("sha256") else {}
    )


def project_versions() -> dict[str, Any]:
    return {
        **arm_common.versions("torch", "torchvision", "timm", "numpy", "pillow", "onnxruntime", "cann-distill"),
        "cann-distill commit": git_commit(),
    }


def peer_status(python: str) -> dict[str, Any]:
    """Whether the benchmark environment can run torchdistill, with its versions or the reason it cannot."""
    if not Path(python).exists():
        return {"python": python, "available": False, "reason": f"no python at {python} (make the benchmark environment: {PEER_SETUP})"}
    probe = (
        "import json, torchdistill, timm, arm_common; "
        "print(json.dumps(arm_common.versions('torchdistill', 'torch', 'torchvision', 'timm')))"
    )
    res = subprocess.run([python, "-c", probe], capture_output=True, text=True, env=clean_env(PYTHONPATH=str(HERE)))
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["?"])[-1]
        return {"python": python, "available": False, "reason": f"{python} cannot import torchdistill and timm ({last})"}
    return {"python": python, "available": True, "versions": json.loads(res.stdout)}


def teacher_target_modes() -> Optional[list[str]]:
    """The values `distill.teacher_targets` accepts in the installed cann-distill, or None when it has no such key."""
    from cann_distill.core.recipe import DistillConfig

    field = DistillConfig.model_fields.get("teacher_targets")
    if field is None:
        return None

    def literals(tp: Any) -> list[str]:  # Literal[...] values, also inside Optional[...] / Union[...]
        if typing.get_origin(tp) is typing.Literal:
            return [str(v) for v in typing.get_args(tp)]
        return [v for arg in typing.get_args(tp) for v in literals(arg)]

    return literals(field.annotation) or ["?"]


# ----------------------------------------------------------------------------- data, settings, arms


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(extra)
    return env


def export_digits(data_cfg: Any, dest: Path) -> dict[str, int]:
    """Write the digits splits (cann-distill's own split and upsampling) as PNGs in an ImageFolder tree, once."""
    from cann_distill.data.loading import load_splits

    stamp = dest / "export.json"
    key = data_cfg.model_dump(mode="json")
    if stamp.exists() and json.loads(stamp.read_text()).get("data") == key:
        return json.loads(stamp.read_text())["sizes"]
    shutil.rmtree(dest, ignore_errors=True)
    splits = load_splits(data_cfg)
    sizes = {}
    for split in (splits.train, splits.val, splits.test):
        assert split is not None, "the recipe needs data.test_fraction > 0"
        for i, sid in enumerate(split.ids):
            path = dest / split.name / split.classes[int(split.targets[i])] / (sid.replace("/", "_") + ".png")
            path.parent.mkdir(parents=True, exist_ok=True)
            split.images(i).save(path)
        sizes[split.name] = len(split)
    stamp.write_text(json.dumps({"data": key, "sizes": sizes}, indent=2))
    return sizes


def check_recipe(recipe: Any, recipe_path: Path) -> None:
    """Refuse, in one line, a recipe whose training the other arms cannot reproduce."""
    d, dist = recipe.data, recipe.distill
    kinds = [(s.kind, s.kwargs()) for s in dist.losses]
    if (
        [k for k, _ in kinds] not in (["ce", "kd"], ["ce", "dkd"])
        or kinds[0][1].get("label_smoothing", 0)
        or kinds[1][1].get("standardize")
    ):
        raise SystemExit(
            f"{recipe_path}: the benchmark needs distill.losses [ce, kd] or [ce, dkd], without label smoothing or standardized "
            f"logits (got {', '.join(k for k, _ in kinds)})"
        )
    if dist.optimizer not in ("sgd", "adamw"):
        raise SystemExit(f"{recipe_path}: the benchmark runs distill.optimizer sgd or adamw (got {dist.optimizer})")
    if d.augment.mixes:
        raise SystemExit(f"{recipe_path}: mixup/cutmix are not benchmarked (the other arms would need the same Mixup)")
    if d.source not in ("digits", "imagefolder"):
        raise SystemExit(f"{recipe_path}: the benchmark reads data.source digits or imagefolder (got {d.source})")


def cann_only_settings(recipe: Any) -> list[str]:
    """Recipe settings that the cann-distill arms apply and the plain and torchdistill arms do not reproduce."""
    dist = recipe.distill
    term = dist.losses[1] if len(dist.losses) > 1 else None
    found = [
        f"distill.losses[1] dkd (alpha {term.kwargs().get('alpha', 1.0)}, beta {term.kwargs().get('beta', 8.0)}): the plain and "
        "torchdistill arms run Hinton KD with the same weight and temperature"
        if term is not None and term.kind == "dkd"
        else "",
        f"distill.ema_decay {dist.ema_decay}" if dist.ema_decay else "",
        "distill.select_best true (the best validation epoch's weights)" if dist.select_best else "",
        f"distill.amp {dist.amp}" if dist.amp != "none" else "",
        f"distill.grad_clip {dist.grad_clip}" if dist.grad_clip else "",
        f"distill.patience {dist.patience}" if dist.patience else "",
        f"distill.loss_balance {dist.loss_balance}" if dist.loss_balance != "none" else "",
        f"distill.temperature_schedule {dist.temperature_schedule.kind}"
        if getattr(dist.temperature_schedule, "kind", "constant") != "constant"
        else "",
        f"distill.critical.mode {dist.critical.mode} (default and patient arms)" if dist.critical.mode != "none" else "",
        f"teacher.mean/std {recipe.teacher.mean}/{recipe.teacher.std} (re-normalised teacher input)"
        if recipe.teacher.mean or recipe.teacher.std
        else "",
    ]
    return [f for f in found if f]


def imagefolder_tree(root: Path) -> dict[str, Any]:
    """Split sizes, classes and channels of an ImageFolder tree (train/val/test/<class>/*), read from the files."""
    from PIL import Image
    from torchvision.datasets.folder import IMG_EXTENSIONS

    missing = [split for split in ("train", "val", "test") if not (root / split).is_dir()]
    if missing:
        raise SystemExit(f"{root}: no {', '.join(missing)} folder (the benchmark needs train/, val/ and test/<class>/)")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    sizes = {split: sum(1 for f in (root / split).glob("*/*") if f.suffix.lower() in IMG_EXTENSIONS) for split in ("train", "val", "test")}
    first = next(f for f in sorted((root / "train" / classes[0]).iterdir()) if f.suffix.lower() in IMG_EXTENSIONS)
    with Image.open(first) as im:
        channels = 1 if im.mode in ("1", "L", "I", "I;16", "F") else 3
    if channels != 3:
        raise SystemExit(
            f"{root}: grayscale images ({first.name}); torchvision's ImageFolder reads them as RGB, so the arms "
            "would not see the same input"
        )
    return {"sizes": sizes, "classes": classes, "channels": channels}


def settings_from_recipe(
    recipe: Any, recipe_path: Path, args: argparse.Namespace, data_root: Path, sizes: dict[str, int], classes: Optional[list[str]] = None
) -> dict[str, Any]:
    """Everything the arms must share, read from one cann-distill recipe (as `load_recipe` resolves it) so there is one source."""
    check_recipe(recipe, recipe_path)
    d, dist = recipe.data, recipe.distill
    kinds = [(s.kind, s.kwargs()) for s in dist.losses]
    if d.source == "digits":  # the export is RGB at 0.5/0.5, as the digits source normalises its one channel
        size, mean, std, crop_pct, interpolation = int(d.image_size or 32), [0.5] * 3, [0.5] * 3, 1.0, "bilinear"
    else:
        size, mean, std = int(d.image_size), [float(x) for x in d.mean], [float(x) for x in d.std]
        crop_pct, interpolation = float(d.crop_pct), str(d.interpolation)
    common = {"input_size": size, "interpolation": interpolation, "mean": mean, "std": std}
    aug = d.augment
    train_tf = {
        **common,
        "is_training": True,
        "scale": list(aug.scale),
        "ratio": list(aug.ratio),
        "hflip": aug.hflip,
        "vflip": aug.vflip,
        "color_jitter": aug.color_jitter,
        "auto_augment": aug.auto_augment,
        "re_prob": aug.re_prob,
    }
    opt = {
        "name": dist.optimizer,
        "lr": dist.lr,
        "momentum": dist.momentum,
        "weight_decay": dist.weight_decay,
        "nesterov": dist.momentum > 0,
        "warmup_epochs": float(dist.warmup()),
    }
    loss = {
        "ce_weight": dist.losses[0].weight,
        "kd_weight": dist.losses[1].weight,
        "temperature": float(kinds[1][1].get("temperature", 4.0)),
    }
    warm = f"linear warmup over {opt['warmup_epochs']:g} epoch(s) per step, then " if opt["warmup_epochs"] else ""
    if opt["name"] == "adamw":
        opt_text = f"AdamW lr {opt['lr']} ({warm}cosine decay per step), weight decay {opt['weight_decay']}"
    else:
        opt_text = (
            f"SGD lr {opt['lr']} ({warm}cosine decay per step), momentum {opt['momentum']}"
            f"{' (Nesterov)' if opt['nesterov'] else ''}, weight decay {opt['weight_decay']}"
        )
    classes = classes or [str(c) for c in range(10)]
    batch = dist.batch_size or d.batch_size
    return {
        "data": {
            **d.model_dump(mode="json", include={"source", "val_fraction", "test_fraction", "split_seed", "max_samples"}),
            "image_size": size,
            "root": str(data_root),
            "sizes": sizes,
            "classes": len(classes),
            "class_names": classes,
            "channels": 3,
            **set_stamp(data_root),
        },
        "transforms": {"train": train_tf, "eval": {**common, "is_training": False, "crop_pct": crop_pct}},
        "batch_size": batch,
        "steps_per_epoch": sizes["train"] // batch,
        "optimizer": opt,
        "loss": loss,
        "optimizer_text": opt_text,
        "loss_text": f"{loss['ce_weight']}·CE + {loss['kd_weight']}·T²·KL(teacher ‖ student) at T = {loss['temperature']}",
        "threads": args.threads,
        "workers": args.workers,
        "student": args.student or recipe.student.arch,
        "speed": {
            "teachers": [t.strip() for t in args.speed_teachers.split(",") if t.strip()],
            "epochs": args.speed_epochs,
            "repeats": args.repeats,
            "warmup_epochs": SPEED_WARMUP_EPOCHS,
            "data_path": SPEED_DATA_PATH,
        },
        "accuracy": {
            "teacher": recipe.teacher.arch,
            "teacher_epochs": args.teacher_epochs or recipe.teacher.train.epochs,
            "epochs": args.epochs or dist.epochs,
            "seeds": [recipe.seed + args.first_seed + i for i in range(args.seeds)],
        },
    }


def sized_settings(st: dict[str, Any], data_cfg: Any, px: int, root: Path) -> dict[str, Any]:
    """The shared settings at another image size: the same digits exported at `px`, transforms resized."""
    cfg = data_cfg.model_copy(update={"image_size": px, "augment": data_cfg.augment.model_copy(update={"enabled": False})})
    sizes = export_digits(cfg, root.resolve())
    out = json.loads(json.dumps(st))
    out["data"].update(root=str(root.resolve()), image_size=px, sizes=sizes)
    for tf in out["transforms"].values():
        tf["input_size"] = px
    return out


def cann_overrides(st: dict[str, Any], teacher_arch: str, teacher_ckpt: Optional[Path], epochs: int) -> list[str]:
    """The recipe overrides that put cann-distill on the shared ImageFolder export with the shared settings."""
    tf = st["transforms"]["eval"]
    out = [
        *st.get("recipe_overrides", []),
        "data.source=imagefolder",
        f"data.root={st['data']['root']}",
        "data.channels=3",
        f"data.image_size={tf['input_size']}",
        f"data.mean={tf['mean']}",
        f"data.std={tf['std']}",
        f"data.crop_pct={tf['crop_pct']}",
        f"data.interpolation={tf['interpolation']}",
        f"data.num_workers={st['workers']}",
        f"data.batch_size={st['batch_size']}",
        f"teacher.arch={teacher_arch}",
        f"student.arch={st['student']}",
        f"distill.epochs={epochs}",
        "runtime.device=cpu",
    ]
    return out + ([f"teacher.checkpoint={teacher_ckpt}"] if teacher_ckpt is not None else [])


def arm_plan(args: argparse.Namespace, peer: dict[str, Any], modes: Optional[list[str]]) -> dict[str, dict[str, Any]]:
    """Per arm: label, description, how to run it (python, script, extra overrides, notes) or why it cannot run."""
    version = f"cann-distill {metadata.version('cann-distill')} ({git_commit()})"
    key = modes is not None
    plan: dict[str, dict[str, Any]] = {
        "student": {
            "label": "student alone (CE)",
            "python": sys.executable,
            "script": "arm_plain.py",
            "spec": {"kd": False},
            "text": "the plain loop with the KD term off: the student trained on the labels alone (CE, weight 1), with "
            "the same optimizer, schedule, epochs and augmentation; the reference for transfer efficiency.",
        },
        "plain": {
            "label": "plain PyTorch KD",
            "python": sys.executable,
            "script": "arm_plain.py",
            "text": "a short Hinton-KD loop written here (`arm_plain.py`): teacher in eval mode under no_grad on every batch.",
        },
        "ceiling": {
            "label": "plain loop, no teacher forward",
            "python": sys.executable,
            "script": "arm_plain.py",
            "spec": {"teacher_forward": False},
            "text": "the plain loop with the teacher forward skipped (KD towards a fixed uniform target; timing only): "
            "what dropping the teacher alone buys that loop. cann-distill's replay beats it only by doing the "
            "rest of the step faster (NHWC memory format: `runtime.channels_last: auto`).",
        },
        "torchdistill": {
            "label": "torchdistill KD",
            "python": peer["python"],
            "script": "arm_torchdistill.py",
            "text": "torchdistill's `DistillationBox` with its own YAML config (below), driven as its "
            "`examples/torchvision/image_classification.py` drives it, in the separate benchmark environment.",
        },
    }
    long_texts = {  # peers given the patient arm's time: compared with the patient arm only (bench_report.LONG_PEERS)
        "plain_long": (
            "plain",
            f"the plain Hinton-KD loop for {args.plain_long_factor:g}× the epochs (rounded), about the "
            "patient arm's wall time: plain KD given the time cann-distill's patient schedule takes.",
        ),
        "td_long": (
            "torchdistill",
            f"the torchdistill arm for {args.plain_long_factor:g}× the epochs (rounded), as plain KD given the patient arm's time.",
        ),
    }
    for arm, (base, text) in long_texts.items():
        plan[arm] = {**plan[base], "label": f"{plan[base]['label']}, patient's time", "epochs_factor": args.plain_long_factor, "text": text}
    texts = {
        "default": "the recipe exactly as written (its `distill.critical`, its `teacher_targets` or the default)",
        "patient": f"stored teacher draws replayed (`distill.teacher_targets: replay`) for {args.patient_factor}× the epochs "
        "(patient distillation: the replayed targets make long runs cheap)",
        "online": "the teacher labels every augmented batch",
        "cached": "teacher logits from select's cache (one pass over the un-augmented images)",
        "replay": "select stores the teacher's top-k probabilities for seeded augmentation draws; distill replays them "
        "with no teacher forward (FKD-style)",
    }
    for mode in CANN_ARMS:
        entry: dict[str, Any] = {
            "label": f"cann-distill {mode}",
            "python": sys.executable,
            "script": "arm_cann.py",
            "overrides": [],
            "notes": [],
        }
        if mode == "default":
            entry["text"] = texts[mode] + "."
        elif mode == "patient":
            entry["text"] = texts[mode] + "."
            entry["epochs_factor"] = args.patient_factor
            if not key or "replay" not in modes:
                entry["unavailable"] = f"{version} has no distill.teacher_targets replay"
            entry["overrides"] = ["distill.teacher_targets=replay", *args.replay_set]
        elif key:
            entry["text"] = f"{texts[mode]} (`distill.teacher_targets: {mode}`; `distill.critical.mode: none`)."
            if mode not in modes:
                entry["unavailable"] = f"{version} accepts distill.teacher_targets {', '.join(modes)}"
            entry["overrides"] = [f"distill.teacher_targets={mode}"] + (list(args.replay_set) if mode == "replay" else [])
        elif mode == "online":
            entry["text"] = f"{texts[mode]} (this version's behaviour when augmentation is on)."
        elif mode == "cached":
            entry["text"] = f"{texts[mode]}; this version uses them only with `data.augment.enabled: false`."
            entry["overrides"] = ["data.augment.enabled=false"]
            entry["notes"] = [
                f"{version} has no distill.teacher_targets: cached logits are used only with data.augment.enabled=false, "
                "so this arm trains without augmentation (cheaper data loading, and not the same training task)"
            ]
        else:
            entry["text"] = texts[mode] + "."
            entry["unavailable"] = f"{version} has no distill.teacher_targets key"
        if mode in NO_CRITICAL:
            entry["overrides"] = ["distill.critical.mode=none", *entry["overrides"]]
        plan[mode] = entry
    plan["baseline"] = {  # the default arm's entry (interpreter, script, overrides) with the baseline stage
        **plan["default"],
        "label": "cann-distill baseline (CE only)",
        "spec": {"stage": "baseline"},
        "text": "cann-distill's own CE-only baseline stage (`cann-distill baseline`) on the recipe exactly as written: the "
        "student trained on the labels alone (CE, weight 1) by cann-distill's loop, with the distill stage's optimizer, "
        "schedule, epochs and augmentation; the reference `cann-distill report` computes transfer efficiency against.",
    }
    if not peer["available"]:
        plan["torchdistill"]["skipped"] = plan["td_long"]["skipped"] = peer["reason"]
    return {a: plan[a] for a in args.arms}


def not_runnable(arm: str, plan: dict[str, Any], seed: int) -> Optional[dict[str, Any]]:
    """The record of an arm that cannot run here (with the reason), None when it can."""
    if "unavailable" in plan:
        return {"arm": arm, "status": "not available in this version", "reason": plan["unavailable"], "seed": seed, "repeat": 0}
    if "skipped" in plan:
        return {"arm": arm, "status": "skipped", "reason": plan["skipped"], "seed": seed, "repeat": 0}
    return None


def saved_result(out: Path, spec: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The finished result at `out` when it was made from exactly `spec` (what --resume keeps), else None."""
    spec_path = out.with_suffix(".spec.json")
    try:
        if json.loads(spec_path.read_text()) != spec:
            return None
        result = json.loads(out.read_text())
    except (OSError, ValueError):
        return None
    return {**result, "resumed": True} if result.get("status") == "done" and result.get("process_seconds") is not None else None


def run_arm(arm: str, plan: dict[str, Any], spec: dict[str, Any], out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One arm run in its own process; its result, or why there is none. With --resume, a result saved for the same spec is kept."""
    if args.resume and (kept := saved_result(out, {**spec, "arm": arm})) is not None:
        return kept
    out.parent.mkdir(parents=True, exist_ok=True)
    for old in out.parent.glob(f"{out.stem}.*"):  # a previous run's result, run dir and caches: every run starts cold
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()
    spec_path, log_path = out.with_suffix(".spec.json"), out.with_suffix(".log")
    spec_path.write_text(json.dumps({**spec, "arm": arm}, indent=2))
    threads = str(args.threads)
    env = clean_env(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)  # XDG_CACHE_HOME: the work dir's, set in main
    cmd = [plan["python"], str(HERE / plan["script"]), "--spec", str(spec_path), "--out", str(out)]
    started = time.perf_counter()
    with open(log_path, "w") as log:
        try:
            rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO), timeout=args.arm_timeout).returncode
        except subprocess.TimeoutExpired:
            rc = None
    process_seconds = time.perf_counter() - started
    if rc == 0 and out.exists():
        result = json.loads(out.read_text())
        result["notes"] = list(plan.get("notes", [])) + result.get("notes", [])
        if result.get("teacher_mode") == "train":
            result["notes"].append(
                "the teacher's BatchNorm ran in training mode (batch statistics) during distillation, as torchdistill's example leaves it"
            )
        if result.get("loop_timer", "").startswith("distill stage"):
            result["notes"].append("loop timer not reached: samples/s from the whole distill stage (setup and evaluation included)")
        result = {**result, "process_seconds": process_seconds, "log": str(log_path)}
        out.write_text(json.dumps(result, indent=2) + "\n")  # what --resume reads back
        return result
    last = (log_path.read_text().strip().splitlines() or ["no output"])[-1].strip()
    why = "timed out" if rc is None else f"exit code {rc}"
    return {"arm": arm, "status": "failed", "error": f"{why}: {last} (see {log_path})", "seed": spec["seed"], "log": str(log_path)}


# ----------------------------------------------------------------------------- parts


def untrained_teacher(arch: str, path: Path, classes: list[str]) -> Path:
    """Random-init weights (seed 0), saved once and loaded by every arm."""
    import timm
    import torch

    from cann_distill.models.build import save_checkpoint

    if not path.exists():
        torch.manual_seed(0)
        model = timm.create_model(arch, pretrained=False, num_classes=len(classes), in_chans=3)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path, model, arch, len(classes), 3, classes=classes)
    return path


def base_spec(st: dict[str, Any], teacher: str, ckpt: Path, epochs: int, seed: int, augment: bool, evaluate: bool) -> dict[str, Any]:
    return {
        "data_root": st["data"]["root"],
        "num_classes": st["data"]["classes"],
        "in_chans": st["data"]["channels"],
        "transforms": st["transforms"],
        "augment": augment,
        "batch_size": st["batch_size"],
        "steps_per_epoch": st["steps_per_epoch"],
        "optimizer": st["optimizer"],
        "loss": st["loss"],
        "threads": st["threads"],
        "workers": st["workers"],
        "teacher": {"arch": teacher, "checkpoint": str(ckpt)},
        "student": {"arch": st["student"]},
        "epochs": epochs,
        "seed": seed,
        "evaluate": evaluate,
    }


def data_path_settings(part: str, arm: str) -> tuple[dict[str, Any], list[str]]:
    """(spec keys, cann-distill recipe overrides) that give `arm` the part's data path.

    Speed: every arm reads and decodes the PNG files every epoch, as a plain loop does: the plain loop and
    torchdistill through torchvision's ImageFolder (no cache), cann-distill with its decoded-pixel cache off
    (`data.cache_mb=0`). The accuracy part keeps cann-distill's cache (it changes no sample).
    """
    if part != "speed":
        return {}, []
    return {"data_path": SPEED_DATA_PATH}, (["data.cache_mb=0"] if arm in CANN_SCRIPT_ARMS else [])


def arm_spec(
    part: str,
    arm: str,
    plan: dict[str, Any],
    st: dict[str, Any],
    teacher: str,
    ckpt: Path,
    epochs: int,
    seed: int,
    recipe_path: Path,
) -> dict[str, Any]:
    """What one run of `arm` is given: the shared settings, the part's data path and, for cann-distill, its recipe overrides."""
    arm_epochs = int(round(epochs * plan.get("epochs_factor", 1)))
    keys, data_overrides = data_path_settings(part, arm)
    spec = {**base_spec(st, teacher, ckpt, arm_epochs, seed, augment=True, evaluate=part == "accuracy"), **keys, **plan.get("spec", {})}
    if arm in CANN_SCRIPT_ARMS:
        spec["cann"] = {
            "recipe": str(recipe_path),
            "overrides": cann_overrides(st, teacher, ckpt, arm_epochs) + data_overrides + plan["overrides"],
        }
    return spec


def interleaved(arms: list[str], rounds: int) -> list[tuple[int, list[str]]]:
    """A B C, B C A, C A B, ...: every arm runs once per round, its position rotating."""
    return [(r, arms[r % len(arms) :] + arms[: r % len(arms)]) for r in range(rounds)] if arms else []


def run_part(
    part: str,
    label: str,
    st: dict[str, Any],
    plan: dict[str, dict[str, Any]],
    args: argparse.Namespace,
    work: Path,
    teacher: str,
    ckpt: Path,
    epochs: int,
    seeds: list[int],
    recipe_path: Path,
    save: Any,
    runs: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Every arm of the part once per round (a repeat, or a seed), interleaved; each result goes into `runs` (the
    combined JSON's list) and is saved as it comes."""
    plan = {a: p for a, p in plan.items() if a in args.part_arms[part]}
    blocked = {a: rec for a in plan if (rec := not_runnable(a, plan[a], seeds[0])) is not None}
    runs.extend(blocked.values())  # recorded once, with the reason
    evaluate = part == "accuracy"
    runnable = [a for a in plan if a not in blocked and not (evaluate and a in SPEED_ONLY)]
    for rnd, order in interleaved(runnable, len(seeds)):
        seed = seeds[rnd]
        for pos, arm in enumerate(order):
            spec = arm_spec(part, arm, plan[arm], st, teacher, ckpt, epochs, seed, recipe_path)
            # accuracy runs are kept per seed, so invocations of other seeds can share the work dir (and --resume)
            out = work / (f"seed{seed}" if evaluate else f"round{rnd}") / f"{arm}.json"
            res = untimed_as_failed(part, {**run_arm(arm, plan[arm], spec, out, args), "repeat": rnd, "position": pos})
            runs.append(res)
            save()
            if res["status"] == "done":
                shown = (
                    f"test {100 * res['test_acc']:.2f}%"
                    if evaluate and res.get("test_acc") is not None
                    else f"{bench_report.loop_rate(res):.1f} samples/s (loop)"
                )
                kept = " (kept from an earlier run: --resume)" if res.get("resumed") else ""
                print(f"[{label} round {rnd + 1}/{len(seeds)}] {arm}: {shown}, {res['process_seconds']:.0f}s{kept}", flush=True)
            else:
                print(f"[{label} round {rnd + 1}/{len(seeds)}] {arm}: {res['status']}: {res.get('error', '')}", flush=True)
    return runs


def untimed_as_failed(part: str, res: dict[str, Any]) -> dict[str, Any]:
    """A finished speed run whose loop timer saw no epoch after the warm-up one cannot be timed: recorded as failed."""
    seen = len(res.get("epochs") or [])
    if part != "speed" or res.get("status") != "done" or seen > SPEED_WARMUP_EPOCHS:
        return res
    return {
        **res,
        "status": "failed",
        "error": f"the loop timer saw {seen} epoch(s); timing leaves out {SPEED_WARMUP_EPOCHS} warm-up epoch and needs one more",
    }


def train_accuracy_teacher(recipe_path: Path, st: dict[str, Any], work: Path, args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The accuracy part's teacher, trained once by cann-distill's teacher stage on the shared export (reused when up to date)."""
    import torch

    from cann_distill.api import run_stages
    from cann_distill.core.recipe_load import load_recipe
    from cann_distill.runtime.terminal import ui

    torch.set_num_threads(args.threads)
    ui.configure(quiet=True)
    a = st["accuracy"]
    overrides = cann_overrides(st, a["teacher"], None, a["epochs"]) + [
        f"teacher.train.epochs={a['teacher_epochs']}",
        f"select.cache_dir={work / 'cache'}",
    ]
    run_dir = work / "teacher"
    started = time.perf_counter()
    res = run_stages(load_recipe(recipe_path, overrides), ["teacher"], run_dir=run_dir)[0]
    summary = {k: res.summary.get(k) for k in ("arch", "epochs", "val_acc", "test_acc", "params")}
    summary.update(seconds=time.perf_counter() - started, status=res.status)
    print(
        f"[accuracy] teacher {a['teacher']}: test {100 * (summary['test_acc'] or 0):.2f}% ({summary['epochs']} epochs, {res.status})",
        flush=True,
    )
    return run_dir / "teacher" / "teacher.pt", summary


def transforms_identical(data: dict[str, Any]) -> bool:
    """Within each part (each speed teacher and size, the accuracy part) every augmented arm built the same training transform."""
    parts = [*data.get("speed", {}).values(), data.get("accuracy") or {}]
    return all(bench_report.transforms_identical(part.get("runs", [])) is not False for part in parts) and any(
        bench_report.transforms_identical(part.get("runs", [])) for part in parts
    )


def differences(plan: dict[str, dict[str, Any]], cann_only: Optional[list[str]] = None) -> list[str]:
    out = (
        [
            f"The recipe sets what only the cann-distill arms apply: {'; '.join(cann_only)}. The plain, student and "
            "torchdistill arms train without it."
        ]
        if cann_only
        else []
    ) + [
        "Augmentation draws: cann-distill seeds each sample's view from (seed, epoch, index); the plain loop and "
        "torchdistill draw from the global RNG. Same transform and distribution, other draws.",
        "cann-distill evaluates on the validation split after every epoch (it cannot be switched off); the plain "
        "loop and the torchdistill runner do not (the example's per-epoch validation and best-checkpoint saving are "
        "left out). Evaluation is outside the timed loop either way.",
        "Student initial weights: the plain loop and cann-distill seed torch right before creating the student; "
        "torchdistill (as its example) seeds once and creates the teacher first, so its student starts from other "
        "random weights of the same distribution.",
    ]
    if "torchdistill" in plan:
        out.append(
            "torchdistill's teacher is never put in eval mode by its example, so its BatchNorm normalises with "
            "batch statistics (and updates its running statistics) during distillation; the plain loop and "
            "cann-distill run the teacher in eval mode. Kept, because it is what torchdistill does out of the box."
        )
    return out


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.render:
        if args.docs is None:
            raise SystemExit("--render needs --docs")
        args.docs.parent.mkdir(parents=True, exist_ok=True)
        args.docs.write_text(bench_report.render(json.loads(args.out.read_text())))
        print(f"wrote {args.docs}")
        return 0

    from cann_distill.core.recipe import resource_dir
    from cann_distill.core.recipe_load import load_recipe

    started = time.perf_counter()
    recipe_path = args.recipe or resource_dir("recipes") / "mobilenetv3_small_050_from_resnet18_digits.yaml"
    work = args.work_dir or args.out.with_suffix("")
    work.mkdir(parents=True, exist_ok=True)
    os.environ["XDG_CACHE_HOME"] = str((work / "xdg").resolve())  # cann-distill's caches stay in the work dir, as in the arms
    recipe = load_recipe(recipe_path, args.set)
    check_recipe(recipe, recipe_path)
    if recipe.data.source == "imagefolder":  # the tree as it is: no export, classes and sizes from the files
        data_cfg = recipe.data
        data_root = Path(str(data_cfg.root)).resolve()
        tree = imagefolder_tree(data_root)
        sizes, classes = tree["sizes"], tree["classes"]
        if args.speed_sizes and args.speed_sizes != [data_cfg.image_size]:
            raise SystemExit("--speed-sizes: an imagefolder recipe runs at its own data.image_size only")
    else:
        data_cfg = load_recipe(recipe_path, [*args.set, *([f"data.max_samples={QUICK['max_samples']}"] if args.quick else [])]).data
        data_root = (work / "data").resolve()
        sizes = export_digits(data_cfg.model_copy(update={"augment": data_cfg.augment.model_copy(update={"enabled": False})}), data_root)
        classes = None
    st = settings_from_recipe(recipe, recipe_path, args, data_root, sizes, classes)
    st["data"]["max_samples"] = data_cfg.max_samples if recipe.data.source == "digits" else None
    st["patient_factor"] = args.patient_factor
    st["plain_long_factor"] = args.plain_long_factor
    st["recipe_overrides"] = list(args.set)
    peer = peer_status(args.peer_python)
    modes = teacher_target_modes()
    plan = arm_plan(args, peer, modes)
    exe = Path(sys.executable)
    python = os.path.relpath(exe, Path.cwd()) if exe.is_relative_to(Path.cwd()) else "python"  # no machine paths on the page
    data: dict[str, Any] = {
        "schema": 1,
        "smoke": args.quick,
        "out": str(args.out),
        "quick_note": (f"{QUICK['max_samples']} digits, " if recipe.data.source == "digits" else "")
        + (
            f"{args.speed_epochs} epochs × {args.repeats} repeat per speed arm, "
            f"{args.seeds} seed × {args.epochs} epochs, teacher {args.teacher_epochs} epochs"
        )
        if args.quick
        else None,
        "command": shlex.join([python, *sys.argv]) if argv is None else shlex.join([python, "scripts/bench/bench.py", *argv]),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": {**project_versions(), **{f"{k} (benchmark env)": v for k, v in peer.get("versions", {}).items()}},
        "recipe": str(recipe_path),
        "settings": st,
        "peer": peer,
        "cann": {"teacher_targets_key": modes is not None, "modes": modes},
        "arms": {
            a: {k: p[k] for k in ("label", "text")}
            | ({"unavailable": p["unavailable"]} if "unavailable" in p else {})
            | ({"skipped": p["skipped"]} if "skipped" in p else {})
            for a, p in plan.items()
        },
        "differences": differences(plan, cann_only_settings(recipe)),
        "speed": {},
        "accuracy": None,
    }

    def save() -> None:
        data["wall_seconds"] = time.perf_counter() - started
        data["machine"]["load_end"] = os.getloadavg()[0]
        data["transforms_identical"] = transforms_identical(data)
        td = next(
            (
                r.get("config")
                for part in [*data["speed"].values(), data["accuracy"] or {}]
                for r in part.get("runs", [])
                if r.get("arm") in ("torchdistill", "td_long") and r.get("config")
            ),
            None,
        )
        data["torchdistill_config"] = td
        data["summary"] = bench_report.summarize(data)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(args.out)

    print(
        f"work dir {work}; arms {', '.join(plan)}; cann-distill teacher_targets: {modes or 'no such key (ac20290 behaviour)'}; "
        f"torchdistill: {'yes' if peer['available'] else peer['reason']}",
        flush=True,
    )
    classes = st["data"]["class_names"]
    if "speed" in args.parts:
        base_px = int(st["data"]["image_size"] or 32)
        st["speed"]["sizes"] = args.speed_sizes or [base_px]
        for px in st["speed"]["sizes"]:
            st_px = st if px == base_px else sized_settings(st, data_cfg, px, work / f"data_{px}px")
            for teacher in st["speed"]["teachers"]:
                key = teacher if px == base_px else f"{teacher} @ {px} px"
                ckpt = untrained_teacher(teacher, work / "teachers" / f"{teacher}_untrained.pt", classes)
                data["speed"][key] = {"teacher": teacher, "image_size": px, "teacher_checkpoint": str(ckpt), "runs": []}
                seeds = [recipe.seed] * args.repeats  # one seed; the rounds are repeats
                sub = work / "speed" / (teacher if px == base_px else f"{teacher}_{px}px")
                run_part(
                    "speed",
                    f"speed {key}",
                    st_px,
                    plan,
                    args,
                    sub,
                    teacher,
                    ckpt,
                    args.speed_epochs,
                    seeds,
                    recipe_path,
                    save,
                    data["speed"][key]["runs"],
                )
                save()
    if "accuracy" in args.parts:
        ckpt, teacher_summary = train_accuracy_teacher(recipe_path, st, work / "accuracy", args)
        data["accuracy"] = {"teacher": teacher_summary, "teacher_checkpoint": str(ckpt), "runs": []}
        a = st["accuracy"]
        run_part(
            "accuracy",
            "accuracy",
            st,
            plan,
            args,
            work / "accuracy",
            a["teacher"],
            ckpt,
            a["epochs"],
            a["seeds"],
            recipe_path,
            save,
            data["accuracy"]["runs"],
        )
    save()
    print(f"wrote {args.out} ({data['wall_seconds']:.0f}s)", flush=True)
    if args.docs is not None:
        args.docs.parent.mkdir(parents=True, exist_ok=True)
        args.docs.write_text(bench_report.render(data))
        print(f"wrote {args.docs}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
