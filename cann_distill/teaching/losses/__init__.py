"""Distillation losses. Each reads named tapped outputs and returns a per-sample loss [B]."""

from __future__ import annotations

from cann_distill.teaching.losses import (
    feature,  # noqa: F401  (registers fitnet, cw_mse, at, attn_mse)
    logit,  # noqa: F401  (registers ce, kd, dkd, dml)
    relation,  # noqa: F401  (registers sp, rkd)
)
from cann_distill.teaching.losses.base import LOSSES, Loss, Outputs, rank_rows

__all__ = ["LOSSES", "Loss", "Outputs", "rank_rows"]
