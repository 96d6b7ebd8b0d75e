"""scripts/bench/bench_report.py: docs/benchmarks.md is a pure function of the benchmark JSON."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "bench"))
import bench_report  # noqa: E402  (scripts/bench is not a package)

N = 640  # samples per epoch


def speed_run(arm: str, repeat: int, seconds: float, select: float | None = None) -> dict[str, Any]:
    """3 epochs: a slow warm-up epoch, then two of `seconds` each (rate N / seconds)."""
    run: dict[str, Any] = {
        "arm": arm,
        "status": "done",
        "repeat": repeat,
        "seed": 0,
        "teacher_targets": "online",
        "epochs": [{"seconds": 99.0, "samples": N, "steps": 10}] + [{"seconds": seconds, "samples": N, "steps": 10}] * 2,
    }
    if select is not None:
        run["stages"] = {"select": {"seconds": select}}
    return run


def acc_run(arm: str, seed: int, acc: float) -> dict[str, Any]:
    """Two epochs at 64 samples/s; replay's select takes 20 s."""
    return {
        "arm": arm,
        "status": "done",
        "seed": seed,
        "test_acc": acc,
        "teacher_targets": arm,
        "epochs": [{"seconds": 10.0, "samples": N, "steps": 10}] * 2,
        "stages": {"select": {"seconds": 20.0 if arm == "replay" else 0.0}},
    }


@pytest.fixture
def data() -> dict[str, Any]:
    plain = [speed_run("plain", r, N / rate) for r, rate in enumerate((64.0, 32.0, 40.0))]  # median 40
    replay = [speed_run("replay", r, N / rate, select=5.0) for r, rate in enumerate((200.0, 160.0, 128.0))]  # median 160
    skipped = {"arm": "torchdistill", "status": "skipped", "reason": "no python at /nowhere", "seed": 0, "repeat": 0}
    accuracy = [
        acc_run(arm, s, a)
        for arm, accs in {"online": (0.98, 0.97, 0.99), "cached": (0.95, 0.96, 0.94), "replay": (0.979, 0.981, 0.98)}.items()
        for s, a in enumerate(accs)
    ]
    return {
        "smoke": False,
        "command": "python scripts/bench/bench.py --out x.json",
        "out": "x.json",
        "settings": {
            "student": "mobilenetv3_small_050",
            "speed": {"epochs": 3, "repeats": 3},
            "accuracy": {"teacher": "resnet18", "epochs": 30, "seeds": [0, 1, 2]},
        },
        "arms": {
            "plain": {"label": "plain PyTorch KD"},
            "torchdistill": {"label": "torchdistill KD"},
            "online": {"label": "cann-distill online"},
            "cached": {"label": "cann-distill cached"},
            "replay": {"label": "cann-distill replay"},
        },
        "speed": {"resnet50": {"runs": [skipped, *plain, *replay]}},
        "accuracy": {"teacher": {"epochs": 15, "test_acc": 0.98}, "runs": accuracy},
    }


def row(page: str, label: str, section: str = "") -> list[str]:
    """The cells of the first table row whose first cell is `label` (after the heading `section`)."""
    line = next(ln for ln in page[page.index(section) :].splitlines() if ln.startswith(f"| {label} |"))
    return [c.strip() for c in line.strip("|").split(" | ")]


def test_speed_rows_are_medians_and_ratios_of_the_json(data: dict[str, Any]) -> None:
    page = bench_report.render(data)
    plain, replay = row(page, "plain PyTorch KD"), row(page, "cann-distill replay")
    assert plain[2] == "40.0" and plain[3] == "32.0–64.0 (n=3)"  # warm-up epoch (99 s) left out
    assert replay[2] == "160.0" and replay[3] == "128.0–200.0 (n=3)"
    assert replay[4].startswith("4.00×")  # 160 / 40, with the per-repeat range after it
    assert replay[6] == "5.00"  # select, the one-time cost
    assert replay[7] == "112.9"  # median over runs of 1920 / (1920 / rate + 5): 3 epochs at the steady rate + select
    assert row(page, "torchdistill KD")[1] == "skipped: no python at /nowhere"


def test_an_arm_without_augmentation_says_so(data: dict[str, Any]) -> None:
    for run in data["speed"]["resnet50"]["runs"]:
        if run["arm"] == "replay":
            run.update(teacher_targets="cached", augmented=False)
    assert row(bench_report.render(data), "cann-distill replay")[1] == "cached, no augmentation"


