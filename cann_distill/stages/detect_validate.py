"""validate for `task: detect`: the distilled student as FP32 and static INT8 ONNX (onnxruntime, QDQ), its COCO metrics
in torch, FP32 ONNX and INT8 ONNX on the validation split, the per-layer INT8 gap, measured fixes (feedback), the files'
sizes, batch-1 latency (FP32 and INT8 timed in alternating rounds), throughput and the deployment gate, as
classification's validate measures them (docs/guides/detection.md)."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import onnx
import torch

from cann_distill.core.recipe import HardwareProfile, Recipe, ValidateConfig, hardware_profile
from cann_distill.models.detector import Detector, count_params, load_detector
from cann_distill.quant import latency as timing
from cann_distill.quant import ort as q
from cann_distill.quant.deploy_meta import detect_metadata, stamp_onnx
from cann_distill.quant.detect_feedback import HEAD_KEY, head_nodes, suggest_detect_fixes
from cann_distill.quant.detect_int8 import SessionDetector, export_detector
from cann_distill.quant.feedback import gate, not_measured, split_changes
from cann_distill.quant.gap import layer_gap
from cann_distill.quant.profiles import basis, effective_validate
from cann_distill.reporting.detection_metrics import coco_metrics, percent
from cann_distill.runtime.terminal import ui
from cann_distill.stages.base import Context, Stage, register_stage
from cann_distill.stages.detect import STUDENT_CKPT, Data, data_inputs
from cann_distill.stages.validate import Quantizer, apply_changes, slowdown_note
from cann_distill.training.detect import predict_coco

FP32, INT8 = "student_fp32.onnx", "student_int8.onnx"


def spread(dataset: Any, samples: int) -> np.ndarray:
    """Normalised images [n, 3, S, S] of a split, evenly spread over it (the same ones every run)."""
    n = min(samples, len(dataset))
    picks = np.linspace(0, len(dataset) - 1, n).round().astype(int)
    return torch.stack([dataset[int(i)][0] for i in picks]).numpy().astype(np.float32)


def calibration(data: Data, samples: int) -> np.ndarray:
    """Calibration images: training images evenly spread over the split."""
    return spread(data.train, samples)


def with_head(cfg: ValidateConfig, int8_head: str, heads: list[str]) -> ValidateConfig:
    """The validate settings the INT8 model is made with: `detect.int8_head: float` adds the head's nodes to the
    nodes kept in float."""
    if int8_head != "float":
        return cfg
    return cfg.model_copy(update={"nodes_to_exclude": sorted(set(cfg.nodes_to_exclude) | set(heads))})


@dataclass
class Measured:
    """The INT8 model as shipped and what was measured on it."""

    scheme: dict[str, Any]
    sessions: dict[str, Any]  # fp32, int8
    metrics: dict[str, dict[str, Optional[float]]]  # torch_fp32, onnx_fp32, onnx_int8
    gap_rows: list[dict[str, Any]]
    float_ops: dict[str, int]
    feedback: dict[str, Any]
    in_float: list[str]

    @property
    def drop(self) -> Optional[float]:
        m32, m8 = self.metrics["onnx_fp32"]["mAP"], self.metrics["onnx_int8"]["mAP"]
        return m32 - m8 if m32 is not None and m8 is not None else None


class Job:
    """One detector validation: the target's settings, the data, the student and its ONNX files."""

    def __init__(self, ctx: Context) -> None:
        r = ctx.recipe
        self.ctx, self.recipe = ctx, r
        self.hw: HardwareProfile = hardware_profile(r.validate_.target)
        self.cfg = effective_validate(r.validate_, self.hw)
        self.data = Data(r)
        self.student: Detector = load_detector(
            ctx.artifacts[STUDENT_CKPT], r.student.arch, len(self.data.classes), r.detect, self.data.train_set.category_ids, STUDENT_CKPT
        )
        self.provider, warning = q.resolve_provider(self.cfg.provider or self.hw.provider)
        if warning:
            ui.warn(warning)
        self.options = self.hw.provider_options if self.provider == self.hw.provider else None
        self.threads = self.cfg.latency.threads or 1
        self.calib = calibration(self.data, self.cfg.calibration.samples)
        self.gap_x = spread(self.data.val, self.cfg.gap.samples)
        self.fp32, self.int8 = ctx.out / FP32, ctx.out / INT8
        self.shapes: list[tuple[int, int]] = []

    def session(self, path: Path, optimized_out: Optional[Path] = None) -> Any:
        return q.session(path, self.provider, self.threads, optimized_out=optimized_out, options=self.options)

    def onnx_metrics(self, sess: Any, desc: str) -> dict[str, Optional[float]]:
        r, data = self.recipe, self.data
        return coco_metrics(data.val_set.gt, predict_coco(SessionDetector(sess, self.shapes), data.val, r.detect, r.data.batch_size, desc))

    def measure(self, work: Path) -> Measured:
        r, cfg = self.recipe, self.cfg
        self.shapes = export_detector(self.student, self.fp32, r.detect.data.image_size, cfg.opset)
        quantizer = Quantizer(self.fp32, self.calib, work)
        heads = head_nodes([n.name for n in onnx.load(str(quantizer.prep)).graph.node])
        shipped = with_head(cfg, r.detect.int8_head, heads)
        scheme = quantizer.quantize(shipped, self.int8)
        ui.info(
            f"  quantizing: {scheme['activation_type']} activations, reduce_range={scheme['reduce_range']}, per_channel={cfg.per_channel}, "
            f"{cfg.calibration.method} calibration on {len(self.calib)} images, {len(shipped.nodes_to_exclude)} node(s) in float"
            + (" (the head)" if r.detect.int8_head == "float" else "")
        )
        onnx.checker.check_model(str(self.int8), full_check=True)
        sessions = {"fp32": self.session(self.fp32), "int8": self.session(self.int8, optimized_out=work / "int8_opt.onnx")}
        batch = r.data.batch_size
        metrics = {
            "torch_fp32": coco_metrics(self.data.val_set.gt, predict_coco(self.student, self.data.val, r.detect, batch, "validate torch")),
            **{f"onnx_{k}": self.onnx_metrics(s, f"validate {k}") for k, s in sessions.items()},
        }
        gap_rows = layer_gap(quantizer.prep, self.int8, self.gap_x, work)
        float_ops = q.float_ops(onnx.load(str(work / "int8_opt.onnx")).graph)
        done = Measured(scheme, sessions, metrics, gap_rows, float_ops, {}, list(shipped.nodes_to_exclude))
        done.feedback = self.feedback(quantizer, heads, done, work)
        return done

    def feedback(self, quantizer: Quantizer, heads: list[str], done: Measured, work: Path) -> dict[str, Any]:
        """Fixes for a large INT8 mAP drop or a layer's large gap, each quantized and scored on val."""
        r, cfg = self.recipe, self.cfg

        def evaluate(changes: dict[str, Any]) -> Optional[float]:
            inside, outside = split_changes(changes)
            trial_cfg = with_head(apply_changes(cfg, inside), outside.get(HEAD_KEY, r.detect.int8_head), heads)
            trial = work / "trial.onnx"
            quantizer.quantize(trial_cfg, trial)
            return self.onnx_metrics(self.session(trial), "feedback trial")["mAP"]

        shipped_map = done.metrics["onnx_int8"]["mAP"]
        return suggest_detect_fixes(cfg, cfg.feedback, done.drop, done.gap_rows, shipped_map, done.scheme, r.detect.int8_head, evaluate)


