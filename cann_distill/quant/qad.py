"""The QAD phase (`distill.qat`) and its validation: plan from validate's PTQ, train, save; export and measure.

Distill calls `train_phase` after float distillation; validate calls `validate_qat` on what it saved.
The math (fake quantizers, folding, overrides) is in `cann_distill.quant.qat`.
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cann_distill.core.errors import ArtifactError
from cann_distill.core.recipe import QatConfig, Recipe
from cann_distill.data.loading import Splits
from cann_distill.data.transforms import make_mixup
from cann_distill.models.build import build_model, create_model, read_checkpoint, save_checkpoint, with_teacher_input
from cann_distill.quant import ort as q
from cann_distill.quant import qat, qat_export, qat_plan
from cann_distill.quant.calibration import calibration_images
from cann_distill.quant.export import export_onnx
from cann_distill.runtime import distributed
from cann_distill.runtime.devices import CPU, Runtime
from cann_distill.teaching.losses import LOSSES
from cann_distill.training.loop import Checkpointing, History, accuracy, evaluate, fit, predict

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "student_qat.pt"
FORMAT = "cann-distill-qat-1"
VERSION = 2
"""Part of distill's fingerprint with QAD on: bump when the QAD phase trains or keeps differently (2: onnxruntime's
quantize arithmetic, the best epoch on val kept, observers frozen after the first epoch by default)."""


@dataclass
class Prepared:
    """A QAT student ready to train or evaluate, with the plan it follows."""

    model: nn.Module
    plan: qat.QuantPlan
    ptq_seconds: float
    start_val_acc: Optional[float] = None  # fake-quant val top-1 of the PTQ starting point (before any QAD step)
    kept_start: bool = False  # no QAD epoch beat the start on val: the PTQ weights and ranges were kept
    val_acc: Optional[float] = None  # fake-quant val top-1 of the weights it holds, when `train` measured it (keep_start)


def calibration(recipe: Recipe, splits: Splits) -> np.ndarray:
    """validate's calibration images (same samples, same seed), so QAD starts from validate's own PTQ ranges."""
    return calibration_images(splits.train, recipe.validate_.calibration.samples, recipe.seed)


def prepare(student: nn.Module, recipe: Recipe, calib: np.ndarray, cfg: Optional[QatConfig] = None) -> Prepared:
    """Export the float student, quantize it with validate's PTQ settings, place the quantizers from that model."""
    cfg = cfg or recipe.distill.qat
    from cann_distill.core.recipe import hardware_profile
    from cann_distill.quant.profiles import effective_validate

    vcfg = effective_validate(recipe.validate_, hardware_profile(recipe.validate_.target))  # as validate quantizes
    student = copy.deepcopy(student).cpu().eval()
    qat_plan.check_overrides(student, cfg.keep_float, cfg.per_tensor)
    t0 = time.perf_counter()
    scheme = q.choose_scheme(vcfg.activation_type, vcfg.reduce_range, q.cpu_features())
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fp32, prep, ptq = work / "fp32.onnx", work / "prep.onnx", work / "ptq.onnx"
        export_onnx(student, fp32, int(calib.shape[1]), int(calib.shape[-1]), vcfg.opset)
        q.preprocess(fp32, prep)
        exclude = list(vcfg.nodes_to_exclude) + qat_export.node_names(prep, cfg.keep_float)
        q.quantize_int8(prep, ptq, calib, scheme, vcfg.per_channel, vcfg.calibration.method, exclude)
        plan = qat_plan.build_plan(
            student, prep, ptq, calib[:8], scheme, vcfg.per_channel, cfg.keep_float, cfg.per_tensor, work, vcfg.opset
        )
        s8 = q.session(ptq, "CPUExecutionProvider", optimized_out=work / "ptq_opt.onnx")
        del s8
        import onnx

        plan.float_nodes = q.float_ops(onnx.load(str(work / "ptq_opt.onnx")).graph)
    pairs = qat.conv_bn_pairs(student, torch.from_numpy(calib[:2]))
    model = qat.attach(student, plan, pairs)
    for quantizer in getattr(model, qat.QUANTIZERS):
        quantizer.momentum = cfg.observer_momentum
    if plan.unmatched:
        log.warning(
            "QAD: %d quantized tensor(s) not found in the torch student (stay unsimulated): %s",
            len(plan.unmatched),
            ", ".join(plan.unmatched[:5]),
        )
    return Prepared(model, plan, time.perf_counter() - t0)


