"""Detection feedback on hand-made numbers: when it triggers, which fix counts as helping (>= 0.5 mAP points on val),
how helpful fixes combine, and the patched recipe it writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import pytest
import yaml

from cann_distill.core.recipe import FeedbackConfig, ValidateConfig
from cann_distill.quant.detect_feedback import MIN_MAP_GAIN, head_nodes, helps, suggest_detect_fixes
from cann_distill.quant.feedback import recipe_key, write_patched_recipe

CFG = ValidateConfig(per_channel=True)
SCHEME = {"activation_type": "uint8", "reduce_range": True, "weight_type": "int8"}
GAP = [{"node": "/detector/backbone/conv1/Conv", "gap_db": 14.0}, {"node": "/detector/fpn/Add", "gap_db": 3.0}]


def fake(maps: dict[str, float], combined: float) -> Any:
    """An evaluate that answers per change key (one key: that fix's mAP; several: `combined`) and records its calls."""
    calls: list[dict[str, Any]] = []

    def evaluate(changes: dict[str, Any]) -> Optional[float]:
        calls.append(changes)
        keys = list(changes)
        return maps[keys[0]] if len(keys) == 1 else combined

    evaluate.calls = calls  # type: ignore[attr-defined]
    return evaluate


def test_the_gain_rule_is_half_a_map_point() -> None:
    assert MIN_MAP_GAIN == 0.005
    assert helps(0.005) and helps(0.02) and not helps(0.0049) and not helps(None) and not helps(-0.01)


def test_nothing_is_tried_within_the_drop_budget_and_without_a_bad_layer() -> None:
    quiet = [{"node": "/detector/fpn/Add", "gap_db": 3.0}]
    evaluate = fake({}, 0.0)
    out = suggest_detect_fixes(CFG, FeedbackConfig(), 0.004, quiet, 0.30, SCHEME, "int8", evaluate)
    assert out["triggered"] is False and out["suggestions"] == [] and out["apply"] == {} and evaluate.calls == []


def test_fixes_that_gain_half_a_point_are_combined_and_kept_when_the_combination_holds() -> None:
    maps = {"nodes_to_exclude": 0.306, "calibration.method": 0.303, "detect.int8_head": 0.312}  # shipped INT8: 0.300
    evaluate = fake(maps, combined=0.315)
    out = suggest_detect_fixes(CFG, FeedbackConfig(), 0.03, GAP, 0.300, SCHEME, "int8", evaluate)
    assert out["triggered"] and out["metric"] == "mAP"
    by_key = {next(iter(s["changes"])): s for s in out["suggestions"]}
    assert by_key["nodes_to_exclude"]["changes"]["nodes_to_exclude"] == ["/detector/backbone/conv1/Conv"]  # the layer over 10 dB
    assert by_key["detect.int8_head"]["gain"] == pytest.approx(0.012) and by_key["detect.int8_head"]["helps"]
    assert not by_key["calibration.method"]["helps"]  # +0.3 points: within the noise
    assert out["apply"] == {"detect.int8_head": "float", "nodes_to_exclude": ["/detector/backbone/conv1/Conv"]}
    assert out["combined_int8_map"] == pytest.approx(0.315)
    assert evaluate.calls[-1] == out["apply"]  # the combination was measured before it was applied


def test_the_best_single_fix_wins_when_the_combination_measures_lower() -> None:
    maps = {"nodes_to_exclude": 0.306, "calibration.method": 0.300, "detect.int8_head": 0.312}
    out = suggest_detect_fixes(CFG, FeedbackConfig(), 0.03, GAP, 0.300, SCHEME, "int8", fake(maps, combined=0.305))
    assert out["apply"] == {"detect.int8_head": "float"} and out["combined_int8_map"] == pytest.approx(0.312)


def test_no_fix_is_applied_when_none_gains_half_a_point() -> None:
    maps = {"nodes_to_exclude": 0.301, "calibration.method": 0.299, "detect.int8_head": 0.304}
    out = suggest_detect_fixes(CFG, FeedbackConfig(), 0.03, GAP, 0.300, SCHEME, "int8", fake(maps, combined=0.0))
    assert out["triggered"] and len(out["suggestions"]) == 4 and out["apply"] == {}


def test_unmeasured_fixes_are_applied_as_classification_applies_them_and_a_float_head_is_not_offered_again() -> None:
    out = suggest_detect_fixes(CFG, FeedbackConfig(search=False), 0.03, GAP, 0.300, SCHEME, "float", fake({}, 0.0))
    assert all("gain" not in s for s in out["suggestions"]) and "detect.int8_head" not in out["apply"]
    assert out["apply"]["nodes_to_exclude"] == ["/detector/backbone/conv1/Conv"] and "calibration.method" in out["apply"]


def test_head_nodes_and_the_patched_recipe(tmp_path: Path) -> None:
    names = [
        "/detector/backbone/conv1/Conv",
        "/detector/classification_head/conv/conv.0/Conv",
        "/detector/regression_head/bbox_ctrness/Conv",
    ]
    assert head_nodes(names) == names[1:]
    recipe = tmp_path / "r.yaml"
    original = {"task": "detect", "detect": {"image_size": 64}, "validate": {"target": "cpu"}}
    apply = {"detect.int8_head": "float", "nodes_to_exclude": ["/detector/fpn/Add"]}
    assert [recipe_key(k) for k in apply] == ["detect.int8_head", "validate.nodes_to_exclude"]
    patched = yaml.safe_load(write_patched_recipe(recipe, original, apply, "feedback applied").read_text())
    assert patched["detect"] == {"image_size": 64, "int8_head": "float"}
    assert patched["validate"] == {"target": "cpu", "nodes_to_exclude": ["/detector/fpn/Add"]}
