"""Reading a recipe: YAML, `--set` overrides, defaults, the schema and the semantic checks, all before any work.

Everything is checked before any work starts, and all problems are reported at once, on one
line, each with its key path and where it was written
(`r.yaml:31:9: distill.losses[1].kind: unknown loss 'kdd' (known: ce, kd)`). Recipes are
untrusted input: the text is read by `cann_distill.core.safeyaml` (UTF-8, bounded size, depth and
aliases, YAML 1.2 core scalars, no duplicate keys), every value is checked there for what no
field may hold (non-finite floats, control characters), and the schema is strict (no `true` → 1,
no `"3"` → 3).
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import json
import math
import re
from pathlib import Path
from typing import Any, Optional, Union

from pydantic import ValidationError

from cann_distill.core.errors import RecipeError, UsageError, cut, preview
from cann_distill.core.recipe import (
    DataConfig,
    ModelConfig,
    Recipe,
    StudentConfig,
    TeacherConfig,
    default_recipe_path,
    format_loc,
    hardware_profile,
    refresh_epochs,
    schema_errors,
    selection_policy,
    timm_archs,
)
from cann_distill.core.recipe_detect import detect_errors, level_problem
from cann_distill.core.recipe_tune import TuneConfig
from cann_distill.core.registries import DETECTION_LOSSES, DETECTION_SELECTORS, LOSSES, SCHEDULES, SELECTORS
from cann_distill.core.registry import suggest
from cann_distill.core.safeyaml import (
    MAX_DEPTH,
    Document,
    YAMLSyntaxError,
    key_text,
    load_document,
    load_value,
    render_errors,
    value_errors,
)


def read_document(path: Path) -> Document:
    """A recipe file as data plus where each key was written (see cann_distill.core.safeyaml)."""
    if not path.exists():
        raise UsageError(f"recipe not found: {path}")
    if path.is_dir():
        raise UsageError(f"recipe is a directory, not a YAML file: {path}")
    return load_document(path)


def read_yaml(path: Path) -> dict[str, Any]:
    return read_document(path).data


_INDEX = re.compile(r"^(\w+)\[(\d+)\]$")


def split_key(key: str) -> list[Union[str, int]]:
    """`a.list[1].k` → ["a", "list", 1, "k"]; no deeper than a recipe file may nest (MAX_DEPTH), so a key of
    thousands of segments is one usage error, not a recursion deep in the checks."""
    if key.count(".") >= MAX_DEPTH:
        raise UsageError(f"--set {key_text(key)}: {key.count('.') + 1:,} key segments (a recipe nests at most {MAX_DEPTH} levels)")
    parts: list[Union[str, int]] = []
    for raw in key.split("."):
        m = _INDEX.match(raw)
        if m:
            parts += [m.group(1), int(m.group(2))]
        elif raw.isdigit():
            parts.append(int(raw))
        elif raw:
            parts.append(raw)
        else:
            raise UsageError(f"--set {key_text(key)}: empty key segment")
    return parts


def apply_overrides(data: dict[str, Any], overrides: list[str], positions: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Apply `a.b=c` / `a.list[1].k=v` overrides; values are parsed as YAML like a recipe file.

    `positions` (a Document's) learns that the overridden paths now come from `--set`.
    """
    data = copy.deepcopy(data)
    for item in overrides:
        if "=" not in item:
            raise UsageError(f"--set {key_text(item)}: expected KEY=VALUE, e.g. --set distill.epochs=2")
        key, raw = item.split("=", 1)
        label = f"--set {key_text(key)}"
        try:
            value = load_value(raw, label) if raw != "" else None
        except YAMLSyntaxError:
            value = raw
        parts = split_key(key.strip())
        node: Any = data
        for i, part in enumerate(parts[:-1]):
            nxt = parts[i + 1]
            if isinstance(part, int):
                if not isinstance(node, list) or part >= len(node):
                    raise UsageError(f"{label}: index [{part}] out of range")
                node = node[part]
                continue
            if not isinstance(node, dict):
                raise UsageError(f"{label}: '{key_text(part)}' is not inside a mapping")
            if part not in node or node[part] is None:
                node[part] = [] if isinstance(nxt, int) else {}
            node = node[part]
        last = parts[-1]
        if isinstance(last, int):
            if not isinstance(node, list) or last >= len(node):
                raise UsageError(f"{label}: index [{last}] out of range")
            node[last] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise UsageError(f"{label}: '{key_text(last)}' is not inside a mapping")
        if positions is not None:
            path = format_loc(tuple(parts))
            for p in [p for p in positions if p == path or p.startswith((path + ".", path + "["))]:
                del positions[p]
            positions[path] = "--set"
    return data


