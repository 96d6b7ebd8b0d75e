"""scripts/bench/bench.py --parts speed: one data path and one timing rule for every arm, and a headline that
compares only what does the same work."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "bench"))
import bench  # noqa: E402  (scripts/bench is not a package)
import bench_report  # noqa: E402

N = 640  # samples per epoch


def epochs(warmup: float, *seconds: float) -> list[dict[str, Any]]:
    return [{"seconds": s, "samples": N, "steps": 10} for s in (warmup, *seconds)]


def run(arm: str, repeat: int, rate: float, select: float = 0.0, **extra: Any) -> dict[str, Any]:
    """4 epochs: a slow warm-up epoch, then three at `rate` samples/s."""
    return {
        "arm": arm,
        "status": "done",
        "repeat": repeat,
        "seed": 0,
        "teacher_targets": arm if arm in ("cached", "replay") else "online",
        "epochs": epochs(99.0, *[N / rate] * 3),
        "stages": {"select": {"seconds": select}},
        "transform_repr": "Compose(RandomResizedCrop(32))",
        "data_path": "decode",
        **extra,
    }


@pytest.fixture
def data() -> dict[str, Any]:
    rates = {"plain": 40.0, "torchdistill": 32.0, "online": 50.0, "cached": 100.0, "replay": 160.0}
    select = {"online": 1.0, "cached": 10.0, "replay": 40.0}
    runs = [run(arm, r, rate, select.get(arm, 0.0)) for r in range(3) for arm, rate in rates.items()]
    return {
        "smoke": False,
        "command": "python scripts/bench/bench.py --parts speed --out x.json",
        "out": "x.json",
        "settings": {"student": "mobilenetv3_small_050", "speed": {"epochs": 4, "repeats": 3, "warmup_epochs": 1, "data_path": "decode"}},
        "arms": {a: {"label": f"label {a}"} for a in rates},
        "speed": {"resnet50": {"teacher": "resnet50", "image_size": 32, "runs": runs}},
        "accuracy": None,
    }


def row(page: str, first: str, second: str) -> list[str]:
    line = next(ln for ln in page.splitlines() if ln.startswith(f"| {first} | {second} |"))
    return [c.strip() for c in line.strip("|").split(" | ")]


# ----------------------------------------------------------------------------- data path


@pytest.fixture
def speed_setup(tmp_path: Path) -> tuple[dict[str, Any], dict[str, Any], Path]:
    from cann_distill.core.recipe import resource_dir
    from cann_distill.core.recipe_load import load_recipe

    path = resource_dir("recipes") / "mobilenetv3_small_050_from_resnet18_digits.yaml"
    args = bench.parse_args(["--parts", "speed,accuracy", "--arms", ",".join(bench.ARMS), "--set", "data.cache_mb=512"])
    recipe = load_recipe(path, args.set)
    st = bench.settings_from_recipe(recipe, path, args, tmp_path, {"train": 640, "val": 200, "test": 200})
    st["recipe_overrides"] = list(args.set)
    plan = bench.arm_plan(args, {"python": sys.executable, "available": True}, ["online", "cached", "replay"])
    return st, plan, path


def test_every_speed_arm_decodes_every_epoch(speed_setup: tuple[dict[str, Any], dict[str, Any], Path], tmp_path: Path) -> None:
    from cann_distill.core.recipe_load import load_recipe

    st, plan, path = speed_setup
    assert st["speed"]["data_path"] == bench.SPEED_DATA_PATH == "decode"
    assert set(plan) == set(bench.ARMS)
    for arm in plan:
        spec = bench.arm_spec("speed", arm, plan[arm], st, "resnet18", tmp_path / "t.pt", 4, 0, path)
        assert spec["data_path"] == "decode", arm
        if arm in bench.CANN_SCRIPT_ARMS:
            overrides = spec["cann"]["overrides"]
            assert "data.cache_mb=0" in overrides, arm
            # after the user's --set data.cache_mb=512, so it wins: the decoded-pixel cache is off
            cache = [o for o in overrides if o.startswith("data.cache_mb=")]
            assert cache == ["data.cache_mb=512", "data.cache_mb=0"], arm
            assert load_recipe(path, cache).data.cache_mb == 0, arm
        else:
            assert "cann" not in spec
    online = bench.arm_spec("accuracy", "online", plan["online"], st, "resnet18", tmp_path / "t.pt", 4, 0, path)
    assert "data_path" not in online and "data.cache_mb=0" not in online["cann"]["overrides"]  # accuracy keeps the cache


def test_the_peers_given_the_patient_arms_time_run_the_factor_of_the_epochs(
    speed_setup: tuple[dict[str, Any], dict[str, Any], Path], tmp_path: Path
) -> None:
    st, plan, path = speed_setup
    for arm, peer in (("plain_long", "plain"), ("td_long", "torchdistill")):
        spec = bench.arm_spec("accuracy", arm, plan[arm], st, "resnet18", tmp_path / "t.pt", 30, 0, path)
        same = bench.arm_spec("accuracy", peer, plan[peer], st, "resnet18", tmp_path / "t.pt", 30, 0, path)
        assert spec["epochs"] == 66 and same["epochs"] == 30  # the default factor 2.2, rounded
        assert plan[arm]["script"] == plan[peer]["script"] and plan[arm]["python"] == plan[peer]["python"]
        assert {k: v for k, v in spec.items() if k != "epochs"} == {k: v for k, v in same.items() if k != "epochs"}
    args = bench.parse_args(["--parts", "accuracy", "--arms", "torchdistill,td_long"])
    blocked = bench.arm_plan(args, {"python": "nowhere", "available": False, "reason": "no torchdistill"}, ["online"])
    assert blocked["td_long"]["skipped"] == blocked["torchdistill"]["skipped"] == "no torchdistill"
    import bench_report

    pairs = bench_report._comparisons(["student", "torchdistill", "default", "patient", "td_long"])
    assert ("patient", "td_long") in pairs and ("default", "td_long") not in pairs and ("default", "torchdistill") in pairs


def test_the_baseline_arm_runs_cann_distills_baseline_stage_on_the_default_arms_recipe(
    speed_setup: tuple[dict[str, Any], dict[str, Any], Path], tmp_path: Path
) -> None:
    st, plan, path = speed_setup
    base = bench.arm_spec("accuracy", "baseline", plan["baseline"], st, "resnet18", tmp_path / "t.pt", 30, 0, path)
    default = bench.arm_spec("accuracy", "default", plan["default"], st, "resnet18", tmp_path / "t.pt", 30, 0, path)
    assert plan["baseline"]["script"] == plan["default"]["script"] == "arm_cann.py"
    assert base.pop("stage") == "baseline" and "stage" not in default  # arm_cann.py runs distill unless told otherwise
    assert base == default  # same recipe, overrides, epochs, seed and data: only the stage differs
    import arm_cann

    assert arm_cann.stages_for("distill") == ["teacher", "select", "distill"]
    assert arm_cann.stages_for("baseline") == ["baseline"]  # no teacher pass: no one-time cost on its page row


def test_cache_mb_zero_keeps_no_decoded_pixels(tmp_path: Path) -> None:
    from PIL import Image

    from cann_distill.data.loading import FolderImages

    Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "a.png")
    off, on = FolderImages(tmp_path, ["a.png"], "RGB", 8, cache_bytes=0), FolderImages(tmp_path, ["a.png"], "RGB", 8, cache_bytes=2**20)
    assert off(0).getpixel((0, 0)) == on(0).getpixel((0, 0)) == (10, 20, 30)
    assert off._cache == {} and list(on._cache) == [0]


# ----------------------------------------------------------------------------- timing


def test_the_first_epoch_is_left_out_for_every_arm() -> None:
    for arm in bench_report.ARM_ORDER:
        r = {"arm": arm, "epochs": epochs(1000.0, 10.0, 20.0, 30.0)}
        assert bench_report.timed_epochs(r) == r["epochs"][1:]
        assert bench_report.loop_rate(r) == pytest.approx(3 * N / 60.0), arm
        two = {"arm": arm, "epochs": epochs(1000.0, 16.0)}
        assert bench_report.loop_rate(two) == pytest.approx(N / 16.0), arm  # only the warm-up left out, never a timed one
        with pytest.raises(ValueError, match="warm-up"):
            bench_report.loop_rate({"arm": arm, "epochs": epochs(10.0)})


def test_a_speed_run_with_only_a_warmup_epoch_is_not_timed(data: dict[str, Any]) -> None:
    one = {**run("online", 0, 50.0), "epochs": epochs(10.0)}
    assert bench.untimed_as_failed("speed", one)["status"] == "failed"
    assert "warm-up" in bench.untimed_as_failed("speed", one)["error"]
    assert bench.untimed_as_failed("accuracy", one)["status"] == "done"
    data["speed"]["resnet50"]["runs"] = [r for r in data["speed"]["resnet50"]["runs"] if r["arm"] != "online"] + [one]
    assert bench_report.summarize(data)["speed"]["resnet50"]["online"]["status"].startswith("not timed")


def test_speed_epochs_default_to_one_warmup_and_three_timed() -> None:
    args = bench.parse_args([])
    assert args.speed_epochs == 4
    assert bench.parse_args(["--speed-epochs", "2"]).speed_epochs == 2


@pytest.mark.parametrize("value", ["1", "0"])
def test_speed_epochs_below_two_are_refused(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as err:
        bench.parse_args(["--speed-epochs", value])
    assert err.value.code == 2
    assert "--speed-epochs must be at least 2" in capsys.readouterr().err


# ----------------------------------------------------------------------------- headline


def test_headline_compares_online_per_step_and_replay_per_extra_student(data: dict[str, Any]) -> None:
    page = bench_report.render(data)
    assert "**Data path**: every arm reads and decodes the PNG files every epoch" in page
    head = page[page.index("### Headline") : page.index("### teacher")]
    online = row(head, "resnet50", "label online")
    # 4 epochs of 640 at 50/s = 51.2 s; plain 64 s, torchdistill 80 s; select 1 s on top
    assert online[2].startswith("same work per step") and online[3:] == ["50.0", "51.2", "1.25×", "1.56×", "52.2", "1.23×", "1.53×"]
    replay = row(head, "resnet50", "label replay")
    # 2560 / 160 = 16 s per extra student; one student end to end 16 + 40 (select) = 56 s
    assert replay[2].startswith("cost per extra student") and replay[3:] == ["160.0", "16.0", "4.00×", "5.00×", "56.0", "1.14×", "1.43×"]
    assert row(head, "resnet50", "label plain")[3:] == ["40.0", "64.0", "–", "–", "64.0", "–", "–"]


def test_the_page_is_rebuilt_from_the_json(data: dict[str, Any], tmp_path: Path) -> None:
    out, docs = tmp_path / "run.json", tmp_path / "docs" / "benchmarks.md"
    out.write_text(json.dumps(data))
    assert bench.main(["--render", "--out", str(out), "--docs", str(docs)]) == 0
    assert docs.read_text() == bench_report.render(data)
    assert "### Headline: what is comparable" in docs.read_text()


def test_differing_transforms_refuse_the_comparison(data: dict[str, Any]) -> None:
    for r in data["speed"]["resnet50"]["runs"]:
        if r["arm"] == "torchdistill":
            r["transform_repr"] = "Compose(Resize(32))"
    s = bench_report.summarize(data)
    assert s["speed_checks"]["resnet50"]["transforms_identical"] is False
    assert "x_plain" not in s["speed"]["resnet50"]["replay"]
    page = bench_report.render(data)
    cells = row(page, "resnet50", "**not comparable**")
    assert "different training transforms" in cells[2] and set(cells[3:]) == {"–"}
    assert "label replay" not in page[page.index("### Headline") : page.index("### teacher")]
    crit = row(page, "replay samples/s ÷ plain, teacher resnet50", "≥ 2.5×")
    assert crit[2] == "–" and crit[3].startswith("n/a (not comparable")


def test_a_run_that_kept_decoded_pixels_is_not_compared(data: dict[str, Any]) -> None:
    for r in data["speed"]["resnet50"]["runs"]:
        if r["arm"] == "replay":
            r["data_path"] = "decoded-pixel cache (1024 MiB)"
    check = bench_report.summarize(data)["speed_checks"]["resnet50"]
    assert not check["comparable"] and "(decode, decoded-pixel cache (1024 MiB))" in check["why"]
    del data["settings"]["speed"]["data_path"]
    assert "**Data path**: not recorded" in bench_report.render(data)


def test_cann_distill_and_timm_transforms_compare_equal_when_they_are(tmp_path: Path) -> None:
    import arm_common
    from PIL import Image

    from cann_distill.core.recipe import resource_dir
    from cann_distill.core.recipe_load import load_recipe
    from cann_distill.data.transforms import build_transforms, pixel_norm

    path = resource_dir("recipes") / "mobilenetv3_small_050_from_resnet18_digits.yaml"
    for split in ("train", "val", "test"):
        for c in range(10):
            (tmp_path / split / str(c)).mkdir(parents=True)
            Image.new("RGB", (32, 32)).save(tmp_path / split / str(c) / "a.png")
    args = bench.parse_args([])
    st = bench.settings_from_recipe(load_recipe(path), path, args, tmp_path, {"train": 10, "val": 10, "test": 10})
    st["transforms"]["train"]["color_jitter"] = 0.4  # exercise cann-distill's FastColorJitter
    recipe = load_recipe(path, [*bench.cann_overrides(st, "resnet18", None, 4), "data.augment.color_jitter=0.4"])
    cann_tf = build_transforms(recipe.data)[0]
    norm = pixel_norm(recipe.data)
    cann = {"transform_repr": repr(cann_tf), "batch_norm": {"mean": list(norm.mean), "std": list(norm.std)}}
    plain = {"transform_repr": repr(arm_common.transforms({"transforms": st["transforms"], "augment": True})[0])}
    assert "FastColorJitter(" in cann["transform_repr"] and "Normalize(" in plain["transform_repr"]  # the written forms differ
    assert bench_report.canonical_transform(cann) == bench_report.canonical_transform(plain)
    other = {**cann, "batch_norm": {"mean": [0.4, 0.5, 0.5], "std": list(norm.std)}}
    assert bench_report.canonical_transform(other) != bench_report.canonical_transform(plain)
