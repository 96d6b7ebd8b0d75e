"""validate: ONNX export, onnxruntime static INT8, accuracy / agreement / latency / size of FP32 vs INT8."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cann_distill.data import Split, channels_of, load_splits
from cann_distill.errors import StageError
from cann_distill.models import build_model, count_params
from cann_distill.quant import ort as q
from cann_distill.quant.export import export_onnx
from cann_distill.recipe import Recipe, load_hardware_profile
from cann_distill.stages.base import Context, Stage, register_stage
from cann_distill.stages.distill import CHECKPOINT as STUDENT_CKPT
from cann_distill.train import accuracy, predict
from cann_distill.ui import ui

REPORT = "validate/validation.json"
FP32 = "validate/student_fp32.onnx"
INT8 = "validate/student_int8.onnx"


def stack(split: Split, idx: np.ndarray) -> np.ndarray:
    return torch.stack([split.fetch(int(i)) for i in idx]).numpy().astype(np.float32)


def calibration_images(train: Split, samples: int, seed: int) -> np.ndarray:
    if samples > len(train):
        raise StageError(f"validate.calibration.samples asks for {samples} images but the training split has only {len(train)}")
    idx = np.sort(np.random.default_rng(seed).permutation(len(train))[:samples])
    return stack(train, idx)


class ValidateStage(Stage):
    name = "validate"
    sections = ("data", "student", "validate", "seed")
    needs = (STUDENT_CKPT,)

    def extra_inputs(self, recipe: Recipe) -> dict[str, Any]:
        # the host decides the auto INT8 scheme, so a run dir moved to another CPU revalidates
        return {"profile": load_hardware_profile(recipe.validate_.target), "cpu": q.cpu_features()}

    def execute(self, ctx: Context) -> dict[str, Any]:
        r = ctx.recipe
        cfg = r.validate_
        profile = load_hardware_profile(cfg.target)
        provider, warning = q.resolve_provider(cfg.provider or profile.get("provider", "CPUExecutionProvider"))
        if warning:
            ui.warn(warning)
        train, val = load_splits(r.data)
        in_chans = channels_of(r.data)
        student = build_model(r.student, len(train.classes), in_chans, checkpoint=ctx.artifacts[STUDENT_CKPT])
        torch_logits = predict(student, val, desc="torch eval")
        val_x = stack(val, np.arange(len(val)))
        calib = calibration_images(train, cfg.calibration.samples, r.seed)
        feats = q.cpu_features()
        scheme = q.choose_scheme(cfg.activation_type, cfg.reduce_range, feats)

        fp32, int8 = ctx.out / "student_fp32.onnx", ctx.out / "student_int8.onnx"
        export_onnx(student, fp32, in_chans, r.data.image_size, cfg.opset)
        with tempfile.TemporaryDirectory() as work:
            ui.info(f"  quantizing: {scheme['activation_type']} activations, reduce_range={scheme['reduce_range']}, "
                    f"{cfg.calibration.method} calibration on {len(calib)} images")
            q.quantize_int8(fp32, int8, calib, scheme, cfg.per_channel, cfg.calibration.method, Path(work))
            import onnx

            onnx.checker.check_model(str(int8), full_check=True)
            s32 = q.session(fp32, provider, threads=cfg.latency.threads)
            s8 = q.session(int8, provider, threads=cfg.latency.threads, optimized_out=Path(work) / "int8_opt.onnx")
            optimized_ops = q.op_histogram(Path(work) / "int8_opt.onnx")
        onnx32 = q.run_logits(s32, val_x)
        onnx8 = q.run_logits(s8, val_x)
        lat32 = q.latency(s32, val_x, cfg.latency.warmup, cfg.latency.runs, "latency fp32")
        lat8 = q.latency(s8, val_x, cfg.latency.warmup, cfg.latency.runs, "latency int8")
        acc = {
            "torch_fp32": accuracy(torch_logits, val.targets),
            "onnx_fp32": accuracy(onnx32, val.targets),
            "onnx_int8": accuracy(onnx8, val.targets),
        }
        ratio = lat8["median_ms"] / lat32["median_ms"]
        float_ops = q.float_ops(optimized_ops)
        notes = []
        if ratio > 1.0:
            stay = ", ".join(f"{k}×{v}" for k, v in list(float_ops.items())[:6]) or "none"
            notes.append(
                f"INT8 is {ratio:.2f}× slower than FP32 on this target at batch 1: ops that stay in float after "
                f"optimization ({stay}) force Quantize/Dequantize round-trips around them"
            )
        result = {
            "target": cfg.target, "provider": provider, "provider_warning": warning,
            "cpu": feats, "scheme": scheme, "per_channel": cfg.per_channel,
            "calibration": {"method": cfg.calibration.method, "samples": len(calib), "source": "train split"},
            "num_val": len(val), "params": count_params(student),
            "accuracy": {**acc, "int8_drop": acc["onnx_fp32"] - acc["onnx_int8"]},
            "agreement": {
                "torch_vs_onnx_fp32_top1": float((torch_logits.argmax(1) == onnx32.argmax(1)).mean()),
                "torch_vs_onnx_fp32_max_abs_logit_diff": float(np.abs(torch_logits - onnx32).max()),
                "fp32_vs_int8_top1": float((onnx32.argmax(1) == onnx8.argmax(1)).mean()),
            },
            "latency_batch1": {"threads": cfg.latency.threads, "fp32": lat32, "int8": lat8, "int8_over_fp32": ratio},
            "size_bytes": {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size},
            "int8_optimized_ops": optimized_ops, "int8_float_ops": float_ops, "notes": notes,
        }
        for note in notes:
            ui.warn(note)
        (ctx.out / "validation.json").write_text(json.dumps(result, indent=2))
        return {
            "accuracy": result["accuracy"], "latency_ms": {"fp32": lat32["median_ms"], "int8": lat8["median_ms"]},
            "int8_over_fp32": ratio, "size_bytes": result["size_bytes"], "scheme": {k: scheme[k] for k in ("activation_type", "reduce_range")},
        }


register_stage(ValidateStage())
