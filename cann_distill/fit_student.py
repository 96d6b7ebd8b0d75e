"""fit-student: choose the student from the target's constraints before training.

Each candidate is built with the recipe's classes, channels and image size, exported and quantized
by validate's own code (`Quantizer`: same scheme choice, same calibration method, a few training
images), and timed on the profile's provider round-robin: every latency round, and every throughput
round, visits each new candidate's FP32 and INT8 session in turn (the order reversed every other
round), so load on the machine lands on all candidates alike; each figure comes with its spread over
the rounds. Latency does not depend on the weights, so untrained candidates give the deployed student's
figures. A measurement is cached per (arch, image size, channels, classes, provider and its
options, INT8 scheme, threads, batch, timing settings, host CPU features, library versions).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import onnx

from cann_distill.core.errors import StageError, UsageError
from cann_distill.core.files import write_json_atomic, write_text_atomic
from cann_distill.core.paths import resolve_cache_dir
from cann_distill.core.recipe import HardwareProfile, Recipe, ValidateConfig, hardware_profile, timm_archs
from cann_distill.core.registry import suggest
from cann_distill.quant import ort as q
from cann_distill.quant.export import export_onnx
from cann_distill.quant.profiles import basis, effective_validate, limits, misses
from cann_distill.reporting import fit as teacher_fit
from cann_distill.runtime.terminal import ui
from cann_distill.store.cache import KeyedEntries
from cann_distill.store.rundir import library_versions

log = logging.getLogger(__name__)

FIT_VERSION = 3  # part of every cache key: bump when what a measurement holds changes (3: round-robin rounds, pooled P99)
CALIBRATION_SAMPLES = 32  # calibration sets the scales, not the speed; a few images are enough here
THROUGHPUT_RUNS = 2  # per round; THROUGHPUT_ROUNDS rounds visit every candidate in turn
THROUGHPUT_ROUNDS = 5
FAMILY_MAX = 3
FRIENDLY = ("resnet10t", "resnet14t", "lcnet_035", "lcnet_050", "mobilenetv2_035", "mobilenetv2_050")
"""Families to try besides the recipe student's: dense convolutions (resnet*t) and depthwise students
without squeeze-excite (mobilenetv2) or with few of them (lcnet); which are INT8-friendly is measured."""


# ----------------------------------------------------------------------------- candidates


def family(arch: str, archs: Sequence[str]) -> list[str]:
    """Width/depth variants of `arch` in timm (its digit groups varied), nearest first, at most FAMILY_MAX."""
    pattern = re.compile(re.sub(r"\d+", r"\\d+", re.escape(arch)))
    own = [int(n) for n in re.findall(r"\d+", arch)]

    def distance(name: str) -> int:
        return sum(abs(int(a) - b) for a, b in zip(re.findall(r"\d+", name), own))

    return sorted((a for a in archs if pattern.fullmatch(a)), key=lambda a: (distance(a), a))[:FAMILY_MAX]


def candidates_for(student_arch: str, asked: Optional[Sequence[str]]) -> list[str]:
    """The asked candidates (checked against timm, close names suggested) or the default set."""
    archs = sorted(timm_archs())
    if asked:
        names = list(dict.fromkeys(a.strip() for a in asked if a.strip()))
        unknown = [a for a in names if a not in timm_archs()]
        if unknown:
            raise UsageError("; ".join(f"--candidates: unknown timm architecture '{a}'{suggest(a, archs)}" for a in unknown))
        if not names:
            raise UsageError("--candidates: give at least one timm architecture, e.g. --candidates resnet10t,lcnet_050")
        return names
    return list(dict.fromkeys([*family(student_arch, archs), *(a for a in FRIENDLY if a in timm_archs())]))


# ----------------------------------------------------------------------------- measuring one candidate


@dataclass
class Setup:
    """What every candidate is measured with."""

    classes: int
    in_chans: int
    image_size: int
    calib: np.ndarray
    sample: np.ndarray
    cfg: ValidateConfig  # the recipe's validate section with the profile filled in
    profile: HardwareProfile
    provider: str

    def scheme(self) -> dict[str, Any]:
        return q.choose_scheme(self.cfg.activation_type, self.cfg.reduce_range, q.cpu_features())

    def cache_key(self, arch: str) -> dict[str, Any]:
        s = self.scheme()
        lat = self.cfg.latency
        return {
            "fit_version": FIT_VERSION,
            "arch": arch,
            "image_size": self.image_size,
            "in_chans": self.in_chans,
            "classes": self.classes,
            "provider": self.provider,
            "provider_options": self.profile.provider_options if self.provider == self.profile.provider else {},
            "scheme": {"activation_type": s["activation_type"], "reduce_range": s["reduce_range"], "per_channel": self.cfg.per_channel},
            "threads": lat.threads,
            "batch": self.profile.batch,
            "opset": self.cfg.opset,
            "timing": {"warmup": lat.warmup, "runs": lat.runs, "rounds": lat.rounds},
            "calibration": {"method": self.cfg.calibration.method, "samples": len(self.calib)},
            "cpu": q.cpu_features(),
            "versions": library_versions(),
        }


@dataclass
class Built:
    """A candidate exported and quantized, its sessions open, waiting for the shared timing rounds."""

    row: dict[str, Any]  # arch, params, flops, scheme, sizes, float ops
    s32: Any
    s8: Any


def build(arch: str, setup: Setup, work: Path) -> tuple[dict[str, Any], Optional[Built]]:
    """One candidate exported and quantized by validate's code (`Quantizer`), sessions open: (row, built), or a row
    saying why it could not be built (None: the search goes on without it)."""
    from cann_distill.models.build import count_flops, count_params, create_model
    from cann_distill.stages.validate import Quantizer

    model = create_model(arch, setup.classes, setup.in_chans).eval()
    row: dict[str, Any] = {"arch": arch, "params": count_params(model)}
    try:
        row["flops"] = count_flops(model, setup.in_chans, setup.image_size)
    except Exception as exc:  # FLOP counting is informative only
        row["flops"] = None
        log.warning("%s: FLOPs not counted (%s)", arch, str(exc).splitlines()[0][:120])
    work.mkdir(parents=True, exist_ok=True)
    fp32, int8 = work / "fp32.onnx", work / "int8.onnx"
    try:
        export_onnx(model, fp32, setup.in_chans, setup.image_size, setup.cfg.opset)
    except StageError as exc:
        return {**row, "status": "export failed", "error": str(exc)}, None
    try:
        scheme = Quantizer(fp32, setup.calib, work).quantize(setup.cfg, int8)
    except StageError as exc:
        return {**row, "status": "quantize failed", "error": str(exc)}, None
    options = setup.profile.provider_options if setup.provider == setup.profile.provider else None
    threads = setup.cfg.latency.threads or 1
    s32 = q.session(fp32, setup.provider, threads=threads, options=options)
    s8 = q.session(int8, setup.provider, threads=threads, optimized_out=work / "int8_opt.onnx", options=options)
    row.update(
        status="ok",
        scheme={k: scheme[k] for k in ("activation_type", "reduce_range")},
        size_bytes={"fp32": fp32.stat().st_size, "int8": int8.stat().st_size},
        int8_float_ops=sum(q.float_ops(onnx.load(str(work / "int8_opt.onnx")).graph).values()),
    )
    return row, Built(row, s32, s8)


def measure_all(built: Sequence[Built], setup: Setup) -> None:
    """Latency and throughput of every built candidate, round-robin: each round visits every candidate's FP32 and
    INT8 session in turn (the order reversed every other round), so a burst of load lands on all of them alike
    instead of on whichever was measured then. Fills each row in place."""
    from cann_distill.quant import latency as timing
    from cann_distill.stages.validate import measure_latency

    if not built:
        return
    sessions = {f"{b.row['arch']}/{kind}": sess for b in built for kind, sess in (("fp32", b.s32), ("int8", b.s8))}
    lat = measure_latency(sessions, setup.sample, setup.cfg, setup.profile.batch)
    rates = interleaved_throughput(sessions, setup.sample, setup.cfg.throughput_batch, THROUGHPUT_ROUNDS, THROUGHPUT_RUNS)
    keep = ("median_ms", "spread_ms", "p99_ms", "max_ms", "tail", "runs", "round_medians_ms", "notch_ms", "unstable")
    for b in built:
        arch = b.row["arch"]
        fp32, int8 = lat[f"{arch}/fp32"], lat[f"{arch}/int8"]
        comparison = timing.compare(fp32, int8)
        b.row.update(
            fp32={k: fp32[k] for k in keep},
            int8={k: int8[k] for k in keep},
            int8_over_fp32=comparison["int8_over_fp32"],
            comparison=comparison,
            throughput={
                "batch": setup.cfg.throughput_batch,
                **{f"{kind}_{k}": v for kind in ("fp32", "int8") for k, v in rates[f"{arch}/{kind}"].items()},
            },
            load_avg=lat["load_avg"],
            rounds={"latency": lat["rounds"], "throughput": THROUGHPUT_ROUNDS, "candidates": len(built)},
            measured_at=time.time(),
        )


def interleaved_throughput(sessions: dict[str, Any], sample: np.ndarray, batch: int, rounds: int, runs: int) -> dict[str, dict[str, float]]:
    """Images per second of every session, `rounds` rounds that each run every session `runs` times (the order
    reversed every other round): per session the median of its round rates and their range (`img_s`, `spread_img_s`)."""
    names = list(sessions)
    per: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            per[name].append(q.throughput(sessions[name], sample, batch, runs))
    return {name: {"img_s": float(np.median(v)), "spread_img_s": float(max(v) - min(v))} for name, v in per.items()}


# ----------------------------------------------------------------------------- cache


class MeasurementCache(KeyedEntries):
    """`<cache_dir>/fit_student/<sha256 of key>.json` holding the key and the row; an entry whose key differs is a miss.

    The entry is its own sidecar: the row is small JSON, so there is no payload file to vouch for.
    """

    def __init__(self, root: Path) -> None:
        super().__init__(root, "fit_student")

    def _path(self, key: dict[str, Any]) -> Path:
        return self.paths(hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32])[1]

    def get(self, key: dict[str, Any]) -> Optional[dict[str, Any]]:
        try:
            entry = json.loads(self._path(key).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("key") != key or not isinstance(entry.get("row"), dict):
            return None
        return entry["row"]

    def put(self, key: dict[str, Any], row: dict[str, Any]) -> None:
        try:
            write_json_atomic(self._path(key), {"key": key, "row": row})
        except OSError as exc:
            log.warning("fit-student cache not written (%s): the next call measures again", exc)


# ----------------------------------------------------------------------------- budgets and choice


def budget_values(row: dict[str, Any]) -> dict[str, Optional[float]]:
    """What a row can be checked for before training (INT8 drop needs a trained student: validate checks it); a P99
    from too few timed runs is None (not measured: never checked on the slowest run)."""
    return {
        "latency_ms_p99": row["int8"]["p99_ms"],
        "latency_ms_median": row["int8"]["median_ms"],
        "size_mb": row["size_bytes"]["int8"] / 1e6,
        "params_m": row["params"] / 1e6,
    }


def judge(rows: list[dict[str, Any]], budget_limits: dict[str, tuple[float, str]]) -> None:
    """Mark every measured row with the budgets it misses and whether it fits."""
    for row in rows:
        if row["status"] == "ok":
            values = budget_values(row)
            row["misses"] = misses({k: v for k, v in values.items() if v is not None}, budget_limits)
            row["not_measured"] = [k for k, v in values.items() if v is None and k in budget_limits]
            row["fits"] = not row["misses"]
        else:
            row["misses"], row["not_measured"], row["fits"] = [], [], False


def pick(rows: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The fitting candidate with the most accurate probe when probed, else the most capacity (parameters);
    the faster INT8 on a tie."""
    fitting = [r for r in rows if r["fits"]]
    if not fitting:
        return None
    if any("val_acc" in (r.get("probe") or {}) for r in fitting):
        return max(fitting, key=lambda r: ((r.get("probe") or {}).get("val_acc", -1.0), -r["int8"]["median_ms"]))
    return max(fitting, key=lambda r: (r["params"], -r["int8"]["median_ms"]))


