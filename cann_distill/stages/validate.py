"""validate: ONNX export, onnxruntime static INT8, accuracy / agreement / latency / size of FP32 vs INT8,
per-layer quantization gap, measured fix suggestions and the deployment gate."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
import onnx
from torch import nn

from cann_distill.core.files import sha256_file
from cann_distill.core.recipe import HardwareProfile, Recipe, ValidateConfig, hardware_profile, load_hardware_profile
from cann_distill.data.loading import Split, Splits, load_splits, loader
from cann_distill.data.transforms import channels_of
from cann_distill.models.build import build_model, count_flops, count_params, exported_recipe, with_teacher_input
from cann_distill.quant import latency as timing
from cann_distill.quant import ort as q
from cann_distill.quant import qad
from cann_distill.quant.calibration import calibration_images, stack
from cann_distill.quant.deploy_meta import deploy_metadata, stamp_onnx
from cann_distill.quant.export import export_onnx
from cann_distill.quant.feedback import (
    QAD_ENABLED,
    Baseline,
    gate,
    not_measured,
    outlier_note,
    qat_config,
    set_dotted,
    split_changes,
    suggest_fixes,
)
from cann_distill.quant.gap import layer_gap
from cann_distill.quant.profiles import basis, effective_validate
from cann_distill.runtime.terminal import ui
from cann_distill.stages.base import Context, Stage, register_stage
from cann_distill.stages.distill import CHECKPOINT as STUDENT_CKPT
from cann_distill.stages.teacher import CHECKPOINT as TEACHER_CKPT
from cann_distill.training.loop import predict

REPORT = "validate/validation.json"
FP32 = "validate/student_fp32.onnx"
INT8 = "validate/student_int8.onnx"  # the shipped INT8 model: PTQ, or with QAD the QAD student
PTQ_FILE = "student_int8_ptq.onnx"  # a QAD run's PTQ model, kept for comparison
PTQ = f"validate/{PTQ_FILE}"
QAT_CKPT = f"distill/{qad.CHECKPOINT_NAME}"


def onnx_logits(sessions: dict[str, Any], split: Split, batch: int = 256) -> dict[str, np.ndarray]:
    """Logits of each ONNX session over a split, streamed in batches (a large split never sits in memory whole)."""
    out: dict[str, list[np.ndarray]] = {name: [] for name in sessions}
    for x, _, _ in loader(split, batch):
        feed = x.numpy().astype(np.float32)
        for name, sess in sessions.items():
            out[name].append(q.run_logits(sess, feed))
    return {name: np.concatenate(parts) for name, parts in out.items()}


def topk(logits: np.ndarray, targets: np.ndarray, k: int) -> float:
    """Top-k accuracy; exact ties (common in INT8 logits, which are dequantized integers) rank the lower class
    first, as argmax does, so top-1 is the accuracy of `logits.argmax(1)`."""
    k = min(k, logits.shape[1])
    return float((np.argsort(-logits, axis=1, kind="stable")[:, :k] == targets[:, None]).any(axis=1).mean())


def agree(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean())


def apply_changes(cfg: ValidateConfig, changes: dict[str, Any]) -> ValidateConfig:
    """The validate config with feedback changes (dotted keys) applied, as the patched recipe would have it."""
    data = cfg.model_dump()
    for key, value in changes.items():
        set_dotted(data, key, value)
    return ValidateConfig.model_validate(data)


class Quantizer:
    """Quantizes the exported FP32 model under a validate config; reused to measure candidate fixes."""

    def __init__(self, fp32: Path, calib: np.ndarray, work: Path) -> None:
        self.fp32, self.calib, self.work = fp32, calib, work
        self.prep = work / "prep.onnx"
        q.preprocess(fp32, self.prep)

    def scheme(self, cfg: ValidateConfig) -> dict[str, Any]:
        return q.choose_scheme(cfg.activation_type, cfg.reduce_range, q.cpu_features())

    def quantize(self, cfg: ValidateConfig, out: Path) -> dict[str, Any]:
        scheme = self.scheme(cfg)
        q.quantize_int8(self.prep, out, self.calib, scheme, cfg.per_channel, cfg.calibration.method, cfg.nodes_to_exclude)
        return scheme


def split_metrics(logits: dict[str, np.ndarray], targets: np.ndarray) -> dict[str, Any]:
    """Top-1/top-5 of every model on one split, the INT8 drop and the agreements."""
    acc = {name: topk(value, targets, 1) for name, value in logits.items()}
    return {
        "num": int(len(targets)),
        "accuracy": {**acc, "int8_drop": acc["onnx_fp32"] - acc["onnx_int8"]},
        "top5": {name: topk(value, targets, 5) for name, value in logits.items()},
        "agreement": {
            "teacher_vs_student_top1": agree(logits["teacher"], logits["torch_fp32"]),
            "torch_vs_onnx_fp32_top1": agree(logits["torch_fp32"], logits["onnx_fp32"]),
            "torch_vs_onnx_fp32_max_abs_logit_diff": float(np.abs(logits["torch_fp32"] - logits["onnx_fp32"]).max()),
            "fp32_vs_int8_top1": agree(logits["onnx_fp32"], logits["onnx_int8"]),
        },
    }


def measure_latency(sessions: dict[str, Any], sample: np.ndarray, cfg: ValidateConfig, batch: int) -> dict[str, Any]:
    """FP32 and INT8 timed in alternating rounds (see quant.latency), with a progress bar."""
    total = len(sessions) * cfg.latency.rounds * max(1, cfg.latency.runs // cfg.latency.rounds)
    with ui.progress() as prog:
        task = prog.add_task("latency " + "/".join(sessions), total=total, status="") if prog is not None else None
        advance = (lambda: prog.advance(task)) if prog is not None else None
        return timing.interleaved(sessions, sample, cfg.latency.warmup, cfg.latency.runs, cfg.latency.rounds, batch, advance)


def slowdown_note(ratio: float, float_ops: dict[str, int]) -> str:
    stay = ", ".join(f"{k}×{v}" for k, v in list(float_ops.items())[:6]) or "none"
    return (
        f"INT8 is {ratio:.2f}× slower than FP32 on this target (beyond the measurement spread): ops that stay in float after "
        f"optimization ({stay}) need Quantize/Dequantize round-trips, and at this model size the "
        "quantize/dequantize overhead outweighs the cheaper INT8 arithmetic"
    )


@dataclass
class _Job:
    """What one validation works on: the target's settings, the splits, the student and the float logits."""

    ctx: Context
    hw: HardwareProfile
    cfg: ValidateConfig  # the recipe's validate section, what it leaves open filled in from the hardware profile
    provider: str
    warning: Optional[str]
    options: Optional[dict[str, Any]]
    splits: Splits
    evaluated: dict[str, Split]
    in_chans: int
    classes: int
    student: nn.Module
    torch_logits: dict[str, dict[str, np.ndarray]]
    calib: np.ndarray
    gap_x: np.ndarray

    @classmethod
    def prepare(cls, ctx: Context) -> "_Job":
        r, rt = ctx.recipe, ctx.runtime
        hw = hardware_profile(r.validate_.target)
        cfg = effective_validate(r.validate_, hw)  # what the recipe leaves open comes from the profile
        provider, warning = q.resolve_provider(cfg.provider or hw.provider)
        options = hw.provider_options if provider == hw.provider else None
        if warning:
            ui.warn(warning)
        splits = load_splits(r.data)
        evaluated = {"val": splits.val, **({"test": splits.test} if splits.test is not None else {})}
        in_chans, classes = channels_of(r.data), len(splits.train.classes)
        names = splits.train.classes
        student = build_model(r.student, classes, in_chans, checkpoint=ctx.artifacts[STUDENT_CKPT], classes=names)
        teacher = with_teacher_input(
            build_model(r.teacher, classes, in_chans, checkpoint=ctx.artifacts[TEACHER_CKPT], classes=names), r.data, r.teacher
        )
        torch_logits = {
            name: {
                "teacher": predict(teacher, split, desc=f"teacher {name}", runtime=rt),
                "torch_fp32": predict(student, split, desc=f"student {name}", runtime=rt),
            }
            for name, split in evaluated.items()
        }
        student.cpu()  # ONNX export and FLOPs on the CPU
        calib = calibration_images(splits.train, cfg.calibration.samples, r.seed)
        gap_x = stack(splits.val, np.arange(min(cfg.gap.samples, len(splits.val))))
        return cls(ctx, hw, cfg, provider, warning, options, splits, evaluated, in_chans, classes, student, torch_logits, calib, gap_x)


