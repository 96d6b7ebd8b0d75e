"""onnxruntime: static INT8 quantization, sessions, accuracy and latency measurement."""

from __future__ import annotations

import collections
import contextlib
import functools
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from cann_distill.core.errors import RecipeError, StageError
from cann_distill.quant.export import INPUT
from cann_distill.runtime.environment import cpuinfo
from cann_distill.runtime.terminal import ui


def cpu_features() -> dict[str, Any]:
    """ISA facts that decide the INT8 scheme on this host (read once per process; a fresh dict each call)."""
    return dict(_cpu_features())


@functools.lru_cache(maxsize=1)
def _cpu_features() -> dict[str, Any]:
    flags = cpuinfo()["flags"]  # /proc/cpuinfo, read by the one parser `cann-distill env` uses too
    machine = platform.machine().lower()
    return {
        "machine": machine,
        "x86": machine in ("x86_64", "amd64", "i686"),
        "avx2": flags.get("avx2", False),
        "avx512": flags.get("avx512f", False),
        "vnni": flags.get("avx512_vnni", False) or flags.get("avx_vnni", False),
    }


def choose_scheme(activation_type: str, reduce_range: Any, feats: dict[str, Any]) -> dict[str, Any]:
    """Activation type and reduce_range: recipe value, else the CPU's best (reason recorded).

    On x86 without VNNI, u8×s8 products can overflow the 16-bit intermediate, so onnxruntime
    documents `reduce_range=True` there; x86 kernels are fastest with uint8 activations.
    """
    why = []
    if activation_type == "auto":
        act = "uint8" if feats["x86"] else "int8"
        why.append(f"activations {act}: {'x86 kernels are fastest with U8 activations' if feats['x86'] else 'non-x86 CPU'}")
    else:
        act = activation_type
        why.append(f"activations {act}: set in the recipe or hardware profile")
    if reduce_range == "auto":
        rr = bool(feats["x86"] and not feats["vnni"])
        why.append(f"reduce_range {rr}: {'x86 without VNNI (avoids 8-bit overflow)' if rr else 'VNNI or non-x86 CPU'}")
    else:
        rr = bool(reduce_range)
        why.append(f"reduce_range {rr}: set in the recipe or hardware profile")
    return {"activation_type": act, "weight_type": "int8", "reduce_range": rr, "reasons": why}


class ArrayReader:
    """CalibrationDataReader over an array; one pass only, so build a fresh one per use.

    Also iterable, as `qdq_loss_debug.collect_activations` wants.
    """

    def __init__(self, images: np.ndarray, batch_size: int = 32) -> None:
        self._it: Iterator[np.ndarray] = iter([images[i : i + batch_size] for i in range(0, len(images), batch_size)])

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        batch = next(self._it, None)
        return None if batch is None else {INPUT: batch}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        while (feed := self.get_next()) is not None:
            yield feed


def preprocess(fp32: Path, out: Path) -> None:
    """onnxruntime's quantization pre-processing (shape inference + graph optimization)."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(fp32), str(out), skip_symbolic_shape=False)
    except Exception as exc:  # pre-processing is an optimisation; fall back to the raw export
        ui.warn(f"onnxruntime quant_pre_process failed ({str(exc).splitlines()[0][:120]}); quantizing the raw export")
        shutil.copyfile(fp32, out)


def quantize_int8(
    prep: Path,
    out: Path,
    calib: np.ndarray,
    scheme: dict[str, Any],
    per_channel: bool,
    method: str,
    nodes_to_exclude: Sequence[str] = (),
    extra_options: Optional[dict[str, Any]] = None,
) -> None:
    """Static QDQ quantization; every argument passed explicitly (defaults changed across versions).

    `extra_options` goes to onnxruntime as is (QAT passes the learned ranges as `TensorQuantOverrides`)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    qtype = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    calib_method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}
    try:
        # onnxruntime's calibrators print progress on stdout, which belongs to --json
        with contextlib.redirect_stdout(sys.stderr):
            quantize_static(
                model_input=str(prep),
                model_output=str(out),
                calibration_data_reader=ArrayReader(calib),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=None,
                per_channel=per_channel,
                reduce_range=scheme["reduce_range"],
                activation_type=qtype[scheme["activation_type"]],
                weight_type=qtype[scheme["weight_type"]],
                nodes_to_quantize=None,
                nodes_to_exclude=list(nodes_to_exclude) or None,
                use_external_data_format=False,
                calibrate_method=calib_method[method],
                calibration_providers=["CPUExecutionProvider"],
                extra_options=dict(extra_options or {}),
            )
    except Exception as exc:
        raise StageError(f"onnxruntime static quantization failed: {str(exc).splitlines()[0][:300]}") from exc


def throughput(sess, images: np.ndarray, batch: int, runs: int) -> float:
    """Images per second at a fixed batch size (after one warm-up run)."""
    x = np.resize(images, (batch, *images.shape[1:])).astype(np.float32)
    sess.run(None, {INPUT: x})
    t0 = time.perf_counter()
    for _ in range(runs):
        sess.run(None, {INPUT: x})
    return batch * runs / (time.perf_counter() - t0)


def resolve_provider(name: str) -> tuple[str, Optional[str]]:
    """(provider to use, warning or None). Unknown names are a recipe error."""
    import onnxruntime as ort

    if name not in ort.get_all_providers():
        raise RecipeError(f"validate.provider: onnxruntime does not know '{name}' (known: {', '.join(ort.get_all_providers())})")
    if name not in ort.get_available_providers():
        hint = " (install onnxruntime-cann)" if name == "CANNExecutionProvider" else ""
        return "CPUExecutionProvider", f"{name} is not available in this onnxruntime build{hint}; falling back to CPUExecutionProvider"
    return name, None


def session(path: Path, provider: str, threads: int = 0, optimized_out: Optional[Path] = None, options: Optional[dict[str, Any]] = None):
    """An inference session on `provider` (with its provider options, e.g. a hardware profile's)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if optimized_out is not None:
        so.optimized_model_filepath = str(optimized_out)
    providers = [(provider, {k: str(v) for k, v in options.items()})] if options else [provider]
    return ort.InferenceSession(str(path), sess_options=so, providers=providers)


def run_logits(sess, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    return np.concatenate([sess.run(None, {INPUT: images[i : i + batch_size]})[0] for i in range(0, len(images), batch_size)])


def op_histogram(graph) -> dict[str, int]:
    """Node count per op type of an ONNX graph, most common first."""
    return dict(collections.Counter(n.op_type for n in graph.node).most_common())


QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


def float_ops(graph) -> dict[str, int]:
    """Ops of an optimized graph that compute in float: fed by a DequantizeLinear (or by another
    float op), as opposed to QLinear*/integer kernels and layout ops on quantized tensors."""
    producer = {out: n for n in graph.node for out in n.output}
    float_tensors: set[str] = set()
    counts: collections.Counter[str] = collections.Counter()
    for node in graph.node:  # ONNX graphs are topologically sorted
        if node.op_type == "DequantizeLinear":
            float_tensors.update(node.output)
            continue
        if node.op_type in QDQ_OPS:
            continue
        if any(i in float_tensors for i in node.input if i in producer):
            float_tensors.update(node.output)
            counts[node.op_type] += 1
    return dict(counts.most_common())