def probe(recipe: Recipe, run_root: Path, archs: Sequence[str], epochs: int) -> dict[str, dict[str, Any]]:
    """A short distillation per candidate from what select wrote (its replay draws for a replay recipe, else its
    cached teacher logits; the recipe's losses, `epochs` epochs), each in a scratch copy of the run dir's teacher
    and select outputs: arch -> val_acc and seconds, or error."""
    import shutil

    from cann_distill.api import run_stages
    from cann_distill.core.errors import CannDistillError, MissingInputError
    from cann_distill.stages import STAGES, is_current
    from cann_distill.store.rundir import RunDir
    from cann_distill.teaching.targets import resolve_mode

    run = RunDir(run_root)
    stale = [s for s in ("teacher", "select") if not is_current(STAGES[s], recipe, run)]
    if stale:
        raise MissingInputError(
            f"--probe-epochs distills from the teacher outputs select wrote, but {', '.join(stale)} has not run "
            f"in {run_root} for this recipe: run `cann-distill select RECIPE` first"
        )
    out: dict[str, dict[str, Any]] = {}
    for arch in archs:
        variant = recipe.model_copy(deep=True)
        variant.student.arch, variant.student.checkpoint = arch, None
        # the fast targets select already wrote: its replay draws for a replay recipe, else its cached logits
        variant.distill.epochs, variant.distill.teacher_targets = epochs, "replay" if resolve_mode(recipe) == "replay" else "cached"
        with tempfile.TemporaryDirectory() as tmp:
            for part in ("teacher", "select"):
                shutil.copytree(run.root / part, Path(tmp) / part)
            shutil.copy2(run.manifest_path, Path(tmp) / run.manifest_path.name)
            t0 = time.perf_counter()
            try:
                [result] = run_stages(variant, ["distill"], run_dir=tmp, budget_check=False)
            except CannDistillError as exc:
                out[arch] = {"error": str(exc)}
                log.warning("%s: probe failed (%s)", arch, exc)
                continue
            out[arch] = {"val_acc": float(result.summary["val_acc"]), "epochs": epochs, "seconds": time.perf_counter() - t0}
    return out


