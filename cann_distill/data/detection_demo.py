"""The packaged detection demo set, built offline from what ships: scikit-learn's 8x8 digits pasted at several
scales on crops of the packaged photographs, written as COCO JSON + PNG files to the cache dir.

Deterministic in its settings (`detect.data.demo`, the image size): the same settings give the same bytes, and
the folder is named by their hash, so it is built once and reused. Training and validation images draw on
disjoint digit samples and disjoint bands of the photos (`cann_distill.data.photos`). A digit is painted in a
colour that contrasts with the patch under it; its box is the tight box of its visible stroke.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cann_distill.core.files import sha256_json
from cann_distill.core.recipe_detect import DemoSetConfig
from cann_distill.data.photos import BANDS, crop_boxes, packaged_photos_dir, photo_files

VERSION = 1  # bump when the generator's output changes
SPLITS = ("train", "val")
_MAX_OVERLAP = 0.1  # IoU above which a new digit is placed elsewhere
_STROKE = 0.25  # alpha above which a pixel counts as the digit's stroke (its box)


def demo_key(cfg: DemoSetConfig, size: int) -> str:
    return sha256_json({"version": VERSION, "demo": cfg.model_dump(mode="json"), "size": size})[:16]


def _photos(width: int = 320) -> list[Image.Image]:
    """The packaged photos, shrunk once (crops of a 64-px image need no more)."""
    out = []
    for f in photo_files(packaged_photos_dir()):
        with Image.open(f) as img:
            rgb = img.convert("RGB")
        out.append(rgb.resize((width, max(8, round(rgb.height * width / rgb.width))), Image.Resampling.BILINEAR))
    return out


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    iw = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def _paste(canvas: np.ndarray, glyph: np.ndarray, x: int, y: int, rng: np.random.Generator) -> list[int] | None:
    """Paint `glyph` (alpha in [0, 1], side s) at (x, y); the [x, y, w, h] box of its stroke, None if too faint."""
    s = glyph.shape[0]
    patch = canvas[y : y + s, x : x + s].astype(np.float32)
    bright = patch.mean() > 127
    colour = rng.integers(0, 60, 3) if bright else rng.integers(195, 256, 3)
    a = glyph[..., None]
    canvas[y : y + s, x : x + s] = np.clip(patch * (1 - a) + colour * a, 0, 255).astype(np.uint8)
    ys, xs = np.nonzero(glyph > _STROKE)
    if len(xs) == 0:
        return None
    return [int(x + xs.min()), int(y + ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def _glyph(digit: np.ndarray, side: int) -> np.ndarray:
    """An 8x8 digit (0..16) scaled to side x side, as alpha in [0, 1]."""
    img = Image.fromarray((digit / 16.0).astype(np.float32), mode="F")
    return np.clip(np.asarray(img.resize((side, side), Image.Resampling.BILINEAR)), 0.0, 1.0)


def _split(cfg: DemoSetConfig, size: int, split: str, out: Path, photos: list[Image.Image]) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    pool = np.arange(len(digits.target))[SPLITS.index(split) :: 2]  # even samples train, odd samples validate
    rng = np.random.default_rng([cfg.seed, SPLITS.index(split)])
    count = cfg.train_images if split == "train" else cfg.val_images
    images: list[dict[str, Any]] = []
    anns: list[dict[str, Any]] = []
    (out / split).mkdir(parents=True)
    for i in range(count):
        photo = photos[int(rng.integers(len(photos)))]
        box = crop_boxes(photo.width, photo.height, BANDS[split], 1, rng)[0]
        canvas = np.array(photo.resize((size, size), Image.Resampling.BILINEAR, box=box))
        placed: list[tuple[int, int, int, int]] = []
        for _ in range(int(rng.integers(cfg.objects[0], cfg.objects[1] + 1))):
            side = int(rng.integers(cfg.digit_size[0], min(cfg.digit_size[1], size - 2) + 1))
            for _try in range(20):
                x, y = (int(v) for v in rng.integers(0, size - side + 1, 2))
                if all(_iou((x, y, x + side, y + side), p) <= _MAX_OVERLAP for p in placed):
                    break
            else:
                continue
            k = int(pool[rng.integers(len(pool))])
            bbox = _paste(canvas, _glyph(digits.images[k], side), x, y, rng)
            if bbox is None:
                continue
            placed.append((x, y, x + side, y + side))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": int(digits.target[k]) + 1,
                    "bbox": bbox,
                    "area": bbox[2] * bbox[3],
                    "iscrowd": 0,
                }
            )
        name = f"{i:06d}.png"
        Image.fromarray(canvas).save(out / split / name, compress_level=1)
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
    categories = [{"id": d + 1, "name": str(d)} for d in range(10)]
    (out / f"{split}.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))


def demo_files(cfg: DemoSetConfig, size: int, cache_dir: Path) -> dict[str, tuple[Path, Path]]:
    """split -> (COCO JSON, images folder) of the demo set, built into `<cache_dir>/detect-demo/<key>/` if absent."""
    root = cache_dir / "detect-demo" / demo_key(cfg, size)
    files = {s: (root / f"{s}.json", root / s) for s in SPLITS}
    if all(j.is_file() for j, _ in files.values()):
        return files
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        photos = _photos()
        for s in SPLITS:
            _split(cfg, size, s, tmp, photos)
        try:
            os.replace(tmp, root)  # whole or not at all; a finished copy from another process wins
        except OSError:
            if not all(j.is_file() for j, _ in files.values()):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return files
