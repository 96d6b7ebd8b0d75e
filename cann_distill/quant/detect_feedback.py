"""The distill–deploy feedback for `task: detect`: classification's fixes that apply to a detector (keep the layers with
the largest INT8 gap in float, another calibration method, per-channel weights, reduce_range, the activation type) plus
keeping the FCOS head in float (`detect.int8_head: float`), each measured by the val mAP of its INT8 model.

"Beyond the noise" for mAP: a fix helps when its INT8 model's val mAP beats the shipped INT8 model's by at least
`MIN_MAP_GAIN` (0.5 mAP points). COCO mAP has no per-image paired test like classification's McNemar test (an image's
detections count in every class's precision-recall curve at once), so the rule is a fixed margin; on the small
validation sets this tool is tried on, a gain under half a point changes with the calibration images alone.
Fixes are chosen on val. No QAD fix: quantization-aware distillation is classification-only so far.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

from cann_distill.core.recipe import FeedbackConfig, ValidateConfig
from cann_distill.quant.feedback import candidate_changes

MIN_MAP_GAIN = 0.005
"""The val mAP (as a fraction: 0.005 = 0.5 points) a fix must gain over the shipped INT8 model to count as helping."""
HEAD_KEY = "detect.int8_head"
HEAD_SCOPES = ("/detector/classification_head/", "/detector/regression_head/")
"""Where the exported detector's head nodes live (`quant.detect_int8.DenseOutputs` names the detector `detector`)."""

EvaluateMap = Callable[[dict[str, Any]], Optional[float]]
"""Given changes, quantize with them and return the INT8 model's val mAP (None: no ground truth to score)."""


def head_nodes(node_names: Sequence[str]) -> list[str]:
    """The FCOS head's nodes (classification and regression branches) among an exported detector's node names."""
    return [n for n in node_names if n.startswith(HEAD_SCOPES)]


def helps(gain: Optional[float]) -> bool:
    """A fix helps when its val mAP gain over the shipped INT8 model is at least `MIN_MAP_GAIN`."""
    return gain is not None and gain >= MIN_MAP_GAIN - 1e-12


def detect_candidates(
    cfg: ValidateConfig, worst_nodes: list[str], scheme: dict[str, Any], int8_head: str
) -> list[tuple[str, dict[str, Any]]]:
    """(why, changes) for each fix worth trying on a detector, most targeted first."""
    out = candidate_changes(cfg, worst_nodes, scheme)
    if int8_head != "float":
        out.append(
            ("keep the FCOS head (class, box and centre-ness branches) in float; quantize backbone and pyramid", {HEAD_KEY: "float"})
        )
    return out


def suggest_detect_fixes(
    cfg: ValidateConfig,
    fb: FeedbackConfig,
    drop: Optional[float],
    gap_rows: list[dict[str, Any]],
    shipped_map: Optional[float],
    scheme: dict[str, Any],
    int8_head: str,
    evaluate: Optional[EvaluateMap] = None,
) -> dict[str, Any]:
    """Suggestions, each measured by `evaluate` (when given and `feedback.search`), and the changes to apply.

    Triggered when the INT8 mAP drop exceeds `feedback.max_int8_drop` (a fraction of mAP: 0.01 = 1 point) or a layer
    loses more than `feedback.max_layer_gap_db`. Measured: every fix that helps (`helps`) is combined, best first;
    the best single one is kept when the combination measures lower; nothing when none helps. Unmeasured: the
    quantizer changes are applied as classification applies them.
    """
    worst = [r for r in gap_rows if r["gap_db"] > fb.max_layer_gap_db and r.get("node")]
    worst_nodes = [r["node"] for r in worst[: fb.max_exclude]]
    triggered = (drop is not None and drop > fb.max_int8_drop) or bool(worst_nodes)
    result: dict[str, Any] = {
        "triggered": triggered,
        "int8_drop": drop,
        "metric": "mAP",
        "threshold": fb.max_int8_drop,
        "rule": f"a fix helps when its val mAP beats the shipped INT8 model's by >= {100 * MIN_MAP_GAIN:.1f} points",
        "suggestions": [],
        "apply": {},
        "split": "val",
    }
    if not triggered:
        return result
    measure = evaluate is not None and fb.search and shipped_map is not None
    suggestions = []
    for why, changes in detect_candidates(cfg, worst_nodes, scheme, int8_head):
        s: dict[str, Any] = {"why": why, "changes": changes}
        if measure:
            s.update(_judge(evaluate(changes), shipped_map))  # type: ignore[misc]
        suggestions.append(s)
    result["suggestions"] = suggestions
    if not measure:
        result["apply"] = {k: v for s in suggestions for k, v in s["changes"].items()}
        return result
    result.update(_combine(suggestions, shipped_map, evaluate))  # type: ignore[arg-type]
    return result


def _judge(trial_map: Optional[float], shipped_map: Optional[float]) -> dict[str, Any]:
    gain = trial_map - shipped_map if trial_map is not None and shipped_map is not None else None
    return {"int8_map": trial_map, "gain": gain, "helps": helps(gain)}


def _combine(measured: list[dict[str, Any]], shipped_map: float, evaluate: EvaluateMap) -> dict[str, Any]:
    """Every fix that helped, combined best first; the best single one when the combination measures lower."""
    helpful = sorted((s for s in measured if s.get("helps")), key=lambda s: -s["gain"])
    if not helpful:
        return {"apply": {}}
    best = helpful[0]
    combined: dict[str, Any] = {}
    for s in helpful:
        combined.update(s["changes"])
    got = _judge(evaluate(combined), shipped_map) if len(helpful) > 1 else best
    if got["int8_map"] is None or got["int8_map"] < best["int8_map"]:  # the fixes do not add up: the best single one
        combined, got = dict(best["changes"]), best
    return {"apply": combined, "combined_int8_map": got["int8_map"], "combined_gain": got["gain"]}