def test_changing_the_json_changes_the_page(data: dict[str, Any]) -> None:
    slower = copy.deepcopy(data)
    for run in slower["speed"]["resnet50"]["runs"]:
        if run["arm"] == "plain":
            run["epochs"] = [{**e, "seconds": 2 * e["seconds"]} for e in run["epochs"]]
    page = bench_report.render(slower)
    assert row(page, "plain PyTorch KD")[2] == "20.0"
    assert row(page, "cann-distill replay")[4].startswith("8.00×")


def test_criteria_follow_the_numbers(data: dict[str, Any]) -> None:
    page = bench_report.render(data)
    assert row(page, "replay samples/s ÷ plain, teacher resnet50")[1:] == ["≥ 2.5×", "4.00", "pass"]
    td = row(page, "replay samples/s ÷ torchdistill, teacher resnet50")
    assert td[2] == "–" and td[3].startswith("n/a") and "skipped" in td[3]
    assert row(page, "replay − online test top-1 (pt, mean over seeds)")[2:] == ["0.00", "pass"]
    assert row(page, "replay − cached test top-1 (pt, augmentation on)")[2:] == ["3.00", "pass"]
    data["accuracy"]["runs"] = [r if r["arm"] != "replay" else {**r, "test_acc": r["test_acc"] - 0.01} for r in data["accuracy"]["runs"]]
    assert row(bench_report.render(data), "replay − online test top-1 (pt, mean over seeds)")[2:] == ["-1.00", "fail"]


def test_accuracy_rows_are_mean_and_sample_std_over_seeds(data: dict[str, Any]) -> None:
    page = bench_report.render(data)
    assert row(page, "cann-distill online", "## Accuracy")[1:3] == ["98.00 ± 1.00%", "98.00, 97.00, 99.00"]
    assert row(page, "cann-distill cached", "## Accuracy")[1] == "95.00 ± 1.00%"
    assert row(page, "cann-distill replay", "## Accuracy")[1:] == [
        "98.00 ± 0.10%",
        "97.90, 98.10, 98.00",
        "–",
        "replay",
        "64.0",
        "20.00",
        "32.0",
    ]  # no student arm: no TE


def test_smoke_runs_are_labelled_and_failures_do_not_break_tables(data: dict[str, Any]) -> None:
    assert "Smoke run" not in bench_report.render(data)
    data["smoke"] = True
    data["speed"]["resnet50"]["runs"].append({"arm": "online", "status": "failed", "error": "exit code 1: a | b", "seed": 0, "repeat": 0})
    page = bench_report.render(data)
    assert "Smoke run — not a measurement" in page
    online = next(ln for ln in page.splitlines() if ln.startswith("| cann-distill online | failed"))
    assert online.count(" | ") == len(row(page, "plain PyTorch KD")) - 1  # the '|' in the error is escaped


@pytest.fixture
def photo_data(data: dict[str, Any]) -> dict[str, Any]:
    """The accuracy arms of a photo run: teacher 90%, the student alone 70/72/74%."""
    accs = {
        "student": (0.70, 0.72, 0.74),
        "plain": (0.80, 0.82, 0.84),
        "torchdistill": (0.79, 0.80, 0.81),
        "default": (0.75, 0.76, 0.77),
        "patient": (0.85, 0.84, 0.86),
    }
    data["arms"].update(
        student={"label": "student alone (CE)"}, default={"label": "cann-distill default"}, patient={"label": "cann-distill patient"}
    )
    data["accuracy"] = {
        "teacher": {"epochs": 15, "test_acc": 0.90},
        "runs": [acc_run(arm, s, a) for arm, v in accs.items() for s, a in enumerate(v)],
    }
    return data


def test_transfer_efficiency_is_per_seed_with_mean_and_std(photo_data: dict[str, Any]) -> None:
    s = bench_report.summarize(photo_data)["accuracy"]
    # plain: (80-70)/(90-70), (82-72)/(90-72), (84-74)/(90-74)
    assert s["plain"]["te"]["values"] == pytest.approx([0.5, 10 / 18, 10 / 16])
    assert s["student"]["te"]["mean"] == 0.0
    page = bench_report.render(photo_data)
    te = s["plain"]["te"]
    assert row(page, "plain PyTorch KD", "## Accuracy")[3] == f"{te['mean']:.2f} ± {te['std']:.2f}"
    assert "Teacher test top-1: 90.00%" in page
    assert row(page, "1", "### Per seed")[2] == "82.00 (TE 0.56)"  # seed 1, plain
    assert bench_report.transfer_efficiency(80.0, 70.0, 70.0) is None  # teacher no better than the student: undefined