def notes(done: Measured, lat: dict[str, Any]) -> list[str]:
    """What a reader of validation.json should not miss: a slower INT8 model, shaky timings, the feedback's outcome."""
    out = [slowdown_note(lat["comparison"]["int8_over_fp32"], done.float_ops)] if lat["comparison"]["verdict"] == "slower" else []
    if (shaky := timing.unstable_note(lat)) is not None:
        out.append(shaky)
    fb = done.feedback
    if fb["triggered"]:
        what = f"INT8 mAP drop {percent(done.drop)} pt on val" if done.drop is not None else "INT8 mAP not measured"
        if done.drop is not None and done.drop <= fb["threshold"]:
            what = f"a layer's INT8 gap beyond feedback.max_layer_gap_db ({what}, within its budget)"
        out.append(
            f"{what}: see feedback.suggestions; `cann-distill validate RECIPE --apply-feedback` writes a patched recipe"
            if fb["apply"]
            else f"{what}: no measured fix gained 0.5 mAP points (feedback.suggestions lists what was tried); nothing to apply"
        )
    return out


def document(job: Job, done: Measured, lat: dict[str, Any]) -> dict[str, Any]:
    """validation.json: every headline figure is about the shipped INT8 file, on the validation split."""
    r, cfg, hw = job.recipe, job.cfg, job.hw
    params = count_params(job.student)
    lat8 = lat["int8"]
    measured = {
        "latency_ms_p99": lat8["p99_ms"],
        "latency_ms_median": lat8["median_ms"],
        "size_mb": job.int8.stat().st_size / 1e6,
        "params_m": params / 1e6,
        "max_accuracy_drop": done.drop,  # with task: detect, the ONNX FP32 -> INT8 mAP drop
    }
    profile_budgets = hw.model_dump(mode="json").get("budgets") or {}
    unchecked = not_measured(cfg.budgets, profile_budgets, measured, {"latency_ms_p99": timing.not_measured_why(lat8)})
    runs = cfg.latency.runs // 10 + 3
    return {
        "task": "detect",
        "arch": r.student.arch,
        "split": "val",
        "target": cfg.target,
        "map": {k: m["mAP"] for k, m in done.metrics.items()},
        "metrics": done.metrics,
        "int8_map_drop": done.drop,
        "params": params,
        "size_bytes": {"fp32": job.fp32.stat().st_size, "int8": job.int8.stat().st_size},
        "latency_batch1": {
            "batch": hw.batch,
            "threads": job.threads,
            "fp32": lat["fp32"],
            "int8": lat8,
            "int8_over_fp32": lat["comparison"]["int8_over_fp32"],
            "comparison": lat["comparison"],
            "load_avg": lat["load_avg"],
            "rounds": lat["rounds"],
            "basis": basis(hw, job.provider, q.cpu_features()),
        },
        "throughput": {
            "batch": cfg.throughput_batch,
            **{f"{k}_img_s": q.throughput(s, job.gap_x, cfg.throughput_batch, runs) for k, s in done.sessions.items()},
        },
        "scheme": {**done.scheme, "per_channel": bool(cfg.per_channel), "calibration": cfg.calibration.model_dump()},
        "int8_head": r.detect.int8_head,
        "nodes_in_float": len(done.in_float),
        "nodes_to_exclude": cfg.nodes_to_exclude,
        "int8_float_ops": done.float_ops,
        "layer_gap": {
            "samples": len(job.gap_x),
            "split": "val",
            "metric": "sqnr_db: mean per-channel SQNR of the INT8 activation vs FP32; gap_db: SQNR lost in this layer",
            "worst": done.gap_rows[: cfg.gap.top],
        },
        "feedback": done.feedback,
        "gate": gate(cfg.budgets, profile_budgets, measured),
        "gate_not_measured": unchecked,
        "notes": notes(done, lat) + [f"budget {u['budget']} not checked: {u['why']}" for u in unchecked],
        "provider": job.provider,
        "threads": job.threads,
        "cpu": q.cpu_features(),  # with provider and threads: whether two runs' latencies can be compared
    }


