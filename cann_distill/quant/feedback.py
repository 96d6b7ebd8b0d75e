"""The distill–deploy feedback loop and the deployment gate.

From the measured INT8 drop and the per-layer gap, propose only fixes the tool can apply today
(keep nodes in float via the quantizer's node exclusion, calibration method, per-channel weights,
reduce_range, activation type, and — when the INT8 drop exceeds the budget — a short QAD phase),
optionally measure each one, and write a patched recipe.

A measured fix counts as helping only when the paired test (`reporting.measures.paired_difference`: exact
McNemar on the val images) says its INT8 model beats the shipped INT8 model beyond the noise; a one-image
gain is not a fix. Fixes are chosen on val; the test split, when there is one, is measured for the report only.

A change's key is relative to the recipe's `validate` section unless it starts with a prefix in
`OUTSIDE_VALIDATE` (the QAD fix sets `distill.qat.enabled` / `distill.qat.epochs` and every other
`distill.qat` key its measured trial ran with, so the patched recipe runs the QAD phase that was measured;
detection's head fix sets `detect.int8_head`, `quant.detect_feedback`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import yaml

from cann_distill.core.recipe import BudgetConfig, FeedbackConfig, QatConfig, ValidateConfig
from cann_distill.quant.profiles import limits
from cann_distill.reporting.measures import paired_difference

# Student families whose ops (depthwise conv + ReLU6/hard-swish/squeeze-excite) stay partly in
# float or quantize badly under onnxruntime static INT8; dense-conv students do better.
QUANT_UNFRIENDLY = ("mobilenet", "efficientnet", "lcnet", "ghostnet", "mnasnet", "fbnet", "tinynet")

Evaluate = Callable[[dict[str, Any]], dict[str, np.ndarray]]
"""Given changes, quantize with them (after a short QAD phase for the QAD fix) and return, per evaluated split
(val, and test when there is one), the INT8 model's top-1 class of every image."""


@dataclass
class Baseline:
    """The shipped INT8 model's top-1 classes and the labels, per split: what every fix is tested against."""

    labels: dict[str, np.ndarray]
    pred: dict[str, np.ndarray]

    def accuracy(self, split: str = "val") -> float:
        return float((self.pred[split] == self.labels[split]).mean())

    def judge(self, pred: dict[str, np.ndarray]) -> dict[str, Any]:
        """A trial's val accuracy, its gain over the shipped model and the paired test; the same on test, when evaluated."""
        out = self._split(pred, "val")
        if "test" in pred and "test" in self.labels:
            out["test"] = self._split(pred, "test")
        return out

    def _split(self, pred: dict[str, np.ndarray], split: str) -> dict[str, Any]:
        acc = float((pred[split] == self.labels[split]).mean())
        return {
            "int8_acc": acc,
            "gain": acc - self.accuracy(split),
            "paired": paired_difference(self.labels[split], pred[split], self.pred[split]),
        }


OUTLIER_RATIO = 10.0  # one channel's range this many times the median channel's: per-tensor INT8 starves the rest


def outlier_note(gap_rows: list[dict[str, Any]], top: int = 3, ratio: float = OUTLIER_RATIO) -> Optional[str]:
    """A line naming an outlier activation channel at one of the `top` worst layers (`gap.channel_outlier`), or None."""
    for row in gap_rows[:top]:
        r = row.get("outlier_ratio")
        if r is not None and r >= ratio:
            where = row.get("module") or row.get("node") or row.get("tensor")
            return (
                f"{where}: channel {row['outlier_channel']} of its output spans {r:.0f}× the median channel's range, so "
                f"per-tensor INT8 activations leave the other channels about {256 / r:.0f} of 256 levels "
                f"({row['sqnr_db']:.0f} dB SQNR there). The float training grew that channel; recalibrating (percentile, "
                "entropy) clips it and loses what it carries. QAD (`distill.qat.enabled: true`) trains around it, and "
                "another seed often does not grow it"
            )
    return None


def helps(measured: dict[str, Any]) -> bool:
    """A fix helps when its INT8 model beats the shipped one on val beyond the noise (the paired test says `better`)."""
    return bool(measured.get("paired", {}).get("verdict") == "better")


OUTSIDE_VALIDATE = ("distill.", "detect.")  # change keys with these prefixes are recipe paths, not validate-section paths
QAD_PREFIX = "distill.qat."
QAD_ENABLED, QAD_EPOCHS = f"{QAD_PREFIX}enabled", f"{QAD_PREFIX}epochs"


