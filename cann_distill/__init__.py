"""cann-distill: distill timm image classifiers and prove the student deploys as INT8 ONNX."""

from __future__ import annotations

from cann_distill.api import run_pipeline, run_stages  # noqa: E402
from cann_distill.core.errors import CannDistillError, RecipeError, StageError  # noqa: E402
from cann_distill.core.recipe import Recipe, load_recipe  # noqa: E402
from cann_distill.core.version import __version__

__all__ = ["CannDistillError", "Recipe", "RecipeError", "StageError", "load_recipe", "run_pipeline", "run_stages", "__version__"]
