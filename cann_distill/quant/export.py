"""torch → ONNX with a dynamic batch axis, checked by onnx.checker."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from cann_distill.errors import StageError

INPUT = "input"
OUTPUT = "logits"


def export_onnx(model: nn.Module, path: Path, in_chans: int, image_size: int, opset: int) -> None:
    """Export with the TorchScript exporter (`dynamo=False`): the dynamo one ignores the asked opset."""
    import onnx

    model.eval()
    dummy = torch.zeros(1, in_chans, image_size, image_size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (dummy,), str(path), dynamo=False, opset_version=opset, input_names=[INPUT], output_names=[OUTPUT],
                dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}, do_constant_folding=True,
            )
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StageError(f"ONNX export (opset {opset}) failed: {first[:300]}") from exc
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise StageError(f"exported ONNX fails onnx.checker: {str(exc).splitlines()[0][:300]}") from exc
