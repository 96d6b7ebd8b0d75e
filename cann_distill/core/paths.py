"""Where cann-distill keeps files that outlive a run dir, and where the packaged photos are."""

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


PHOTO_EXTS = (".jpg", ".jpeg", ".png", ".webp")


def packaged_photos_dir() -> Path:
    """The nine photographs of `data.source: photos` (see ATTRIBUTION.md there)."""
    return Path(__file__).resolve().parent.parent / "datasets" / "photos"


def photos_dir(root: Optional[str]) -> Path:
    """`data.root` of a photos recipe, else the packaged photos."""
    return Path(root) if root else packaged_photos_dir()


def photo_files(folder: Path) -> list[Path]:
    """The photos in `folder` (not recursive), sorted by name: one class each."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in PHOTO_EXTS and p.is_file())
