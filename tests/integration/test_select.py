"""select's teacher-output cache and index, and how distill uses the index (modes, temperatures)."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from cann_distill.core.files import sha256_file

pytestmark = pytest.mark.slow

QUICK_TEACHER = {"arch": "test_resnet", "train": {"epochs": 1}}


def run_ok(cli, *args: str) -> dict:
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.stderr
    return {s["stage"]: s for s in json.loads(result.stdout)["stages"]}


def read_rows(run: Path) -> list[dict]:
    with open(run / "select" / "index.csv", newline="") as f:
        return list(csv.DictReader(f))


def history(run: Path) -> list[dict]:
    return json.loads((run / "distill" / "metrics.json").read_text())["history"]


def test_teacher_logits_are_cached_shared_and_verified(cli, write_recipe, tmp_path: Path, isolated_cache: Path) -> None:
    recipe_a = write_recipe(teacher=QUICK_TEACHER)
    assert run_ok(cli, "teacher", recipe_a)["teacher"]["status"] == "done"
    first = run_ok(cli, "select", recipe_a)["select"]["summary"]
    assert first["cache"] == "miss" and first["cached"] == ["logits"]  # what this select keeps in the cache
    assert "cached" not in json.loads((tmp_path / "run" / "select" / "summary.json").read_text())
    entries = sorted((isolated_cache / "teacher_outputs").iterdir())
    assert [p.suffix for p in entries] == [".json", ".npy"]
    logits_a = np.load(tmp_path / "run" / "select" / "teacher_logits.npy", allow_pickle=False)

    # a second recipe, own run dir, same teacher weights and data, another strategy: no teacher forward
    recipe_b = write_recipe(
        name="b.yaml",
        run_dir=str(tmp_path / "run_b"),
        select={"strategy": "entropy"},
        teacher={"arch": "test_resnet", "checkpoint": str(tmp_path / "run" / "teacher" / "teacher.pt")},
    )
    assert run_ok(cli, "teacher", recipe_b)["teacher"]["summary"]["source"] == "checkpoint"
    second = run_ok(cli, "select", recipe_b)["select"]["summary"]
    assert second["cache"] == "hit" and second["cache_key"] == first["cache_key"]
    assert np.array_equal(np.load(tmp_path / "run_b" / "select" / "teacher_logits.npy", allow_pickle=False), logits_a)

    # a damaged entry is reported and recomputed, never used
    npy = next(p for p in entries if p.suffix == ".npy")
    data = bytearray(npy.read_bytes())
    data[-5] ^= 0xFF
    npy.write_bytes(bytes(data))
    result = cli("select", recipe_a, "--force", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["stages"][0]["summary"]["cache"] == "invalid"
    assert "Warning: teacher-output cache" in result.stderr and "recomputing" in " ".join(result.stderr.split())
    assert json.loads(npy.with_suffix(".json").read_text())["sha256"] == sha256_file(npy)
    assert np.array_equal(np.load(npy, allow_pickle=False), logits_a)

    # select.cache_dir moves the cache
    moved = run_ok(cli, "select", recipe_a, "--set", f"select.cache_dir={tmp_path / 'elsewhere'}")["select"]["summary"]
    assert moved["cache"] == "miss" and (tmp_path / "elsewhere" / "teacher_outputs").is_dir()


def test_index_temperature_column_and_summary(cli, write_recipe, tmp_path: Path) -> None:
    recipe = write_recipe(teacher=QUICK_TEACHER)
    run = tmp_path / "run"
    bounds = ["--set", "select.temperature.t_min=2.5", "--set", "select.temperature.t_max=4", "--set", "select.temperature.per_sample=true"]
    summary = run_ok(cli, "run", recipe, "--set", "distill.epochs=0", *bounds)["select"]["summary"]
    rows = read_rows(run)
    assert list(rows[0]) == ["id", "target", "score", "rank", "critical", "temperature"]
    temps = np.array([float(r["temperature"]) for r in rows])
    rank = np.array([int(r["rank"]) for r in rows])  # 1 = highest score = hardest
    assert temps.min() == pytest.approx(2.5) and temps.max() == pytest.approx(4.0)  # t_easy 2.1 / t_hard 4.7 clipped
    assert np.all(np.diff(temps[np.argsort(rank)]) <= 1e-6)  # harder → hotter
    full = json.loads((run / "select" / "summary.json").read_text())
    n = len(rows)
    assert full["num_samples"] == n and full["num_critical"] == sum(r["critical"] == "1" for r in rows)
    assert full["ratio"] == pytest.approx(full["num_critical"] / n)
    assert sum(full["per_class_critical"].values()) == full["num_critical"]
    for key in ("score_histogram", "temperature_histogram"):
        assert sum(full[key]["counts"]) == n and len(full[key]["edges"]) == 11
    assert full["temperature"]["per_sample"] is True and "cache" not in full  # run-dependent status stays in the manifest
    assert summary["cache"] == "miss"

    run_ok(cli, "select", recipe, "--set", "select.temperature.per_sample=false", "--set", "select.temperature.base=3.5")
    assert {r["temperature"] for r in read_rows(run)} == {"3.5"}


def test_critical_modes_record_in_history(cli, write_recipe, tmp_path: Path) -> None:
    recipe = write_recipe(teacher=QUICK_TEACHER, data={**{"source": "digits", "image_size": 16, "max_samples": 150, "batch_size": 32}})
    run = tmp_path / "run"
    stages = run_ok(cli, "run", recipe, "--set", "distill.epochs=0")
    n, k = stages["select"]["summary"]["num_samples"], stages["select"]["summary"]["num_critical"]
    expected = {
        "none": ([n, n, n], [0, 0, 0]),
        "weight": ([n, n, n], [0, 0, 0]),
        "subset": ([k, k, k], [1, 1, 1]),
        "curriculum": ([k, n, n], [1, 0, 0]),  # default: half of 3 epochs, rounded down
    }
    for mode, (samples, critical_only) in expected.items():
        sets = ["--set", f"distill.critical.mode={mode}", "--set", "distill.epochs=3", "--set", "select.policy=hard"]
        run_ok(cli, "select", recipe, *sets)  # select's default policy and re-mining follow the mode
        summary = run_ok(cli, "distill", recipe, *sets)["distill"]["summary"]
        rows = history(run)
        assert summary["critical_mode"] == mode
        assert [r["samples"] for r in rows] == samples, mode
        assert [r["critical_only"] for r in rows] == critical_only, mode
        assert all(np.isfinite(r["loss"]) for r in rows)
        # a subset picked by a score (hard) is re-mined every epoch by teacher–student disagreement; other modes are not
        refresh = summary["refresh"]
        assert (refresh is not None) is (mode == "subset"), mode
        if refresh is not None:
            assert refresh["every"] == 1 and refresh["by"] == "disagreement"
            assert [r["epoch"] for r in refresh["records"]] == [2, 3] and all(r["critical"] == k for r in refresh["records"])
    curriculum = ["--set", "distill.critical={mode: curriculum, curriculum_epochs: 2}", "--set", "distill.epochs=3"]
    run_ok(cli, "distill", recipe, *curriculum, "--set", "select.policy=hard")
    assert [r["critical_only"] for r in history(run)] == [1, 1, 0]


def test_temperature_per_epoch_in_history(cli, write_recipe, tmp_path: Path) -> None:
    recipe = write_recipe(
        teacher=QUICK_TEACHER,
        data={"source": "digits", "image_size": 16, "max_samples": 100, "batch_size": 32},
        distill={"epochs": 3, "lr": 0.05, "critical": {"mode": "none"}},
    )
    run = tmp_path / "run"
    fixed = ["--set", "select.temperature.per_sample=false"]
    linear = ["--set", "distill.temperature_schedule={kind: linear, start: 4, end: 2}"]

    run_ok(cli, "run", recipe, *fixed, *linear, "--set", "distill.epochs=3")  # also validate + report on the scheduled student
    rows = history(run)
    assert [r["temperature_mean"] for r in rows] == pytest.approx([4.0, 3.0, 2.0])
    assert [r["temperature_min"] for r in rows] == [r["temperature_max"] for r in rows]
    assert json.loads((run / "distill" / "metrics.json").read_text())["temperature"]["source"] == "schedule"

    # per-sample temperatures follow the schedule's shape (×1, ×0.75, ×0.5), clipped to [t_min, t_max]
    per_sample = ["--set", "select.temperature.per_sample=true"]
    run_ok(cli, "select", recipe, *per_sample)
    run_ok(cli, "distill", recipe, *per_sample, *linear)
    rows = history(run)
    means = [r["temperature_mean"] for r in rows]
    assert means[1] / means[0] == pytest.approx(0.75) and means[2] / means[0] == pytest.approx(0.5)
    assert rows[0]["temperature_max"] == pytest.approx(4.7) and rows[2]["temperature_min"] >= 1.0

    # neither per-sample nor a schedule: KD keeps its own temperature (4.0 in the default losses)
    run_ok(cli, "select", recipe, *fixed)
    run_ok(cli, "distill", recipe, *fixed)
    assert [r["temperature_mean"] for r in history(run)] == [4.0, 4.0, 4.0]

    # adaptive: update(kd_loss) once per epoch; a threshold no epoch can meet decays T after epoch 2
    run_ok(
        cli,
        "distill",
        recipe,
        *fixed,
        "--set",
        "distill.temperature_schedule={kind: adaptive, start: 4, min_value: 1, patience: 1, factor: 0.5, threshold: 10}",
    )
    assert [r["temperature_mean"] for r in history(run)] == pytest.approx([4.0, 4.0, 2.0])


def test_disagreement_probe_and_its_inputs(cli, write_recipe, tmp_path: Path) -> None:
    recipe = write_recipe(
        teacher={"arch": "test_resnet", "train": {"epochs": 0}},
        data={"source": "digits", "image_size": 16, "max_samples": 100, "batch_size": 32},
        select={"strategy": "disagreement", "strategy_args": {"temperature": 2.0}, "probe_epochs": 1},
    )
    summary = run_ok(cli, "run", recipe, "--set", "distill.epochs=0")["select"]["summary"]
    assert summary["strategy"] == "disagreement" and summary["strategy_args"] == {"temperature": 2.0}
    assert all(float(r["score"]) >= -1e-6 for r in read_rows(tmp_path / "run"))  # a KL divergence
    # the probe is an input of select for this strategy only
    assert run_ok(cli, "select", recipe, "--set", "student.arch=test_resnet")["select"]["status"] == "done"
    assert (
        run_ok(cli, "select", recipe, "--set", "select.strategy=margin", "--set", "select.strategy_args={}")["select"]["status"] == "done"
    )
    assert (
        run_ok(
            cli,
            "select",
            recipe,
            "--set",
            "select.strategy=margin",
            "--set",
            "select.strategy_args={}",
            "--set",
            "student.arch=test_resnet",
        )["select"]["status"]
        == "skipped"
    )


def test_view_scores_policy_refresh_and_cost(cli, write_recipe, tmp_path: Path) -> None:
    recipe = write_recipe(
        teacher={"arch": "test_resnet", "train": {"epochs": 0}},
        data={"source": "digits", "image_size": 16, "max_samples": 100, "batch_size": 16, "augment": {"enabled": False}},
        select={"strategy": "view_loss", "views": 2, "policy": "mix", "top_k_ratio": 0.4, "refresh_every": 1},
        distill={"epochs": 2, "lr": 0.05, "critical": {"mode": "subset"}},
    )
    run = tmp_path / "run"
    stages = {name: run_ok(cli, name, recipe)[name] for name in ("teacher", "select", "distill")}
    select, distill = stages["select"]["summary"], stages["distill"]["summary"]
    assert select["views_cache"] == "miss" and select["views"] == 2
    sel = select["selection"]
    assert sel["policy"] == "mix" and sel["class_balanced"] is True
    assert sum(c["taken"] for c in sel["per_class"].values()) == select["num_critical"] == 32  # round(0.4 × 80)
    assert all(c["taken"] == c["quota"] > 0 for c in sel["per_class"].values())
    # re-mined at epoch 2 from the student of epoch 1; the subset keeps its size
    metrics = json.loads((run / "distill" / "metrics.json").read_text())
    assert [r["epoch"] for r in metrics["refresh"]["records"]] == [2]
    assert [r["samples"] for r in metrics["history"]] == [32, 32]
    cost = distill["cost"]
    assert cost["steps"] == 2 * 2 and cost["full_set_steps"] == 2 * 5 and cost["step_fraction"] == pytest.approx(0.4)
    assert cost["refresh_s"] > 0 and cost["full_set_train_s_estimate"] > cost["train_s"]
    # the teacher's view logits are cached: a forced select does not recompute them
    assert run_ok(cli, "select", recipe, "--force")["select"]["summary"]["views_cache"] == "hit"
