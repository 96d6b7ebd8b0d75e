"""Photo-crop classification sets: each class is one photograph, each sample a crop of it.

Every photo is cut into five bands along its long side; crops for train come from bands 0, 2 and 4,
val from band 1 and test from band 3, so no test pixel was ever seen in training: a test crop is a
new view of the scene (its texture, colours and objects), not a shifted copy of a training crop.
Crops are squares of 35-100% of the band's short side, resized to `size` px with antialiasing.

The packaged set (`data.source: photos`) is built from the photos in `cann_distill/datasets/photos`
(Ubuntu community wallpapers, CC BY 4.0 / CC BY-SA 4.0; see ATTRIBUTION.md there); the photo
benchmarks build larger sets from Debian's wallpaper packages with the same function.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from cann_distill.core.paths import packaged_photos_dir, photo_files, photos_dir

__all__ = [
    "BANDS",
    "SCALE",
    "CropSet",
    "band_box",
    "class_name",
    "crop_boxes",
    "crop_set",
    "packaged_photos_dir",
    "photo_files",
    "photos_dir",
]

BANDS = {"train": (0, 2, 4), "val": (1,), "test": (3,)}
"""Which of the five bands along a photo's long side each split crops from."""
SCALE = (0.35, 1.0)
"""Crop side as a fraction of the band's short side."""


@dataclass(frozen=True)
class CropSet:
    """uint8 crops [N, size, size, 3] and their class indices, one split."""

    pixels: np.ndarray
    targets: np.ndarray


def band_box(width: int, height: int, band: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of band `band` of 5 along the long side."""
    if width >= height:
        lo, hi = width * band // 5, width * (band + 1) // 5
        return lo, 0, hi, height
    lo, hi = height * band // 5, height * (band + 1) // 5
    return 0, lo, width, hi


def crop_boxes(width: int, height: int, bands: Sequence[int], count: int, rng: np.random.Generator) -> list[tuple[int, int, int, int]]:
    """`count` square crop boxes spread evenly over `bands` (then at random inside each band)."""
    boxes = []
    for k in range(count):
        left, top, right, bottom = band_box(width, height, bands[k % len(bands)])
        short = min(right - left, bottom - top)
        side = max(8, int(round(short * rng.uniform(*SCALE))))
        x = left + int(rng.integers(0, right - left - side + 1))
        y = top + int(rng.integers(0, bottom - top - side + 1))
        boxes.append((x, y, x + side, y + side))
    return boxes


def crop_set(photos: Sequence[Image.Image], split: str, per_class: int, size: int, seed: int) -> CropSet:
    """`per_class` crops of every photo (class i = photos[i]) for one split, deterministic in `seed`."""
    if split not in BANDS:
        raise ValueError(f"unknown split {split!r} (known: {', '.join(BANDS)})")
    rng = np.random.default_rng([seed, list(BANDS).index(split)])
    pixels = np.empty((len(photos) * per_class, size, size, 3), dtype=np.uint8)
    targets = np.repeat(np.arange(len(photos), dtype=np.int64), per_class)
    for ci, photo in enumerate(photos):
        rgb = photo.convert("RGB")
        for k, box in enumerate(crop_boxes(rgb.width, rgb.height, BANDS[split], per_class, rng)):
            pixels[ci * per_class + k] = np.asarray(rgb.resize((size, size), Image.Resampling.LANCZOS, box=box))
    return CropSet(pixels, targets)


def class_name(path: Path) -> str:
    """A photo's class name: its file name without extension."""
    return Path(path).stem
