"""Pipeline stages; each is `run(recipe, run_dir) -> StageResult` through `run_stages`."""

from __future__ import annotations

from cann_distill.stages.base import STAGE_ORDER, STAGES, Context, Stage, StageResult, is_current, run_stage
from cann_distill.stages import teacher, select, distill, baseline, validate, report  # noqa: F401,E401  (register)

__all__ = ["STAGE_ORDER", "STAGES", "Context", "Stage", "StageResult", "is_current", "run_stage"]
