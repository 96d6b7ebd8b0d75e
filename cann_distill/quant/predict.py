"""`cann-distill predict`: an exported model (FP32 or INT8 ONNX) on image files, preprocessed exactly as
evaluation preprocessed them (the same decoding, timm eval transform and normalisation, read from the model's
metadata), with the top-k classes by name; a detector's boxes (`quant.detect_predict`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from cann_distill.core.errors import UsageError, cut
from cann_distill.data.images import BadImageError, open_image
from cann_distill.data.transforms import build_transforms, pil_mode, pixel_norm
from cann_distill.quant.deploy_meta import DeployInfo, read_deploy_metadata


@dataclass(frozen=True)
class Guess:
    rank: int
    index: int
    name: str
    probability: float


def open_model(path: Path) -> tuple[Any, DeployInfo]:
    """An onnxruntime CPU session and the model's deployment metadata."""
    import onnxruntime as ort

    if not path.is_file():
        raise UsageError(f"model not found: {path}")
    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"{path}: not an ONNX model onnxruntime can load ({cut(first, 160)})") from None
    info = read_deploy_metadata(dict(sess.get_modelmeta().custom_metadata_map), str(path))
    return sess, info


def image_batch(paths: Sequence[Path], info: DeployInfo) -> np.ndarray:
    """The images as the model's input [N, C, H, W] float32: any size (resized per the metadata), RGBA (alpha dropped),
    16-bit (high byte), EXIF orientation applied, decompression bombs refused; a bad file is a one-line usage error."""
    _, eval_tf = build_transforms(info.data)
    norm = pixel_norm(info.data)
    size = int(info.data.image_size or 32)
    batch = []
    for path in paths:
        try:
            image = open_image(path, pil_mode(info.data), min_side=size)  # type: ignore[arg-type]
        except BadImageError as exc:
            raise UsageError(str(exc)) from None
        batch.append(norm(eval_tf(image).unsqueeze(0)).numpy())
    return np.concatenate(batch).astype(np.float32)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def top_k(probs: np.ndarray, classes: Sequence[str], k: int) -> list[list[Guess]]:
    k = min(k, probs.shape[1])
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[Guess(r + 1, int(i), classes[int(i)], float(row[i])) for r, i in enumerate(idx)] for row, idx in zip(probs, order)]


def predict(
    model: Path, images: Sequence[Path], k: int = 5, out_dir: Optional[Path] = None, min_score: Optional[float] = None
) -> dict[str, Any]:
    """Top-k guesses per image; the model's output width must match its class list. A detector (its metadata says
    so): the boxes per image (`quant.detect_predict`), drawn into `out_dir` when given."""
    if k < 1:
        raise UsageError(f"--top-k must be at least 1, got {k}")
    sess, info = open_model(model)
    if info.detect is not None:
        from cann_distill.quant.detect_int8 import OUTPUTS
        from cann_distill.quant.detect_predict import predict_boxes

        names = [o.name for o in sess.get_outputs()]
        if names != list(OUTPUTS):
            raise UsageError(f"{model}: its metadata describes a detector, but its outputs are {names}, not {list(OUTPUTS)}")
        return predict_boxes(model, sess, info, images, out_dir, min_score)
    if out_dir is not None or min_score is not None:
        raise UsageError(f"--out and --min-score are for detection models; {model} is a classifier (it has no box metadata)")
    x = image_batch(images, info)
    input_name = sess.get_inputs()[0].name
    logits = np.concatenate([sess.run(None, {input_name: x[i : i + 1]})[0] for i in range(len(x))])
    if logits.ndim != 2 or logits.shape[1] != len(info.classes):
        raise UsageError(f"{model}: the model outputs {logits.shape[-1]} scores but its metadata names {len(info.classes)} classes")
    guesses = top_k(softmax(logits), info.classes, k)
    return {
        "model": str(model),
        "classes": len(info.classes),
        "image_size": info.data.image_size,
        "predictions": [{"image": str(p), "top": [asdict(g) for g in gs]} for p, gs in zip(images, guesses)],
    }
