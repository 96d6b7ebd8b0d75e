"""Pipeline stages; each is `run(recipe, run_dir) -> StageResult` through `run_stages`."""

from __future__ import annotations

from cann_distill.stages import baseline, distill, report, select, teacher, validate  # noqa: F401,E401  (register)
from cann_distill.stages.base import STAGE_ORDER, STAGES, Context, Stage, StageResult, is_current, run_stage

__all__ = ["STAGE_ORDER", "STAGES", "Context", "Stage", "StageResult", "is_current", "run_stage"]
