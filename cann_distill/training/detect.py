"""Training and prediction for `task: detect`: a plain epoch loop (lr warmup + cosine, clipping, EMA, AMP: the
classification loop's `Update`) and COCO-format predictions for evaluation.

Not here yet (docs/guides/detection.md): augmentation, best-epoch selection, early stopping, resume, torchrun.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from cann_distill.core.errors import StageError
from cann_distill.core.recipe import TrainConfig
from cann_distill.core.recipe_detect import DetectConfig
from cann_distill.data.coco import DetectionDataset
from cann_distill.models.detector import detections
from cann_distill.runtime.devices import CPU, Runtime
from cann_distill.runtime.terminal import ui
from cann_distill.training.loop import seed_everything
from cann_distill.training.update import EmaWeights, Update, make_optimizer

DetBatch = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""(images [B, 3, S, S], boxes [B, M, 4] in input pixels, labels [B, M] with -1 padding, dataset indices [B])."""
Step = Callable[[DetBatch], tuple[torch.Tensor, dict[str, float]]]


def fit_detector(
    model: nn.Module,
    extra: nn.Module,
    batches: Any,
    cfg: TrainConfig,
    step: Step,
    seed: int,
    desc: str,
    runtime: Runtime = CPU,
    on_epoch_end: Optional[Callable[[int, dict[str, float]], None]] = None,
) -> list[dict[str, float]]:
    """Train `model` (and the losses' own parameters, `extra`) for `cfg.epochs`; per-epoch means of the loss terms.

    After it, `model` holds the EMA weights when `cfg.ema_decay` is set.
    """
    seed_everything(seed)
    runtime.check_amp(cfg.amp)
    trained = nn.ModuleDict({"model": model, "extra": extra})
    opt = make_optimizer(trained, cfg)
    ema = EmaWeights(model, cfg.ema_decay) if cfg.ema_decay else None
    update = Update(trained, model, cfg, opt, ema, runtime.grad_scaler(cfg.amp))
    history: list[dict[str, float]] = []
    n_batches = max(1, len(batches))
    for epoch in range(cfg.epochs):
        trained.train()
        sums: dict[str, float] = {}
        seen, started = 0, time.perf_counter()
        for bi, batch in enumerate(ui.track(batches, f"{desc} {epoch + 1}/{cfg.epochs}", total=len(batches))):
            lr = update.set_lr(epoch + bi / n_batches, 1 / n_batches)
            batch = tuple(t.to(runtime.device) for t in batch)
            with runtime.autocast(cfg.amp):
                loss, parts = step(batch)  # type: ignore[arg-type]
            if not torch.isfinite(loss):
                raise StageError(f"{desc}: the loss is {loss.item()} at epoch {epoch + 1}, batch {bi + 1} ({parts}); lower the lr")
            update.backward(loss)
            parts = update(parts)
            bs = batch[0].shape[0]
            seen += bs
            for k, v in {"loss": float(loss.detach()), **parts}.items():
                sums[k] = sums.get(k, 0.0) + v * bs
        row = {"epoch": epoch + 1, "lr": lr, "images": seen, **{k: v / max(seen, 1) for k, v in sums.items()}}
        row["seconds"] = time.perf_counter() - started
        history.append(row)
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)
    if ema is not None:
        model.load_state_dict(ema.module.state_dict())
    model.eval()
    return history


@torch.no_grad()
def predict_boxes(
    model: Callable[[torch.Tensor], dict[str, Any]],
    dataset: DetectionDataset,
    cfg: DetectConfig,
    batch_size: int,
    desc: str,
    runtime: Runtime = CPU,
    indices: Optional[Sequence[int]] = None,
) -> list[dict[str, np.ndarray]]:
    """Per image of a split, in split order: {"boxes" [D, 4] x1 y1 x2 y2 in input pixels, "scores" [D] (highest first),
    "labels" [D]}, the post-NMS detections evaluation makes; `model` is the torch detector or anything that answers like
    it (an ONNX session, `quant.detect_int8`). `indices`: these images only, in their order."""
    from cann_distill.data.coco import detection_loader

    if isinstance(model, nn.Module):
        model.eval()
    found: list[dict[str, np.ndarray]] = [{} for _ in range(len(dataset))]
    batches = detection_loader(dataset, batch_size, train=False, seed=0, indices=indices)
    for images, _, _, index in ui.track(batches, desc, total=len(batches)):
        for i, det in zip(index.tolist(), detections(model(images.to(runtime.device)), cfg, dataset.size)):
            found[i] = {k: det[k].cpu().numpy() for k in ("boxes", "scores", "labels")}
    return found if indices is None else [found[i] for i in indices]


def predict_coco(
    model: Callable[[torch.Tensor], dict[str, Any]],
    dataset: DetectionDataset,
    cfg: DetectConfig,
    batch_size: int,
    desc: str,
    runtime: Runtime = CPU,
) -> list[dict[str, Any]]:
    """COCO result entries (image_id, category_id, bbox [x, y, w, h] in the image's own pixels, score) for a split
    (`predict_boxes`, scaled back from the input size)."""
    results: list[dict[str, Any]] = []
    split = dataset.split
    for i, det in enumerate(predict_boxes(model, dataset, cfg, batch_size, desc, runtime)):
        sx, sy = dataset.scale(i)
        image = split.images[i]
        for (x1, y1, x2, y2), score, label in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()):
            results.append(
                {
                    "image_id": image.id,
                    "category_id": split.category_ids[label],
                    "bbox": [x1 / sx, y1 / sy, (x2 - x1) / sx, (y2 - y1) / sy],
                    "score": score,
                }
            )
    return results
