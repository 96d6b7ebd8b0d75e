"""What an exported ONNX model needs to be used on its own: its class names and its preprocessing, stored in the
model's metadata_props (`cann_distill.classes`, `cann_distill.preprocess`, both JSON) when validate exports it,
and read back, checked as untrusted input, by `cann-distill predict`. A detector also carries what decoding its
dense outputs into boxes needs (`cann_distill.detect`: strides, level sizes, score threshold, NMS IoU)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

from pydantic import ValidationError

from cann_distill.core.errors import UsageError, cut
from cann_distill.core.recipe import DataConfig, schema_errors
from cann_distill.core.recipe_detect import DetectConfig
from cann_distill.core.version import __version__
from cann_distill.data.transforms import channels_of, norm_stats

CLASSES = "cann_distill.classes"
PREPROCESS = "cann_distill.preprocess"
VERSION = "cann_distill.version"
DETECT = "cann_distill.detect"
MAX_CLASSES = 100_000
MAX_NAME_CHARS = 1_000


def deploy_metadata(classes: Sequence[str], data: DataConfig) -> dict[str, str]:
    """metadata_props for a model trained on `data` (the resolved recipe's) with these classes, in output order."""
    mean, std = norm_stats(data)
    size = int(data.image_size or 32)
    preprocess = {
        "image_size": size,
        "channels": channels_of(data),
        "color": "L" if channels_of(data) == 1 else "RGB",
        "mean": list(mean),
        "std": list(std),
        "interpolation": data.interpolation or "bilinear",
        "crop_pct": float(data.crop_pct or 1.0),
        "resize": "shorter side to image_size / crop_pct (timm's eval transform), then a centre crop of image_size",
        "scale": "pixels / 255, minus mean, over std; NCHW float32",
    }
    return {CLASSES: json.dumps(list(classes), ensure_ascii=False), PREPROCESS: json.dumps(preprocess), VERSION: __version__}


def detect_metadata(classes: Sequence[str], cfg: DetectConfig, shapes: Sequence[tuple[int, int]]) -> dict[str, str]:
    """metadata_props for an exported detector: its classes, its preprocessing (a stretch to image_size x image_size,
    as training and evaluation resize) and what decoding its dense outputs needs (`cann_distill.detect`)."""
    size = cfg.data.image_size
    preprocess = {
        "image_size": size,
        "channels": 3,
        "color": "RGB",
        "mean": list(cfg.mean),
        "std": list(cfg.std),
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "resize": "stretched to image_size x image_size (the aspect ratio is not kept); boxes are scaled back",
        "scale": "pixels / 255, minus mean, over std; NCHW float32",
    }
    decode = {
        "outputs": ["cls", "reg", "ctr"],
        "strides": list(cfg.strides),
        "shapes": [list(s) for s in shapes],
        "score_threshold": cfg.score_threshold,
        "nms_iou": cfg.nms_iou,
        "max_detections": cfg.max_detections,
        "score": "sqrt(sigmoid(cls) * sigmoid(ctr)); boxes = location -/+ reg (l, t, r, b) in input pixels; class-wise NMS",
    }
    return {
        CLASSES: json.dumps(list(classes), ensure_ascii=False),
        PREPROCESS: json.dumps(preprocess),
        DETECT: json.dumps(decode),
        VERSION: __version__,
    }


def stamp_onnx(paths: Iterable[Path], metadata: dict[str, str]) -> None:
    """Write `metadata` into each existing ONNX file's metadata_props (replacing keys it already has)."""
    import onnx

    for path in paths:
        if not path.is_file():
            continue
        model = onnx.load(str(path))
        kept = [(p.key, p.value) for p in model.metadata_props if p.key not in metadata]
        del model.metadata_props[:]
        for key, value in [*kept, *metadata.items()]:
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(model, str(path))


@dataclass(frozen=True)
class DeployInfo:
    classes: list[str]
    data: DataConfig  # image_size, channels, mean, std, crop_pct, interpolation: what the eval transform needs
    version: str
    detect: Optional[DetectConfig] = None  # a detector's decoding settings (strides, thresholds); None for a classifier
    shapes: Optional[list[tuple[int, int]]] = None  # a detector's pyramid level sizes (H, W)


def _json(props: dict[str, str], key: str, source: str) -> Any:
    try:
        return json.loads(props[key])
    except (ValueError, RecursionError):
        raise UsageError(f"{source}: metadata {key} is not valid JSON") from None


def read_deploy_metadata(props: dict[str, str], source: str) -> DeployInfo:
    """Class names and preprocessing from a model's metadata_props; a one-line usage error naming what is missing or wrong."""
    missing = [k for k in (CLASSES, PREPROCESS) if k not in props]
    if missing:
        raise UsageError(
            f"{source}: no {' or '.join(missing)} in the model's metadata (class names and preprocessing); "
            "models exported by `cann-distill validate` carry them (a model exported before they did: rerun `cann-distill validate RECIPE`)"
        )
    classes, pre = _json(props, CLASSES, source), _json(props, PREPROCESS, source)
    if not isinstance(classes, list) or not classes or len(classes) > MAX_CLASSES or not all(isinstance(c, str) for c in classes):
        raise UsageError(f"{source}: metadata {CLASSES} must be a non-empty list of class names")
    if not isinstance(pre, dict):
        raise UsageError(f"{source}: metadata {PREPROCESS} must be a mapping")
    fields = {k: pre.get(k) for k in ("image_size", "channels", "mean", "std", "interpolation", "crop_pct")}
    try:
        data = DataConfig.model_validate({"source": "imagefolder", "augment": {"enabled": False}, **fields}, strict=True)
    except ValidationError as exc:
        problems = "; ".join(f"{loc}: {msg}" for loc, msg in schema_errors(exc))
        raise UsageError(f"{source}: metadata {PREPROCESS}: {cut(problems, 300)}") from None
    missing_fields = [k for k, v in fields.items() if v is None]
    if missing_fields:
        raise UsageError(f"{source}: metadata {PREPROCESS} lacks {', '.join(missing_fields)}")
    if data.mean is None or data.std is None or not len(data.mean) == len(data.std) == data.channels:
        raise UsageError(f"{source}: metadata {PREPROCESS}: mean and std need one value per channel ({data.channels})")
    if any(s <= 0 for s in data.std):
        raise UsageError(f"{source}: metadata {PREPROCESS}: std values must be > 0")
    detect, shapes = _detect_of(props, data, source) if DETECT in props else (None, None)
    return DeployInfo([c[:MAX_NAME_CHARS] for c in classes], data, str(props.get(VERSION, "?"))[:40], detect, shapes)


def _detect_of(props: dict[str, str], data: DataConfig, source: str) -> tuple[DetectConfig, list[tuple[int, int]]]:
    """A detector's decoding settings from its metadata, checked as the recipe checks them; one line when wrong."""
    raw = _json(props, DETECT, source)
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: metadata {DETECT} must be a mapping")
    shapes = raw.get("shapes")
    fields = {k: raw.get(k) for k in ("strides", "score_threshold", "nms_iou", "max_detections")}
    try:
        cfg = DetectConfig.model_validate(
            {**fields, "mean": data.mean, "std": data.std, "data": {"image_size": data.image_size}}, strict=True
        )
    except ValidationError as exc:
        problems = "; ".join(f"{loc}: {msg}" for loc, msg in schema_errors(exc))
        raise UsageError(f"{source}: metadata {DETECT}: {cut(problems, 300)}") from None
    levels = shapes if isinstance(shapes, list) else []
    ok = len(levels) == len(cfg.strides) and all(
        isinstance(s, list) and len(s) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 4096 for v in s)
        for s in levels
    )
    if not ok:
        raise UsageError(f"{source}: metadata {DETECT}: shapes must list one [height, width] per stride ({len(cfg.strides)})")
    return cfg, [(int(h), int(w)) for h, w in levels]