def test_where_cann_distill_loses_names_arms_beyond_the_spread(photo_data: dict[str, Any]) -> None:
    page = bench_report.render(photo_data)
    section = page[page.index("### Where cann-distill loses") :]
    losses = [ln for ln in section.splitlines() if ln.startswith("- ")]
    # default 76 ± 1: plain (82 ± 2) and torchdistill (80 ± 1) lead by more than the spread; patient (85) beats all
    assert losses == [
        "- plain PyTorch KD beats cann-distill default by 6.00 pt test top-1 (mean over 3 seed(s); spread 2.00 pt)",
        "- torchdistill KD beats cann-distill default by 4.00 pt test top-1 (mean over 3 seed(s); spread 1.00 pt)",
    ]
    photo_data["accuracy"]["runs"] = [r for r in photo_data["accuracy"]["runs"] if r["arm"] != "default"]
    page = bench_report.render(photo_data)
    assert "- No arm is above cann-distill patient on the mean." in page


def test_cann_distills_own_baseline_gives_a_second_te_and_is_named_where_it_leads(photo_data: dict[str, Any]) -> None:
    photo_data["arms"]["baseline"] = {"label": "cann-distill baseline (CE only)"}
    photo_data["accuracy"]["runs"] += [acc_run("baseline", s, a) for s, a in enumerate((0.76, 0.77, 0.78))]
    s = bench_report.summarize(photo_data)["accuracy"]
    # default 75/76/77 against the baseline 76/77/78, teacher 90: (75-76)/14, (76-77)/13, (77-78)/12
    assert s["default"]["te_vs_baseline"]["values"] == pytest.approx([-1 / 14, -1 / 13, -1 / 12])
    assert s["default"]["te"]["values"] == pytest.approx([5 / 20, 4 / 18, 3 / 16])  # against the plain student, unchanged
    page = bench_report.render(photo_data)
    cells = row(page, "cann-distill default", "## Accuracy")
    assert cells[4] == f"{s['default']['te_vs_baseline']['mean']:.2f} ± {s['default']['te_vs_baseline']['std']:.2f}"
    assert "TE vs cann-distill's baseline" in page
    # seed 2's row: student, baseline, plain, torchdistill, default
    assert row(page, "2", "### Per seed")[5] == "77.00 (TE 0.19) (vs baseline -0.08)"
    section = page[page.index("### Where cann-distill loses") :]
    assert (
        "- cann-distill baseline (CE only) is above cann-distill default by 1.00 pt on the mean, inside the seeds' spread (1.00 pt)"
        in section
    )
    pairs = bench_report._comparisons(["student", "baseline", "plain", "default", "patient"])
    assert ("default", "baseline") in pairs and ("patient", "baseline") in pairs and ("baseline", "student") in pairs
    assert ("baseline", "plain") not in pairs and ("plain", "baseline") not in pairs  # a reference, not a peer
    del photo_data["arms"]["baseline"]
    photo_data["accuracy"]["runs"] = [r for r in photo_data["accuracy"]["runs"] if r["arm"] != "baseline"]
    assert "TE vs cann-distill's baseline" not in bench_report.render(photo_data)


def test_a_lead_inside_the_spread_is_named_with_the_paired_tests() -> None:
    def arm(mean: float, std: float) -> dict[str, Any]:
        return {"status": "done", "test_acc": {"mean": mean, "std": std, "n": 3}}

    def paired(seed: int, a_only: int, b_only: int, verdict: str) -> dict[str, Any]:
        return {"seed": seed, "a": "default", "b": "plain", "a_only": a_only, "b_only": b_only, "n": 1000, "verdict": verdict}

    acc = {"student": arm(50.0, 1.0), "plain": arm(54.5, 1.0), "torchdistill": arm(53.0, 1.0), "default": arm(54.0, 1.0)}
    rows = [paired(0, 30, 40, "tie"), paired(1, 45, 40, "tie"), paired(2, 20, 40, "worse")]
    lines = bench_report._where_cann_loses(acc, {"plain": "plain KD", "default": "cann-distill default"}, rows)
    # pooled: 95 against 120 discordant images; torchdistill is below the default, so it has no line
    assert len(lines) == 1 and lines[0].startswith(
        "plain KD is above cann-distill default by 0.50 pt on the mean, inside the seeds' spread (1.00 pt)"
    )
    assert "pooled paired test over 3 seeds: tie (p=0.1)" in lines[0]
    assert lines[0].endswith("cann-distill default is worse by the paired test in seed(s) 2")


