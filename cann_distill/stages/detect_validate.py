"""validate for `task: detect`: the distilled student as FP32 and static INT8 ONNX (onnxruntime, QDQ), its COCO metrics
in torch, FP32 ONNX and INT8 ONNX on the validation split, the files' sizes and batch-1 latency (FP32 and INT8 timed
in alternating rounds). No per-layer gap, fixes or budgets yet (the classification validate's)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cann_distill.core.recipe import Recipe, hardware_profile
from cann_distill.models.detector import load_detector
from cann_distill.quant import latency as timing
from cann_distill.quant import ort as q
from cann_distill.quant.detect_int8 import SessionDetector, export_detector
from cann_distill.quant.profiles import effective_validate
from cann_distill.reporting.detection_metrics import coco_metrics, percent
from cann_distill.runtime.terminal import ui
from cann_distill.stages.base import Context, Stage, register_stage
from cann_distill.stages.detect import STUDENT_CKPT, Data, data_inputs
from cann_distill.training.detect import predict_coco

FP32, INT8 = "student_fp32.onnx", "student_int8.onnx"


def calibration(data: Data, samples: int) -> np.ndarray:
    """Normalised training images [n, 3, S, S], evenly spread over the split (the same ones every run)."""
    n = min(samples, len(data.train))
    picks = np.linspace(0, len(data.train) - 1, n).round().astype(int)
    return torch.stack([data.train[int(i)][0] for i in picks]).numpy().astype(np.float32)


class DetectValidateStage(Stage):
    name = "validate"
    version = 1
    sections = ("detect", "student", "validate", "seed")
    ignore = ("validate.gap", "validate.feedback", "validate.budgets", "validate.throughput_batch", "validate.nodes_to_exclude")
    needs = (STUDENT_CKPT,)

    def extra_inputs(self, recipe: Recipe) -> dict[str, Any]:
        return {
            **data_inputs(recipe),
            "cpu": q.cpu_features(),
            "profile": hardware_profile(recipe.validate_.target).model_dump(mode="json"),
        }

    def execute(self, ctx: Context) -> dict[str, Any]:
        r = ctx.recipe
        profile = hardware_profile(r.validate_.target)
        v = effective_validate(r.validate_, profile)
        data = Data(r)
        size = r.detect.data.image_size
        student = load_detector(
            ctx.artifacts[STUDENT_CKPT], r.student.arch, len(data.classes), r.detect, data.train_set.category_ids, STUDENT_CKPT
        )
        fp32, int8 = ctx.out / FP32, ctx.out / INT8
        shapes = export_detector(student, fp32, size, v.opset)
        scheme = q.choose_scheme(v.activation_type, v.reduce_range, q.cpu_features())
        with tempfile.TemporaryDirectory(prefix="cann-distill-detect-int8-") as work:
            prep = Path(work) / "prep.onnx"
            q.preprocess(fp32, prep)
            q.quantize_int8(prep, int8, calibration(data, v.calibration.samples), scheme, bool(v.per_channel), v.calibration.method)
        provider, warning = q.resolve_provider(v.provider or profile.provider)
        if warning:
            ui.warn(warning)
        threads = v.latency.threads or 1
        sessions = {k: q.session(p, provider, threads, options=profile.provider_options) for k, p in (("fp32", fp32), ("int8", int8))}
        batch = r.data.batch_size
        metrics = {
            "torch_fp32": coco_metrics(data.val_set.gt, predict_coco(student, data.val, r.detect, batch, "validate torch")),
            **{
                f"onnx_{k}": coco_metrics(
                    data.val_set.gt, predict_coco(SessionDetector(s, shapes), data.val, r.detect, batch, f"validate {k}")
                )
                for k, s in sessions.items()
            },
        }
        lat = v.latency
        timed = timing.interleaved(sessions, calibration(data, 1), lat.warmup, lat.runs, lat.rounds, batch=1)
        drop = None
        if metrics["onnx_fp32"]["mAP"] is not None and metrics["onnx_int8"]["mAP"] is not None:
            drop = metrics["onnx_fp32"]["mAP"] - metrics["onnx_int8"]["mAP"]
        doc: dict[str, Any] = {
            "task": "detect",
            "arch": r.student.arch,
            "split": "val",
            "map": {k: m["mAP"] for k, m in metrics.items()},
            "metrics": metrics,
            "int8_map_drop": drop,
            "size_bytes": {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size},
            "latency_batch1": {"fp32": timed["fp32"], "int8": timed["int8"], "int8_over_fp32": timed["comparison"]["int8_over_fp32"]},
            "scheme": {**scheme, "per_channel": bool(v.per_channel), "calibration": v.calibration.model_dump()},
            "provider": provider,
            "threads": threads,
        }
        (ctx.out / "validation.json").write_text(json.dumps(doc, indent=2))
        m8, m32 = metrics["onnx_int8"], metrics["onnx_fp32"]
        key = f"INT8 mAP {percent(m8['mAP'])} (FP32 ONNX {percent(m32['mAP'])}), latency x{doc['latency_batch1']['int8_over_fp32']:.2f} vs FP32"
        kept = ("task", "arch", "split", "map", "int8_map_drop", "size_bytes", "provider")
        return {**{k: doc[k] for k in kept}, "int8_over_fp32": doc["latency_batch1"]["int8_over_fp32"], "key": key}


register_stage(DetectValidateStage(), task="detect")