def semantic_errors(recipe: Recipe) -> list[str]:
    """Checks that need the registries, timm or the file system."""
    errors: list[str] = []
    archs = timm_archs()
    filled = {"teacher": bool(recipe.teachers), "student": bool(recipe.distill.peers)}  # checked as teachers[0] / peers[0]
    for role in ("teacher", "student"):
        if filled[role]:
            continue
        cfg: ModelConfig = getattr(recipe, role)
        if cfg.arch not in archs:
            errors.append(f"{role}.arch: unknown timm architecture {preview(cfg.arch)}{suggest(cfg.arch, sorted(archs))}")
        if cfg.checkpoint and not Path(cfg.checkpoint).is_file():
            errors.append(f"{role}.checkpoint: file not found: {cfg.checkpoint}")
    errors += _data_errors(recipe)
    channels = recipe.data.channels or (1 if recipe.data.source == "digits" else 3)
    sections: list[tuple[str, Any]] = [("data", recipe.data), ("teacher", recipe.teacher)]
    sections += [(f"teachers[{i}]", t) for i, t in enumerate(recipe.teachers or [])]
    for section, cfg in sections:
        for key in ("mean", "std"):
            value = getattr(cfg, key)
            if value is None:
                continue
            if len(value) != channels:
                errors.append(f"{section}.{key}: needs {channels} value(s), one per channel, got {len(value)}")
            if not all(math.isfinite(v) for v in value):
                errors.append(f"{section}.{key}: every value must be finite")
            elif key == "std" and any(v <= 0 for v in value):
                errors.append(f"{section}.std: every value must be > 0")
    errors += _teachers_errors(recipe)
    errors += _unlabeled_errors(recipe)
    errors += _mutual_errors(recipe)
    errors += _chain_errors(recipe)
    errors += _select_errors(recipe)
    errors += _qat_errors(recipe)
    losses = DETECTION_LOSSES if recipe.task == "detect" else LOSSES
    for i, spec in enumerate(recipe.distill.losses):
        path = f"distill.losses[{i}]"
        if spec.kind not in losses:
            errors.append(f"{path}.kind: {losses.unknown_message(spec.kind)}{suggest(spec.kind, losses.names())}")
            continue
        errors += _component_errors(losses, spec.kind, spec.kwargs(), path, path, arg_in_path=False)
        if recipe.task == "detect" and not losses.check_kwargs(spec.kind, spec.kwargs()):
            errors += level_problem(path, losses, spec.kind, spec.kwargs(), recipe.detect)
    errors += detect_errors(recipe)
    if all(spec.weight == 0 for spec in recipe.distill.losses):
        errors.append("distill.losses: at least one loss needs a weight > 0")
    errors += _schedule_errors(recipe)
    errors += [
        f"report.trackers: {name} is not installed (pip install {name}, or pip install 'cann-distill[trackers]')"
        for name in dict.fromkeys(recipe.report.trackers)
        if importlib.util.find_spec(name) is None
    ]
    if recipe.validate_.provider is not None:
        import onnxruntime as ort

        if recipe.validate_.provider not in ort.get_all_providers():
            errors.append(
                f"validate.provider: onnxruntime does not know {preview(recipe.validate_.provider)}"
                f"{suggest(recipe.validate_.provider, ort.get_all_providers())}"
            )
    try:
        hardware_profile(recipe.validate_.target)
    except RecipeError as exc:
        errors.append(f"validate.target: {exc}")
    return errors


def adopt_firsts(recipe: Recipe) -> list[str]:
    """With `teachers:`, the first fills `teacher:` (validate and the report compare the student with it); with
    `distill.peers`, the first fills `student:`. A section that says something else is an error. The resolved recipe
    holds both, and reads back the same."""
    errors = []
    if recipe.teachers:
        first = recipe.teachers[0].section()
        if recipe.teacher not in (TeacherConfig(), first):
            errors.append("teacher: set either teacher or teachers (the first of teachers fills teacher), not both")
        else:
            recipe.teacher = first
    if recipe.distill.peers:
        peer = StudentConfig.model_validate(recipe.distill.peers[0].model_dump())
        if recipe.student not in (StudentConfig(), peer):
            errors.append("student: set either student or distill.peers (the first peer fills student), not both")
        else:
            recipe.student = peer
    return errors


