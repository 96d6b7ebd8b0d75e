"""Pipeline stages; each is `run(recipe, run_dir) -> StageResult` through `run_stages`."""

from __future__ import annotations

from cann_distill.stages import baseline, distill, report, select, teacher, validate  # noqa: F401,E401  (register)
from cann_distill.stages.base import STAGES, Context, Stage, StageResult, is_current, run_stage
from cann_distill.store.rundir import STAGE_ORDER

__all__ = ["STAGE_ORDER", "STAGES", "Context", "Stage", "StageResult", "is_current", "run_stage"]
