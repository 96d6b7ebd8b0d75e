"""Critical-sample mining strategies: teacher outputs → per-sample criticality score (higher = more critical)."""

from __future__ import annotations

from cann_distill.selection import dynamics, strategies  # noqa: F401  (registers the built-ins)
from cann_distill.selection.base import SELECTORS, Selector

__all__ = ["SELECTORS", "Selector"]
