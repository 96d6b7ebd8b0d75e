"""What the report measures from the saved checkpoints: per-sample predictions, tapped features, attention.

Nothing is trained here. Teacher, student and (when there is one) baseline checkpoints are run over
the headline split (test when the recipe has one, else val); `metrics` turns the predictions into
numbers. Features are read through timm's feature_info taps (`taps.FeatureTapper`); student stage i
is paired with the teacher stage at the same relative depth, round(i·(Nt−1)/(Ns−1)).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cann_distill.data.loading import Split
from cann_distill.models.taps import FeatureTapper, feature_info
from cann_distill.reporting import measures as m
from cann_distill.runtime.devices import CPU, Runtime
from cann_distill.training.loop import predict

CKA_MAX_SIDE = 8  # features are average-pooled to at most 8×8 positions before CKA (bounded memory at 224 px)
SHOWN = 6  # validation images with attention heatmaps in the HTML


def pick_shown(critical: np.ndarray, agree: np.ndarray, k: int = SHOWN) -> list[int]:
    """Up to `k` images for the attention heatmaps: half where teacher and student agree, half where they do not
    (critical ones first within each half); a half that runs short is filled from the other."""
    order = lambda mask: [int(i) for i in np.flatnonzero(mask & critical)] + [int(i) for i in np.flatnonzero(mask & ~critical)]  # noqa: E731
    agree, critical = np.asarray(agree, dtype=bool), np.asarray(critical, dtype=bool)
    yes, no = order(agree), order(~agree)
    n_no = min(len(no), max(k // 2, k - len(yes)))
    n_yes = min(len(yes), k - n_no)
    return no[:n_no] + yes[:n_yes]


def stage_pairs(n_teacher: int, n_student: int) -> list[tuple[int, int]]:
    """(teacher stage, student stage) at the same relative depth, one per student stage."""
    if n_teacher == 0 or n_student == 0:
        return []
    if n_student == 1:
        return [(n_teacher - 1, 0)]
    return [(int(round(i * (n_teacher - 1) / (n_student - 1))), i) for i in range(n_student)]


@dataclass
class Tapped:
    """Pooled features per stage pair and the attention maps of the pair shown in the HTML."""

    cka: list[dict[str, Any]] = field(default_factory=list)
    attention_pair: Optional[dict[str, Any]] = None
    teacher_attention: Optional[np.ndarray] = None  # [k, H, W]
    student_attention: Optional[np.ndarray] = None
    shown: list[int] = field(default_factory=list)  # indices into the headline split


def _pool(feat: torch.Tensor) -> np.ndarray:
    h, w = feat.shape[-2:]
    if h > CKA_MAX_SIDE or w > CKA_MAX_SIDE:
        feat = F.adaptive_avg_pool2d(feat, (min(h, CKA_MAX_SIDE), min(w, CKA_MAX_SIDE)))
    return feat.float().cpu().reshape(len(feat), -1).numpy()


@torch.no_grad()
def tap_features(
    teacher: nn.Module,
    teacher_arch: str,
    renorm: nn.Module,
    student: nn.Module,
    student_arch: str,
    split: Split,
    samples: int,
    shown: list[int],
    runtime: Runtime = CPU,
    batch: int = 64,
) -> Tapped:
    """CKA per stage pair over the first `samples` images; attention maps of the `shown` images at the deepest pair with ≥ 4×4 positions."""
    t_info, s_info = feature_info(teacher), feature_info(student)
    pairs = stage_pairs(len(t_info), len(s_info))
    out = Tapped(shown=list(shown))
    if not pairs:
        return out
    t_tap = FeatureTapper(teacher, sorted({str(t) for t, _ in pairs}, key=int), teacher_arch)
    s_tap = FeatureTapper(student, sorted({str(s) for _, s in pairs}, key=int), student_arch)
    for model in (teacher, student, renorm):
        runtime.model(model).eval()
    idx = list(range(min(samples, len(split))))
    pooled: dict[str, list[np.ndarray]] = {}
    for lo in range(0, len(idx), batch):
        x = runtime.batch(torch.stack([split.fetch(i) for i in idx[lo : lo + batch]]))
        feats = {f"t{k[5:]}": v for k, v in t_tap(renorm(x)).items() if k.startswith("feat.")}
        feats.update({f"s{k[5:]}": v for k, v in s_tap(x).items() if k.startswith("feat.")})
        for k, v in feats.items():
            pooled.setdefault(k, []).append(_pool(v))
    for t, s in pairs:
        value = m.linear_cka(np.concatenate(pooled[f"t{t}"]), np.concatenate(pooled[f"s{s}"]))
        out.cka.append(
            {
                "teacher_tap": str(t),
                "student_tap": str(s),
                "teacher_module": t_info[t]["module"],
                "student_module": s_info[s]["module"],
                "cka": value,
            }
        )
    if shown:
        x = runtime.batch(torch.stack([split.fetch(i) for i in shown]))
        t_feats, s_feats = t_tap(renorm(x)), s_tap(x)
        spatial = [
            (t, s)
            for t, s in pairs
            if min(s_feats[f"feat.{s}"].shape[-2:]) >= 4 and s_feats[f"feat.{s}"].dim() == 4 and t_feats[f"feat.{t}"].dim() == 4
        ]
        if spatial:
            t, s = spatial[-1]
            out.attention_pair = {
                "teacher_tap": str(t),
                "student_tap": str(s),
                "teacher_module": t_info[t]["module"],
                "student_module": s_info[s]["module"],
            }
            out.teacher_attention = m.attention_map(t_feats[f"feat.{t}"].float().cpu().numpy())
            out.student_attention = m.attention_map(s_feats[f"feat.{s}"].float().cpu().numpy())
    return out


def logits_of(models: dict[str, nn.Module], split: Split, runtime: Runtime = CPU) -> dict[str, np.ndarray]:
    return {name: predict(model, split, desc=f"report: {name} on {split.name}", runtime=runtime) for name, model in models.items()}


def transfer_metrics(
    y: np.ndarray,
    logits: dict[str, np.ndarray],
    critical: Optional[np.ndarray],
    int8_drop: Optional[float],
    gate: Optional[list[dict[str, Any]]],
    n_classes: int,
) -> dict[str, Any]:
    """Every number of the report's knowledge section from per-sample logits (`metrics` has the formulas)."""
    pred = {k: v.argmax(1) for k, v in logits.items()}
    acc = {k: float((p == y).mean()) for k, p in pred.items()}
    out: dict[str, Any] = {"num": int(len(y)), "accuracy": {**acc, "baseline": acc.get("baseline")}}
    out["agreement"] = {
        "all": m.agreement(pred["teacher"], pred["student"]),
        "critical": m.agreement(pred["teacher"], pred["student"], critical) if critical is not None else None,
        "num_critical": int(critical.sum()) if critical is not None else 0,
    }
    if "baseline" in pred:
        out["agreement"]["baseline_all"] = m.agreement(pred["teacher"], pred["baseline"])
        out["transfer_efficiency"] = m.transfer_efficiency(acc["student"], acc["baseline"], acc["teacher"])
        out["distill_vs_baseline"] = m.paired_difference(y, pred["student"], pred["baseline"])
        out["teacher_vs_baseline"] = m.paired_difference(y, pred["teacher"], pred["baseline"])
        out["error_reduction"] = m.error_reduction(y, pred["teacher"], pred["baseline"], pred["student"])
    else:
        why = "no baseline (report.baseline is false, or the baseline stage has not run)"
        out["transfer_efficiency"], out["error_reduction"] = m.undefined(why), m.undefined(why)
    out["ece"] = {k: m.expected_calibration_error(v, y) for k, v in logits.items()}
    fit = m.hardware_fit(gate) if gate is not None else m.undefined("no validation results")
    out["hardware_fit"] = fit
    if int8_drop is None or fit.get("value") is None:
        out["dqi"] = m.undefined("no validation results (INT8 drop and budget verdicts come from validate)")
    else:
        out["dqi"] = m.dqi(out["transfer_efficiency"], int8_drop, fit)
    out["per_class"] = {k: m.per_class_accuracy(p, y, n_classes) for k, p in pred.items()}
    out["confusion"] = {k: m.confusion(p, y, n_classes) for k, p in pred.items()}
    return out