def closest_miss(rows: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The measured candidate whose worst budget excess is the smallest."""
    measured = [r for r in rows if r["status"] == "ok" and r["misses"]]
    if not measured:
        return None
    row = min(measured, key=lambda r: max(m["excess"] for m in r["misses"]))
    return {"arch": row["arch"], "misses": row["misses"]}


def describe_miss(miss: dict[str, Any]) -> str:
    parts = [f"{m['budget']} {m['value']:.4g} > {m['limit']:.4g} (+{100 * m['excess']:.0f}%, {m['source']})" for m in miss["misses"]]
    return f"{miss['arch']}: {'; '.join(parts)}"


# ----------------------------------------------------------------------------- teacher fit


FIT_JSON = "fit/fit_student.json"  # under the run dir: where `fit-student` writes and `check` reads its measurements


def recorded_teacher_acc(run_root: Path, arch: str) -> Optional[float]:
    """The teacher stage's recorded val top-1 in the run dir, when it is there and for this arch (else None)."""
    from cann_distill.stages.teacher import METRICS

    try:
        doc = json.loads((run_root / METRICS).read_text())
    except (OSError, ValueError):
        return None
    return doc.get("val_acc") if isinstance(doc, dict) and doc.get("arch") == arch else None


def recorded_probe_acc(run_root: Path, arch: str) -> Optional[float]:
    """The val top-1 of `fit-student --probe-epochs` for `arch`, when that run dir has one (else None)."""
    try:
        doc = json.loads((run_root / FIT_JSON).read_text())
        rows = [r for r in doc["candidates"] if r.get("arch") == arch]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return next((r["probe"]["val_acc"] for r in rows if isinstance(r.get("probe"), dict) and "val_acc" in r["probe"]), None)


def model_setting(recipe: Recipe) -> tuple[int, int, int]:
    """(classes, channels, image size) to build models with, without loading an image."""
    from cann_distill.data.loading import count_classes
    from cann_distill.data.transforms import channels_of

    return max(1, count_classes(recipe.data)), channels_of(recipe.data), int(recipe.data.image_size or 224)


def recipe_fit(recipe: Recipe, run_root: Path) -> Optional[dict[str, Any]]:
    """`check`'s fit: the recipe's teacher and student built untrained (parameters, FLOPs) and, where the run dir
    has both, the teacher's recorded val top-1 against fit-student's probe of this student. None for detection."""
    from cann_distill.models.build import capacity

    if recipe.task != "classify":
        return None
    setting = model_setting(recipe)
    gap = teacher_fit.capacity_gap(
        capacity(recipe.teacher.arch, *setting), capacity(recipe.student.arch, *setting), latency_note="not timed before validate"
    )
    return teacher_fit.pretraining_fit(
        gap, recorded_teacher_acc(run_root, recipe.teacher.arch), recorded_probe_acc(run_root, recipe.student.arch)
    )


def candidate_fit(recipe: Recipe, setup: Setup, rows: list[dict[str, Any]], run_root: Path) -> dict[str, Any]:
    """Each candidate's capacity gap to the teacher and, for a probed one, the teacher's val top-1 against its probe
    (in place, `row["teacher_fit"]`); the teacher's size and recorded accuracy and the advice lines (returned)."""
    from cann_distill.models.build import capacity

    teacher = capacity(recipe.teacher.arch, setup.classes, setup.in_chans, setup.image_size)
    teacher_acc = recorded_teacher_acc(run_root, recipe.teacher.arch)
    advice = []
    for row in rows:
        gap = teacher_fit.capacity_gap(teacher, row)
        row["teacher_fit"] = {k: gap[k] for k in ("params_ratio", "flops_ratio", "large")}
        probe = teacher_fit.teacher_vs_probe(teacher_acc, (row.get("probe") or {}).get("val_acc"), row["arch"])
        if probe is not None:
            row["teacher_fit"]["teacher_vs_probe"] = probe
            if "line" in probe:
                advice.append({"kind": "teacher_near_probe", "arch": row["arch"], "line": probe["line"]})
    return {"teacher": {**teacher, "val_acc": teacher_acc}, "threshold": teacher_fit.GAP_RATIO, "advice": advice}


# ----------------------------------------------------------------------------- the command


def fit_path(recipe_path: Path) -> Path:
    return recipe_path.with_name(f"{recipe_path.stem}.fit.yaml")


def make_setup(recipe: Recipe, profile: HardwareProfile) -> Setup:
    from cann_distill.data.loading import load_splits
    from cann_distill.data.transforms import channels_of
    from cann_distill.quant.calibration import calibration_images, stack

    cfg = effective_validate(recipe.validate_, profile)
    provider, warning = q.resolve_provider(cfg.provider or profile.provider)
    if warning:
        log.warning(warning)
    splits = load_splits(recipe.data)
    calib = calibration_images(splits.train, min(cfg.calibration.samples, CALIBRATION_SAMPLES, len(splits.train)), recipe.seed)
    return Setup(
        len(splits.train.classes),
        channels_of(recipe.data),
        int(recipe.data.image_size or 0),
        calib,
        stack(splits.val, np.arange(1)),
        cfg,
        profile,
        provider,
    )


def measure_candidates(names: Sequence[str], setup: Setup, cache: "MeasurementCache", force: bool) -> list[dict[str, Any]]:
    """A row per candidate: from the cache, or built and then timed with every other new candidate round-robin."""
    rows: dict[str, dict[str, Any]] = {}
    built: list[Built] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, arch in enumerate(ui.track(names, "fit-student: export + quantize", total=len(names))):
            key = setup.cache_key(arch)
            row = None if force else cache.get(key)
            if row is not None:
                rows[arch] = {**row, "cached": True}
                continue
            row, ready = build(arch, setup, Path(tmp) / str(i))
            if ready is None:
                log.warning("%s: %s; the search goes on", arch, row["error"])
            else:
                built.append(ready)
            rows[arch] = row
        measure_all(built, setup)
    for arch, row in rows.items():
        if not row.get("cached"):
            cache.put(setup.cache_key(arch), row)  # a failed export is as deterministic as a measurement
            rows[arch] = {**row, "cached": False}
    return [rows[a] for a in names]


def fit_student(
    recipe: Recipe,
    recipe_path: Path,
    out_dir: Path,
    target: Optional[str] = None,
    candidates: Optional[Sequence[str]] = None,
    force: bool = False,
    probe_epochs: int = 0,
    run_root: Optional[Path] = None,
) -> dict[str, Any]:
    """Measure the candidates, check the budgets, write fit_student.json (and RECIPE.fit.yaml when one fits)."""
    if recipe.task != "classify":
        raise UsageError(f"fit-student measures classifiers; task: {recipe.task} recipes are not supported yet")
    names = candidates_for(recipe.student.arch, candidates)
    target = target or recipe.validate_.target
    profile = hardware_profile(target)
    setup = make_setup(recipe, profile)
    cache = MeasurementCache(resolve_cache_dir(recipe.select.cache_dir))
    rows = measure_candidates(names, setup, cache, force)
    if probe_epochs > 0:
        measured = [r for r in rows if r["status"] == "ok"]
        probes = probe(recipe, run_root or out_dir.parent, [r["arch"] for r in measured], probe_epochs)
        for r in measured:
            r["probe"] = probes[r["arch"]]
            if "val_acc" in r["probe"]:  # the short probe's val top-1 per INT8 millisecond (median latency)
                r["probe"]["val_acc_per_ms"] = r["probe"]["val_acc"] / r["int8"]["median_ms"]
    fit = candidate_fit(recipe, setup, rows, run_root or out_dir.parent)
    budget_limits = limits(recipe.validate_.budgets, profile.budgets.model_dump())
    judge(rows, budget_limits)
    best = pick(rows)
    result: dict[str, Any] = {
        "recipe": str(recipe_path),
        "student": recipe.student.arch,
        "target": target,
        "profile": profile.model_dump(mode="json"),
        "provider": setup.provider,
        "basis": basis(profile, setup.provider, q.cpu_features()),
        "scheme": setup.scheme(),
        "per_channel": setup.cfg.per_channel,
        "image_size": setup.image_size,
        "batch": profile.batch,
        "threads": setup.cfg.latency.threads,
        "cpu": q.cpu_features(),
        "versions": library_versions(),
        "budgets": {k: {"limit": v, "source": s} for k, (v, s) in budget_limits.items()},
        "not_checked": [k for k in budget_limits if k not in ("latency_ms_p99", "latency_ms_median", "size_mb", "params_m")],
        "candidates": sorted(rows, key=lambda r: (r["status"] != "ok", r.get("int8", {}).get("median_ms", 0.0))),
        "probe_epochs": probe_epochs,
        "picked": best["arch"] if best else None,
        "closest_miss": None if best else closest_miss(rows),
        "teacher_fit": fit,
        "outputs": {},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "fit_student.json"
    if best is not None:
        result["outputs"]["recipe"] = str(
            write_fit_recipe(recipe_path, best["arch"], target if target != recipe.validate_.target else None)
        )
    result["outputs"]["json"] = str(json_path)
    write_json_atomic(json_path, result)
    return result


def write_fit_recipe(recipe_path: Path, arch: str, target: Optional[str]) -> Path:
    """RECIPE.fit.yaml: the user's recipe with only student.arch (and validate.target when --target changed it) set."""
    import yaml

    from cann_distill.core.recipe_load import read_yaml

    data = read_yaml(recipe_path)
    data.setdefault("student", {})["arch"] = arch
    data["student"].pop("checkpoint", None)  # a checkpoint of the old arch cannot load into the new one
    if target is not None:
        data.setdefault("validate", {})["target"] = target
    out = fit_path(recipe_path)
    changed = "student.arch" + (", validate.target" if target is not None else "")
    write_text_atomic(out, f"# {changed} chosen by `cann-distill fit-student {recipe_path.name}`\n" + yaml.safe_dump(data, sort_keys=False))
    return out


def require_fit(result: dict[str, Any]) -> None:
    """Exit 1 (StageError) with the closest miss when no candidate meets every budget."""
    if result["picked"] is not None:
        return
    miss = result["closest_miss"]
    if miss is None:
        raise StageError("no candidate could be measured (every export or quantization failed; see fit_student.json)")
    raise StageError(f"no candidate meets every budget of '{result['target']}'; closest miss {describe_miss(miss)}")