def _teachers_errors(recipe: Recipe) -> list[str]:
    """Several teachers: archs, checkpoints, weights, what the ensemble can combine, one input size."""
    if not recipe.teachers:
        return ["distill.ensemble: only read with several teachers (teachers:)"] if recipe.distill.ensemble is not None else []
    errors: list[str] = []
    archs = timm_archs()
    for i, t in enumerate(recipe.teachers):
        if t.arch not in archs:
            errors.append(f"teachers[{i}].arch: unknown timm architecture {preview(t.arch)}{suggest(t.arch, sorted(archs))}")
        if t.checkpoint and not Path(t.checkpoint).is_file():
            errors.append(f"teachers[{i}].checkpoint: file not found: {t.checkpoint}")
    if all(t.weight == 0 for t in recipe.teachers):
        errors.append("teachers: every weight is 0; at least one teacher needs a weight > 0")
    rule = recipe.distill.ensemble or "mean"
    for i, spec in enumerate(recipe.distill.losses):
        if spec.kind not in LOSSES or LOSSES.check_kwargs(spec.kind, spec.kwargs()):
            continue  # reported with the losses
        try:
            loss = LOSSES.build(spec.kind, **spec.kwargs())
        except (ValueError, TypeError):
            continue
        if any(k.startswith("teacher.") and k != "teacher.logits" for k in loss.requires) or loss.channel_weights:
            errors.append(
                f"distill.losses[{i}] ({spec.kind}): reads teacher features, which several teachers do not combine; use logit losses (kd, dkd)"
            )
        elif "teacher.logits" in loss.requires and loss.teacher_logits == "raw" and rule == "mean":
            errors.append(
                f"distill.losses[{i}] ({spec.kind}): compares raw teacher logits, which distill.ensemble: mean does not make; "
                "use per_teacher or confidence"
            )
    if recipe.data.image_size is None and recipe.data.source == "imagefolder":
        sizes = {i: _pretrained_size(t.arch) for i, t in enumerate(recipe.teachers) if t.pretrained and t.arch in archs}
        if len(set(sizes.values())) > 1:
            seen = ", ".join(f"teachers[{i}] {recipe.teachers[i].arch} {size} px" for i, size in sizes.items())
            errors.append(
                f"teachers: the pretrained teachers expect different input sizes ({seen}); set data.image_size to the size all of them see"
            )
    return errors


def _unlabeled_errors(recipe: Recipe) -> list[str]:
    """data.unlabeled: a folder, and nothing that needs a label of every training image (the folder's contents are
    checked before any work, `cann_distill.data.unlabeled`)."""
    folder = recipe.data.unlabeled
    if folder is None:
        return []
    errors = []
    if not Path(folder).is_dir():
        errors.append(f"data.unlabeled: folder not found: {folder}")
    strategy = recipe.select.strategy
    if strategy in SELECTORS and SELECTORS.get(strategy).needs_labels:
        free = ", ".join(n for n in SELECTORS.names() if not SELECTORS.get(n).needs_labels)
        errors.append(f"select.strategy: '{strategy}' scores with labels, which unlabelled images do not have; use one of {free}")
    if recipe.data.augment.mixes:
        errors.append("data.augment: mixup/cutmix mixes labels, which unlabelled images do not have; set mixup_alpha and cutmix_alpha to 0")
    if refresh_epochs(recipe) is not None:
        errors.append("select.refresh_every: re-mining critical samples does not take unlabelled images (data.unlabeled); set it to null")
    return errors


def _mutual_errors(recipe: Recipe) -> list[str]:
    """distill.mode: mutual: two or more peers, a dml term, and nothing that assumes one student or stored targets."""
    d = recipe.distill
    dml = [i for i, spec in enumerate(d.losses) if spec.kind == "dml"]
    if d.mode != "mutual":
        errors = ["distill.peers: only read with distill.mode: mutual"] if d.peers is not None else []
        return errors + [f"distill.losses[{i}] (dml): learns from peers, which only distill.mode: mutual trains" for i in dml]
    errors = []
    if len(d.peers or ()) < 2:
        errors.append(f"distill.peers: mutual learning trains two or more students together, got {len(d.peers or ())}")
    archs = timm_archs()
    for i, peer in enumerate(d.peers or ()):
        if peer.arch not in archs:
            errors.append(f"distill.peers[{i}].arch: unknown timm architecture {preview(peer.arch)}{suggest(peer.arch, sorted(archs))}")
        if peer.checkpoint and not Path(peer.checkpoint).is_file():
            errors.append(f"distill.peers[{i}].checkpoint: file not found: {peer.checkpoint}")
    if not dml:
        errors.append("distill.losses: mutual learning needs a dml term (the peers' KL to each other), e.g. [{kind: ce}, {kind: dml}]")
    if d.teacher_targets == "replay":
        errors.append(
            "distill.teacher_targets: replay stores the teacher's labels of past views, while peers teach each other on the live batch; "
            "use cached or online"
        )
    errors += feature_loss_errors(recipe, "distill.mode: mutual")
    refused = {
        "teachers": ("several teachers", bool(recipe.teachers)),
        "distill.qat.enabled": ("quantization-aware distillation", d.qat.enabled),
        "distill.select_best": ("the best epoch of one peer (the best peer is chosen on val after training)", d.select_best),
        "distill.patience": ("early stopping on one peer's accuracy", d.patience is not None),
        "select.refresh_every": ("re-mining from one student", refresh_epochs(recipe) is not None),
    }
    errors += [f"{key}: {what} is not supported with distill.mode: mutual" for key, (what, on) in refused.items() if on]
    return errors