class DetectValidateStage(Stage):
    name = "validate"
    version = 3  # 2: per-layer gap, feedback, gate, throughput, detect.int8_head; classes and decoding in the ONNX metadata; 3: cpu
    sections = ("detect", "student", "validate", "seed")
    needs = (STUDENT_CKPT,)

    def extra_inputs(self, recipe: Recipe) -> dict[str, Any]:
        return {
            **data_inputs(recipe),
            "cpu": q.cpu_features(),
            "profile": hardware_profile(recipe.validate_.target).model_dump(mode="json"),
        }

    def execute(self, ctx: Context) -> dict[str, Any]:
        job = Job(ctx)
        with tempfile.TemporaryDirectory(prefix="cann-distill-detect-int8-") as work:
            done = job.measure(Path(work))
        stamp_onnx([job.fp32, job.int8], detect_metadata(job.data.classes, ctx.recipe.detect, job.shapes))  # for `predict`
        lat = timing.interleaved(
            done.sessions, job.calib[:1], job.cfg.latency.warmup, job.cfg.latency.runs, job.cfg.latency.rounds, batch=job.hw.batch
        )
        doc = document(job, done, lat)
        for note in doc["notes"]:
            ui.warn(note)
        (ctx.out / "validation.json").write_text(json.dumps(doc, indent=2))
        m8, m32 = done.metrics["onnx_int8"], done.metrics["onnx_fp32"]
        key = f"INT8 mAP {percent(m8['mAP'])} (FP32 ONNX {percent(m32['mAP'])}), latency x{doc['latency_batch1']['int8_over_fp32']:.2f} vs FP32"
        kept = ("task", "arch", "split", "map", "int8_map_drop", "size_bytes", "provider", "gate", "gate_not_measured", "int8_head")
        return {
            **{k: doc[k] for k in kept},
            "int8_over_fp32": doc["latency_batch1"]["int8_over_fp32"],
            "worst_layers": [{k: row.get(k) for k in ("module", "node", "gap_db", "sqnr_db")} for row in done.gap_rows[:3]],
            "feedback": {"triggered": done.feedback["triggered"], "apply": done.feedback["apply"]},
            "key": key,
        }


register_stage(DetectValidateStage(), task="detect")