@dataclass
class _Qad:
    """The QAD student exported with its learned ranges (the shipped INT8 model of a QAD run)."""

    model: nn.Module
    result: dict[str, Any]  # validation.json's `qat`
    logits: dict[str, np.ndarray]  # onnxruntime INT8 logits per split
    gap_rows: list[dict[str, Any]]


@dataclass
class _OnnxRun:
    """The exported student quantized and measured: sessions, per-split metrics, the per-layer gap, QAD, feedback.

    Every headline figure is about the shipped INT8 file (`student_int8.onnx`): the PTQ model, or with QAD the
    QAD model; a QAD run keeps its PTQ model beside it (`student_int8_ptq.onnx`, figures under `ptq`)."""

    scheme: dict[str, Any]
    s32: Any
    s8: Any
    s_ptq: Optional[Any]  # the PTQ session when QAD ships (else PTQ is s8)
    optimized_ops: dict[str, int]
    float_ops: dict[str, int]
    metrics: dict[str, Any]
    gap_rows: list[dict[str, Any]]
    ptq: Optional[dict[str, Any]]
    qat_result: Optional[dict[str, Any]]
    feedback: dict[str, Any]

    @classmethod
    def measure(cls, job: _Job, fp32: Path, int8: Path, work: Path) -> "_OnnxRun":
        cfg, options, threads = job.cfg, job.options, job.cfg.latency.threads
        qad_run = QAT_CKPT in job.ctx.artifacts
        quantizer = Quantizer(fp32, job.calib, work)
        scheme = quantizer.scheme(cfg)
        ui.info(
            f"  quantizing: {scheme['activation_type']} activations, reduce_range={scheme['reduce_range']}, "
            f"per_channel={cfg.per_channel}, {cfg.calibration.method} calibration on {len(job.calib)} images"
            + (f", {len(cfg.nodes_to_exclude)} node(s) kept in float" if cfg.nodes_to_exclude else "")
        )
        ptq_path = job.ctx.out / PTQ_FILE if qad_run else int8
        quantizer.quantize(cfg, ptq_path)
        onnx.checker.check_model(str(ptq_path), full_check=True)
        s32 = q.session(fp32, job.provider, threads=threads, options=options)
        s_ptq = q.session(ptq_path, job.provider, threads=threads, optimized_out=work / "ptq_opt.onnx", options=options)
        logits = {name: onnx_logits({"onnx_fp32": s32, "ptq": s_ptq}, split) for name, split in job.evaluated.items()}
        ptq_rows = layer_gap(quantizer.prep, ptq_path, job.gap_x, work)
        qad_model = _qad(job, ptq_rows, int8, work) if qad_run else None
        if qad_model is not None:
            onnx.checker.check_model(str(int8), full_check=True)
            s8 = q.session(int8, job.provider, threads=threads, optimized_out=work / "int8_opt.onnx", options=options)
            optimized, gap_rows = onnx.load(str(work / "int8_opt.onnx")).graph, qad_model.gap_rows
        else:
            s8, optimized, gap_rows = s_ptq, onnx.load(str(work / "ptq_opt.onnx")).graph, ptq_rows
        for name, got in logits.items():
            got["onnx_int8"] = qad_model.logits[name] if qad_model is not None else got["ptq"]
        metrics = {
            name: split_metrics({**job.torch_logits[name], "onnx_fp32": got["onnx_fp32"], "onnx_int8": got["onnx_int8"]}, split.targets)
            for (name, split), got in zip(job.evaluated.items(), logits.values())
        }
        ptq = ptq_metrics(logits, job.evaluated, ptq_rows[: cfg.gap.top]) if qad_model is not None else None
        feedback = _feedback(job, quantizer, metrics, logits, gap_rows, scheme, qad_model, work)
        return cls(
            scheme,
            s32,
            s8,
            s_ptq if qad_model is not None else None,
            q.op_histogram(optimized),
            q.float_ops(optimized),
            metrics,
            gap_rows,
            ptq,
            qad_model.result if qad_model is not None else None,
            feedback,
        )