def feature_loss_errors(recipe: Recipe, mode: str) -> list[str]:
    """One line per feature loss in distill.losses (a loss reading tapped features), which `mode` cannot feed."""
    errors = []
    for i, spec in enumerate(recipe.distill.losses):
        if spec.kind in LOSSES and not LOSSES.check_kwargs(spec.kind, spec.kwargs()):
            try:
                feature = any(".feat." in k for k in LOSSES.build(spec.kind, **spec.kwargs()).requires)
            except (ValueError, TypeError):
                continue
            if feature:
                errors.append(f"distill.losses[{i}] ({spec.kind}): feature losses are not supported with {mode}")
    return errors


def _chain_errors(recipe: Recipe) -> list[str]:
    """distill.chain: teacher first, student last, known archs, and no option that assumes one hop (the chain's
    shrinking is checked before any work, `cann_distill.teaching.teachers.chain_errors`)."""
    d, chain = recipe.distill, recipe.distill.chain
    if not chain:
        return []
    errors = []
    if chain[0] != recipe.teacher.arch:
        errors.append(f"distill.chain[0]: the chain starts at the teacher ({recipe.teacher.arch}), got {preview(chain[0])}")
    if chain[-1] != recipe.student.arch:
        errors.append(f"distill.chain[{len(chain) - 1}]: the chain ends at the student ({recipe.student.arch}), got {preview(chain[-1])}")
    archs = timm_archs()
    errors += [
        f"distill.chain[{i}]: unknown timm architecture {preview(a)}{suggest(a, sorted(archs))}"
        for i, a in enumerate(chain)
        if a not in archs
    ]
    errors += feature_loss_errors(recipe, "distill.chain")
    refused = {
        "teachers": ("several teachers", bool(recipe.teachers)),
        "distill.mode": ("mutual learning", d.mode == "mutual"),
        "distill.teacher_targets": ("replay (the assistants' views are not stored)", d.teacher_targets == "replay"),
        "distill.qat.enabled": ("quantization-aware distillation", d.qat.enabled),
        "select.refresh_every": ("re-mining from the student", refresh_epochs(recipe) is not None),
    }
    errors += [f"{key}: {what} is not supported with distill.chain" for key, (what, on) in refused.items() if on]
    return errors


def _pretrained_size(arch: str) -> int:
    import timm
    from timm.data import resolve_data_config

    cfg = timm.models.get_pretrained_cfg(arch)
    return int(resolve_data_config({}, pretrained_cfg=cfg.to_dict() if cfg is not None else {})["input_size"][-1])


def fill_teacher_inputs(recipe: Recipe) -> None:
    """Several teachers: a pretrained teacher whose mean/std the recipe leaves open expects its pretrained statistics,
    so it gets them (distill re-normalises its inputs and says so); the first teacher refills `teacher:`."""
    if not recipe.teachers:
        return
    channels = recipe.data.channels or 1
    filled = []
    for t in recipe.teachers:
        if t.pretrained and (t.mean is None or t.std is None):
            mean, std = _pretrained_stats(t.arch, channels)
            t = t.model_copy(update={"mean": t.mean or mean, "std": t.std or std})
        filled.append(t)
    recipe.teachers = filled
    recipe.teacher = filled[0].section()


def _pretrained_stats(arch: str, channels: int) -> tuple[list[float], list[float]]:
    """mean/std of an arch's pretrained_cfg, one channel's mean for grayscale data (as `fill_data_defaults` does)."""
    import timm
    from timm.data import resolve_data_config

    cfg = timm.models.get_pretrained_cfg(arch)
    resolved = resolve_data_config({}, pretrained_cfg=cfg.to_dict() if cfg is not None else {})
    mean, std = list(resolved["mean"]), list(resolved["std"])
    if channels == 1 and len(mean) != 1:
        mean, std = [sum(mean) / len(mean)], [sum(std) / len(std)]
    return mean, std


