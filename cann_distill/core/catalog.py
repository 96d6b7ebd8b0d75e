"""`cann-distill list`: what a recipe can name (packaged recipes, losses, selectors, temperature schedules, hardware
profiles, timm architectures), each with its one-line description and its arguments, read from the registries."""

from __future__ import annotations

import fnmatch
import inspect
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional

from cann_distill.core.errors import UsageError, cut, preview
from cann_distill.core.recipe import hardware_profile, hardware_profiles
from cann_distill.core.recipe_find import packaged_recipes
from cann_distill.core.registries import DETECTION_SELECTORS, LOSSES, SCHEDULES, SELECTORS
from cann_distill.core.registry import Registry, suggest
from cann_distill.core.safeyaml import load_document

DESCRIPTION_CHARS = 160


@dataclass(frozen=True)
class Entry:
    name: str
    description: str
    arguments: str  # how a recipe passes it: keyword arguments, or what the entry sets
    task: Optional[str] = None  # selectors: the recipe `task` it works under (classify / detect)

    def to_dict(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def first_sentence(text: str) -> str:
    """The first sentence of a docstring or comment block, on one line."""
    flat = " ".join(text.split())
    if ". " in flat:
        flat = flat.split(". ", 1)[0] + "."
    return cut(flat, DESCRIPTION_CHARS)


def signature_text(obj: Any) -> str:
    """`a: float = 1.0, b: str` — the keyword arguments a recipe may give, as the registry binds them."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return ""
    parts = []
    for name, p in sig.parameters.items():
        if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        ann = p.annotation if isinstance(p.annotation, str) else getattr(p.annotation, "__name__", "")
        text = f"{name}: {ann}" if ann and p.annotation is not p.empty else name
        parts.append(text if p.default is p.empty else f"{text} = {p.default!r}")
    return ", ".join(parts) or "none"


def _components(registry: Registry[Any], task: Optional[str] = None) -> list[Entry]:
    return [
        Entry(n, first_sentence(inspect.getdoc(registry.get(n)) or ""), signature_text(registry.get(n)), task) for n in registry.names()
    ]


def _selectors() -> list[Entry]:
    """Both selector registries, each entry marked with the task it scores for: a recipe's `select.strategy` names
    one of the classification selectors, or with `task: detect` one of the detection selectors."""
    return _components(SELECTORS, "classify") + _components(DETECTION_SELECTORS, "detect")


def _leading_comment(text: str) -> str:
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(lines)


def _recipes() -> list[Entry]:
    out = []
    for name, path in packaged_recipes().items():
        data = load_document(path).data
        arch = {role: (data.get(role) or {}).get("arch", "?") for role in ("teacher", "student")}
        source = (data.get("data") or {}).get("source", "digits")
        out.append(
            Entry(
                name, first_sentence(_leading_comment(path.read_text(encoding="utf-8"))), f"{arch['teacher']} → {arch['student']}, {source}"
            )
        )
    return out


def _profiles() -> list[Entry]:
    out = []
    for name in hardware_profiles():
        hw = hardware_profile(name)
        budgets = ", ".join(f"{k} {v:g}" for k, v in hw.budgets.model_dump().items() if v is not None)
        out.append(
            Entry(name, first_sentence(hw.description), f"{hw.provider}, batch {hw.batch}" + (f"; budgets: {budgets}" if budgets else ""))
        )
    return out


def _archs(pattern: Optional[str]) -> list[Entry]:
    import timm

    wildcard = pattern if pattern and any(c in pattern for c in "*?[") else f"*{pattern}*" if pattern else ""
    pretrained: dict[str, list[str]] = {}
    for full in timm.list_pretrained(wildcard or ""):
        arch, _, tag = full.partition(".")
        pretrained.setdefault(arch, []).append(tag)
    entries = []
    for arch in timm.list_models(wildcard or ""):
        tags = pretrained.get(arch, [])
        weights = (
            f"pretrained: {', '.join(tags[:3])}" + (f" (+{len(tags) - 3})" if len(tags) > 3 else "") if tags else "no pretrained weights"
        )
        doc = inspect.getdoc(timm.models.model_entrypoint(arch)) or ""
        entries.append(Entry(arch, first_sentence(doc) or "timm architecture", weights))
    return entries


LISTS: dict[str, Callable[[], list[Entry]]] = {
    "recipes": _recipes,
    "losses": lambda: _components(LOSSES),
    "selectors": _selectors,
    "schedules": lambda: _components(SCHEDULES),
    "profiles": _profiles,
}
KINDS = (*LISTS, "archs")


def matches(name: str, pattern: Optional[str]) -> bool:
    """Glob (`resnet1*`) when the pattern has wildcards, else a case-insensitive substring."""
    if not pattern:
        return True
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name.lower(), pattern.lower())
    return pattern.lower() in name.lower()


def catalog(kind: str, pattern: Optional[str] = None) -> list[Entry]:
    """The entries of one list whose name matches `pattern`."""
    if kind not in KINDS:
        raise UsageError(f"unknown list {preview(kind)}{suggest(kind, list(KINDS))} (known: {', '.join(KINDS)})")
    if kind == "archs":
        return _archs(pattern)
    return [e for e in LISTS[kind]() if matches(e.name, pattern)]