def ptq_metrics(logits: dict[str, dict[str, np.ndarray]], evaluated: dict[str, Split], worst: list[dict[str, Any]]) -> dict[str, Any]:
    """A QAD run's PTQ model (QAD's starting point, kept for comparison): accuracy, drop and agreement per split."""
    by_split = {}
    for name, split in evaluated.items():
        got, y = logits[name], split.targets
        acc = topk(got["ptq"], y, 1)
        by_split[name] = {
            "accuracy": {"onnx_int8": acc, "int8_drop": topk(got["onnx_fp32"], y, 1) - acc},
            "top5": {"onnx_int8": topk(got["ptq"], y, 5)},
            "agreement": {
                "fp32_vs_int8_top1": agree(got["onnx_fp32"], got["ptq"]),
                "ptq_vs_shipped_int8_top1": agree(got["ptq"], got["onnx_int8"]),
            },
        }
    return {
        "file": PTQ,
        "what": "onnxruntime static INT8 of the float student (validate's calibration): QAD's starting point, not shipped",
        "by_split": by_split,
        "layer_gap": {"worst": worst},
    }


def _qad(job: _Job, ptq_rows: list[dict[str, Any]], out: Path, work: Path) -> _Qad:
    """The QAD student, exported with the ranges it learned into `out` (the shipped INT8 file), measured like PTQ."""
    ctx, r, cfg = job.ctx, job.ctx.recipe, job.cfg
    model = qad.load(ctx.artifacts[QAT_CKPT], r, job.classes, job.in_chans, job.splits.train.classes)
    result = qad.validate_qat(model, r, job.classes, job.in_chans, job.calib, out, work, job.evaluated, cfg.nodes_to_exclude)
    rows = layer_gap(result.pop("prep"), out, job.gap_x, work)
    logits = result.pop("logits")
    result["layer_gap"] = qad.compare_gaps(ptq_rows, rows, cfg.gap.top)
    return _Qad(model, result, logits, rows)