@pytest.fixture
def bench_mod() -> Any:
    import bench

    return bench


def test_settings_accept_adamw_with_warmup(bench_mod: Any, tmp_path: Path) -> None:
    from cann_distill.core.recipe import resource_dir
    from cann_distill.core.recipe_load import load_recipe

    path = resource_dir("recipes") / "mobilenetv3_small_050_from_resnet18_digits.yaml"
    recipe = load_recipe(path, ["distill.optimizer=adamw", "distill.lr=0.001", "distill.warmup_epochs=2"])
    args = bench_mod.parse_args(["--seeds", "1"])
    st = bench_mod.settings_from_recipe(recipe, path, args, tmp_path, {"train": 640, "val": 200, "test": 200})
    assert st["optimizer"]["name"] == "adamw" and st["optimizer"]["warmup_epochs"] == 2.0
    assert st["optimizer_text"].startswith("AdamW lr 0.001 (linear warmup over 2 epoch(s) per step, then cosine decay per step)")
    assert not any("ema_decay" in x for x in bench_mod.cann_only_settings(recipe))
    with_ema = load_recipe(path, ["distill.ema_decay=0.999"])
    assert "distill.ema_decay 0.999" in bench_mod.cann_only_settings(with_ema)  # named on the page: only cann-distill applies it


def test_settings_refuse_a_third_loss_in_one_line(bench_mod: Any) -> None:
    from cann_distill.core.recipe import resource_dir
    from cann_distill.core.recipe_load import load_recipe

    path = resource_dir("recipes") / "mobilenetv3_small_050_from_resnet18_digits.yaml"
    recipe = load_recipe(path, ["distill.losses=[{kind: ce, weight: 0.5}, {kind: kd, weight: 0.5}, {kind: dkd, weight: 1.0}]"])
    with pytest.raises(SystemExit) as err:
        bench_mod.check_recipe(recipe, path)
    msg = str(err.value)
    assert "\n" not in msg and "[ce, kd] or [ce, dkd]" in msg and "got ce, kd, dkd" in msg


def test_a_dkd_recipe_gives_the_peers_hinton_kd_at_its_weight_and_temperature(bench_mod: Any, tmp_path: Path) -> None:
    from cann_distill.core.recipe import resource_dir
    from cann_distill.core.recipe_load import load_recipe

    path = resource_dir("recipes") / "mobilenetv3_small_050_from_resnet18_digits.yaml"
    recipe = load_recipe(path, ["distill.losses=[{kind: ce, weight: 0.4}, {kind: dkd, weight: 0.6, beta: 2.0, temperature: 3.0}]"])
    st = bench_mod.settings_from_recipe(
        recipe, path, bench_mod.parse_args(["--seeds", "1"]), tmp_path, {"train": 640, "val": 200, "test": 200}
    )
    assert st["loss"] == {"ce_weight": 0.4, "kd_weight": 0.6, "temperature": 3.0}
    named = [x for x in bench_mod.cann_only_settings(recipe) if x.startswith("distill.losses[1] dkd")]
    assert named == [
        "distill.losses[1] dkd (alpha 1.0, beta 2.0): the plain and torchdistill arms run Hinton KD with the same weight and temperature"
    ]
    standardized = load_recipe(path, ["distill.losses[1].standardize=true"])
    with pytest.raises(SystemExit, match="standardized"):
        bench_mod.check_recipe(standardized, path)


def test_the_shared_schedule_warms_up_per_step_then_decays() -> None:
    import arm_common

    sched = arm_common.StepSchedule(epochs=4, steps_per_epoch=10, warmup_epochs=1)
    assert sched(0) == pytest.approx(0.1) and sched(9) == pytest.approx(1.0)  # end of the current step, as cann-distill
    assert sched(10) == pytest.approx(1.0) and sched(25) == pytest.approx(0.5)
    from cann_distill.training.update import lr_factor

    assert [sched(k) for k in range(40)] == pytest.approx([lr_factor(k / 10, 4, 1, 0.1) for k in range(40)])


