"""Where torch work runs: device resolution (`auto | cpu | cuda | cuda:N | npu | npu:N`), mixed
precision per device, channels_last / torch.compile switches and DataLoader worker counts.

`auto` prefers CUDA, then an Ascend NPU (through `torch_npu`, imported only when asked for or
probed), then the CPU. A device that is named but absent is a usage error that says which devices
this machine has, before any work starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Optional, Union

import torch
from torch import nn

from cann_distill.core.errors import UsageError
from cann_distill.core.registries import DEVICE_PATTERN

log = logging.getLogger(__name__)

_SPEC = re.compile(DEVICE_PATTERN)


def _npu_count() -> int:
    """Ascend NPUs visible through torch_npu; 0 when torch_npu is not installed or finds none."""
    try:
        import torch_npu  # noqa: F401  (registers torch.npu)
    except Exception:  # ImportError, or a CANN runtime that fails to load
        return 0
    npu = getattr(torch, "npu", None)
    try:
        return int(npu.device_count()) if npu is not None and npu.is_available() else 0
    except Exception:
        return 0


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def available_devices() -> list[str]:
    """Every device this process can use, e.g. ['cpu', 'cuda:0', 'cuda:1']."""
    return ["cpu"] + [f"cuda:{i}" for i in range(_cuda_count())] + [f"npu:{i}" for i in range(_npu_count())]


def _absent(spec: str, why: str) -> UsageError:
    return UsageError(f"device '{spec}' is not available: {why} (available here: {', '.join(available_devices())})")


def device_string(spec: str = "auto") -> str:
    """The concrete device ('cpu', 'cuda:0', 'npu:1') for a recipe's `runtime.device` / `--device`.

    Raises UsageError when it is unknown or absent, naming the devices that exist.
    """
    m = _SPEC.match(spec or "auto")
    if m is None:
        raise UsageError(f"unknown device '{spec[:40]}' (expected auto, cpu, cuda, cuda:N, npu or npu:N)")
    kind, index = m.group(1), (int(m.group(2)[1:]) if m.group(2) else None)
    if kind == "auto":
        if _cuda_count():
            return "cuda:0"
        return "npu:0" if _npu_count() else "cpu"
    if kind == "cpu":
        return "cpu"
    if kind == "cuda":
        count = _cuda_count()
        if not count:
            why = (
                "this torch build has no CUDA support"
                if torch.version.cuda is None
                else f"torch {torch.__version__} was built with CUDA {torch.version.cuda} but sees no GPU"
            )
            raise _absent(spec, why)
    else:
        count = _npu_count()
        if not count:
            raise _absent(spec, "torch_npu is not installed or sees no Ascend NPU")
    if index is not None and index >= count:
        raise _absent(spec, f"only {count} {kind.upper()} device(s)")
    return f"{kind}:{index or 0}"


def resolve_device(spec: str = "auto") -> torch.device:
    """`device_string` as a torch device (an NPU needs torch_npu imported, which `_npu_count` did)."""
    return torch.device(device_string(spec))


def device_name(device: torch.device) -> str:
    """A human name for the manifest: the GPU/NPU model, or the CPU's."""
    try:
        if device.type == "cuda":
            return torch.cuda.get_device_name(device)
        if device.type == "npu":
            return str(torch.npu.get_device_name(device.index or 0))  # type: ignore[attr-defined]
    except Exception:
        pass
    import platform

    return platform.processor() or platform.machine() or "cpu"


@dataclass(frozen=True)
class Runtime:
    """How a stage runs its torch work. Built once per command from `recipe.runtime`."""

    device: torch.device
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False  # under torchrun: SyncBatchNorm (batch statistics over every rank's slice)

    @property
    def type(self) -> str:
        return self.device.type

    def describe(self) -> dict[str, Any]:
        from cann_distill.runtime import distributed

        out = {
            "device": str(self.device),
            "name": device_name(self.device),
            "channels_last": self.channels_last,
            "compile": self.compile,
            "torch": torch.__version__,
        }
        if distributed.active():
            out.update(processes=distributed.world(), backend=distributed.backend_name(), sync_bn=self.sync_bn)
        return out

    def model(self, module: nn.Module) -> nn.Module:
        """Move a module to the device (and memory format); returns the same object."""
        module.to(self.device)
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        return module

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=self.device.type != "cpu")
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def to(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device, non_blocking=self.device.type != "cpu")

    def compiled(self, module: nn.Module) -> nn.Module:
        """`torch.compile(module)` when asked for; the state dict stays on the original module."""
        return torch.compile(module) if self.compile else module  # type: ignore[return-value]

    def autocast(self, amp: str) -> contextlib.AbstractContextManager:
        if amp == "none":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if amp == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def grad_scaler(self, amp: str) -> Optional[torch.amp.GradScaler]:
        """fp16 needs loss scaling on accelerators; bf16 keeps fp32's range and needs none."""
        if amp != "fp16":
            return None
        return torch.amp.GradScaler(self.device.type)

    def check_amp(self, amp: str) -> None:
        if amp == "fp16" and self.device.type == "cpu":
            raise UsageError(
                "amp: fp16 needs a CUDA or NPU device (fp16 autocast on the CPU is slow and unscaled); use amp: bf16 on the CPU"
            )

    @property
    def pin_memory(self) -> bool:
        return self.device.type == "cuda"

    def synchronize(self) -> None:
        """Wait for the device's queued work, so a host timer measures it (no-op on the CPU)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        elif self.device.type == "npu":
            torch.npu.synchronize(self.device)  # type: ignore[attr-defined]

    def reset_peak_memory(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory_mb(self) -> Optional[float]:
        """Peak tensor memory allocated on the device since `reset_peak_memory` (MiB); None off CUDA."""
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return None


CPU = Runtime(torch.device("cpu"))


def channels_last_for(device: torch.device, setting: Union[bool, str]) -> bool:
    """`runtime.channels_last` resolved for a device: auto is on where NHWC convolutions are the fast path.

    Measured on a 2-core AVX-512 CPU (one thread, batch 64): a mobilenetv3_small_050 / lcnet_050 /
    mobilenetv2_050 training step takes 0.50-0.57x the NCHW time at 32 and 96 px, resnet10t 0.77-0.95x,
    resnet18/50 inference 0.83-1.02x. cuDNN's tensor-core kernels want NHWC too; Ascend NPUs use their own formats.
    """
    if setting == "auto":
        return device.type in ("cpu", "cuda")
    return bool(setting)


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (MiB); DataLoader workers are not included."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one, else every core)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def worker_count(requested: Optional[int], in_memory: bool = False) -> int:
    """DataLoader workers: the recipe's number capped at the cores there are; default cores − 1 (max 8).

    In-memory data without per-sample augmentation gains nothing from workers, so it defaults to 0.
    """
    cores = usable_cores()
    if requested is None:
        return 0 if in_memory else min(8, max(cores - 1, 0))
    if requested > cores:
        log.warning("data.num_workers=%d is more than the %d CPU core(s) here; using %d", requested, cores, cores)
        return cores
    return requested
