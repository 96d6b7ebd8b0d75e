"""QAD export: the plain student to ONNX, quantized with the ranges it learned (no range is re-calibrated)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from cann_distill.core.errors import StageError
from cann_distill.quant.qat import QuantPlan, _module_types, learned_ranges, symmetric_scale, weight_range
from cann_distill.quant.qat_plan import _initializers, _original, qdq_activations

log = logging.getLogger(__name__)


def overrides(
    model_plan: QuantPlan, ranges: dict[str, dict[str, Any]], prep: Path, weights: dict[str, torch.Tensor]
) -> dict[str, list[dict[str, Any]]]:
    """onnxruntime `TensorQuantOverrides`: every learned activation scale / zero point, and per-tensor weights
    (as per-channel entries sharing one scale, the form onnxruntime accepts under per_channel=True)."""
    import onnx

    zp_type = np.uint8 if model_plan.activation_type == "uint8" else np.int8
    out: dict[str, list[dict[str, Any]]] = {
        t: [{"scale": np.array(r["scale"], dtype=np.float32), "zero_point": np.array(r["zero_point"], dtype=zp_type)}]
        for t, r in ranges.items()
    }
    graph = onnx.load(str(prep)).graph
    by_name = {n.name: n for n in graph.node}
    for w in model_plan.weights:
        if model_plan.per_channel and not w["per_channel"]:
            node = by_name.get(w["node"])
            if node is None:
                raise StageError(f"QAT export: node {w['node']} is not in the exported model")
            scale = float(weights[w["module"]].item())
            channels = int(_initializers(graph)[node.input[1]].shape[0])
            out[node.input[1]] = [
                {"axis": 0, "scale": np.array(scale, dtype=np.float32), "zero_point": np.array(0, dtype=np.int8)} for _ in range(channels)
            ]
    return out


def per_tensor_weight_scales(model: nn.Module) -> dict[str, torch.Tensor]:
    """The symmetric per-tensor scale of each per-tensor layer's folded weight (for the export override)."""
    plan: QuantPlan = model.qat_plan  # type: ignore[assignment]
    modules = _module_types(model)
    out = {}
    for w in plan.weights:
        if not w["per_channel"]:
            out[w["module"]] = symmetric_scale(folded_weight(modules[w["module"]]), *weight_range(plan.reduce_range), per_channel=False)
    return out


def folded_weight(module: nn.Module) -> torch.Tensor:
    """The weight the exporter writes for this layer: BatchNorm folded in (running statistics)."""
    bn = getattr(module, "bn", None)
    if bn is None:
        return module.weight.detach()
    factor = (bn.weight if bn.weight is not None else 1.0) / torch.sqrt(bn.running_var + bn.eps)
    return (module.weight * factor.reshape(-1, 1, 1, 1)).detach()


def quantize_learned(model: nn.Module, prep: Path, out: Path, calib: np.ndarray, nodes_to_exclude: Sequence[str] = ()) -> dict[str, Any]:
    """QDQ INT8 of the QAT student's float export (`prep`) with the learned ranges, not re-calibrated.

    onnxruntime still runs its calibrator over `calib` (its API wants a reader), but every tensor the
    student learned a range for takes the override; the returned counts say how many did.
    """
    from cann_distill.quant import ort as q

    plan: QuantPlan = model.qat_plan  # type: ignore[assignment]
    ranges = learned_ranges(model)
    import onnx

    names = {t for n in onnx.load(str(prep)).graph.node for t in n.output} | {i.name for i in onnx.load(str(prep)).graph.input}
    lost = [t for t in ranges if t not in names and "_inlfunc_" not in t]
    if lost:
        raise StageError(
            f"QAT export: {len(lost)} tensor(s) the student learned ranges for are not in the exported model "
            f"(e.g. {lost[0]}); the student's graph changed since QAD — rerun `cann-distill distill --force`"
        )
    table = overrides(plan, ranges, prep, per_tensor_weight_scales(model))
    scheme = {"activation_type": plan.activation_type, "weight_type": "int8", "reduce_range": plan.reduce_range}
    q.quantize_int8(
        prep,
        out,
        calib,
        scheme,
        plan.per_channel,
        "minmax",
        list(nodes_to_exclude) + node_names(prep, plan.kept_float),
        extra_options={"TensorQuantOverrides": table},
    )
    written = {_original(t): v for t, v in qdq_activations(out).items()}
    same = sum(
        1 for t, r in ranges.items() if t in written and abs(written[t][0] - r["scale"]) <= 1e-12 and written[t][1] == r["zero_point"]
    )
    return {
        "source": "learned in QAD (distill/student_qat.pt), written through onnxruntime TensorQuantOverrides",
        "learned": len(ranges),
        "exported_equal": same,
        "calibrated": sorted(t for t in written if t not in ranges),
    }


def node_names(prep: Path, modules: Sequence[str]) -> list[str]:
    """ONNX nodes that belong to the given torch modules (their names carry the module scope)."""
    if not modules:
        return []
    import onnx

    from cann_distill.quant.gap import module_path

    wanted = set(modules)
    return [
        n.name
        for n in onnx.load(str(prep)).graph.node
        if module_path(n.name) in wanted or any(n.name.startswith(f"/{m.replace('.', '/')}/") for m in wanted)
    ]
