"""Quantization-aware distillation (QAD): fake quantization that simulates onnxruntime's static QDQ INT8.

The student trains with the arithmetic validate deploys, and validate exports the ranges it learned:

- **placement from onnxruntime itself**: the float student is exported and quantized once with
  validate's own PTQ code (`quantize_int8`). Every activation `QuantizeLinear` of that QDQ model names
  a tensor and its calibrated scale / zero point; each tensor is found in the torch model by value
  (the output of the first module that produces it, else the input of the first module that reads
  it) and a per-tensor fake quantizer is hooked there, initialised from the PTQ scale / zero point.
  So quantizers sit exactly where onnxruntime puts Q/DQ pairs (conv/gemm inputs and outputs,
  residual adds, the network input), and ops onnxruntime keeps in float get none.
- **weights**: every Conv/Gemm that onnxruntime quantizes gets symmetric int8 fake quantization,
  per output channel (per tensor where the recipe says so), with onnxruntime's range (-127..127,
  or -64..64 with `reduce_range`), computed from the weight *after* BatchNorm folding, the way the
  exporter folds it: w' = w * gamma / sqrt(var + eps), b' = (b - mean) * gamma / sqrt(var + eps) + beta.
  Before `freeze_bn_epoch` BatchNorm still uses batch statistics (Jacob et al. 2018's folding with
  the running-std correction, as torch.ao's ConvBn QAT modules do); after it, the running ones.
- **activations**: `torch.fake_quantize_per_tensor_affine` with onnxruntime's qmin/qmax for the
  activation type validate chooses for this CPU (uint8 0..255, int8 -128..127; onnxruntime applies
  `reduce_range` to weights only). Scale / zero point follow an EMA of each batch's min/max
  (onnxruntime's formula: range widened to include 0) until `freeze_observers_epoch`, then stay.
- **export**: the trained weights go back into the plain timm student (state-dict keys never change:
  folding swaps module classes in place), which exports to the same ONNX graph and tensor names;
  `quantize_static` then receives every learned scale / zero point through `TensorQuantOverrides`,
  so no range is re-calibrated.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cann_distill.core.errors import RecipeError, StageError

log = logging.getLogger(__name__)

ACT_RANGE = {"uint8": (0, 255), "int8": (-128, 127)}
INT32_RANGE = (-(2**31), 2**31 - 1)
# ops whose output onnxruntime quantizes with its input's scale / zero point (data movement, max/avg pooling)
SHARED_OPS = {
    "MaxPool",
    "AveragePool",
    "Flatten",
    "Reshape",
    "Transpose",
    "Squeeze",
    "Unsqueeze",
    "Resize",
    "Slice",
    "Gather",
    "Split",
    "Identity",
}
QUANTIZERS = "qat_quantizers"  # the root attribute holding the activation quantizers (their state travels in the state dict)

# onnxruntime's QDQ quantizer has no INT8 kernel for these: they run in float between Q/DQ pairs on the CPU provider
FLOAT_ON_CPU = {
    "HardSigmoid": "no INT8 kernel in onnxruntime's QDQ registry (squeeze-excite gate)",
    "HardSwish": "no INT8 kernel in onnxruntime's QDQ registry",
    "ReduceMean": "no INT8 kernel in onnxruntime's QDQ registry (squeeze-excite pooling)",
    "Sigmoid": "no INT8 kernel in onnxruntime's QDQ registry",
    "Mul": "stays float unless both inputs are quantized",
}


def weight_range(reduce_range: bool) -> tuple[int, int]:
    """onnxruntime's symmetric int8 weight range: -127..127, or -64..64 with reduce_range."""
    return (-64, 64) if reduce_range else (-127, 127)