def _feedback(
    job: _Job,
    quantizer: Quantizer,
    metrics: dict[str, Any],
    logits: dict[str, dict[str, np.ndarray]],
    gap_rows: list[dict[str, Any]],
    scheme: dict[str, Any],
    qad_model: Optional[_Qad],
    work: Path,
) -> dict[str, Any]:
    """Fixes for a large INT8 drop of the shipped model, each tried on val (never chosen on test) against it."""
    r, rt, cfg, splits = job.ctx.recipe, job.ctx.runtime, job.cfg, job.splits
    evaluated = job.evaluated  # val chooses; test, when there is one, is reported

    def evaluate(changes: dict[str, Any]) -> dict[str, np.ndarray]:
        inside, outside = split_changes(changes)
        trial_cfg = apply_changes(cfg, inside)
        if outside.get(QAD_ENABLED):
            return qad.trial_int8(job.student, r, trial_cfg, qat_config(r.distill.qat, outside), splits, job.calib, work, rt)
        trial = work / "trial.onnx"
        if qad_model is not None:  # the shipped QAD student exported again with the trial's nodes kept in float
            qad.export_learned(qad_model.model, r, job.classes, job.in_chans, job.calib, trial, work, trial_cfg.nodes_to_exclude)
        else:
            quantizer.quantize(trial_cfg, trial)
        return {name: got.argmax(1) for name, got in qad.int8_logits(trial, evaluated).items()}

    baseline = Baseline(
        {name: split.targets for name, split in evaluated.items()}, {name: got["onnx_int8"].argmax(1) for name, got in logits.items()}
    )
    feedback = suggest_fixes(
        cfg,
        cfg.feedback,
        metrics["val"]["accuracy"]["int8_drop"],
        gap_rows,
        r.student.arch,
        baseline,
        scheme,
        evaluate,
        qat=r.distill.qat if qad_model is None else None,
        qad_run=qad_model is not None,
    )
    feedback["split"] = "val"
    return feedback


def _notes(run: _OnnxRun, lat: dict[str, Any]) -> list[str]:
    cmp = lat["comparison"]
    notes = [slowdown_note(cmp["int8_over_fp32"], run.float_ops)] if cmp["verdict"] == "slower" else []
    if (shaky := timing.unstable_note(lat)) is not None:
        notes.append(shaky)
    if run.feedback["triggered"]:
        value = run.metrics["val"]["accuracy"]["int8_drop"]
        drop = f"INT8 drop {100 * value:.2f} pt on val"
        if value <= run.feedback["threshold"]:  # triggered by a layer's gap, not by the accuracy drop
            drop = f"a layer's INT8 gap beyond feedback.max_layer_gap_db ({drop}, within its budget)"
        notes.append(
            f"{drop}: see feedback.suggestions; `cann-distill validate RECIPE --apply-feedback` writes a patched recipe"
            if run.feedback["apply"]
            else f"{drop}: no measured fix helped (feedback.suggestions lists what was tried); nothing to apply"
        )
        if (outlier := outlier_note(run.gap_rows)) is not None:
            notes.append(outlier)
    return notes


