"""Recipe flags (`--teacher ARCH --student ARCH --data DIR --critical-samples 35% --hardware PROFILE --quant-aware`):
each checked here, with close names for a typo, and compiled into `--set` overrides of the recipe they are
used with (the packaged default when there is none). The run dir's recipe.resolved.yaml records the result."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from cann_distill.core.errors import UsageError, preview
from cann_distill.core.paths import photo_files
from cann_distill.core.recipe import hardware_profiles, timm_archs
from cann_distill.core.registry import suggest

_SHARE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(%?)\s*$")
_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class RecipeFlags:
    teacher: Optional[str] = None
    student: Optional[str] = None
    data: Optional[str] = None  # a folder, or `digits`
    critical_samples: Optional[str] = None  # "35%" or "0.35"
    hardware: Optional[str] = None
    quant_aware: bool = False

    def given(self) -> bool:
        values = (self.teacher, self.student, self.data, self.critical_samples, self.hardware)
        return any(v is not None for v in values) or self.quant_aware


def check_arch(flag: str, arch: str) -> str:
    """`arch` when timm knows it; else a usage error naming the archs it starts (a family name such as `mobilenetv3`)
    or, failing that, the closest spellings."""
    archs = timm_archs()
    if arch in archs:
        return arch
    family = sorted((a for a in archs if a.startswith(arch)), key=lambda a: (len(a), a))[:4] if len(arch) >= 3 else []
    hint = f" (did you mean: {', '.join(family)}?)" if family else suggest(arch, sorted(archs))
    raise UsageError(f"{flag}: unknown timm architecture {preview(arch)}{hint} (`cann-distill list archs PATTERN` lists them)")


def check_profile(value: str) -> str:
    profiles = hardware_profiles()
    if value in profiles or (value.endswith((".yaml", ".yml")) and Path(value).is_file()):
        return value
    raise UsageError(
        f"--hardware: unknown hardware profile {preview(value)}{suggest(value, list(profiles))} (known: {', '.join(profiles)})"
    )


def parse_share(flag: str, text: str) -> float:
    """`35%` or `0.35` → 0.35; anything outside (0, 100%] is a usage error."""
    m = _SHARE.match(text)
    if m is None:
        raise UsageError(f"{flag}: expected a share of the training samples such as 35% or 0.35, got {preview(text)}")
    value = float(m.group(1)) / (100.0 if m.group(2) else 1.0)
    if not 0 < value <= 1:
        raise UsageError(f"{flag}: must be more than 0% and at most 100% of the training samples, got {preview(text)}")
    return value


def data_source(flag: str, folder: str) -> tuple[str, Optional[str]]:
    """(data.source, data.root) for a --data value: `digits`, an imagefolder (train/<class>/...) or a folder of photos."""
    if folder == "digits":
        return "digits", None
    root = Path(folder)
    if not root.is_dir():
        raise UsageError(f"{flag}: folder not found: {folder} (or `digits` for the offline digits set)")
    if (root / "train").is_dir():
        return "imagefolder", folder
    if len(photo_files(root)) >= 2:
        return "photos", folder
    raise UsageError(f"{flag}: {folder} holds neither train/<class>/* (and val/<class>/*) folders nor two or more photos (one class each)")


def flag_overrides(flags: RecipeFlags, base: dict[str, Any], name_it: bool) -> list[str]:
    """`--set` items for the flags given, on top of `base` (the recipe's raw data). With `name_it` (no recipe was
    given), the recipe is named `<student>_from_<teacher>_<data>` so each combination gets its own run dir."""
    out: list[str] = []
    if flags.teacher is not None:
        out.append(f"teacher.arch={json.dumps(check_arch('--teacher', flags.teacher))}")
    if flags.student is not None:
        out.append(f"student.arch={json.dumps(check_arch('--student', flags.student))}")
    data_name = None
    if flags.data is not None:
        source, root = data_source("--data", flags.data)
        out += [f"data.source={source}", f"data.root={json.dumps(root) if root is not None else ''}"]
        data_name = "digits" if root is None else Path(root).resolve().name
    if flags.critical_samples is not None:
        out.append(f"select.top_k_ratio={parse_share('--critical-samples', flags.critical_samples)}")
    if flags.hardware is not None:
        out.append(f"validate.target={json.dumps(check_profile(flags.hardware))}")
    if flags.quant_aware:
        out.append("distill.qat.enabled=true")
    if name_it and flags.given():
        teacher = flags.teacher or (base.get("teacher") or {}).get("arch", "teacher")
        student = flags.student or (base.get("student") or {}).get("arch", "student")
        data_name = data_name or (base.get("data") or {}).get("source", "data")
        out.append(f"name={json.dumps(recipe_name(str(student), str(teacher), str(data_name)))}")
    return out


def recipe_name(student: str, teacher: str, data: str) -> str:
    """torchdistill's naming, `<student>_from_<teacher>_<dataset>`, in characters a folder name can hold."""
    return _NAME_CHARS.sub("_", f"{student}_from_{teacher}_{data}").strip("_.")[:120] or "recipe"
