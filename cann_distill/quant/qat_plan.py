"""QAD planning from onnxruntime's own PTQ model: where the fake quantizers go and which layers stay float."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from cann_distill.core.errors import RecipeError
from cann_distill.quant.qat import FLOAT_ON_CPU, SHARED_OPS, QuantPlan, _module_types, conv_bn_pairs, recorded

log = logging.getLogger(__name__)


def _initializers(graph) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in graph.initializer}


def qdq_activations(qdq_path: Path) -> dict[str, tuple[float, int]]:
    """Activation tensors onnxruntime quantized: name → (scale, zero point), from the QuantizeLinear nodes."""
    import onnx

    graph = onnx.load(str(qdq_path)).graph
    inits = _initializers(graph)
    out: dict[str, tuple[float, int]] = {}
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and node.input[0] not in inits and node.input[0] not in out:
            out[node.input[0]] = (float(inits[node.input[1]]), int(inits[node.input[2]]))
    return out


def qdq_weights(qdq_path: Path) -> dict[str, dict[str, Any]]:
    """Conv/Gemm nodes whose weight onnxruntime quantized: node name → {scale (per channel), op, weight}."""
    import onnx

    graph = onnx.load(str(qdq_path)).graph
    inits = _initializers(graph)
    producer = {o: n for n in graph.node for o in n.output}
    out = {}
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm") and len(node.input) > 1:
            dq = producer.get(node.input[1])
            if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in inits:
                out[node.name] = {
                    "op": node.op_type,
                    "scale": np.atleast_1d(inits[dq.input[1]]).astype(np.float32),
                    "zero_point": np.atleast_1d(inits[dq.input[2]]),
                    "quantized": dq.input[0],
                }
    return out


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and float(np.abs(a - b).max(initial=0.0)) <= 1e-3 * max(1.0, float(np.abs(a).max(initial=0.0)))


def locate(
    tensors: dict[str, np.ndarray], records: Sequence[tuple[str, str, torch.Tensor, torch.Tensor]]
) -> tuple[dict[str, tuple[str, str]], list[str]]:
    """ONNX tensor → (torch module, side) holding the same values: the first module that outputs it
    (so every consumer sees the quantized value), else the first that reads it; and the unmatched names."""
    found, missing = {}, []
    outs = [(n, s, v.numpy()) for n, s, v, _ in records if s == "out"]
    ins = [(n, s, v.numpy()) for n, s, v, _ in records if s == "in"]
    for name, value in tensors.items():
        hit = next(((n, s) for n, s, v in outs if _close(value, v)), None) or next(((n, s) for n, s, v in ins if _close(value, v)), None)
        if hit is None:
            missing.append(name)
        else:
            found[name] = hit
    return found, missing


def onnx_values(prep: Path, names: Sequence[str], images: np.ndarray, work: Path) -> dict[str, np.ndarray]:
    """Float values of the named tensors of the (pre-processed) float model on `images`."""
    from cann_distill.quant.gap import augment, collect

    aug = work / "plan_values.onnx"
    augment(prep, aug)
    got = collect(aug, images)
    return {n: np.concatenate(got[n]) for n in names if n in got}


def _original(tensor: str) -> str:
    """onnxruntime renames a quantized graph output `y` to `y_QuantizeLinear_Input`; the override key is `y`."""
    suffix = "_QuantizeLinear_Input"
    return tensor[: -len(suffix)] if tensor.endswith(suffix) else tensor


def hardswish_gates(
    qdq: Path, values: dict[str, np.ndarray], records: Sequence[tuple[str, str, torch.Tensor, torch.Tensor]], modules: dict[str, nn.Module]
) -> dict[str, str]:
    """Quantized HardSigmoid gates of inlined HardSwish ops → the torch Hardswish module reading the same input."""
    import onnx

    graph = onnx.load(str(qdq)).graph
    producer = {o: n for n in graph.node for o in n.output}
    out = {}
    for node in graph.node:
        if node.op_type != "HardSigmoid" or "HardSwish" not in node.output[0]:
            continue
        source = node.input[0]
        for op in ("DequantizeLinear", "QuantizeLinear"):  # back through the Q/DQ pair to the float tensor
            src = producer.get(source)
            if src is not None and src.op_type == op:
                source = src.input[0]
        source = _original(source)
        if source not in values:
            continue
        for name, side, value, _ in records:
            if (
                side == "in"
                and isinstance(modules[name], nn.Hardswish)
                and name not in out.values()
                and _close(values[source], value.numpy())
            ):
                out[node.output[0]] = name
                break
    return out


def shared_inputs(prep: Path) -> dict[str, str]:
    """Output tensor → input tensor of the ops whose output onnxruntime quantizes like its input (followed through chains)."""
    import onnx

    direct = {n.output[0]: n.input[0] for n in onnx.load(str(prep)).graph.node if n.op_type in SHARED_OPS and n.input}
    out = {}
    for t, src in direct.items():
        while src in direct:
            src = direct[src]
        out[t] = src
    return out


def weight_owners(student: nn.Module, prep: Path, nodes: Sequence[str]) -> dict[str, str]:
    """ONNX Conv/Gemm node → the torch layer whose (BatchNorm-folded) weight it holds, matched by value."""
    import onnx

    graph = onnx.load(str(prep)).graph
    inits = _initializers(graph)
    by_name = {n.name: n for n in graph.node}
    pairs = conv_bn_pairs(student, _sample_input(student))
    modules = _module_types(student)
    folded = {}
    for name, m in modules.items():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = m.weight.detach()
            if name in pairs:
                bn = modules[pairs[name]]
                w = w * (bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)).reshape(-1, 1, 1, 1)
            folded[name] = w.numpy()
    out = {}
    for node in nodes:
        n = by_name.get(node)
        w = inits.get(n.input[1]) if n is not None and len(n.input) > 1 else None
        if w is None:
            continue
        out_name = next((name for name, f in folded.items() if name not in out.values() and _close(w, f)), None)
        if out_name is not None:
            out[node] = out_name
    return out


def _sample_input(model: nn.Module) -> torch.Tensor:
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    return torch.randn(2, conv.in_channels, 32, 32, generator=torch.Generator().manual_seed(0))


def check_overrides(student: nn.Module, keep_float: Sequence[str], per_tensor: Sequence[str]) -> None:
    """Layer overrides must name conv/linear modules of the student (one line listing every bad name)."""
    modules = _module_types(student)
    bad = []
    for key, names in (("keep_float", keep_float), ("per_tensor", per_tensor)):
        for name in names:
            m = modules.get(name)
            if m is None:
                bad.append(f"distill.qat.{key}: no module '{name}' in the student")
            elif not isinstance(m, (nn.Conv2d, nn.Linear)):
                why = FLOAT_ON_CPU.get(
                    {"Hardsigmoid": "HardSigmoid", "Hardswish": "HardSwish", "Sigmoid": "Sigmoid"}.get(type(m).__name__, ""), ""
                )
                bad.append(
                    f"distill.qat.{key}: '{name}' is a {type(m).__name__}, not a Conv/Linear layer"
                    + (f"; it stays in float on the CPU provider ({why})" if why else "; only Conv/Gemm weights are quantized")
                )
    if bad:
        raise RecipeError("; ".join(bad))


def build_plan(
    student: nn.Module,
    prep: Path,
    qdq: Path,
    images: np.ndarray,
    scheme: dict[str, Any],
    per_channel: bool,
    keep_float: Sequence[str],
    per_tensor: Sequence[str],
    work: Path,
    opset: int = 17,
) -> QuantPlan:
    """Quantizer placement and initial ranges from onnxruntime's PTQ model of this very student."""
    import onnx

    acts = {_original(t): v for t, v in qdq_activations(qdq).items()}
    weights = qdq_weights(qdq)
    values = onnx_values(prep, list(acts), images, work)
    student.eval()
    with torch.no_grad(), recorded(student) as rec:
        student(torch.from_numpy(images))
    found, missing = locate(values, rec)
    modules = _module_types(student)
    for tensor, module in hardswish_gates(qdq, values, rec, modules).items():
        found[tensor] = (module, "gate")
        missing.remove(tensor) if tensor in missing else None
    plan = QuantPlan(scheme["activation_type"], bool(scheme["reduce_range"]), per_channel, kept_float=list(keep_float), opset=opset)
    shared = shared_inputs(prep)
    for tensor, (module, side) in found.items():
        scale, zp = acts[tensor]
        spec = {"tensor": tensor, "module": module, "side": side, "scale": scale, "zero_point": zp}
        if shared.get(tensor) in found:
            spec["share"] = shared[tensor]
        plan.activations.append(spec)
    plan.unmatched = missing + [t for t in acts if t not in values and t not in missing and t not in found]
    by_weight = weight_owners(student, prep, list(weights))
    inputs = {n.name: n.input[0] for n in onnx.load(str(prep)).graph.node if n.input}
    for node in weights:
        module = by_weight.get(node)
        if module is None:
            plan.unmatched.append(f"weight of {node}")
            continue
        spec = {"module": module, "node": node, "per_channel": per_channel and module not in per_tensor}
        if inputs.get(node) in found:  # its bias is int32 at the input scale × weight scale
            spec["input"] = inputs[node]
        plan.weights.append(spec)
    planned = {w["module"] for w in plan.weights}
    stays = [f"distill.qat.per_tensor: '{m}' is not quantized by onnxruntime (kept in float)" for m in per_tensor if m not in planned]
    if stays:
        raise RecipeError("; ".join(stays))
    from cann_distill.quant.ort import float_ops

    plan.float_nodes = float_ops(onnx.load(str(qdq)).graph)
    return plan


def float_reasons(plan: QuantPlan) -> dict[str, str]:
    """Which op types stay in float in the deployed model, and why."""
    reasons = {}
    for op in plan.float_nodes:
        reasons[op] = FLOAT_ON_CPU.get(op, "onnxruntime keeps it in float between Q/DQ pairs")
    for m in plan.kept_float:
        reasons[m] = "kept in float by distill.qat.keep_float"
    return reasons