def qad_changes(qat: QatConfig, epochs: int) -> dict[str, Any]:
    """The "run QAD" fix as recipe changes: `epochs` of QAD from the float student (no teacher checkpoint needed),
    the freeze epochs clamped into that phase; only keys that differ from the recipe's `distill.qat` beyond the two
    always written. The trial applies exactly these (`qat_config`), so what `--apply-feedback` writes is what ran."""
    changes: dict[str, Any] = {QAD_ENABLED: True, QAD_EPOCHS: epochs}
    if qat.teacher != "float_student":
        changes[f"{QAD_PREFIX}teacher"] = "float_student"
    for key in ("freeze_observers_epoch", "freeze_bn_epoch"):
        value = getattr(qat, key)
        if value is not None and value > epochs:
            changes[f"{QAD_PREFIX}{key}"] = epochs
    return changes


def qat_config(qat: QatConfig, changes: dict[str, Any]) -> QatConfig:
    """The recipe's `distill.qat` with the fix's `distill.qat.*` changes applied."""
    return qat.model_copy(update={k[len(QAD_PREFIX) :]: v for k, v in changes.items() if k.startswith(QAD_PREFIX)})


def recipe_key(key: str) -> str:
    """The change key as a full recipe path."""
    return key if key.startswith(OUTSIDE_VALIDATE) else f"validate.{key}"


def split_changes(changes: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(validate-section changes, changes elsewhere in the recipe)."""
    inside = {k: v for k, v in changes.items() if not k.startswith(OUTSIDE_VALIDATE)}
    return inside, {k: v for k, v in changes.items() if k.startswith(OUTSIDE_VALIDATE)}


def candidate_changes(
    cfg: ValidateConfig,
    worst_nodes: list[str],
    scheme: dict[str, Any],
    qad_epochs: int = 0,
    qat: Optional[QatConfig] = None,
    qad_run: bool = False,
) -> list[tuple[str, dict[str, Any]]]:
    """(why, changes) for each fix worth trying, most targeted first; QAD (retraining) last, when `qad_epochs` > 0
    (its other keys from the recipe's `qat`). `qad_run`: the shipped model is the QAD student exported with its
    learned ranges, so only keeping nodes in float changes it without retraining (the other settings are QAD's
    starting point)."""
    out: list[tuple[str, dict[str, Any]]] = []
    if worst_nodes:
        nodes = sorted(set(cfg.nodes_to_exclude) | set(worst_nodes))
        out.append((f"keep the {len(worst_nodes)} layer(s) with the largest quantization gap in float", {"nodes_to_exclude": nodes}))
    if qad_run:
        return out
    for method in ("percentile", "entropy"):
        if cfg.calibration.method != method:
            out.append(
                (f"calibrate with {method} instead of {cfg.calibration.method} (clips activation outliers)", {"calibration.method": method})
            )
    if not cfg.per_channel:
        out.append(("quantize weights per channel", {"per_channel": True}))
    if not scheme["reduce_range"]:
        out.append(("7-bit weights (reduce_range) to avoid 8-bit overflow in u8×s8 kernels", {"reduce_range": True}))
    if scheme["activation_type"] != "uint8":
        out.append(("uint8 activations (asymmetric range fits ReLU outputs)", {"activation_type": "uint8"}))
    if qad_epochs:
        out.append(
            (
                f"run QAD: {qad_epochs} epoch(s) of quantization-aware distillation from the float student "
                "(distill.qat), so the student learns onnxruntime's INT8 arithmetic; applying it re-runs distill",
                qad_changes(qat or QatConfig(), qad_epochs),
            )
        )
    return out


def suggest_fixes(
    cfg: ValidateConfig,
    fb: FeedbackConfig,
    drop: float,
    gap_rows: list[dict[str, Any]],
    arch: str,
    baseline: Baseline,
    scheme: dict[str, Any],
    evaluate: Optional[Evaluate] = None,
    qat: Optional[QatConfig] = None,
    qad_run: bool = False,
) -> dict[str, Any]:
    """Suggestions (measured against `baseline`, the shipped INT8 model, when `evaluate` is given) and the changes to apply.

    `qat`: the recipe's `distill.qat` when the QAD fix may be offered (the recipe does not run QAD already; None
    otherwise); it is offered when the drop exceeds the budget. `qad_run`: the shipped model is QAD's (see
    `candidate_changes`).
    """
    worst = [r for r in gap_rows if r["gap_db"] > fb.max_layer_gap_db and r.get("node")]
    worst_nodes = [r["node"] for r in worst[: fb.max_exclude]]
    triggered = drop > fb.max_int8_drop or bool(worst_nodes)
    result: dict[str, Any] = {"triggered": triggered, "int8_drop": drop, "threshold": fb.max_int8_drop, "suggestions": [], "apply": {}}
    if not triggered:
        return result
    suggestions = []
    qad_epochs = fb.qad_epochs if qat is not None and drop > fb.max_int8_drop else 0
    for why, changes in candidate_changes(cfg, worst_nodes, scheme, qad_epochs, qat, qad_run):
        s: dict[str, Any] = {"why": why, "changes": changes}
        if evaluate is not None and fb.search:
            s.update(baseline.judge(evaluate(changes)))
        suggestions.append(s)
    if any(f in arch for f in QUANT_UNFRIENDLY):
        suggestions.append(
            {
                "why": f"'{arch}' uses depthwise/ReLU6/hard-swish/SE ops that quantize poorly with onnxruntime static INT8; "
                "a dense-conv student (e.g. resnet10t) quantizes well — change student.arch and re-distill",
                "changes": {},
                "manual": True,
            }
        )
    result["suggestions"] = suggestions
    measured = [s for s in suggestions if "gain" in s]
    if measured:
        result.update(_combine(measured, baseline, evaluate))
    else:  # unmeasured: apply the quantizer changes; never switch on a retraining phase without a measurement
        result["apply"] = {k: v for s in suggestions for k, v in s["changes"].items() if QAD_ENABLED not in s["changes"]}
    return result


def _combine(measured: list[dict[str, Any]], baseline: Baseline, evaluate: Optional[Evaluate]) -> dict[str, Any]:
    """Every measured fix that beat the shipped model beyond the noise, combined best first; the best single one
    when the combination measures lower. Nothing when none did."""
    helpful = sorted((s for s in measured if helps(s)), key=lambda s: -s["gain"])
    if not helpful:
        return {"apply": {}}
    best = helpful[0]
    combined: dict[str, Any] = {}
    for s in helpful:
        combined.update(s["changes"])
    got = baseline.judge(evaluate(combined)) if len(helpful) > 1 and evaluate is not None else best
    if got["int8_acc"] < best["int8_acc"]:  # the fixes do not add up: keep the best single one
        combined, got = dict(best["changes"]), best
    out = {"apply": combined, "combined_int8_acc": got["int8_acc"], "combined_paired": got["paired"]}
    if "test" in got:
        out["test"] = got["test"]  # the applied changes on test: reported, never used to choose
    return out


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def patched_recipe(original: dict[str, Any], apply: dict[str, Any]) -> dict[str, Any]:
    """The user's raw recipe with only the applied keys changed (validate-section keys, or recipe paths outside it)."""
    data = copy.deepcopy(original)
    inside, outside = split_changes(apply)
    if inside:
        section = data.setdefault("validate", {})
        for key, value in inside.items():
            set_dotted(section, key, value)
    for key, value in outside.items():
        set_dotted(data, key, value)
    return data


