"""`cann-distill predict` for an exported detector (validate's `student_fp32.onnx` / `student_int8.onnx` of a
`task: detect` run): every image resized as training resized it (stretched to the model's square input), the dense
outputs decoded and suppressed by the same code as evaluation (`models.detector.detections`, the thresholds from
the model's metadata), the boxes scaled back to the image's own pixels; with `--out DIR`, the image with its boxes
drawn (PIL)."""

from __future__ import annotations

import colorsys
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from cann_distill.core.errors import UsageError
from cann_distill.core.files import atomic_path
from cann_distill.data.images import BadImageError, open_image
from cann_distill.models.detector import detections
from cann_distill.quant.deploy_meta import DeployInfo
from cann_distill.quant.detect_int8 import SessionDetector

DEFAULT_MIN_SCORE = 0.3
"""Boxes scored below this are not listed or drawn unless --min-score says otherwise (the model's own threshold,
0.05 by default, keeps what COCO's AP reads: far too many boxes to look at)."""


def load_images(paths: Sequence[Path]) -> list[Image.Image]:
    """The images as RGB, EXIF orientation applied (what a viewer shows); a bad file is a one-line usage error."""
    out = []
    for path in paths:
        try:
            out.append(open_image(path, "RGB"))
        except BadImageError as exc:
            raise UsageError(str(exc)) from None
    return out


def model_input(image: Image.Image, info: DeployInfo) -> np.ndarray:
    """[1, 3, S, S] float32: stretched to the model's input size (bilinear), scaled to [0, 1], normalised."""
    size = int(info.data.image_size or 0)
    x = np.asarray(image.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    mean, std = np.asarray(info.data.mean, np.float32), np.asarray(info.data.std, np.float32)
    return ((x - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)


def boxes_of(sess: Any, image: Image.Image, info: DeployInfo, min_score: float) -> list[dict[str, Any]]:
    """The image's detections scored at least `min_score`, best first: class, index, score, box (x1, y1, x2, y2)
    in the image's own pixels."""
    assert info.detect is not None and info.shapes is not None
    size = info.detect.data.image_size
    out = SessionDetector(sess, info.shapes)(torch.from_numpy(model_input(image, info)))
    det = detections(out, info.detect, size)[0]
    sx, sy = image.width / size, image.height / size
    found = []
    for box, score, label in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()):
        if score < min_score:
            continue
        x1, y1, x2, y2 = box
        found.append(
            {
                "class": info.classes[label] if label < len(info.classes) else str(label),
                "index": int(label),
                "score": float(score),
                "box": [round(x1 * sx, 2), round(y1 * sy, 2), round(x2 * sx, 2), round(y2 * sy, 2)],
            }
        )
    return found


def colour(index: int) -> tuple[int, int, int]:
    """A bright colour per class, spread around the hue circle (the golden ratio keeps neighbours apart)."""
    r, g, b = colorsys.hsv_to_rgb((index * 0.618034) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw(image: Image.Image, found: list[dict[str, Any]]) -> Image.Image:
    """A copy of the image with each box outlined in its class's colour and labelled `class score`."""
    out = image.copy()
    pen = ImageDraw.Draw(out)
    width = max(1, round(min(image.size) / 200))
    for d in found:
        x1, y1, x2, y2 = d["box"]
        c = colour(d["index"])
        pen.rectangle([x1, y1, x2, y2], outline=c, width=width)
        label = f"{d['class']} {d['score']:.2f}"
        left, top, right, bottom = pen.textbbox((x1, y1), label)
        ty = y1 - (bottom - top) - 2 if y1 - (bottom - top) - 2 >= 0 else y1
        pen.rectangle([x1, ty, x1 + (right - left) + 2, ty + (bottom - top) + 2], fill=c)
        pen.text((x1 + 1, ty), label, fill=(0, 0, 0))
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def output_names(paths: Sequence[Path]) -> list[str]:
    """`<stem>.png` per image; a stem that repeats gets `-2`, `-3`, ... so no drawing replaces another."""
    seen: dict[str, int] = {}
    names = []
    for path in paths:
        stem = path.stem or "image"
        seen[stem] = seen.get(stem, 0) + 1
        names.append(f"{stem}.png" if seen[stem] == 1 else f"{stem}-{seen[stem]}.png")
    return names


def predict_boxes(
    model: Path, sess: Any, info: DeployInfo, images: Sequence[Path], out_dir: Optional[Path], min_score: Optional[float]
) -> dict[str, Any]:
    """Boxes per image (and, with `out_dir`, the drawings written there as PNG, each whole or not at all)."""
    threshold = DEFAULT_MIN_SCORE if min_score is None else min_score
    if not 0 <= threshold <= 1:
        raise UsageError(f"--min-score must be in [0, 1], got {threshold}")
    if out_dir is not None and out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir}: not a folder")
    pictures = load_images(images)
    results = [boxes_of(sess, img, info, threshold) for img in pictures]
    written = []
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, img, found in zip(output_names(images), pictures, results):
            target = out_dir / name
            with atomic_path(target) as tmp:
                draw(img, found).save(tmp, format="PNG")
                tmp.chmod(0o666 & ~_umask())  # a picture to look at: the usual file mode, not the temp file's 0600
            written.append(str(target))
    return {
        "model": str(model),
        "task": "detect",
        "classes": len(info.classes),
        "image_size": info.data.image_size,
        "min_score": threshold,
        "predictions": [
            {"image": str(p), "size": [img.width, img.height], "boxes": found, **({"drawn": written[i]} if written else {})}
            for i, (p, img, found) in enumerate(zip(images, pictures, results))
        ],
    }
