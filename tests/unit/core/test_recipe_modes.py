"""Recipe keys of the distillation modes (docs/guides/modes.md): absent from every dump while unset (so recipes
that do not use them keep their stage fingerprints), resolved and checked before any work."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cann_distill.core.errors import RecipeError
from cann_distill.core.recipe import Recipe, ensemble_rule, teacher_specs
from cann_distill.core.recipe_load import load_recipe
from tests.conftest import TINY

BASE = {k: v for k, v in TINY.items() if k != "teacher"}
TWO = [{"arch": "test_resnet"}, {"arch": "test_efficientnet", "weight": 3.0}]
NEW_KEYS = {"": {"teachers"}, "distill": {"ensemble", "mode", "peers", "chain"}, "data": {"unlabeled"}}


def test_unset_mode_keys_are_left_out_of_every_dump() -> None:
    dumped = Recipe().to_dict()
    for section, keys in NEW_KEYS.items():
        assert not keys & set(dumped[section] if section else dumped)
    assert "teachers" not in Recipe().model_dump_json()


def test_the_first_teacher_fills_teacher_and_the_resolved_recipe_reads_back(write_recipe, tmp_path: Path) -> None:
    recipe = load_recipe(write_recipe(BASE, teachers=TWO))
    assert recipe.teacher.arch == "test_resnet" and ensemble_rule(recipe) == "mean"
    assert [(t.arch, t.weight) for t in teacher_specs(recipe)] == [("test_resnet", 1.0), ("test_efficientnet", 3.0)]
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    assert load_recipe(resolved).to_dict() == recipe.to_dict()
    single = load_recipe(write_recipe(name="single.yaml"))
    assert ensemble_rule(single) is None and [t.arch for t in teacher_specs(single)] == [single.teacher.arch]


def test_a_pretrained_teacher_gets_its_own_statistics(write_recipe) -> None:
    teachers = [{"arch": "resnet18", "pretrained": True}, {"arch": "vit_base_patch16_224", "pretrained": True}, {"arch": "resnet18"}]
    data = {"source": "photos", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    recipe = load_recipe(write_recipe(BASE, data=data, teachers=teachers))
    assert recipe.teachers is not None
    assert recipe.teachers[1].mean == [0.5, 0.5, 0.5] and recipe.teachers[1].std == [0.5, 0.5, 0.5]  # its pretrained_cfg's
    assert recipe.teachers[0].mean == data["mean"] and recipe.teachers[2].mean is None  # scratch: the data's, as one teacher
    assert recipe.teacher.mean == data["mean"]


def test_pretrained_teachers_of_different_input_sizes_need_one_image_size(write_recipe, tmp_path: Path) -> None:
    for split in ("train", "val"):
        (tmp_path / "data" / split / "cls").mkdir(parents=True)
    teachers = [{"arch": "resnet18", "pretrained": True}, {"arch": "efficientnet_b3", "pretrained": True}]
    data = {"source": "imagefolder", "root": str(tmp_path / "data")}
    with pytest.raises(RecipeError) as exc:
        load_recipe(write_recipe(BASE, data=data, teachers=teachers))
    assert "teachers[0] resnet18 224 px, teachers[1] efficientnet_b3 288 px); set data.image_size" in str(exc.value)
    assert load_recipe(write_recipe(BASE, data={**data, "image_size": 64}, teachers=teachers)).data.image_size == 64


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"teachers": [{**t, "weight": 0} for t in TWO]}, "teachers: every weight is 0"),
        ({"teachers": [{"arch": "test_resnet"}, {"arch": "resnet_9000"}]}, "teachers[1].arch: unknown timm architecture"),
        ({"teachers": [{"arch": "test_resnet"}, {"arch": "test_resnet", "mean": [0.1, 0.2]}]}, "teachers[1].mean: needs 1 value(s)"),
        ({"teachers": [{"weight": 1}, {"arch": "test_resnet"}]}, "teachers[0].arch: Field required"),
        ({"teachers": TWO, "teacher": {"arch": "test_vit"}}, "teacher: set either teacher or teachers"),
        (
            {"teachers": TWO, "distill": {"losses": [{"kind": "rkd", "weight": 1.0}]}},
            "distill.losses[0] (rkd): compares raw teacher logits, which distill.ensemble: mean does not make",
        ),
        ({"distill": {"ensemble": "confidence"}}, "distill.ensemble: only read with several teachers"),
    ],
)
def test_bad_teachers_are_recipe_errors(write_recipe, changes, message) -> None:
    with pytest.raises(RecipeError) as exc:
        load_recipe(write_recipe(BASE, **changes))
    assert message in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("distill", "mode"),
    [
        ({"mode": "mutual", "peers": [{"arch": "test_efficientnet"}, {"arch": "test_nfnet"}]}, "distill.mode: mutual"),
        ({"chain": ["test_resnet", "test_nfnet", "test_efficientnet"]}, "distill.chain"),
    ],
)
def test_feature_losses_are_refused_where_a_mode_cannot_feed_them(write_recipe, distill, mode) -> None:
    losses = [{"kind": "ce", "weight": 0.5}, {"kind": "fitnet", "weight": 0.3, "student": "1", "teacher": "1"}]
    with pytest.raises(RecipeError) as exc:
        load_recipe(write_recipe(TINY, distill={**TINY["distill"], **distill, "losses": losses}))
    assert f"distill.losses[1] (fitnet): feature losses are not supported with {mode}" in str(exc.value)
