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
- **activations**: `fake_quant` (onnxruntime's QuantizeLinear arithmetic) with its qmin/qmax for the
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
from typing import Any, Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

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


def fake_quant(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, qmin: int, qmax: int, axis: Optional[int] = None
) -> torch.Tensor:
    """onnxruntime's QuantizeLinear then DequantizeLinear, in its arithmetic: q = clip(round(x / scale) + zero point)
    with float32 division and rounding half to even (its kernels and `quantize_nparray` divide), then
    (q - zero point) × scale; straight-through gradient inside the range, zero outside.

    torch's fake_quantize multiplies by a float32 reciprocal instead, which lands one step off whenever x / scale
    sits near .5: frequent after a 2×2 average pool (quarters), and it compounded to 1.6% top-1 disagreement between
    a test_resnet's fake-quant logits and its onnxruntime INT8 export."""
    shape = [1] * x.dim()
    if axis is not None:
        shape[axis] = -1
    xf = x.float()
    s = scale.to(xf.device, torch.float32).reshape(shape if axis is not None else [])
    z = zero_point.to(xf.device, torch.float32).reshape(shape if axis is not None else [])
    q = torch.round(xf / s) + z
    inside = (q >= qmin) & (q <= qmax)
    y = ((q.clamp(qmin, qmax) - z) * s).to(x.dtype)
    return y.detach() + (x - x.detach()) * inside


def fake_quant_weight_scaled(w: torch.Tensor, qmin: int, qmax: int, per_channel: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 fake quantization of a (folded) weight (straight-through gradient) and the scale it used
    (per output channel, or one)."""
    scale = symmetric_scale(w, qmin, qmax, per_channel).to(w.device)
    zp = torch.zeros(scale.numel(), dtype=torch.int32, device=w.device)
    return fake_quant(w, scale, zp, qmin, qmax, axis=0 if per_channel else None), scale


def fake_quant_bias(b: torch.Tensor, weight_scale: torch.Tensor, input_scale: torch.Tensor) -> torch.Tensor:
    """onnxruntime's int32 bias: scale = input scale × weight scale (per output channel, in float32 as its quantizer
    computes it), zero point 0; straight-through gradient. Without it each conv rounds its output differently from
    onnxruntime in ~0.1-0.6% of elements, which compounds through deep depthwise/SE students.

    The integer is onnxruntime's own arithmetic (`quantize_bias_static_impl`): bias / scale in float64, rounded half
    to even. torch's fake_quantize multiplies by a float32 reciprocal instead, which lands one integer off whenever
    the quotient sits near .5 (2 of 192 biases of a small resnet)."""
    scale = (input_scale.to(b.device).float() * weight_scale.float()).expand(b.shape[0]).contiguous()
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    wide = torch.float32 if b.device.type == "mps" else torch.float64  # MPS has no float64: nearest it can do
    q = torch.round(b.detach().to(wide) / scale.to(wide)).clamp(*INT32_RANGE)
    dequantized = q.float() * scale  # DequantizeLinear: float(int32) × float32 scale
    return b + (dequantized - b).detach()


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
        return fake_quant(x, self.scale, self.zero_point, self.qmin, self.qmax)


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
        module.quantize = spec is not None  # type: ignore[attr-defined]  # onnxruntime quantizes its weight
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