def feedback_path(recipe_path: Path) -> Path:
    return recipe_path.with_name(f"{recipe_path.stem}.feedback.yaml")


def write_patched_recipe(recipe_path: Path, original: dict[str, Any], apply: dict[str, Any], header: str) -> Path:
    from cann_distill.core.files import write_text_atomic

    out = feedback_path(recipe_path)
    text = yaml.safe_dump(patched_recipe(original, apply), sort_keys=False)
    write_text_atomic(out, f"# {header}\n# generated by `cann-distill validate --apply-feedback` from {recipe_path.name}\n{text}")
    return out


def gate(budgets: BudgetConfig, profile_budgets: dict[str, Any], measured: dict[str, Optional[float]]) -> list[dict[str, Any]]:
    """One pass/fail line per budget set in the recipe or the hardware profile and measured (None: not measured,
    left out: see `not_measured`)."""
    return [
        {"budget": key, "limit": limit, "value": float(value), "pass": bool(value <= limit), "source": source}
        for key, (limit, source) in limits(budgets, profile_budgets).items()
        if (value := measured.get(key)) is not None
    ]


def not_measured(
    budgets: BudgetConfig, profile_budgets: dict[str, Any], measured: dict[str, Optional[float]], why: dict[str, str]
) -> list[dict[str, Any]]:
    """The budgets set but not checked because their figure was not measured (a P99 from too few runs), with why."""
    return [
        {"budget": key, "limit": limit, "source": source, "why": why.get(key, "not measured")}
        for key, (limit, source) in limits(budgets, profile_budgets).items()
        if key in measured and measured[key] is None
    ]
