"""`cann-distill env`: what a bug report needs about this machine — versions, the CPU's features that decide the
INT8 scheme and kernels, the torch devices and the onnxruntime execution providers."""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import sys
from pathlib import Path
from typing import Any, Optional

PACKAGES = ("cann-distill", "torch", "torchvision", "timm", "onnx", "onnxruntime", "numpy", "pillow", "pydantic", "typer", "rich")
# /proc/cpuinfo flags that matter for INT8 and float kernels: x86 `flags`, ARM `Features`
X86_FLAGS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_int8",
    "amx_bf16",
)
ARM_FLAGS = ("asimd", "asimddp", "asimdhp", "i8mm", "bf16", "sve", "sve2")


def cpuinfo(text: Optional[str] = None) -> dict[str, Any]:
    """The CPU's model name and which of the flags above it has, from /proc/cpuinfo (first processor's entry)."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            text = ""
    model: Optional[str] = None
    flags: set[str] = set()
    known: tuple[str, ...] = X86_FLAGS
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if model is None and key in ("model name", "hardware", "cpu model"):
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags, known = set(value.split()), X86_FLAGS if key == "flags" else ARM_FLAGS
    return {
        "model": model or platform.processor() or None,
        "machine": platform.machine(),
        "cores": os.cpu_count(),
        "flags": {f: f in flags for f in known} if flags else {},
    }


def versions() -> dict[str, Optional[str]]:
    out: dict[str, Optional[str]] = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def _torch() -> dict[str, Any]:
    import torch

    from cann_distill.runtime.devices import available_devices

    cuda = torch.version.cuda if torch.cuda.is_available() else None
    return {
        "devices": available_devices(),
        "cuda": cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


def _onnxruntime() -> dict[str, Any]:
    import onnxruntime as ort

    return {"available_providers": ort.get_available_providers(), "device": ort.get_device()}


def environment() -> dict[str, Any]:
    """Everything `env` prints, as plain data (`--json`)."""
    return {
        "versions": versions(),
        "platform": platform.platform(),
        "executable": Path(sys.executable).name,
        "cpu": cpuinfo(),
        "torch": _torch(),
        "onnxruntime": _onnxruntime(),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "ASCEND_RT_VISIBLE_DEVICES") if k in os.environ},
    }