class QadStep:
    """KD (logit KL at the QAD temperature) against the frozen KD target, plus optional CE with the labels."""

    def __init__(self, target: nn.Module, cfg: QatConfig) -> None:
        self.target, self.ce_weight = target, cfg.ce_weight
        self.kd = LOSSES.build("kd", temperature=cfg.temperature)

    def __call__(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        x, y, _ = batch
        with torch.no_grad():
            t = self.target(x)
        s = model(x)
        kd = self.kd({"student.logits": s, "teacher.logits": t}).mean()
        loss = kd
        parts = {"kd": kd.item()}
        if self.ce_weight:
            ce = F.cross_entropy(s, y)
            loss = loss + self.ce_weight * ce
            parts["ce"] = ce.item()
        return loss, parts


class Freezing:
    """fit's epoch hook: observers and BatchNorm statistics freeze at their epochs."""

    def __init__(self, model: nn.Module, cfg: QatConfig) -> None:
        self.model, self.cfg = model, cfg

    def __call__(self, epoch: int) -> dict[str, float]:
        obs = self.cfg.freeze_observers_epoch is not None and epoch >= self.cfg.freeze_observers_epoch
        bn = epoch >= self.cfg.freeze_bn_epoch
        qat.freeze_observers(self.model, obs)
        qat.freeze_bn(self.model, bn)
        return {"observers_frozen": int(obs), "bn_frozen": int(bn)}


def kd_target(recipe: Recipe, cfg: QatConfig, float_student: nn.Module, teacher: Optional[nn.Module]) -> nn.Module:
    target = copy.deepcopy(float_student) if cfg.teacher == "float_student" else teacher
    if target is None:
        raise ArtifactError("distill.qat.teacher: teacher needs the teacher checkpoint")
    target.eval()
    for p in target.parameters():
        p.requires_grad_(False)
    return target


def train(
    float_student: nn.Module,
    recipe: Recipe,
    splits: Splits,
    *,
    teacher: Optional[nn.Module] = None,
    checkpoint: Optional[Checkpointing] = None,
    runtime: Runtime = CPU,
    cfg: Optional[QatConfig] = None,
    calib: Optional[np.ndarray] = None,
) -> tuple[Prepared, History, float]:
    """The QAD phase: prepared QAT student trained against its KD target; (prepared, history, seconds)."""
    cfg = cfg or recipe.distill.qat
    t0 = time.perf_counter()
    calib = calib if calib is not None else calibration(recipe, splits)
    prepared = prepare(float_student, recipe, calib, cfg)
    keep = cfg.keep_start and splits.val is not None
    start = start_point(prepared.model, splits.val, runtime) if keep else None
    target = runtime.model(kd_target(recipe, cfg, float_student, teacher))
    history = fit(
        prepared.model,
        splits.train,
        cfg.model_copy(update={"select_best": True}) if keep else cfg,  # keep_start: the best QAD epoch on val, not the last
        cfg.batch_size or recipe.data.batch_size,
        QadStep(target, cfg),
        recipe.seed,
        "qad",
        val=splits.val,
        on_epoch_start=Freezing(prepared.model, cfg),
        checkpoint=checkpoint,
        runtime=runtime,
        transform=splits.train_transform,
        mix=make_mixup(recipe.data, len(splits.train.classes)),
    )
    if start is not None:
        prepared.start_val_acc = start[0]
        best = prepared.val_acc = evaluate(prepared.model, splits.val, "qad val", runtime)  # the best epoch's weights
        if best <= start[0]:  # QAD must earn its place on val: otherwise ship the PTQ point it started from
            prepared.model.load_state_dict(start[1])
            prepared.kept_start, prepared.val_acc = True, start[0]
            log.info("QAD: no epoch beat the PTQ start on val (%.4f <= %.4f): keeping the start's weights and ranges", best, start[0])
    prepared.model.cpu().eval()
    return prepared, history, time.perf_counter() - t0


def start_point(model: nn.Module, val: Any, runtime: Runtime) -> tuple[float, dict[str, torch.Tensor]]:
    """The prepared QAT student's fake-quant val top-1 and its state (weights, BatchNorm, quantizer ranges) before QAD."""
    acc = evaluate(model, val, "qad start", runtime)
    return acc, {k: v.detach().clone() for k, v in model.state_dict().items()}


def save(path: Path, prepared: Prepared, recipe: Recipe, num_classes: int, in_chans: int, classes: list[str]) -> None:
    save_checkpoint(
        path, prepared.model, recipe.student.arch, num_classes, in_chans, classes=classes, format=FORMAT, qat_plan=prepared.plan.to_dict()
    )


def load(path: Path, recipe: Recipe, num_classes: int, in_chans: int, classes: list[str]) -> nn.Module:
    """The QAT student from distill/student_qat.pt; a float checkpoint here is refused with a clear line."""
    ckpt = read_checkpoint(path)
    meta = ckpt.get("meta") or {}
    if meta.get("format") != FORMAT or "qat_plan" not in meta:
        raise ArtifactError(
            f"{path}: not a QAT checkpoint (a float student?); rerun `cann-distill distill --force` with distill.qat.enabled"
        )
    plan = qat.QuantPlan.from_dict(meta["qat_plan"])
    student = create_model(recipe.student.arch, num_classes, in_chans)
    student.load_state_dict({k: v for k, v in ckpt["state_dict"].items() if not k.startswith(qat.QUANTIZERS + ".")})
    pairs = qat.conv_bn_pairs(student, torch.zeros(2, in_chans, recipe.data.image_size, recipe.data.image_size))
    model = qat.attach(student, plan, pairs)
    model.load_state_dict(ckpt["state_dict"])
    qat.freeze_bn(model)
    return model.eval()


def plain_student(model: nn.Module, recipe: Recipe, num_classes: int, in_chans: int) -> nn.Module:
    """The QAT student's weights in a plain timm student (what exports to ONNX)."""
    student = create_model(recipe.student.arch, num_classes, in_chans)
    student.load_state_dict(qat.plain_state(model))
    return student.eval()


def summary(prepared: Prepared, history: History, seconds: float, val_acc: float, cfg: QatConfig) -> dict[str, Any]:
    plan = prepared.plan
    return {
        "epochs": cfg.epochs,
        "lr": cfg.lr,
        "teacher": cfg.teacher,
        "seconds": seconds,
        "ptq_init_seconds": prepared.ptq_seconds,
        "fake_quant_val_acc": val_acc,
        "best_epoch": history.best_epoch,
        "shipped_epoch": 0 if prepared.kept_start else (history.best_epoch if history.selected == "best" else cfg.epochs),
        "start_fake_quant_val_acc": prepared.start_val_acc,
        "kept_start": prepared.kept_start,
        "scheme": {"activation_type": plan.activation_type, "reduce_range": plan.reduce_range, "per_channel": plan.per_channel},
        "quantizers": {"activations": len(plan.activations), "weights": len(plan.weights), "unmatched": plan.unmatched},
        "float_layers": qat_plan.float_reasons(plan),
        "ranges_init": "validate's PTQ calibration (onnxruntime quantize_static)",
    }


def export_learned(
    model: nn.Module, recipe: Recipe, num_classes: int, in_chans: int, calib: np.ndarray, out: Path, work: Path, nodes_to_exclude: list[str]
) -> tuple[dict[str, Any], Path]:
    """The QAT student's float export quantized with its learned ranges into `out`: (what the ranges became, the
    pre-processed float model it was quantized from, for the per-layer gap)."""
    plain = plain_student(model, recipe, num_classes, in_chans)
    fp32, prep = work / "qat_fp32.onnx", work / "qat_prep.onnx"
    export_onnx(plain, fp32, in_chans, recipe.data.image_size, recipe.validate_.opset)
    q.preprocess(fp32, prep)
    return qat_export.quantize_learned(model, prep, out, calib, nodes_to_exclude), prep


def int8_logits(path: Path, evaluated: dict[str, Any]) -> dict[str, np.ndarray]:
    """onnxruntime INT8 logits of an exported model per split."""
    sess = q.session(path, "CPUExecutionProvider")
    return {
        name: np.concatenate([q.run_logits(sess, x.numpy().astype(np.float32)) for x, _, _ in _batches(split)])
        for name, split in evaluated.items()
    }


def validate_qat(
    model: nn.Module,
    recipe: Recipe,
    num_classes: int,
    in_chans: int,
    calib: np.ndarray,
    out: Path,
    work: Path,
    evaluated: dict[str, Any],
    nodes_to_exclude: list[str],
) -> dict[str, Any]:
    """Export with the learned ranges, then per split: fake-quant torch vs onnxruntime INT8 (accuracy, agreement).

    `logits` holds the onnxruntime INT8 logits per split (what validate measures the shipped model by), `prep`
    the float model the export was quantized from."""
    ranges, prep = export_learned(model, recipe, num_classes, in_chans, calib, out, work, nodes_to_exclude)
    logits = int8_logits(out, evaluated)
    by_split = {}
    for name, split in evaluated.items():
        torch_fq, ort8 = predict(model, split, desc=f"qat fake-quant {name}"), logits[name]
        by_split[name] = {
            "fake_quant_acc": accuracy(torch_fq, split.targets),
            "fake_quant_vs_onnx_int8_top1": float((torch_fq.argmax(1) == ort8.argmax(1)).mean()),
            "max_abs_logit_diff": float(np.abs(torch_fq - ort8).max()),
        }
    return {"ranges": ranges, "by_split": by_split, "prep": prep, "logits": logits}


def trial_int8(
    float_student: nn.Module,
    recipe: Recipe,
    vcfg: Any,
    cfg: QatConfig,
    splits: Splits,
    calib: np.ndarray,
    work: Path,
    runtime: Runtime = CPU,
) -> dict[str, np.ndarray]:
    """validate's feedback fix "run QAD", measured: the QAD phase `cfg` (the fix's `distill.qat`, teacher
    float_student: no teacher needed) from the float student under the validate config `vcfg`, exported with the
    learned ranges; the onnxruntime INT8 top-1 class of every val (and test) image."""
    trial = recipe.model_copy(update={"validate_": vcfg})
    prepared, _, seconds = train(float_student, trial, splits, cfg=cfg, calib=calib, runtime=runtime)
    num_classes, in_chans = len(splits.train.classes), int(calib.shape[1])
    evaluated = {"val": splits.val, **({"test": splits.test} if splits.test is not None else {})}
    out = work / "qad_trial.onnx"
    export_learned(prepared.model, trial, num_classes, in_chans, calib, out, work, vcfg.nodes_to_exclude)
    pred = {name: logits.argmax(1) for name, logits in int8_logits(out, evaluated).items()}
    log.info(
        "feedback QAD trial: %d epoch(s) in %.1f s, INT8 val top-1 %.4f",
        cfg.epochs,
        seconds,
        float((pred["val"] == splits.val.targets).mean()),
    )
    return pred


def _batches(split: Any) -> Any:
    from cann_distill.data.loading import loader

    return loader(split, 256)


def compare_gaps(ptq_rows: list[dict[str, Any]], qad_rows: list[dict[str, Any]], top: int) -> list[dict[str, Any]]:
    """The per-layer gap table for the same layers: PTQ's worst layers and what QAD left of their gap."""
    qad = {r["tensor"]: r for r in qad_rows}
    rows = []
    for r in ptq_rows:
        other = qad.get(r["tensor"])
        rows.append(
            {
                "module": r["module"],
                "tensor": r["tensor"],
                "op": r["op"],
                "ptq_gap_db": r["gap_db"],
                "ptq_sqnr_db": r["sqnr_db"],
                "qad_gap_db": other["gap_db"] if other else None,
                "qad_sqnr_db": other["sqnr_db"] if other else None,
            }
        )
    return rows[:top]


RESUME = ".distill.qad.resume.pt"  # the QAD phase's own resume state: a float-phase state can never be loaded into it


def run_phase(ctx: Any, float_student: nn.Module, splits: Splits, teacher_ckpt: Optional[Path], resume: bool) -> dict[str, Any]:
    """distill's QAD phase: train, save distill/student_qat.pt, return the summary (`ctx` is the distill stage's Context)."""
    r, cfg = ctx.recipe, ctx.recipe.distill.qat
    classes = list(splits.train.classes)
    in_chans = int(splits.train.fetch(0).shape[0])
    teacher = None
    if cfg.teacher == "teacher":
        teacher = with_teacher_input(
            build_model(r.teacher, len(classes), in_chans, checkpoint=teacher_ckpt, classes=classes), r.data, r.teacher
        )
    ckpt = Checkpointing(ctx.run.root / RESUME, ctx.fingerprint + ":qad", resume=resume, command="cann-distill distill RECIPE --resume")
    prepared, history, seconds = train(float_student, r, splits, teacher=teacher, checkpoint=ckpt, runtime=ctx.runtime)
    val_acc = (
        prepared.val_acc
        if prepared.val_acc is not None
        else accuracy(predict(prepared.model, splits.val, desc="qad eval"), splits.val.targets)
    )
    save(ctx.out / CHECKPOINT_NAME, prepared, r, len(classes), in_chans, classes)
    result = summary(prepared, history, seconds, val_acc, cfg)
    (ctx.out / "qad_metrics.json").write_text(json.dumps({**result, "history": list(history)}, indent=2))
    if distributed.is_main():  # under torchrun rank 0 owns the run dir
        ckpt.path.unlink(missing_ok=True)
    return result
