"""The distillation modes measured against their references on one photo set: several teachers against the
best single one, a teacher-assistant chain against direct KD, two mutual students against one student
alone, KD with 10% of the labels and the rest unlabelled against CE on the 10%, and a tuned temperature
against the default. One run per arm and seed in a fresh run dir, results appended to a JSON-lines file as
each run finishes (rerunning skips the names already there, so an interrupted benchmark resumes).

Every arm starts from the same recipe (--recipe plus --set) and the same epoch budget for the student;
what an arm adds is in ARMS below. Teachers are trained once, by `cann-distill teacher`, and passed as
checkpoints (--teacher, --extra-teachers), except in the 10%-label arms, whose teacher may only see the 10%
and is trained there. Choices (best single teacher, tuned temperature) are made on val; test is reported.
One torch thread per run.

Example (the set built by photo_sets.py; teachers trained by `cann-distill teacher ... --set seed=K`):
  python scripts/bench/modes_bench.py --recipe scripts/bench/recipes/mobilenetv3_small_050_from_resnet18_photos.yaml \\
      --set data.root=runs/photo_sets/ubuntu15 --teacher runs/t0/teacher/teacher.pt \\
      --extra-teachers runs/t1/teacher/teacher.pt,runs/t2/teacher/teacher.pt --seeds 0,1,2 \\
      --out runs/modes_ubuntu15.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import yaml
from bench import git_commit, machine_info, project_versions  # the accuracy benchmark's records of machine and versions

STUDENT_CE = [{"kind": "ce", "weight": 1.0}]


def _single(r: dict[str, Any], a: argparse.Namespace) -> None:
    r["teacher"]["checkpoint"] = a.teacher


def _teachers(n: int) -> Callable[[dict[str, Any], argparse.Namespace], None]:
    def apply(r: dict[str, Any], a: argparse.Namespace) -> None:
        paths = [a.teacher, *a.extra_teachers][:n]
        if len(paths) < n:
            raise SystemExit(f"error: the ens{n} arm needs {n - 1} --extra-teachers")
        base = {k: v for k, v in r.pop("teacher").items() if k != "checkpoint"}
        r["teachers"] = [{**base, "checkpoint": p, "weight": 1.0} for p in paths]
        r["distill"]["ensemble"] = "mean"

    return apply


def _chain(r: dict[str, Any], a: argparse.Namespace) -> None:
    r["teacher"]["checkpoint"] = a.teacher
    r["distill"]["chain"] = [r["teacher"]["arch"], a.assistant, r["student"]["arch"]]


def _mutual(r: dict[str, Any], a: argparse.Namespace) -> None:
    r["teacher"]["checkpoint"] = a.teacher
    r["distill"]["mode"] = "mutual"
    r["distill"]["peers"] = [{"arch": r["student"]["arch"]}, {"arch": r["student"]["arch"]}]
    r["distill"]["losses"] = [*STUDENT_CE, {"kind": "dml", "weight": 1.0}]  # no teacher term: the peers teach each other


def _labels10(kd: bool) -> Callable[[dict[str, Any], argparse.Namespace], None]:
    def apply(r: dict[str, Any], a: argparse.Namespace) -> None:
        r["data"]["root"] = str(a.few_root)
        if kd:
            r["data"]["unlabeled"] = str(a.few_unlabeled)
            r["select"]["strategy"] = "margin"  # label-free

    return apply


def _temperature(r: dict[str, Any], a: argparse.Namespace) -> None:
    r["teacher"]["checkpoint"] = a.teacher
    for loss in r["distill"]["losses"]:
        if loss["kind"] == "kd":
            loss["temperature"] = a.tuned_temperature


# name: (stage whose metrics are read, recipe edit)
ARMS: dict[str, tuple[str, Callable[[dict[str, Any], argparse.Namespace], None]]] = {
    "single": ("distill", _single),  # direct KD from the first teacher: the reference of ens*, chain and tuned
    "single1": ("distill", lambda r, a: r["teacher"].update(checkpoint=a.extra_teachers[0])),
    "single2": ("distill", lambda r, a: r["teacher"].update(checkpoint=a.extra_teachers[1])),
    "base": ("baseline", _single),  # the student alone (CE): the reference of mutual
    "ens2": ("distill", _teachers(2)),
    "ens3": ("distill", _teachers(3)),
    "chain": ("distill", _chain),
    "mutual": ("distill", _mutual),
    "kd10": ("distill", _labels10(kd=True)),  # teacher and CE on the 10%, KD on all images
    "base10": ("baseline", _labels10(kd=False)),  # CE on the 10% alone
    "tuned": ("distill", _temperature),
}


def few_label_tree(root: Path, out: Path, share: float, seed: int) -> tuple[Path, Path]:
    """`share` of each training class kept labelled (symlinks, val and test whole); the rest in an unlabelled tree,
    less any file whose bytes equal a val or test file's (a flat patch of a photo can give identical crops in
    disjoint bands; cann-distill refuses unlabelled images that leak the held-out splits)."""
    labelled, unlabelled = out / "labelled", out / "unlabelled"
    if (out / "done").exists():
        return labelled, unlabelled
    shutil.rmtree(out, ignore_errors=True)
    held_out = {hashlib.sha256(f.read_bytes()).hexdigest() for split in ("val", "test") for f in (root / split).rglob("*") if f.is_file()}
    rng = random.Random(seed)
    labelled.mkdir(parents=True, exist_ok=True)
    for split in ("val", "test"):
        (labelled / split).symlink_to((root / split).resolve(), target_is_directory=True)
    dropped = 0
    for cls in sorted(p for p in (root / "train").iterdir() if p.is_dir()):
        files = sorted(cls.iterdir())
        rng.shuffle(files)
        keep = max(1, round(share * len(files)))
        for i, f in enumerate(files):
            if i >= keep and hashlib.sha256(f.read_bytes()).hexdigest() in held_out:
                dropped += 1
                continue
            dest = (labelled / "train" / cls.name) if i < keep else (unlabelled / cls.name)
            dest.mkdir(parents=True, exist_ok=True)
            (dest / f.name).symlink_to(f.resolve())
    (out / "done").write_text(json.dumps({"dropped_from_unlabelled_as_held_out_copies": dropped}))
    print(f"few labels: {dropped} training file(s) equal to a val/test file left out of the unlabelled tree", file=sys.stderr)
    return labelled, unlabelled


def set_key(recipe: dict[str, Any], dotted: str, value: Any) -> None:
    *head, last = dotted.split(".")
    node = recipe
    for key in head:
        node = node.setdefault(key, {})
    node[last] = value


def run_arm(args: argparse.Namespace, arm: str, seed: int) -> dict[str, Any]:
    stage, edit = ARMS[arm]
    name = f"s{seed}_{arm}"
    run = args.work / name
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    recipe = yaml.safe_load(Path(args.recipe).read_text())
    for kv in args.overrides:
        key, _, value = kv.partition("=")
        set_key(recipe, key, yaml.safe_load(value))
    recipe["seed"] = seed
    recipe.setdefault("teacher", {})["train_when_checkpoint"] = False
    edit(recipe, args)
    recipe_file = run / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe, sort_keys=False))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    if args.dry_run:  # the recipe checked, nothing trained
        rc = subprocess.run([sys.executable, "-m", "cann_distill", "check", str(recipe_file)], capture_output=True, text=True, env=env)
        return {"name": name, "arm": arm, "seed": seed, "stage": stage, "check": rc.returncode, "said": rc.stderr.strip()[-300:]}
    started = time.perf_counter()
    with (args.work / f"{name}.log").open("w") as log:
        for step in ("teacher", "select", stage):
            rc = subprocess.run(
                [sys.executable, "-m", "cann_distill", step, str(recipe_file), "--run-dir", str(run / "run")],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            ).returncode
            if rc != 0:
                return {"name": name, "arm": arm, "seed": seed, "stage": stage, "error": f"{step} exited {rc} (see {name}.log)"}
    metrics = json.loads((run / "run" / stage / "metrics.json").read_text())
    row: dict[str, Any] = {
        "name": name,
        "arm": arm,
        "seed": seed,
        "stage": stage,
        "val": round(metrics["val_acc"], 4),
        "test": round(metrics.get("test_acc") or 0.0, 4),
        "curve": [round(h["val_acc"], 3) for h in metrics.get("history", [])],
        "secs": int(time.perf_counter() - started),
    }
    for key in ("teachers", "peers", "chain", "unlabeled", "ensemble"):
        if key in metrics:
            row[key] = metrics[key]
    teacher = json.loads((run / "run" / "teacher" / "metrics.json").read_text())
    row["teacher_val"] = teacher.get("val_acc")
    row["teacher_test"] = teacher.get("test_acc")
    return row


def read_rows(path: Path) -> dict[str, Any]:
    """The metas (one per invocation) and the last row of every run name in a results file; a failed row never
    replaces a finished one (two invocations can race on the same name, and the later one may have failed)."""
    metas: list[dict[str, Any]] = []
    rows: dict[str, dict[str, Any]] = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.strip():
            item = json.loads(line)
            if "meta" in item:
                metas.append(item["meta"])
            else:
                earlier = rows.get(item["name"])
                if "error" in item and earlier is not None and "error" not in earlier:
                    continue  # a finished run stands
                rows[item["name"]] = item
    return {"metas": metas, "rows": list(rows.values())}


def render(data: dict[str, Any], source: Path) -> str:
    from modes_report import page  # noqa: PLC0415 (the page's layout, kept apart from running the arms)

    return page(data, source)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[-1]
    )
    ap.add_argument("--recipe", default=None, help="the recipe every arm starts from (needed to run arms)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="applied to every arm (dotted keys)")
    ap.add_argument("--teacher", default=None, help="the trained teacher checkpoint (needed to run arms)")
    ap.add_argument("--extra-teachers", default="", help="comma-separated checkpoints of further teachers (same arch, other seeds)")
    ap.add_argument("--assistant", default="resnet10t", help="the chain arm's assistant arch (default %(default)s)")
    ap.add_argument("--tuned-temperature", type=float, default=None, help="the tuned arm's KD temperature (chosen on val by `tune`)")
    ap.add_argument("--label-share", type=float, default=0.1, help="labelled share of training images in kd10/base10 (default %(default)s)")
    ap.add_argument("--arms", default=",".join(a for a in ARMS if a != "tuned"), help="comma-separated (default %(default)s)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", type=Path, required=True, help="JSON lines, appended to; names already there are skipped")
    ap.add_argument("--work-dir", type=Path, default=None, help="run dirs and logs (default: next to --out)")
    ap.add_argument("--render", type=Path, default=None, metavar="PAGE.md", help="only write the page from --out's results")
    ap.add_argument("--dry-run", action="store_true", help="write and check every arm's recipe (cann-distill check), train nothing")
    args = ap.parse_args(argv)
    if args.render:
        args.render.write_text(render(read_rows(args.out), args.out))
        print(f"wrote {args.render}", file=sys.stderr)
        return 0
    if args.recipe is None or args.teacher is None:
        ap.error("running arms needs --recipe and --teacher")
    args.extra_teachers = [p for p in args.extra_teachers.split(",") if p]
    arms = [a for a in args.arms.split(",") if a]
    if bad := [a for a in arms if a not in ARMS]:
        ap.error(f"unknown arm(s) {', '.join(bad)} (known: {', '.join(ARMS)})")
    if "tuned" in arms and args.tuned_temperature is None:
        ap.error("the tuned arm needs --tuned-temperature")
    args.work = (args.work_dir or args.out.with_suffix("")).resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    if {"kd10", "base10"} & set(arms):
        root = next(kv.partition("=")[2] for kv in args.overrides if kv.startswith("data.root="))
        args.few_root, args.few_unlabeled = few_label_tree(Path(root), args.work / "few_labels_clean", args.label_share, seed=0)
    done = {row["name"] for row in read_rows(args.out)["rows"] if "error" not in row}  # failed runs are run again
    if not args.dry_run:
        meta = {"command": " ".join(["python", *sys.argv]), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info()}
        meta["versions"] = project_versions()
        with args.out.open("a") as f:
            f.write(json.dumps({"meta": meta}) + "\n")
    for seed in (int(s) for s in args.seeds.split(",")):
        for arm in arms:
            if f"s{seed}_{arm}" in done:
                continue
            row = {**run_arm(args, arm, seed), "commit": git_commit()}
            if args.dry_run:
                print(json.dumps(row), file=sys.stderr)
                continue
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            shown = f"val {100 * row['val']:.2f}% test {100 * row['test']:.2f}%" if "val" in row else row["error"]
            print(f"{row['name']}: {shown}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