def test_the_page_shows_no_machine_path_for_the_interpreter() -> None:
    assert (
        bench_report._portable("/home/me/.venv/bin/python3 scripts/bench/bench.py --seeds 3") == "python scripts/bench/bench.py --seeds 3"
    )
    assert bench_report._portable(".venv/bin/python scripts/bench/bench.py") == ".venv/bin/python scripts/bench/bench.py"


def with_predictions(run: dict[str, Any], target: list[int], right: int, start: int = 0) -> dict[str, Any]:
    """`run` with per-image test predictions: images start..start+right-1 correct, the rest off by one class."""
    pred = [t if start <= i < start + right else (t + 1) % 3 for i, t in enumerate(target)]
    return {**run, "test_pred": pred, "test_target": target, "test_acc": right / len(target)}


def test_paired_rows_are_the_exact_mcnemar_test_per_seed(photo_data: dict[str, Any]) -> None:
    target = [i % 3 for i in range(200)]
    right = {"student": 100, "plain": 160, "torchdistill": 150, "default": 104, "patient": 170}
    runs = photo_data["accuracy"]["runs"]
    photo_data["accuracy"]["runs"] = [with_predictions(r, target, right[r["arm"]], 10 if r["arm"] == "default" else 0) for r in runs]
    rows = bench_report.summarize(photo_data)["paired"]
    first = next(r for r in rows if (r["seed"], r["a"], r["b"]) == (0, "default", "student"))
    # default right on images 10..113, the student on 0..99: 14 against 10 discordant images, p = P(|X - 12| >= 2), X ~ B(24, 1/2)
    assert (first["a_only"], first["b_only"], first["verdict"]) == (14, 10, "tie")
    assert first["p_value"] == pytest.approx(0.5413, abs=1e-4)
    plain = next(r for r in rows if (r["seed"], r["a"], r["b"]) == (2, "default", "plain"))
    assert (plain["b_only"], plain["verdict"]) == (56, "worse")
    pairs = {(r["a"], r["b"]) for r in rows}
    assert ("student", "student") not in pairs and ("default", "torchdistill") in pairs and ("patient", "plain") in pairs
    page = bench_report.render(photo_data)
    assert row(page, "cann-distill default vs student alone (CE)", "### Paired per seed")[1:4] == ["+2.00 pt, p=0.54 (tie)"] * 3
    assert row(page, "plain PyTorch KD vs student alone (CE)", "### Paired per seed")[1].endswith("(better)")


def test_the_pooled_column_sums_each_seeds_discordant_images_into_one_mcnemar_test(photo_data: dict[str, Any]) -> None:
    import math

    target = [i % 3 for i in range(200)]
    right = {"student": 100, "plain": 160, "torchdistill": 150, "default": 104, "patient": 170}
    runs = photo_data["accuracy"]["runs"]
    photo_data["accuracy"]["runs"] = [with_predictions(r, target, right[r["arm"]], 10 if r["arm"] == "default" else 0) for r in runs]
    pooled = bench_report.pooled_over_seeds(bench_report.summarize(photo_data)["paired"])
    got = pooled[("default", "student")]
    # 14 against 10 discordant images in each of 3 seeds: 42 against 30 of 600, two-sided exact binomial
    assert (got["a_only"], got["b_only"], got["n"], got["seeds"]) == (42, 30, 600, 3)
    tail = sum(math.comb(72, k) for k in range(31)) / 2**72
    assert got["p_value"] == pytest.approx(2 * tail, rel=1e-9) and got["verdict"] == "tie"
    assert pooled[("default", "plain")]["verdict"] == "worse"  # 3 × 56 images only plain gets right
    page = bench_report.render(photo_data)
    assert "all seeds (pooled)" in page
    assert "It counts test images, not training runs" in " ".join(page.split())  # what a small pooled p does not say
    assert row(page, "cann-distill default vs student alone (CE)", "### Paired per seed")[4] == f"+2.00 pt, p={2 * tail:.2g} (tie)"


def test_runs_without_predictions_or_with_other_images_are_not_paired(photo_data: dict[str, Any]) -> None:
    page = bench_report.render(photo_data)
    assert "Not available: these runs did not record per-image test predictions." in page
    target = [i % 3 for i in range(50)]
    runs = [with_predictions(r, target, 40) for r in photo_data["accuracy"]["runs"]]
    runs[0] = {**runs[0], "test_target": list(reversed(target))}  # student, seed 0: images in another order
    photo_data["accuracy"]["runs"] = runs
    rows = bench_report.summarize(photo_data)["paired"]
    assert next(r for r in rows if (r["seed"], r["a"], r["b"]) == (0, "plain", "student"))["verdict"] == "not paired"
    assert next(r for r in rows if (r["seed"], r["a"], r["b"]) == (1, "plain", "student"))["verdict"] == "too_few"


