"""torch → ONNX with a dynamic batch axis, checked by onnx.checker."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from cann_distill.core.errors import StageError

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
                model,
                (dummy,),
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                do_constant_folding=True,
            )
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        m = re.search(r"operator '([\w:.]+)'", str(exc))
        where = ""
        if m:
            layer = locate_op(model, dummy, m.group(1))
            where = f" (op {m.group(1)}" + (f" in layer '{layer}')" if layer else ")")
        raise StageError(f"ONNX export (opset {opset}) failed{where}: {first[:300]}") from exc
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise StageError(f"exported ONNX fails onnx.checker: {str(exc).splitlines()[0][:300]}") from exc


def locate_op(model: nn.Module, dummy: torch.Tensor, op: str) -> Optional[str]:
    """Module path of the first call to `op` (e.g. `aten::fft_rfft`), from a TorchScript trace's scopes."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, (dummy,), check_trace=False)
        for node in traced.inlined_graph.nodes():
            if node.kind() == op:
                scope = node.scopeName().split("/")[-1]
                return scope.replace("__module.", "", 1) or None
    except Exception:  # locating is best effort; the export error itself is what matters
        return None
    return None