def class_folders(folder: Path) -> list[str]:
    """A split's class folder names, sorted (hidden folders skipped): their order is the class order."""
    return sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def class_mismatch(split: str, train: list[str], other: list[str]) -> Optional[str]:
    """How `split`'s class folders differ from train's, or None when they match."""
    missing, extra = sorted(set(train) - set(other)), sorted(set(other) - set(train))
    if not (missing or extra):
        return None
    diff = ", ".join(
        ([f"missing in {split}: {', '.join(missing[:5])}"] if missing else [])
        + ([f"not in train: {', '.join(extra[:5])}"] if extra else [])
    )
    return f"class folders of {split}/ do not match train/ ({diff})"


def _photos_errors(data: DataConfig) -> list[str]:
    from cann_distill.core.paths import photo_files

    if data.root is None:
        return []
    root = Path(data.root)
    if not root.is_dir():
        return [f"data.root: photo folder not found: {root}"]
    found = len(photo_files(root))
    if found < 2:
        return [f"data.root: {root} needs at least two photos (.jpg/.jpeg/.png/.webp), one per class, found {found}"]
    return []


def _data_errors(recipe: Recipe) -> list[str]:
    """Dataset folders and class folders that match across splits; augmentation that timm and the losses accept."""
    data, errors = recipe.data, []
    if data.source == "imagefolder":
        if not data.root:
            errors.append("data.root: required when data.source is 'imagefolder'")
        else:
            root = Path(data.root)
            for split in ("train", "val"):
                if not (root / split).is_dir():
                    errors.append(f"data.root: dataset folder not found: {root / split} (expected <root>/{split}/<class>/*)")
            if not errors:
                train = class_folders(root / "train")
                if not train:
                    errors.append(f"data.root: no class folders in {root / 'train'} (expected {root / 'train'}/<class>/*)")
                for split in ("val", "test"):
                    if split == "test" and not (root / split).is_dir():
                        continue
                    if (mismatch := class_mismatch(split, train, class_folders(root / split))) is not None:
                        errors.append(f"data.root: {mismatch}")
    if data.source == "photos":
        errors += _photos_errors(data)
    aug = data.augment
    if aug.enabled and aug.auto_augment:
        from timm.data import create_transform

        try:
            create_transform(32, is_training=True, auto_augment=aug.auto_augment)
        except Exception as exc:  # timm raises AssertionError / KeyError / ValueError for bad policy strings
            errors.append(
                f"data.augment.auto_augment: timm does not accept {preview(aug.auto_augment, 60)} ({type(exc).__name__}: "
                f"{cut(str(exc), 80)}); e.g. rand-m9-mstd0.5, augmix-m5-w3, original"
            )
    for lo_hi in ("scale", "ratio"):
        lo, hi = getattr(aug, lo_hi)
        if not 0 < lo <= hi or (lo_hi == "scale" and hi > 1):
            errors.append(f"data.augment.{lo_hi}: needs 0 < low <= high{' <= 1' if lo_hi == 'scale' else ''}, got [{lo}, {hi}]")
    if aug.mixes:
        for i, spec in enumerate(recipe.distill.losses):
            if spec.kind not in LOSSES or LOSSES.get(spec.kind).soft_targets or LOSSES.check_kwargs(spec.kind, spec.kwargs()):
                continue  # unknown kinds and bad arguments are reported with the losses below
            try:
                reads_labels = "targets" in LOSSES.build(spec.kind, **spec.kwargs()).requires
            except (ValueError, TypeError):
                continue  # a value the loss refuses: reported with the losses below
            if reads_labels:
                errors.append(
                    f"distill.losses[{i}].kind: '{spec.kind}' needs hard labels, but data.augment mixes images "
                    "(mixup_alpha/cutmix_alpha > 0) into soft targets; use ce + kd, or turn mixing off"
                )
        sizes = {
            "data.batch_size": data.batch_size,
            "teacher.train.batch_size": recipe.teacher.train.batch_size,
            "distill.batch_size": recipe.distill.batch_size,
        }
        for key, size in sizes.items():
            if size is not None and size % 2:
                errors.append(f"{key}: mixup/cutmix pairs images within a batch, so the batch size must be even, got {size}")
    return errors


