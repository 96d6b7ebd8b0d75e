"""Distillation losses. Each reads named tapped outputs and returns a per-sample loss [B]."""

from __future__ import annotations

from cann_distill.losses.base import LOSSES, Loss, Outputs
from cann_distill.losses import logit  # noqa: F401  (registers ce, kd)

__all__ = ["LOSSES", "Loss", "Outputs"]
