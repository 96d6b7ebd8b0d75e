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


def augment(model_path: Path, out: Path) -> None:
    """Expose every float intermediate tensor as a graph output, shape kept.

    (onnxruntime's `modify_model_output_intermediate_tensors` flattens them, losing the channel axis.)
    """
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(model_path)))
    g = model.graph
    existing = {o.name for o in g.output}
    produced = {t for n in g.node for t in n.output}
    for vi in g.value_info:
        if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT and vi.name in produced and vi.name not in existing:
            g.output.append(onnx.helper.make_tensor_value_info(vi.name, onnx.TensorProto.FLOAT, None))
    onnx.save(model, str(out))


def collect(augmented: Path, images: np.ndarray) -> dict[str, list[np.ndarray]]:
    """Every graph output per batch, unoptimized graph (so each Q/DQ pair is really executed)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(augmented), sess_options=so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    out: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for feed in ArrayReader(images):
        for name, value in zip(names, sess.run(names, feed)):
            out[name].append(value)
        for name, value in feed.items():  # the graph input, so its own quantization noise is measured
            out.setdefault(name, []).append(value)
    return out


def channel_sqnr(ref: np.ndarray, test: np.ndarray, lo: float = -20.0, hi: float = 60.0) -> float:
    """Mean over channels (axis 1) of each channel's SQNR in dB, clipped to [lo, hi].

    Plain SQNR is energy-weighted: one large channel that quantizes well hides small channels
    that per-tensor activation quantization crushes to zero, which the next BatchNorm rescales.
    Averaging per channel exposes that.
    """
    if ref.ndim < 2:
        return float(np.clip(_sqnr(ref, test), lo, hi))
    r = np.moveaxis(ref, 1, 0).reshape(ref.shape[1], -1).astype(np.float64)
    t = np.moveaxis(test, 1, 0).reshape(test.shape[1], -1).astype(np.float64)
    signal = (r**2).sum(axis=1)
    noise = ((r - t) ** 2).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        db = 10 * np.log10(signal / noise)
    db = np.where(noise == 0, hi, db)
    return float(np.clip(np.nan_to_num(db, nan=hi, posinf=hi, neginf=lo), lo, hi).mean())


def channel_outlier(ref: np.ndarray) -> tuple[float, int]:
    """(largest channel's |max| over the median channel's, that channel) for an activation [N, C, ...].

    Per-tensor INT8 activations share one scale across channels: with one channel 25× the others'
    range, the others get about 256 / 25 ≈ 10 levels, whatever the calibration. 1.0 for a tensor
    without a channel axis or without a non-zero channel.
    """
    if ref.ndim < 2 or ref.shape[1] < 2:
        return 1.0, 0
    peak = np.abs(np.moveaxis(ref, 1, 0).reshape(ref.shape[1], -1)).max(axis=1)
    median = float(np.median(peak[peak > 0])) if (peak > 0).any() else 0.0
    top = int(np.argmax(peak))
    return (float(peak[top]) / median if median > 0 else 1.0), top


def layer_gap(fp32: Path, int8: Path, images: np.ndarray, work: Path, input_cap_db: float = 60.0) -> list[dict[str, Any]]:
    """One row per activation tensor found in both models, worst first.

    `fp32` must be the float model that was quantized (after pre-processing), so tensor and node
    names line up. `sqnr_db` compares the float model's activation with the INT8 model's (mean
    per-channel SQNR, see `channel_sqnr`): the error accumulated up to this layer. `gap_db` is how much SQNR this layer loses relative to
    its (measured) inputs, i.e. the error the layer itself adds; rows are ranked by it. The
    network input counts as `input_cap_db`. `outlier_ratio` / `outlier_channel`: `channel_outlier` of
    the float activation.
    """
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import create_activation_matching

    aug32, aug8 = work / "gap_fp32.onnx", work / "gap_int8.onnx"
    augment(fp32, aug32)
    augment(int8, aug8)
    match = create_activation_matching(collect(aug8, images), collect(aug32, images))
    graph = onnx.load(str(fp32)).graph
    producers = {out: n for n in graph.node for out in n.output}
    sqnr: dict[str, float] = {}
    cos: dict[str, float] = {}
    outlier: dict[str, tuple[float, int]] = {}
    for tensor, m in match.items():
        if "float" in m and m.get("post_qdq") is not None and tensor in producers:
            ref, got = np.concatenate(m["float"]), np.concatenate(m["post_qdq"])
            sqnr[tensor], cos[tensor], outlier[tensor] = channel_sqnr(ref, got), _cosine(ref, got), channel_outlier(ref)
    graph_inputs = {i.name for i in graph.input}
    for tensor, m in match.items():  # input quantization noise seeds the chain
        if tensor in graph_inputs and m.get("pre_qdq") is not None and m.get("post_qdq") is not None:
            sqnr[tensor] = channel_sqnr(np.concatenate(m["pre_qdq"]), np.concatenate(m["post_qdq"]))

    def input_sqnr(tensor: str, depth: int = 0) -> float:
        """SQNR entering the node that produces `tensor`: min over its measured inputs, walking back."""
        node = producers.get(tensor)
        values = []
        for name in node.input if node is not None else []:
            if name in sqnr:
                values.append(sqnr[name])
            elif name in producers and depth < 4:
                values.append(input_sqnr(name, depth + 1) if producers[name].input else input_cap_db)
        return min(values) if values else input_cap_db

    rows = []
    for tensor, value in sqnr.items():
        if tensor not in producers:
            continue
        node = producers[tensor]
        before = min(input_sqnr(tensor), input_cap_db)
        rows.append(
            {
                "tensor": tensor,
                "node": node.name,
                "module": module_path(node.name),
                "op": node.op_type,
                "sqnr_db": value,
                "input_sqnr_db": before,
                "gap_db": before - min(value, input_cap_db),
                "cosine": cos[tensor],
                "outlier_ratio": outlier[tensor][0],
                "outlier_channel": outlier[tensor][1],
            }
        )
    rows.sort(key=lambda r: -r["gap_db"])
    return rows