def fill_data_defaults(recipe: Recipe) -> None:
    """Input size, mean/std, crop and interpolation the recipe leaves open, from the teacher's pretrained_cfg
    (timm's `resolve_data_config`); digits: 32 px, 0.5/0.5, no crop, bilinear. The resolved recipe records them."""
    data = recipe.data
    channels = data.channels or (1 if data.source == "digits" else 3)
    if data.source == "digits":
        resolved = {
            "input_size": (channels, 32, 32),
            "mean": (0.5,) * channels,
            "std": (0.5,) * channels,
            "crop_pct": 1.0,
            "interpolation": "bilinear",
        }
    else:
        import timm
        from timm.data import resolve_data_config

        cfg = timm.models.get_pretrained_cfg(recipe.teacher.arch)
        resolved = resolve_data_config({}, pretrained_cfg=cfg.to_dict() if cfg is not None else {})
        if data.source == "photos":  # crops are cut at their final size: 32 px, nothing to centre-crop
            resolved = {**resolved, "input_size": (channels, 32, 32), "crop_pct": 1.0}
    mean, std = list(resolved["mean"]), list(resolved["std"])
    if channels == 1 and len(mean) != 1:  # a grayscale dataset: one channel of the teacher's statistics' mean
        mean, std = [sum(mean) / len(mean)], [sum(std) / len(std)]
    updates = {
        "image_size": data.image_size or int(resolved["input_size"][-1]),
        "mean": data.mean or mean,
        "std": data.std or std,
        "crop_pct": data.crop_pct or float(resolved.get("crop_pct") or 1.0),
        "interpolation": data.interpolation
        or (resolved.get("interpolation") if resolved.get("interpolation") in ("bilinear", "bicubic", "nearest") else "bilinear"),
        "channels": channels,
    }
    recipe.data = data.model_copy(update=updates)


def _component_errors(registry: Any, name: str, kwargs: dict[str, Any], path: str, args_path: str, arg_in_path: bool = True) -> list[str]:
    """Bind `kwargs` against a registered component and build it once; errors carry their key path.

    With `arg_in_path`, a constructor error that starts with an argument's name is moved onto
    that argument's path; without it, it is reported on `path` as raised (loss messages).
    """
    bad = registry.check_kwargs(name, kwargs)
    if bad:
        return [f"{args_path}.{arg}: {msg}" for arg, msg in bad]
    try:
        registry.build(name, **kwargs)
    except (ValueError, TypeError) as exc:
        # "alpha must be in [0, 1]" → "<args_path>.alpha: must be in [0, 1]"
        first, _, rest = str(exc).partition(" ")
        if arg_in_path and first in kwargs and rest:
            return [f"{args_path}.{first}: {rest}"]
        return [f"{path}: {exc}"]
    return []


def selectors_of(recipe: Recipe) -> Any:
    """The registry `select.strategy` names from: the detection selectors with task: detect, else the classification ones."""
    return DETECTION_SELECTORS if recipe.task == "detect" else SELECTORS


def _select_errors(recipe: Recipe) -> list[str]:
    sel = recipe.select
    errors: list[str] = []
    selectors = selectors_of(recipe)
    if sel.strategy not in selectors:
        errors.append(f"select.strategy: {selectors.unknown_message(sel.strategy)}{suggest(sel.strategy, selectors.names())}")
    else:
        errors += _component_errors(selectors, sel.strategy, sel.strategy_args, "select.strategy_args", "select.strategy_args")
    errors += _policy_errors(recipe)
    t = sel.temperature
    if t.t_min > t.t_max:
        errors.append(f"select.temperature.t_min: must be <= t_max, got t_min={t.t_min} > t_max={t.t_max}")
    elif not t.t_min <= t.base <= t.t_max:
        errors.append(f"select.temperature.base: must lie in [t_min, t_max] = [{t.t_min}, {t.t_max}], got {t.base}")
    if not t.t_easy <= t.base:
        errors.append(f"select.temperature.t_easy: must be <= base ({t.base}), got {t.t_easy}")
    if not t.base <= t.t_hard:
        errors.append(f"select.temperature.t_hard: must be >= base ({t.base}), got {t.t_hard}")
    return errors


def _qat_errors(recipe: Recipe) -> list[str]:
    qat, errors = recipe.distill.qat, []
    if not qat.enabled:
        return errors
    for key in ("freeze_observers_epoch", "freeze_bn_epoch"):
        value = getattr(qat, key)
        if value is not None and value > qat.epochs:
            errors.append(f"distill.qat.{key}: {value} is past the last QAD epoch (distill.qat.epochs={qat.epochs})")
    if qat.ema_decay is not None:
        errors.append("distill.qat.ema_decay: not supported in QAD (an averaged copy would lose the quantizers' hooks)")
    if recipe.validate_.per_channel and recipe.validate_.opset < 13:
        errors.append(f"validate.opset: per-channel QDQ (QuantizeLinear axis) needs opset >= 13, got {recipe.validate_.opset}")
    both = set(qat.keep_float) & set(qat.per_tensor)
    if both:
        errors.append(f"distill.qat.per_tensor: {sorted(both)[0]!r} is also in keep_float")
    return errors


