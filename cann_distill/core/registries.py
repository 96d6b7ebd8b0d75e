"""The registries a recipe names components from, and the device names it accepts.

The registries live here, below the recipe schema, and start empty: each names the package whose
import registers the built-ins (`provider`), and loads it the first time it is asked. So
importing the schema imports no torch; checking a recipe's losses, selectors or temperature
schedules loads their package then.
"""

from __future__ import annotations

from typing import Any

from cann_distill.core.registry import Registry

LOSSES: Registry[Any] = Registry("loss", provider="cann_distill.teaching.losses")
SELECTORS: Registry[Any] = Registry("selector", provider="cann_distill.selection")
SCHEDULES: Registry[Any] = Registry("temperature schedule", provider="cann_distill.teaching.temperature")
DETECTION_LOSSES: Registry[Any] = Registry("detection loss", provider="cann_distill.teaching.losses.detection")  # task: detect
DETECTION_SELECTORS: Registry[Any] = Registry("detection selector", provider="cann_distill.selection.detection")  # task: detect

DEVICE_PATTERN = r"^(auto|cpu|cuda|npu)(:\d+)?$"
