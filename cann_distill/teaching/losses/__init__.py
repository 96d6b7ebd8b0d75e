"""Distillation losses. Each reads named tapped outputs and returns a per-sample loss [B]."""

from __future__ import annotations

from cann_distill.teaching.losses.base import LOSSES, Loss, Outputs
from cann_distill.teaching.losses import logit  # noqa: F401  (registers ce, kd, dkd)
from cann_distill.teaching.losses import feature  # noqa: F401  (registers fitnet, cw_mse, at, attn_mse)
from cann_distill.teaching.losses import relation  # noqa: F401  (registers sp, rkd)

__all__ = ["LOSSES", "Loss", "Outputs"]
