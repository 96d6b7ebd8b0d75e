"""`task` and the `detect` section: classification recipes and their fingerprints unchanged; detection recipes checked
before any work (their losses from the detection registry, pyramid levels, COCO files), every problem with its key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cann_distill.core.errors import RecipeError
from cann_distill.core.files import sha256_json
from cann_distill.core.recipe import Recipe
from cann_distill.core.recipe_load import load_recipe
from cann_distill.stages import STAGES, stage_for

DETECT: dict[str, Any] = {
    "name": "det",
    "task": "detect",
    "detect": {"data": {"demo": {"train_images": 16, "val_images": 8}}},
    "teacher": {"arch": "test_resnet"},
    "student": {"arch": "test_efficientnet"},
    "distill": {"losses": [{"kind": "det"}, {"kind": "fgd", "levels": 3}, {"kind": "pred_kd"}]},
}


def test_task_defaults_to_classify_and_the_detect_section_leaves_classify_fingerprints_alone(write_recipe) -> None:
    assert Recipe().task == "classify"
    plain = load_recipe(write_recipe())
    other = load_recipe(write_recipe(detect={"fpn_channels": 128, "data": {"image_size": 96}}))
    for name, stage in STAGES.items():
        assert stage_for(name, plain) is stage  # classification recipes run the classification stages
        assert "detect" not in stage.sections and "task" not in stage.sections
        assert sha256_json([plain.section(s) if s != "seed" else plain.seed for s in stage.sections]) == sha256_json(
            [other.section(s) if s != "seed" else other.seed for s in stage.sections]
        )
    assert sha256_json(STAGES["teacher"].extra_inputs(plain)) == sha256_json(STAGES["teacher"].extra_inputs(other))


def test_a_detection_recipe_routes_to_the_detection_stages(write_recipe) -> None:
    recipe = load_recipe(write_recipe(DETECT))
    assert recipe.task == "detect"
    for name in STAGES:
        routed = stage_for(name, recipe)
        assert routed is not STAGES[name] and routed.name == name
    assert stage_for("select", recipe).enabled(recipe) and stage_for("validate", recipe).enabled(recipe)


def test_select_defaults_follow_the_task(write_recipe) -> None:
    from cann_distill.core.recipe import refresh_epochs, selection_policy

    detect = load_recipe(write_recipe(DETECT, distill={**DETECT["distill"], "critical": {"mode": "subset"}}))
    assert detect.select.strategy == "small_objects"  # label-based: select needs neither the teacher nor a probe
    assert selection_policy(detect) == "hard" and refresh_epochs(detect) is None
    chosen = load_recipe(write_recipe(DETECT, select={"strategy": "box_disagreement", "probe_epochs": 1}))
    assert chosen.select.strategy == "box_disagreement"
    plain = {k: v for k, v in DETECT.items() if k not in ("task", "detect", "distill")}
    assert load_recipe(write_recipe(plain)).select.strategy == "margin"  # classification keeps its default
    assert load_recipe(write_recipe(plain), ["task=detect", "distill.losses=[{kind: det}]"]).select.strategy == "small_objects"


@pytest.mark.parametrize(
    ("update", "message"),
    [
        (
            {"distill": {"losses": [{"kind": "kd"}]}},
            r"distill\.losses\[0\]\.kind: unknown detection loss 'kd' \(known: det, fgd, pred_kd\)",
        ),
        (
            {"distill": {"losses": [{"kind": "fgd", "levels": 4}]}},
            r"distill\.losses\[0\]: reads pyramid level 3, but detect\.strides gives the detector 3 level\(s\) \(0\.\.2\)",
        ),
        ({"distill": {"losses": [{"kind": "fgd", "alpha": -1.0}]}}, r"distill\.losses\[0\]: alpha must be >= 0"),
        (
            {"detect": {"fpn_channels": 48}},
            r"detect\.fpn_channels: must be a multiple of 32 \(the head's GroupNorm has 32 groups\), got 48",
        ),
        ({"detect": {"strides": [8, 12]}}, r"detect\.strides: powers of two, increasing, each once, got \[8, 12\]"),
        (
            {"detect": {"strides": [16, 64]}},
            r"detect\.strides: the coarsest level \(64\) needs images of at least 128 px, detect\.data\.image_size is 64",
        ),
        ({"detect": {"data": {"source": "coco"}}}, r"detect\.data\.train_annotations: required when detect\.data\.source is 'coco'"),
        ({"detect": {"data": {"demo": {"objects": [3, 1]}}}}, r"detect\.data\.demo\.objects: needs 0 <= fewest <= most <= 8, got \[3, 1\]"),
        ({"distill": {"select_best": True}}, r"distill\.select_best: not with task: detect yet"),
        ({"distill": {"qat": {"enabled": True}}}, r"distill\.qat\.enabled: quantization-aware distillation is classification-only"),
        ({"distill": {"teacher_targets": "cached"}}, r"distill\.teacher_targets: task: detect runs the teacher on every batch"),
        (
            {"select": {"strategy": "margin"}},
            r"select\.strategy: unknown detection selector 'margin' \(known: box_disagreement, small_objects\)",
        ),
        (
            {"select": {"strategy": "box_disagreement", "probe_epochs": 0}},
            r"select\.probe_epochs: strategy 'box_disagreement' .* needs >= 1",
        ),
        ({"select": {"strategy_args": {"by": "share"}}}, r"select\.strategy_args\.by: must be 'count' or 'fraction'"),
        ({"distill": {"critical": {"mode": "curriculum"}}}, r"distill\.critical\.mode: curriculum is not there for task: detect yet"),
        ({"select": {"refresh_every": 2}}, r"select\.refresh_every: re-mining the critical images is not there for task: detect yet"),
        ({"select": {"temperature": {"per_sample": True}}}, r"select\.temperature\.per_sample: not read with task: detect"),
    ],
    ids=[
        "classification-loss",
        "level-beyond",
        "bad-argument",
        "channels",
        "strides",
        "image-too-small",
        "coco-paths",
        "demo-objects",
        "select-best",
        "qat",
        "cached-targets",
        "classification-selector",
        "probe-epochs",
        "selector-argument",
        "curriculum",
        "refresh",
        "per-sample-temperature",
    ],
)
def test_detection_recipe_problems_are_recipe_errors_with_their_key(write_recipe, update: dict[str, Any], message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        load_recipe(write_recipe(DETECT, **update))


def test_a_coco_source_names_missing_files(write_recipe, tmp_path: Path) -> None:
    data = {"source": "coco", "train_annotations": str(tmp_path / "no.json"), "train_images": str(tmp_path), "val_annotations": "v.json"}
    with pytest.raises(RecipeError) as exc:
        load_recipe(write_recipe(DETECT, detect={"data": data}))
    msg = str(exc.value)
    assert "detect.data.train_annotations: file not found" in msg and "detect.data.val_images: required" in msg
    assert "detect.data.val_annotations: file not found: v.json" in msg


def test_the_detection_baseline_gets_distills_optimizer_steps_when_distill_trains_on_a_subset(write_recipe) -> None:
    subset = {**DETECT["distill"], "epochs": 12, "critical": {"mode": "subset"}}
    recipe = load_recipe(write_recipe(DETECT, distill=subset, select={"top_k_ratio": 0.25}, report={"baseline": True}))
    assert stage_for("baseline", recipe).extra_inputs(recipe)["train"]["epochs"] == 3  # 12 epochs on a quarter of the images
    weighted = load_recipe(write_recipe(DETECT, distill={**subset, "critical": {"mode": "weight"}}, report={"baseline": True}))
    assert stage_for("baseline", weighted).extra_inputs(weighted)["train"]["epochs"] == 12
    assert stage_for("distill", weighted).needs_for(weighted)[-2:] == ("select/index.csv", "select/summary.json")
    plain = load_recipe(write_recipe(DETECT))
    assert stage_for("distill", plain).needs_for(plain) == ("teacher/teacher.pt",)  # mode none: distill does not wait for select
