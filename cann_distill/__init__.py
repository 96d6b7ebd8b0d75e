"""cann-distill: distill timm image classifiers and prove the student deploys as INT8 ONNX.

The names below load on first use, so `import cann_distill` (and `cann-distill --help`) imports no torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from cann_distill.core.version import __version__

if TYPE_CHECKING:
    from cann_distill.api import run_pipeline, run_stages
    from cann_distill.core.errors import CannDistillError, RecipeError, StageError
    from cann_distill.core.recipe import Recipe
    from cann_distill.core.recipe_load import load_recipe

_LAZY = {
    "CannDistillError": "cann_distill.core.errors",
    "RecipeError": "cann_distill.core.errors",
    "StageError": "cann_distill.core.errors",
    "run_pipeline": "cann_distill.api",
    "run_stages": "cann_distill.api",
    "Recipe": "cann_distill.core.recipe",
    "load_recipe": "cann_distill.core.recipe_load",
}

__all__ = ["CannDistillError", "Recipe", "RecipeError", "StageError", "load_recipe", "run_pipeline", "run_stages", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cann_distill' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
