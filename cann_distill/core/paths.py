"""Where cann-distill keeps files that outlive a run dir."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/cann-distill, else ~/.cache/cann-distill."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "cann-distill"


def resolve_cache_dir(configured: Optional[str]) -> Path:
    return Path(configured).expanduser() if configured else default_cache_dir()
