from pathlib import Path

import pytest
import yaml

from cann_distill.core.errors import RecipeError, UsageError
from cann_distill.core.recipe import default_recipe_path, resource_dir
from cann_distill.core.recipe_load import apply_overrides, load_recipe

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("path", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_validates(path: Path, tmp_path: Path) -> None:
    overrides = []
    if (yaml.safe_load(path.read_text()).get("data") or {}).get("source") == "imagefolder":  # its root is the user's: give it a tree
        for split in ("train", "val"):
            (tmp_path / split / "cls").mkdir(parents=True)
        overrides.append(f"data.root={tmp_path}")
    recipe = load_recipe(path, overrides)
    assert recipe.name == path.stem  # recipe names follow <student>_from_<teacher>_<dataset>
    assert "_from_" in path.stem
    assert recipe.data.image_size and recipe.data.mean and recipe.data.crop_pct  # resolved, recorded in the run dir


def test_default_recipe_is_packaged() -> None:
    assert default_recipe_path().is_file()
    assert (resource_dir("configs") / "hardware" / "cpu.yaml").is_file()
    assert load_recipe(None).data.source == "photos"  # offline: the packaged photographs


def test_unknown_key_is_named_with_its_path(write_recipe) -> None:
    with pytest.raises(RecipeError, match=r"distill\.epoch: unknown key"):
        load_recipe(write_recipe(distill={"epoch": 2}))


def test_wrong_type_is_named_with_its_path(write_recipe) -> None:
    with pytest.raises(RecipeError, match=r"data\.image_size: Input should be a valid integer"):
        load_recipe(write_recipe(data={"image_size": "big"}))


def test_unknown_loss_names_index_and_known_losses(write_recipe) -> None:
    path = write_recipe(distill={"losses": [{"kind": "ce"}, {"kind": "kdd"}]})
    with pytest.raises(RecipeError) as exc:
        load_recipe(path)
    assert "distill.losses[1].kind: unknown loss 'kdd' (known: " in str(exc.value)
    assert ", kd, " in str(exc.value)
    assert "did you mean: kd" in str(exc.value)


def test_bad_loss_argument_and_value(write_recipe) -> None:
    with pytest.raises(RecipeError, match=r"distill\.losses\[0\]\.temperture: unexpected argument for loss 'kd'"):
        load_recipe(write_recipe(distill={"losses": [{"kind": "kd", "temperture": 3}]}))
    with pytest.raises(RecipeError, match=r"distill\.losses\[0\]: temperature must be > 0"):
        load_recipe(write_recipe(distill={"losses": [{"kind": "kd", "temperature": 0}]}))
    with pytest.raises(RecipeError, match=r"distill\.losses\[0\]\.weight: Input should be greater than or equal to 0"):
        load_recipe(write_recipe(distill={"losses": [{"kind": "kd", "weight": -1}]}))


def test_unknown_arch_suggests_close_names(write_recipe) -> None:
    with pytest.raises(RecipeError, match=r"student\.arch: unknown timm architecture 'resnet181' \(did you mean: .*resnet18"):
        load_recipe(write_recipe(student={"arch": "resnet181"}))


def test_all_errors_reported_at_once(write_recipe) -> None:
    with pytest.raises(RecipeError) as exc:
        load_recipe(write_recipe(teacher={"arch": "nope_net"}, select={"strategy": "psychic"}))
    msg = str(exc.value)
    assert "teacher.arch" in msg and "select.strategy: unknown selector 'psychic'" in msg
    assert "\n" not in msg


def test_yaml_syntax_error_has_line_number(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata:\n  source: digits\n  image_size: [32\nseed: 1\n")
    with pytest.raises(RecipeError, match=r"bad\.yaml:\d+:\d+: YAML syntax error"):
        load_recipe(bad)


def test_missing_recipe_and_missing_dataset(tmp_path: Path, write_recipe) -> None:
    with pytest.raises(UsageError, match="recipe not found"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(RecipeError, match=r"data\.root: dataset folder not found: .*nowhere/train"):
        load_recipe(write_recipe(data={"source": "imagefolder", "root": str(tmp_path / "nowhere")}))


def test_overrides_scalars_nested_and_list_items(write_recipe) -> None:
    recipe = load_recipe(
        write_recipe(),
        [
            "distill.epochs=7",
            "distill.losses=[{kind: ce}, {kind: kd, temperature: 2}]",
            "distill.losses[1].weight=0.25",
            "validate.reduce_range=true",
            "teacher.train.lr=1e-3",
        ],
    )
    assert recipe.distill.epochs == 7
    assert recipe.distill.losses[1].weight == 0.25
    assert recipe.distill.losses[1].kwargs() == {"temperature": 2}
    assert recipe.validate_.reduce_range is True
    assert recipe.teacher.train.lr == pytest.approx(1e-3)


def test_override_errors(write_recipe) -> None:
    with pytest.raises(RecipeError, match=r"distill\.epochz: unknown key"):
        load_recipe(write_recipe(), ["distill.epochz=2"])
    with pytest.raises(UsageError, match="expected KEY=VALUE"):
        load_recipe(write_recipe(), ["distill.epochs"])
    with pytest.raises(UsageError, match=r"index \[5\] out of range"):
        apply_overrides({"a": [1]}, ["a[5]=2"])


def test_resolved_recipe_round_trips(write_recipe) -> None:
    recipe = load_recipe(write_recipe())
    again = load_recipe(write_recipe(yaml.safe_load(yaml.safe_dump(recipe.to_dict())), name="again.yaml"))
    assert again.to_dict() == recipe.to_dict()


def test_select_temperature_bounds_are_checked(write_recipe) -> None:
    with pytest.raises(RecipeError, match=r"select\.temperature\.t_min: must be <= t_max"):
        load_recipe(write_recipe(), ["select.temperature.t_min=9", "select.temperature.t_max=8"])
    with pytest.raises(RecipeError, match=r"select\.temperature\.t_hard: must be >= base"):
        load_recipe(write_recipe(), ["select.temperature.t_hard=2"])
    with pytest.raises(RecipeError, match=r"select\.top_k_ratio: Input should be less than or equal to 1"):
        load_recipe(write_recipe(), ["select.top_k_ratio=1.5"])
    with pytest.raises(RecipeError, match=r"select\.top_k_ratio: Input should be greater than 0"):
        load_recipe(write_recipe(), ["select.top_k_ratio=0"])


def test_strategy_args_are_bound_against_the_selector(write_recipe) -> None:
    recipe = load_recipe(write_recipe(), ["select.strategy=confidence_entropy_balance", "select.strategy_args.alpha=0.25"])
    assert recipe.select.strategy_args == {"alpha": 0.25}
    with pytest.raises(RecipeError) as exc:
        load_recipe(write_recipe(), ["select.strategy=confidence_entropy_balance", "select.strategy_args.alpah=0.2"])
    assert "select.strategy_args.alpah: unexpected argument for selector 'confidence_entropy_balance' (accepts: alpha)" in str(exc.value)
    with pytest.raises(RecipeError, match=r"select\.strategy_args\.alpha: must be in \[0, 1\], got 2"):
        load_recipe(write_recipe(), ["select.strategy=confidence_entropy_balance", "select.strategy_args.alpha=2"])
    with pytest.raises(RecipeError, match=r"select\.strategy_args\.temperature: unexpected argument for selector 'margin'"):
        load_recipe(write_recipe(), ["select.strategy_args.temperature=2"])


def test_temperature_schedule_is_checked(write_recipe) -> None:
    recipe = load_recipe(write_recipe(), ["distill.temperature_schedule={kind: linear, start: 4, end: 1}"])
    assert recipe.distill.temperature_schedule.kwargs() == {"start": 4, "end": 1}
    assert load_recipe(write_recipe()).distill.temperature_schedule.is_default
    with pytest.raises(
        RecipeError, match=r"distill\.temperature_schedule\.kind: unknown temperature schedule 'lineer' .*did you mean: linear"
    ):
        load_recipe(write_recipe(), ["distill.temperature_schedule.kind=lineer"])
    with pytest.raises(RecipeError, match=r"distill\.temperature_schedule\.end: missing argument"):
        load_recipe(write_recipe(), ["distill.temperature_schedule={kind: cosine, start: 4}"])
    with pytest.raises(RecipeError, match=r"distill\.temperature_schedule\.start: must be > 0"):
        load_recipe(write_recipe(), ["distill.temperature_schedule={kind: linear, start: -1, end: 1}"])
    with pytest.raises(RecipeError, match=r"distill\.temperature_schedule: a temperature schedule needs a loss"):
        load_recipe(write_recipe(), ["distill.losses=[{kind: ce}]", "distill.temperature_schedule={kind: linear, start: 4, end: 1}"])
    with pytest.raises(RecipeError, match=r"distill\.critical\.mode: Input should be 'none', 'weight', 'subset' or 'curriculum'"):
        load_recipe(write_recipe(), ["distill.critical.mode=sometimes"])


def test_nan_loss_weight_and_teacher_normalisation_are_checked(write_recipe) -> None:
    with pytest.raises(RecipeError, match=r"distill\.losses\[1\]\.weight: Input should be a finite number"):
        load_recipe(write_recipe(distill={"losses": [{"kind": "ce"}, {"kind": "kd", "weight": float("nan")}]}))
    with pytest.raises(RecipeError, match=r"distill\.losses\[0\]\.weight: Input should be a finite number"):
        load_recipe(write_recipe(), ["distill.losses[0].weight=.nan"])
    with pytest.raises(RecipeError) as exc:
        load_recipe(write_recipe(teacher={"arch": "test_resnet", "mean": [0.1, 0.2], "std": [0.0]}))
    assert "teacher.mean: needs 1 value(s), one per channel, got 2" in str(exc.value)
    assert "teacher.std: every value must be > 0" in str(exc.value)
    recipe = load_recipe(
        write_recipe(),
        [
            "teacher.mean=[0.1]",
            "teacher.std=[0.3]",
            "distill.loss_balance=uncertainty",
            "distill.warmup_epochs=0.5",
            "distill.amp=bf16",
            "distill.ema_decay=0.99",
        ],
    )
    assert recipe.teacher.mean == [0.1] and recipe.distill.loss_balance == "uncertainty" and recipe.distill.amp == "bf16"
    with pytest.raises(RecipeError, match=r"distill\.loss_balance: Input should be 'none' or 'uncertainty'"):
        load_recipe(write_recipe(), ["distill.loss_balance=magic"])


def test_selection_policy_keys_are_checked(write_recipe) -> None:
    path = write_recipe()
    with pytest.raises(RecipeError, match=r"select\.mix: hard \+ medium \+ easy must sum to 1, got 0\.5 \+ 0\.5 \+ 0\.3 = 1\.3"):
        load_recipe(path, ["select.mix={hard: 0.5, medium: 0.5, easy: 0.3}"])  # mix is the default policy
    with pytest.raises(RecipeError, match=r"select\.mix: only read with select\.policy: mix \(policy is hard\)"):
        load_recipe(path, ["select.policy=hard", "select.mix={hard: 1.0}"])
    with pytest.raises(RecipeError, match=r"select\.refresh_every: 5 is more than distill\.epochs \(3\)"):
        load_recipe(path, ["select.refresh_every=5"])
    with pytest.raises(RecipeError, match=r"select\.refresh_every: distill\.critical\.mode is none"):
        load_recipe(path, ["select.refresh_every=1", "distill.critical.mode=none"])
    with pytest.raises(RecipeError, match=r"select\.probe_epochs: strategy 'forgetting' .* needs >= 2 probe epoch\(s\), got 1"):
        load_recipe(path, ["select.strategy=forgetting", "select.probe_epochs=1"])
    with pytest.raises(RecipeError, match=r"select\.policy: Input should be 'hard', 'easy', 'mix', 'auto' or 'random'"):
        load_recipe(path, ["select.policy=hardest"])
    ok = load_recipe(path, ["select.policy=mix", "select.mix={hard: 0.2, medium: 0.5, easy: 0.3}", "select.refresh_every=3"])
    assert ok.select.mix is not None and ok.select.mix.medium == 0.5 and ok.select.class_balanced is True
    # the defaults follow the mode: a subset is a random one (no score-based policy beat it on photos), else a one-off
    # mix; a subset picked by a score-based policy is re-mined every epoch
    from cann_distill.core.recipe import refresh_epochs, selection_policy

    default = load_recipe(path)
    assert default.select.policy is None and default.select.refresh_every == "auto"
    assert (refresh_epochs(default), selection_policy(default)) == (None, "mix")  # the recipe sets critical.mode: weight
    subset = load_recipe(path, ["distill.critical.mode=subset"])
    assert (refresh_epochs(subset), selection_policy(subset)) == (None, "random")
    hard = load_recipe(path, ["distill.critical.mode=subset", "select.policy=hard"])
    assert (refresh_epochs(hard), selection_policy(hard)) == (1, "hard")
    assert refresh_epochs(load_recipe(path, ["distill.critical.mode=subset", "select.policy=hard", "distill.epochs=1"])) is None
    off = load_recipe(path, ["distill.critical.mode=subset", "select.refresh_every=null"])
    assert (refresh_epochs(off), selection_policy(off)) == (None, "random")
    every2 = load_recipe(path, ["distill.critical.mode=subset", "select.refresh_every=2"])
    assert (refresh_epochs(every2), selection_policy(every2)) == (2, "random")
    assert selection_policy(load_recipe(path, ["distill.critical.mode=subset", "select.policy=easy"])) == "easy"
    with pytest.raises(RecipeError, match=r"select\.mix: only read with select\.policy: mix \(policy is random\)"):
        load_recipe(path, ["distill.critical.mode=subset", "select.mix={hard: 1.0}"])  # the subset default is random
    with pytest.raises(RecipeError, match=r"select\.refresh_every"):
        load_recipe(path, ["select.refresh_every=often"])