def test_a_run_that_trained_on_no_batch_is_not_timed(data: dict[str, Any]) -> None:
    run = acc_run("online", 0, 0.5)
    run["epochs"] = [{"seconds": 0.01, "samples": 0, "steps": 0}] * 2  # fewer images than one batch, drop_last
    data["accuracy"]["runs"] = [run]
    online = bench_report.summarize(data)["accuracy"]["online"]
    assert online["test_acc"]["mean"] == 50.0 and online["loop"] is None


def test_plain_kd_given_the_patient_arms_time_is_compared_with_the_patient_arm_only() -> None:
    arms = ["student", "plain", "default", "patient", "plain_long"]
    pairs = bench_report._comparisons(arms)
    assert ("patient", "plain_long") in pairs and ("plain_long", "student") in pairs
    assert ("default", "plain_long") not in pairs and ("default", "plain") in pairs

    def arm(mean: float) -> dict[str, Any]:
        return {"status": "done", "test_acc": {"mean": mean, "std": 0.5, "n": 3}}

    acc = {"student": arm(50.0), "plain": arm(54.0), "default": arm(54.0), "patient": arm(56.0), "plain_long": arm(58.0)}
    lines = bench_report._where_cann_loses(acc, {"plain_long": "plain long"})
    assert lines == ["plain long beats cann-distill patient by 2.00 pt test top-1 (mean over 3 seed(s); spread 0.50 pt)"]


def test_the_page_names_the_runs_an_earlier_invocation_made() -> None:
    runs = [
        {"arm": "plain", "seed": 1, "status": "done", "resumed": True},
        {"arm": "plain", "seed": 0, "status": "done", "resumed": True},
        {"arm": "patient", "seed": 0, "status": "done"},
    ]
    line = bench_report._kept_line(runs, {"plain": {"label": "plain PyTorch KD"}})
    assert line.endswith("not rerun by this one: plain PyTorch KD (seeds 0, 1).")
    assert bench_report._kept_line(runs[2:], {}) == ""


def test_a_built_set_carries_the_digest_of_its_pixels_and_the_page_names_it(tmp_path: Path, bench_mod: Any) -> None:
    import numpy as np
    import photo_sets
    from PIL import Image

    root = tmp_path / "set"
    for split, cls, value in [("train", "a", 10), ("train", "b", 20), ("test", "a", 30)]:
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(root / split / cls / "00000.png")
    info = photo_sets.stamp(root, {"set": "tiny"})
    first = info["sha256"]
    assert first == photo_sets.tree_digest(root) and len(first) == 64
    pixels = np.full((4, 4, 3), 30, np.uint8)
    pixels[0, 0, 0] = 31  # one channel of one pixel
    Image.fromarray(pixels).save(root / "test" / "a" / "00000.png")
    assert photo_sets.tree_digest(root) != first
    assert bench_mod.set_stamp(root) == {"files_sha256": first, "built_with_pillow": info["pillow"]}  # set.json, as written
    assert bench_mod.set_stamp(tmp_path) == {}  # a tree without set.json
    line = bench_report._data_line({"source": "imagefolder", "root": "sets/tiny", "classes": 2, **bench_mod.set_stamp(root)}, {})
    assert f"sha256 is `{first[:16]}…` (written with Pillow {info['pillow']};" in line


def test_the_pooled_test_follows_the_per_seed_rule_when_too_few_images_differ() -> None:
    def paired(seed: int, a_only: int, b_only: int) -> dict[str, Any]:
        return {"seed": seed, "a": "default", "b": "plain", "a_only": a_only, "b_only": b_only, "n": 100, "verdict": "too_few"}

    pooled = bench_report.pooled_over_seeds([paired(0, 1, 0), paired(1, 2, 0)])[("default", "plain")]
    # 3 against 0 discordant images: even all on one side gives p = 0.25, so the test cannot tell
    assert (pooled["a_only"], pooled["b_only"], pooled["n"], pooled["seeds"]) == (3, 0, 200, 2)
    assert pooled["verdict"] == "too_few" and pooled["p_value"] == pytest.approx(0.25)
    assert bench_report.pooled_over_seeds([paired(0, 6, 0)])[("default", "plain")]["verdict"] == "better"  # p = 0.03125
