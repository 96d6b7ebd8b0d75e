"""Pipeline stages; each is `run(recipe, run_dir) -> StageResult` through `run_stages`."""

from __future__ import annotations

# importing a stage module registers its stages (detect, detect_select, detect_validate, detect_report: those of task: detect)
from cann_distill.stages import (  # noqa: F401
    baseline,
    detect,
    detect_report,
    detect_select,
    detect_validate,
    distill,
    report,
    select,
    teacher,
    validate,
)
from cann_distill.stages.base import STAGES, Context, Observe, Stage, StageResult, is_current, run_stage, stage_for
from cann_distill.store.rundir import STAGE_ORDER

__all__ = ["STAGE_ORDER", "STAGES", "Context", "Observe", "Stage", "StageResult", "is_current", "run_stage", "stage_for"]
