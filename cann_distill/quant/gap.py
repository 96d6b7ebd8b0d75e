"""Per-layer quantization gap: FP32 vs INT8 activations, tensor by tensor (onnxruntime's qdq_loss_debug)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from cann_distill.quant.ort import ArrayReader


def module_path(node_name: str) -> str:
    """`/blocks/blocks.0/blocks.0.0/conv_dw/Conv` → `blocks.0.0.conv_dw` (TorchScript exporter scopes)."""
    parts = [p for p in node_name.split("/") if p][:-1]
    path = ""
    for part in parts:
        path = part if (not path or part.startswith(path + ".")) else f"{path}.{part}"
    return path or node_name


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom > 0 else 1.0


def _sqnr(ref: np.ndarray, test: np.ndarray) -> float:
    noise = np.sum((ref.astype(np.float64) - test) ** 2)
    signal = np.sum(ref.astype(np.float64) ** 2)
    if noise == 0:
        return math.inf
    return float(10 * np.log10(signal / noise)) if signal > 0 else -math.inf


def layer_gap(fp32: Path, int8: Path, images: np.ndarray, work: Path) -> list[dict[str, Any]]:
    """One row per activation tensor found in both models, worst first.

    `fp32` must be the float model that was quantized (after pre-processing), so tensor and node
    names line up. `local_sqnr_db` compares the INT8 model's tensor just before and after its own
    Q/DQ pair: the error this layer adds, which ranks the rows. `sqnr_db` compares the float
    model's activation with the INT8 model's: the error accumulated up to this layer.
    """
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    aug32, aug8 = work / "gap_fp32.onnx", work / "gap_int8.onnx"
    modify_model_output_intermediate_tensors(str(fp32), str(aug32))
    modify_model_output_intermediate_tensors(str(int8), str(aug8))
    providers = ["CPUExecutionProvider"]
    f_act = collect_activations(str(aug32), ArrayReader(images), execution_providers=providers)
    q_act = collect_activations(str(aug8), ArrayReader(images), execution_providers=providers)
    match = create_activation_matching(q_act, f_act)
    producers = {out: (n.name, n.op_type) for n in onnx.load(str(fp32)).graph.node for out in n.output}
    rows = []
    for tensor, m in match.items():
        if "float" not in m or tensor not in producers:
            continue
        ref = np.concatenate(m["float"])
        got = np.concatenate(m["post_qdq"])
        node, op = producers[tensor]
        row = {"tensor": tensor, "node": node, "module": module_path(node), "op": op, "sqnr_db": _sqnr(ref, got),
               "cosine": _cosine(ref, got)}
        if m.get("pre_qdq") is not None:
            row["local_sqnr_db"] = _sqnr(np.concatenate(m["pre_qdq"]), got)
        rows.append(row)
    rows.sort(key=lambda r: (r.get("local_sqnr_db", math.inf), r["sqnr_db"]))
    return rows