def _ptq_measured(run: _OnnxRun, lat: dict[str, Any], job: _Job, head: str) -> Optional[dict[str, Any]]:
    """validation.json's `ptq` (a QAD run's PTQ model): its metrics plus latency, throughput and size."""
    if run.ptq is None or run.s_ptq is None:
        return None
    cfg, ptq = job.cfg, run.ptq
    return {
        **ptq,
        "accuracy": {**ptq["by_split"][head]["accuracy"], "split": head},
        "latency_batch1": {"int8": lat["ptq"], "comparison": timing.compare(lat["fp32"], lat["ptq"])},
        "throughput": {
            "batch": cfg.throughput_batch,
            "int8_img_s": q.throughput(run.s_ptq, job.gap_x, cfg.throughput_batch, cfg.latency.runs // 10 + 3),
        },
        "size_bytes": {"int8": (job.ctx.out / PTQ_FILE).stat().st_size},
    }


def _result(job: _Job, run: _OnnxRun, lat: dict[str, Any], fp32: Path, int8: Path) -> dict[str, Any]:
    """validation.json: every headline figure is about the shipped INT8 file."""
    r, cfg, hw, splits, metrics = job.ctx.recipe, job.cfg, job.hw, job.splits, run.metrics
    lat32, lat8, cmp = lat["fp32"], lat["int8"], lat["comparison"]
    head = splits.headline.name
    params = count_params(job.student)
    measured = {
        "latency_ms_p99": lat8["p99_ms"],
        "latency_ms_median": lat8["median_ms"],
        "size_mb": int8.stat().st_size / 1e6,
        "params_m": params / 1e6,
        "max_accuracy_drop": metrics[head]["accuracy"]["int8_drop"],
    }
    profile_budgets = hw.model_dump(mode="json").get("budgets") or {}
    budgets = gate(cfg.budgets, profile_budgets, measured)
    unchecked = not_measured(cfg.budgets, profile_budgets, measured, {"latency_ms_p99": timing.not_measured_why(lat8)})
    ptq = _ptq_measured(run, lat, job, head)
    return {
        "target": cfg.target,
        "provider": job.provider,
        "provider_warning": job.warning,
        "runtime": job.ctx.runtime.describe(),
        "cpu": q.cpu_features(),
        "shipped": {"file": INT8, "quantization": "qat" if run.qat_result is not None else "ptq", "sha256": sha256_file(int8)},
        "scheme": run.scheme,
        "per_channel": cfg.per_channel,
        "nodes_to_exclude": cfg.nodes_to_exclude,
        "calibration": {"method": cfg.calibration.method, "samples": len(job.calib), "source": "train split"},
        "split": head,
        "num_val": len(splits.val),
        "num_test": len(splits.test) if splits.test is not None else 0,
        "params": params,
        "flops": count_flops(job.student, job.in_chans, r.data.image_size),
        "accuracy": {**metrics[head]["accuracy"], "split": head},
        "top5": metrics[head]["top5"],
        "agreement": metrics[head]["agreement"],
        "by_split": metrics,
        "latency_batch1": {
            "threads": cfg.latency.threads,
            "batch": hw.batch,
            "fp32": lat32,
            "int8": lat8,
            "int8_over_fp32": cmp["int8_over_fp32"],
            "comparison": cmp,
            "load_avg": lat["load_avg"],
            "rounds": lat["rounds"],
            "basis": basis(hw, job.provider, q.cpu_features()),
        },
        "throughput": {
            "batch": cfg.throughput_batch,
            "fp32_img_s": q.throughput(run.s32, job.gap_x, cfg.throughput_batch, cfg.latency.runs // 10 + 3),
            "int8_img_s": q.throughput(run.s8, job.gap_x, cfg.throughput_batch, cfg.latency.runs // 10 + 3),
        },
        "size_bytes": {"fp32": fp32.stat().st_size, "int8": int8.stat().st_size},
        "int8_optimized_ops": run.optimized_ops,
        "int8_float_ops": run.float_ops,
        "layer_gap": {
            "samples": len(job.gap_x),
            "split": "val",
            "metric": "sqnr_db: mean per-channel SQNR of the INT8 activation vs FP32; gap_db: SQNR lost in this layer",
            "worst": run.gap_rows[: cfg.gap.top],
        },
        "feedback": run.feedback,
        "gate": budgets,
        "gate_not_measured": unchecked,
        "notes": _notes(run, lat) + [f"budget {u['budget']} not checked: {u['why']}" for u in unchecked],
        "quantization": "qat" if run.qat_result is not None else "ptq",
        **({"qat": run.qat_result} if run.qat_result is not None else {}),
        **({"ptq": ptq} if ptq is not None else {}),
    }


class ValidateStage(Stage):
    name = "validate"
    # 4: interleaved latency rounds, hardware-profile INT8 scheme; 5: with QAD the QAD model is student_int8.onnx and every
    # figure is about it (PTQ under `ptq`); 6: class names and preprocessing in the ONNX metadata
    version = 6
    sections = ("data", "student", "validate", "seed")
    needs = (TEACHER_CKPT, STUDENT_CKPT)
    ignore = ("data.augment",)  # evaluation and calibration use the evaluation transform

    def needs_for(self, recipe: Recipe) -> tuple[str, ...]:
        return self.needs + ((QAT_CKPT,) if recipe.distill.qat.enabled else ())

    def extra_inputs(self, recipe: Recipe) -> dict[str, Any]:
        # the host decides the auto INT8 scheme, so a run dir moved to another CPU revalidates
        extra = {"profile": load_hardware_profile(recipe.validate_.target), "cpu": q.cpu_features()}
        if recipe.validate_.feedback.qad_epochs and not recipe.distill.qat.enabled:  # the "run QAD" fix trains with distill.qat
            extra["feedback_qad"] = recipe.distill.qat.model_dump(exclude={"enabled", "epochs", "teacher"})
        return extra

    def execute(self, ctx: Context) -> dict[str, Any]:
        ctx = replace(ctx, recipe=exported_recipe(ctx.recipe, ctx.artifacts[STUDENT_CKPT]))  # mutual learning: the best peer
        job = _Job.prepare(ctx)
        fp32, int8 = ctx.out / "student_fp32.onnx", ctx.out / "student_int8.onnx"
        export_onnx(job.student, fp32, job.in_chans, ctx.recipe.data.image_size, job.cfg.opset)
        with tempfile.TemporaryDirectory() as tmp:
            onnx_run = _OnnxRun.measure(job, fp32, int8, Path(tmp))
        stamp_onnx([fp32, int8, ctx.out / PTQ_FILE], deploy_metadata(job.splits.train.classes, ctx.recipe.data))
        sessions = {"fp32": onnx_run.s32, "int8": onnx_run.s8, **({"ptq": onnx_run.s_ptq} if onnx_run.s_ptq is not None else {})}
        lat = measure_latency(sessions, job.gap_x, job.cfg, job.hw.batch)
        result = _result(job, onnx_run, lat, fp32, int8)
        for note in result["notes"]:
            ui.warn(note)
        (ctx.out / "validation.json").write_text(json.dumps(result, indent=2))
        return {
            "accuracy": result["accuracy"],
            "latency_ms": {"fp32": lat["fp32"]["median_ms"], "int8": lat["int8"]["median_ms"]},
            "int8_over_fp32": lat["comparison"]["int8_over_fp32"],
            "size_bytes": result["size_bytes"],
            "scheme": {k: onnx_run.scheme[k] for k in ("activation_type", "reduce_range")},
            "worst_layers": [{k: row.get(k) for k in ("module", "node", "gap_db", "sqnr_db")} for row in onnx_run.gap_rows[:3]],
            "feedback": {"triggered": onnx_run.feedback["triggered"], "apply": onnx_run.feedback["apply"]},
            "gate": result["gate"],
            "gate_not_measured": result["gate_not_measured"],
            "quantization": result["quantization"],
            "int8_file": INT8,
        }


register_stage(ValidateStage())
