"""`cann-distill init`: a commented recipe to edit, a copy of a packaged one or one built from
--teacher/--student/--data, written without ever replacing a file unless asked to."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

from cann_distill.core.errors import UsageError
from cann_distill.core.files import write_text_atomic
from cann_distill.core.recipe_find import packaged_recipe
from cann_distill.core.recipe_flags import RecipeFlags, check_arch, check_profile, data_source, parse_share, recipe_name

TEMPLATE = """\
# Written by `cann-distill init`. Check it with `cann-distill check {file}` (prints every key, defaults filled in),
# run it with `cann-distill run {file}`. Keys left out take their defaults.
name: {name}
seed: 0                        # seeds every random generator
data:
  source: {source}  # {source_note}
{root_line}  batch_size: 64
  # image_size: 224            # default: the teacher's pretrained input size (digits and photos: 32)
teacher:
  arch: {teacher}  # any timm architecture: `cann-distill list archs PATTERN`
  pretrained: false            # true: timm's ImageNet weights (downloaded on first use), a new classifier
  train:
    epochs: 15
    lr: 0.05                   # SGD, 1 warmup epoch, then cosine decay
student:
  arch: {student}
  pretrained: false
select:
  strategy: margin             # how critical a sample is: `cann-distill list selectors`
  top_k_ratio: {ratio}  # share of the training samples marked critical
distill:
  epochs: 15
  lr: 0.05
  losses:                      # any mix, each with a weight: `cann-distill list losses`
    - {{kind: ce, weight: 0.5}}
    - {{kind: kd, weight: 0.5, temperature: 4.0}}
  critical:
    mode: weight               # none | weight (critical samples weigh more) | subset | curriculum
    weight: 2.0
  qat:
    enabled: {qat}  # true: a short quantization-aware phase after distillation
validate:
  target: {target}  # hardware profile: `cann-distill list profiles`
report:
  baseline: true               # also train the student alone (CE only): what distillation added is measured against it
"""

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_SOURCES = {
    "digits": "scikit-learn's digits, offline; or imagefolder / photos with data.root",
    "imagefolder": "root/train/<class>/*, root/val/<class>/*, optional root/test/<class>/*",
    "photos": "photos, one class each, crops cut from disjoint bands; data.root: your folder (default: nine packaged ones)",
}


def _q(value: str) -> str:
    """A YAML scalar that reads back as exactly this string: bare when plain, else JSON-quoted (JSON strings are YAML)."""
    plain = _PLAIN.fullmatch(value) and value.lower() not in ("true", "false", "null", "yes", "no", "on", "off", "y", "n")
    return value if plain else json.dumps(value, ensure_ascii=False)


def template(flags: RecipeFlags, file_name: str) -> str:
    """A commented recipe for the flags given (the packaged default's choices for the rest: the packaged photos,
    resnet18 → mobilenetv3_small_050, 15 + 15 epochs)."""
    teacher = check_arch("--teacher", flags.teacher) if flags.teacher else "resnet18"
    student = check_arch("--student", flags.student) if flags.student else "mobilenetv3_small_050"
    source, root = data_source("--data", flags.data) if flags.data else ("photos", None)  # the packaged photos
    data_name = source if root is None else Path(root).resolve().name
    ratio = parse_share("--critical-samples", flags.critical_samples) if flags.critical_samples else 0.35
    target = check_profile(flags.hardware) if flags.hardware else "cpu"
    return TEMPLATE.format(
        file=file_name,
        name=_q(recipe_name(student, teacher, data_name)),
        source=source,
        source_note=_SOURCES[source],
        root_line=f"  root: {_q(str(root))}\n" if root is not None else "",
        teacher=_q(teacher),
        student=_q(student),
        ratio=ratio,
        qat="true" if flags.quant_aware else "false",
        target=_q(target),
    )


def init_recipe(name: Optional[str], flags: RecipeFlags, out: Optional[Path], force: bool) -> tuple[Path, str]:
    """Write the recipe; (the file written, what it was made from). Refuses to replace a file without `force`."""
    if name is not None and flags.given():
        raise UsageError("init takes a packaged recipe NAME or --teacher/--student/--data flags, not both")
    if name is not None:
        source = packaged_recipe(name)
        target = out or Path(source.name)
        text, origin = source.read_text(encoding="utf-8"), f"packaged recipe {source.stem}"
    else:
        target = out or Path("recipe.yaml")
        text, origin = template(flags, str(target)), "template" + (" and flags" if flags.given() else "")
    if target.exists() and not force:
        raise UsageError(f"{target} exists; --force replaces it")
    if target.is_dir():
        raise UsageError(f"{target} is a folder; give a file name with -o")
    write_text_atomic(target, text)
    return target, origin
