"""INT8 for `task: detect`: the detector's dense outputs (class logits, box distances, centre-ness) exported to ONNX,
quantized statically with onnxruntime (QDQ, the classification path's `quantize_int8`), and run for COCO evaluation.
Decoding and NMS stay outside the graph (`cann_distill.models.detector.detections`, the same code as in torch)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cann_distill.core.errors import StageError
from cann_distill.quant.export import INPUT

OUTPUTS = ("cls", "reg", "ctr")


class DenseOutputs(nn.Module):
    """The detector as ONNX sees it: one image batch in, (cls [B, N, K], reg [B, N, 4], ctr [B, N]) out."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        out = self.detector(x)
        return out["cls"], out["reg"], out["ctr"]


def export_detector(model: nn.Module, path: Path, image_size: int, opset: int) -> list[tuple[int, int]]:
    """Export with a dynamic batch axis and check it; the pyramid levels' (H, W), which decoding needs."""
    import onnx

    model.eval()
    dummy = torch.zeros(1, 3, image_size, image_size)
    with torch.no_grad():
        shapes = [(int(f.shape[-2]), int(f.shape[-1])) for f in model(dummy)["fpn"]]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                DenseOutputs(model).eval(),  # the exporter restores the mode of what it is given, recursively
                (dummy,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT],
                output_names=list(OUTPUTS),
                dynamic_axes={INPUT: {0: "batch"}, **{o: {0: "batch"} for o in OUTPUTS}},
                do_constant_folding=True,
            )
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StageError(f"detector ONNX export (opset {opset}) failed: {first[:300]}") from exc
    return shapes


class SessionDetector:
    """An onnxruntime session that answers like the torch detector (`cls`, `reg`, `ctr`, and the level `shapes`)."""

    def __init__(self, sess: Any, shapes: list[tuple[int, int]]) -> None:
        self.sess, self.shapes = sess, shapes

    def __call__(self, x: torch.Tensor) -> dict[str, Any]:
        cls, reg, ctr = self.sess.run(list(OUTPUTS), {INPUT: x.detach().cpu().numpy().astype(np.float32)})
        return {"cls": torch.from_numpy(cls), "reg": torch.from_numpy(reg), "ctr": torch.from_numpy(ctr), "shapes": self.shapes}