def _policy_errors(recipe: Recipe) -> list[str]:
    """select.mix, refresh_every and the probe a strategy needs."""
    sel, errors = recipe.select, []
    if sel.mix is not None:
        total = sel.mix.hard + sel.mix.medium + sel.mix.easy
        if selection_policy(recipe) != "mix":
            errors.append(f"select.mix: only read with select.policy: mix (policy is {selection_policy(recipe)})")
        elif abs(total - 1.0) > 1e-6:
            errors.append(
                f"select.mix: hard + medium + easy must sum to 1, got {sel.mix.hard} + {sel.mix.medium} + {sel.mix.easy} = {total:.4g}"
            )
    if sel.refresh_every not in (None, "auto"):
        epochs = recipe.distill.epochs
        if sel.refresh_every > epochs:
            errors.append(
                f"select.refresh_every: {sel.refresh_every} is more than distill.epochs ({epochs}); the critical samples would never be re-mined"
            )
        if recipe.distill.critical.mode == "none":
            errors.append("select.refresh_every: distill.critical.mode is none, so there are no critical samples to re-mine")
    if sel.strategy in selectors_of(recipe):
        need = selectors_of(recipe).get(sel.strategy).min_probe_epochs
        if sel.probe_epochs is not None and sel.probe_epochs < need:
            errors.append(
                f"select.probe_epochs: strategy '{sel.strategy}' scores a student probe's training and needs >= {need} "
                f"probe epoch(s), got {sel.probe_epochs}"
            )
    return errors


def _schedule_errors(recipe: Recipe) -> list[str]:
    spec = recipe.distill.temperature_schedule
    path = "distill.temperature_schedule"
    if spec.kind not in SCHEDULES:
        return [f"{path}.kind: {SCHEDULES.unknown_message(spec.kind)}{suggest(spec.kind, SCHEDULES.names())}"]
    errors = _component_errors(SCHEDULES, spec.kind, spec.kwargs(), path, path)
    reads_temperature = (
        "temperature" in inspect.signature(LOSSES.get(s.kind)).parameters for s in recipe.distill.losses if s.kind in LOSSES
    )
    if not spec.is_default and not any(reads_temperature):
        errors.append(f"{path}: a temperature schedule needs a loss that reads a temperature (kd, dkd)")
    return errors


def _path_and_message(error: str) -> tuple[str, str]:
    path, sep, msg = error.partition(": ")
    return (path, msg) if sep and " " not in path else ("", error)


def _schema_problems(data: dict[str, Any]) -> tuple[Optional[Recipe], list[tuple[str, str]]]:
    """The recipe when raw data passes the value walk and the schema, else None; the problems (path, message)."""
    errors = value_errors(data)
    try:
        # strict, as JSON: `true` is no int, "3" no number, 2.0 no int, while a list fills a tuple field
        recipe: Optional[Recipe] = Recipe.model_validate_json(json.dumps(data, skipkeys=True, default=str), strict=True)
    except ValidationError as exc:
        recipe = None
        # a value the walk above already refused is not reported again by the schema
        bad = [path for path, _ in errors]
        errors += [(loc, msg) for loc, msg in schema_errors(exc) if not any(b == loc or b.startswith((loc + ".", loc + "[")) for b in bad)]
    return (recipe if not errors else None), errors


def _semantic_problems(recipe: Recipe) -> list[tuple[str, str]]:
    return [_path_and_message(e) for e in adopt_firsts(recipe) or semantic_errors(recipe)]


def tune_errors(data: dict[str, Any], tune: TuneConfig) -> list[tuple[str, str]]:
    """Each `tune:` key must be a key of this recipe that trials can change, and its range or choices values that
    the recipe's own checks accept there (both ends of a range, every choice, applied as `--set` would)."""
    base = {k: v for k, v in data.items() if k != "tune"}
    errors: list[tuple[str, str]] = []
    for key, spec in tune.space().items():
        at = format_loc(("tune", key))
        try:
            path = format_loc(tuple(split_key(key)))
        except UsageError as exc:
            errors.append((at, f"not a recipe key ({str(exc).partition(': ')[2]})"))
            continue
        if path.split(".")[0].split("[")[0] not in TUNABLE:
            errors.append((at, f"trials run teacher, select and distill, which {path} does not change (tunable: {', '.join(TUNABLE)})"))
            continue
        for value in spec.samples():
            problem = _tune_value_problem(base, key, path, value)
            if problem is not None:
                errors.append((at, problem))
                break
    if data.get("task", "classify") != "classify":
        errors.append(("tune", "tune searches classify recipes; task: detect has no tune yet"))
    return errors