def scale_zero_point(lo: torch.Tensor, hi: torch.Tensor, qmin: int, qmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """onnxruntime's `compute_scale_zp` (asymmetric): the range is widened to include 0; scale 1 for an empty range."""
    lo = torch.clamp(lo.double(), max=0.0)
    hi = torch.clamp(hi.double(), min=0.0)
    scale = (hi - lo) / (qmax - qmin)
    empty = scale < torch.finfo(torch.float32).tiny
    scale = torch.where(empty, torch.ones_like(scale), scale)
    zp = torch.round(qmin - lo / scale).clamp(qmin, qmax)
    zp = torch.where(empty, torch.zeros_like(zp), zp)
    return scale.float(), zp.to(torch.int32)


def symmetric_scale(w: torch.Tensor, qmin: int, qmax: int, per_channel: bool) -> torch.Tensor:
    """Per-output-channel (axis 0) or per-tensor symmetric scale max|w| * 2 / (qmax - qmin), as onnxruntime computes it."""
    absmax = w.detach().abs().flatten(1).amax(1) if per_channel else w.detach().abs().max().reshape(1)
    scale = (absmax.double() * 2 / (qmax - qmin)).float()
    return torch.where(scale < torch.finfo(torch.float32).tiny, torch.ones_like(scale), scale)


def fake_quant_weight(w: torch.Tensor, qmin: int, qmax: int, per_channel: bool) -> torch.Tensor:
    """Symmetric int8 fake quantization of a (folded) weight; straight-through gradient."""
    return fake_quant_weight_scaled(w, qmin, qmax, per_channel)[0]


def fake_quant_weight_scaled(w: torch.Tensor, qmin: int, qmax: int, per_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """`fake_quant_weight` and the scale it used (per output channel, or one)."""
    scale = symmetric_scale(w, qmin, qmax, per_channel).to(w.device)
    zp = torch.zeros(scale.numel(), dtype=torch.int32, device=w.device)
    if per_channel:
        return torch.fake_quantize_per_channel_affine(w, scale, zp, 0, qmin, qmax), scale
    return torch.fake_quantize_per_tensor_affine(w, scale, zp, qmin, qmax), scale


def fake_quant_bias(b: torch.Tensor, weight_scale: torch.Tensor, input_scale: torch.Tensor) -> torch.Tensor:
    """onnxruntime's int32 bias: scale = input scale × weight scale (per output channel, in float32 as its quantizer
    computes it), zero point 0; straight-through gradient. Without it each conv rounds its output differently from
    onnxruntime in ~0.1-0.6% of elements, which compounds through deep depthwise/SE students."""
    scale = (input_scale.to(b.device).float() * weight_scale.float()).expand(b.shape[0]).contiguous()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    zp = torch.zeros(b.shape[0], dtype=torch.int32, device=b.device)
    return torch.fake_quantize_per_channel_affine(b, scale, zp, 0, *INT32_RANGE)


class ActQuant(nn.Module):
    """Per-tensor activation fake quantizer, range initialised from PTQ calibration, EMA-observed until frozen."""

    def __init__(self, scale: float, zero_point: int, qmin: int, qmax: int, momentum: float = 0.01) -> None:
        super().__init__()
        self.qmin, self.qmax, self.momentum = qmin, qmax, momentum
        self.register_buffer("scale", torch.tensor([scale], dtype=torch.float32))
        self.register_buffer("zero_point", torch.tensor([zero_point], dtype=torch.int32))
        self.register_buffer("lo", torch.tensor([(qmin - zero_point) * scale], dtype=torch.float32))
        self.register_buffer("hi", torch.tensor([(qmax - zero_point) * scale], dtype=torch.float32))
        self.observe = True
        self.enabled = True
        self.source: Optional["ActQuant"] = None  # set: use that quantizer's parameters (onnxruntime shares them)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if self.source is not None:
            with torch.no_grad():
                self.scale.copy_(self.source.scale)
                self.zero_point.copy_(self.source.zero_point)
        elif self.training and self.observe:
            with torch.no_grad():
                m = self.momentum
                self.lo.mul_(1 - m).add_(m * x.detach().min().float())
                self.hi.mul_(1 - m).add_(m * x.detach().max().float())
                scale, zp = scale_zero_point(self.lo, self.hi, self.qmin, self.qmax)
                self.scale.copy_(scale)
                self.zero_point.copy_(zp)
        return torch.fake_quantize_per_tensor_affine(x, self.scale.to(x.device), self.zero_point.to(x.device), self.qmin, self.qmax)


class QConv2d(nn.Conv2d):
    """A Conv2d (same parameter names) whose following BatchNorm is folded into it, weights fake-quantized.

    The BatchNorm stays in the model at its own path (its class swapped to `FoldedNorm`, which only
    applies what came after the normalisation: drop/act) so the state dict keeps its keys.
    """

    bn: Optional[nn.BatchNorm2d]
    qrange: tuple[int, int]
    per_channel: bool
    quantize: bool
    bn_frozen: bool

    def _conv(self, x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor]) -> torch.Tensor:
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        bn = self.bn
        if bn is None:
            w, scale = _fq(self, self.weight)
            return self._conv(x, w, _fq_bias(self, self.bias, scale))
        std = torch.sqrt(bn.running_var + bn.eps)
        gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
        beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
        factor = gamma / std
        w, scale = _fq(self, self.weight * factor.reshape(-1, 1, 1, 1))
        bias = self.bias if self.bias is not None else torch.zeros_like(std)
        if self.bn_frozen or not self.training:
            return self._conv(x, w, _fq_bias(self, (bias - bn.running_mean) * factor + beta, scale))
        # batch statistics (Jacob et al. 2018): undo the running-std scale, normalise with the batch's, update the running stats
        y = self._conv(x, w, None) / factor.reshape(1, -1, 1, 1) + bias.reshape(1, -1, 1, 1)
        return F.batch_norm(y, bn.running_mean, bn.running_var, gamma, beta, True, bn.momentum if bn.momentum is not None else 0.1, bn.eps)


class QLinear(nn.Linear):
    """A Linear (same parameter names) with fake-quantized weights (per output channel: Gemm transB, axis 0)."""

    qrange: tuple[int, int]
    per_channel: bool
    quantize: bool

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        w, scale = _fq(self, self.weight)
        return F.linear(x, w, _fq_bias(self, self.bias, scale))


def _fq(layer: nn.Module, w: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """A QConv2d/QLinear's (fake-quantized weight, its scale), or (w, None) when the layer stays in float."""
    if not layer.quantize:  # type: ignore[attr-defined]
        return w, None
    return fake_quant_weight_scaled(w, *layer.qrange, layer.per_channel)  # type: ignore[attr-defined]


def _fq_bias(layer: nn.Module, b: Optional[torch.Tensor], weight_scale: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """The bias as onnxruntime's int32 bias, when the weight is quantized and the layer's input quantizer is known."""
    source = getattr(layer, "input_quant", None)
    if b is None or weight_scale is None or source is None or not source.enabled:
        return b
    return fake_quant_bias(b, weight_scale, source.scale)


def _folded_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What a BatchNorm does after normalising (timm's BatchNormAct2d: drop, act); the conv before it did the rest."""
    for name in ("drop", "act"):
        sub = getattr(self, name, None)
        if sub is not None:
            x = sub(x)
    return x


_FOLDED: dict[type, type] = {}


class QHardswish(nn.Hardswish):
    """onnxruntime inlines HardSwish as x * HardSigmoid(x) and quantizes the gate: so does this."""

    gate: "ActQuant"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x * self.gate(F.hardsigmoid(x))


def _fold_norm(bn: nn.Module) -> None:
    cls = type(bn)
    if cls not in _FOLDED:
        _FOLDED[cls] = type(f"Folded{cls.__name__}", (cls,), {"forward": _folded_forward})
    bn.__class__ = _FOLDED[cls]


# ----------------------------------------------------------------------------- the plan (what to quantize where)


@dataclass
class QuantPlan:
    """Where the quantizers go and with which initial parameters: plain data, stored in the QAT checkpoint."""

    activation_type: str
    reduce_range: bool
    per_channel: bool
    activations: list[dict[str, Any]] = field(default_factory=list)  # {tensor, module, side, scale, zero_point}
    weights: list[dict[str, Any]] = field(default_factory=list)  # {module, node, bn, per_channel}
    unmatched: list[str] = field(default_factory=list)  # ONNX tensors quantized by onnxruntime but not found in torch
    float_nodes: dict[str, int] = field(default_factory=dict)  # op types onnxruntime left in float: count
    kept_float: list[str] = field(default_factory=list)  # modules the recipe keeps in float
    opset: int = 17

    def to_dict(self) -> dict[str, Any]:
        return {k: copy.deepcopy(getattr(self, k)) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "QuantPlan":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    @property
    def act_range(self) -> tuple[int, int]:
        return ACT_RANGE[self.activation_type]


def _module_types(model: nn.Module) -> dict[str, nn.Module]:
    return dict(model.named_modules())


@contextlib.contextmanager
def recorded(model: nn.Module) -> Iterator[list[tuple[str, str, torch.Tensor, torch.Tensor]]]:
    """Every module's first input ("in") and output ("out") in execution order: (module, side, value, the tensor itself).

    The tensor is kept (not just its address, which the allocator reuses) so producer and consumer can be paired by identity.
    """
    records: list[tuple[str, str, torch.Tensor, torch.Tensor]] = []
    handles = []
    for name, module in model.named_modules():

        def pre(mod, args, name=name):
            if args and isinstance(args[0], torch.Tensor):
                records.append((name, "in", args[0].detach().clone(), args[0]))

        def post(mod, args, out, name=name):
            if isinstance(out, torch.Tensor):
                records.append((name, "out", out.detach().clone(), out))

        handles.append(module.register_forward_pre_hook(pre))
        handles.append(module.register_forward_hook(post))
    try:
        yield records
    finally:
        for h in handles:
            h.remove()


def conv_bn_pairs(model: nn.Module, sample: torch.Tensor) -> dict[str, str]:
    """conv module → the BatchNorm that reads its output directly (the pairs the exporter folds)."""
    modules = _module_types(model)
    model.eval()
    with torch.no_grad(), recorded(model) as rec:
        model(sample)
    produced = {id(t): name for name, side, _, t in rec if side == "out" and isinstance(modules[name], nn.Conv2d)}
    pairs = {}
    for name, side, _, t in rec:
        if side == "in" and isinstance(modules[name], nn.BatchNorm2d) and id(t) in produced:
            pairs[produced[id(t)]] = name
    return pairs


def attach(model: nn.Module, plan: QuantPlan, pairs: dict[str, str]) -> nn.Module:
    """Turn a plain timm student into its QAT form in place (same state-dict keys plus `qat_quantizers.*`)."""
    modules = _module_types(model)
    wq = weight_range(plan.reduce_range)
    quantized = {w["module"]: w for w in plan.weights}
    for conv_name, module in modules.items():
        if isinstance(module, nn.Conv2d) and not isinstance(module, QConv2d):
            module.__class__ = QConv2d
            bn_name = pairs.get(conv_name)
            object.__setattr__(module, "bn", modules[bn_name] if bn_name else None)
            if bn_name:
                _fold_norm(modules[bn_name])
        elif isinstance(module, nn.Linear) and not isinstance(module, QLinear):
            module.__class__ = QLinear
        else:
            continue
        spec = quantized.get(conv_name)
        module.planned = spec is not None  # type: ignore[attr-defined]  # onnxruntime quantizes its weight
        module.quantize = module.planned  # type: ignore[attr-defined]
        module.per_channel = bool(spec["per_channel"]) if spec else plan.per_channel  # type: ignore[attr-defined]
        module.qrange = wq  # type: ignore[attr-defined]
        module.bn_frozen = False  # type: ignore[attr-defined]
    qmin, qmax = plan.act_range
    quantizers = nn.ModuleList(ActQuant(a["scale"], a["zero_point"], qmin, qmax) for a in plan.activations)
    setattr(model, QUANTIZERS, quantizers)
    index = {spec["tensor"]: quantizer for spec, quantizer in zip(plan.activations, quantizers)}
    for spec, quantizer in zip(plan.activations, quantizers):
        if spec.get("share") in index:
            object.__setattr__(quantizer, "source", index[spec["share"]])
    for spec in plan.weights:  # the activation quantizer of each quantized layer's input: its int32 bias scale
        if spec.get("input") in index:
            object.__setattr__(modules[spec["module"]], "input_quant", index[spec["input"]])
    for spec, quantizer in zip(plan.activations, quantizers):
        target = modules[spec["module"]]
        if spec["side"] == "gate":
            target.__class__ = QHardswish
            object.__setattr__(target, "gate", quantizer)
        elif spec["side"] == "out":
            target.register_forward_hook(lambda mod, args, out, q=quantizer: q(out))
        else:
            target.register_forward_pre_hook(lambda mod, args, q=quantizer: (q(args[0]), *args[1:]))
    model.qat_plan = plan  # type: ignore[assignment]
    return model


def quant_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (QConv2d, QLinear))]


def set_fake_quant(model: nn.Module, enabled: bool) -> None:
    """Switch every fake quantizer (activations and weights) on or off: off gives the float student's outputs."""
    for q in getattr(model, QUANTIZERS, []):
        q.enabled = enabled
    for m in quant_modules(model):
        m.quantize = enabled and m.planned


def freeze_observers(model: nn.Module, frozen: bool = True) -> None:
    for q in getattr(model, QUANTIZERS, []):
        q.observe = not frozen


def freeze_bn(model: nn.Module, frozen: bool = True) -> None:
    for m in quant_modules(model):
        if isinstance(m, QConv2d):
            m.bn_frozen = frozen


def plain_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The QAT student's weights under the plain timm student's keys (quantizer state dropped)."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if not k.startswith(QUANTIZERS + ".")}


def learned_ranges(model: nn.Module) -> dict[str, dict[str, Any]]:
    """ONNX tensor name → the scale / zero point the QAT student holds for it."""
    plan: QuantPlan = model.qat_plan  # type: ignore[assignment]
    out = {}
    for spec, q in zip(plan.activations, getattr(model, QUANTIZERS)):
        out[spec["tensor"]] = {
            "scale": float(q.scale.item()),
            "zero_point": int(q.zero_point.item()),
            "module": spec["module"],
            "side": spec["side"],
        }
    return out


# ----------------------------------------------------------------------------- planning from onnxruntime's own PTQ model


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


# ----------------------------------------------------------------------------- export with the learned ranges


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


def weight_scales(model: nn.Module) -> dict[str, np.ndarray]:
    """Per quantized layer, the weight scale(s) the fake quantizer uses (what the QDQ export must hold)."""
    plan: QuantPlan = model.qat_plan  # type: ignore[assignment]
    modules = _module_types(model)
    return {
        w["node"]: symmetric_scale(folded_weight(modules[w["module"]]), *weight_range(plan.reduce_range), w["per_channel"]).numpy()
        for w in plan.weights
    }


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
