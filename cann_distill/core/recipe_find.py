"""RECIPE arguments: a file, or the name of a packaged recipe (`cann-distill run resnet10t_from_resnet18_digits`).

A local file wins over a packaged recipe of the same name (`NAME` or `NAME.yaml`, as `cann-distill init NAME`
writes it), and the caller is told which was used; a name that is neither is an error naming the close
packaged names.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

from cann_distill.core.errors import UsageError, preview
from cann_distill.core.recipe import default_recipe_path, resource_dir


@dataclass(frozen=True)
class FoundRecipe:
    path: Path
    packaged: bool
    note: Optional[str] = None  # which one was used, when the argument could name two


def packaged_recipes() -> dict[str, Path]:
    """Packaged recipe name → its file."""
    return {p.stem: p for p in sorted(resource_dir("recipes").glob("*.yaml"))}


def close_names(name: str, known: list[str], n: int = 4) -> list[str]:
    """Known names like `name`: difflib's closest, then those containing it (recipe names are long)."""
    if len(name) > 200:
        return []
    close = difflib.get_close_matches(name, known, n=n, cutoff=0.5)
    lowered = name.lower()
    contains = [k for k in known if lowered and lowered in k.lower() and k not in close]
    return (close + contains)[:n]


def _stem(text: str) -> str:
    for suffix in (".yaml", ".yml"):
        if text.endswith(suffix):
            return text[: -len(suffix)]
    return text


def _unknown(text: str, packaged: dict[str, Path]) -> str:
    close = close_names(_stem(Path(text).name), list(packaged))
    return f" (did you mean: {', '.join(close)}?)" if close else f" (packaged recipes: {', '.join(packaged)})"


def packaged_recipe(name: str) -> Path:
    """The packaged recipe called `name` (with or without .yaml); never a local file."""
    packaged = packaged_recipes()
    if _stem(name) not in packaged:
        raise UsageError(f"no packaged recipe named {preview(name, 120)}{_unknown(name, packaged)}")
    return packaged[_stem(name)]


def find_recipe(spec: Union[str, Path, None]) -> FoundRecipe:
    """The recipe file `spec` names: a path, a packaged recipe name (with or without .yaml), or None for the default."""
    if spec is None:
        return FoundRecipe(default_recipe_path(), packaged=True)
    text = str(spec)
    packaged = packaged_recipes()
    bare = "/" not in text and "\\" not in text
    named = packaged.get(_stem(text)) if bare else None
    local = next((p for p in (Path(text), Path(f"{text}.yaml")) if p.exists()), None) if named is not None else Path(text)
    if local is not None and local.exists():
        note = f"{local}: using the local file, not the packaged recipe of the same name" if named is not None else None
        return FoundRecipe(local, packaged=False, note=note)
    if named is not None:
        return FoundRecipe(named, packaged=True, note=f"recipe: packaged {named.stem} ({named})")
    hint = _unknown(text, packaged)
    if not bare or text.endswith((".yaml", ".yml")):
        raise UsageError(f"recipe not found: {text}{hint}")
    raise UsageError(f"no recipe file or packaged recipe named {preview(text, 120)}{hint}")