TUNABLE = ("seed", "data", "teacher", "teachers", "student", "select", "distill", "runtime")
"""The recipe sections a tune trial's stages (teacher, select, distill) read."""


def _tune_value_problem(base: dict[str, Any], key: str, path: str, value: Any) -> Optional[str]:
    """Why `value` at `key` makes the recipe invalid, None when it fits."""
    try:
        patched = apply_overrides(base, [f"{key}={json.dumps(value)}"])
    except UsageError as exc:
        return f"not a recipe key ({str(exc).partition(': ')[2]}){suggest(path, flat_keys(base))}"
    recipe, problems = _schema_problems(patched)
    if any(p == path and m == "unknown key" for p, m in problems):
        return f"not a recipe key{suggest(path, flat_keys(base))}"
    if recipe is not None:
        problems = _semantic_problems(recipe)
    if not problems:
        return None
    where, msg = problems[0]
    return f"{preview(value)} does not fit {path}: {where + ': ' if where and where != path else ''}{msg}"


def flat_keys(data: Any, prefix: str = "") -> list[str]:
    """Every key path of raw recipe data, as `--set` writes it (`distill.losses[1].temperature`)."""
    if isinstance(data, dict):
        out = []
        for k, v in data.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            out += [path, *flat_keys(v, path)]
        return out
    if isinstance(data, list):
        return [p for i, v in enumerate(data) for p in (f"{prefix}[{i}]", *flat_keys(v, f"{prefix}[{i}]"))]
    return []


def resolve(data: dict[str, Any], source: str = "recipe", name: Optional[str] = None, doc: Optional[Document] = None) -> Recipe:
    """Validate raw recipe data; raise one RecipeError listing every problem with its key path.

    `doc` (the file's Document) lets each problem name the line it was written on.
    """
    recipe, errors = _schema_problems(data)
    if errors or recipe is None:
        raise RecipeError(render_errors(source, errors, doc))
    semantic = _semantic_problems(recipe)
    if not semantic and recipe.tune is not None:
        semantic = tune_errors(data, recipe.tune)
    if semantic:
        raise RecipeError(render_errors(source, semantic, doc))
    fill_data_defaults(recipe)
    fill_teacher_inputs(recipe)
    if recipe.name is None:
        try:
            recipe.name = name or "recipe"
        except ValidationError:
            raise RecipeError(f"{source}: the file name cannot serve as the recipe's name; set `name:`") from None
    return recipe


DETECT_STRATEGY = "small_objects"
"""select.strategy's default with task: detect (label-based, so select needs neither the teacher nor a probe)."""


def task_defaults(task: Any) -> dict[str, Any]:
    """The schema's defaults as data, with the keys whose default depends on `task` filled in for it."""
    defaults = Recipe().to_dict()
    if task == "detect":
        defaults["select"]["strategy"] = DETECT_STRATEGY
    return defaults


def _task_of(data: Any, overrides: list[str]) -> Any:
    """`task` as the recipe and its `--set task=...` overrides (the last wins) give it, before the defaults are merged."""
    task = data.get("task") if isinstance(data, dict) else None
    for item in overrides:
        key, sep, raw = item.partition("=")
        if sep and key.strip() == "task":
            try:
                task = load_value(raw, "--set task")
            except YAMLSyntaxError:
                task = raw
    return task


def merge_defaults(defaults: Any, data: Any) -> Any:
    """Recipe values over schema defaults (mappings merge, everything else replaces)."""
    if isinstance(defaults, dict) and isinstance(data, dict):
        return {**defaults, **{k: merge_defaults(defaults.get(k), v) for k, v in data.items()}}
    return data


def recipe_data(path: Union[str, Path, None] = None, overrides: Optional[list[str]] = None) -> tuple[dict[str, Any], Document, Path]:
    """A recipe's raw data before the checks: the file over the schema defaults, the overrides applied; its Document
    and path. `load_recipe` resolves it; `tune` applies each trial's values to it first."""
    path = Path(path) if path is not None else default_recipe_path()
    doc = read_document(path)
    data = merge_defaults(task_defaults(_task_of(doc.data, list(overrides or []))), doc.data)
    return apply_overrides(data, list(overrides or []), doc.positions), doc, path


def load_recipe(path: Union[str, Path, None] = None, overrides: Optional[list[str]] = None) -> Recipe:
    """Load, override and validate a recipe. `None` loads the packaged default recipe.

    Overrides apply on top of the schema defaults, so `--set distill.losses[1].temperature=2`
    works on a recipe that relies on the default loss list.
    """
    data, doc, path = recipe_data(path, overrides)
    return resolve(data, source=str(path), name=path.stem, doc=doc)
