"""fit-student: budgets pick or refuse candidates, the cache, failing candidates, bad input;
the student budget checked before distill trains."""

import json
import time
from pathlib import Path

import pytest
import torch
import yaml

from cann_distill.api import run_stages
from cann_distill.core.errors import MissingInputError, StageError

pytestmark = pytest.mark.slow

FAST = {"calibration": {"samples": 8}, "latency": {"warmup": 1, "runs": 6, "rounds": 2}, "throughput_batch": 4}
SMALL, LARGE = "test_efficientnet", "test_resnet"  # 0.10 M and 0.37 M parameters at 10 classes, 1 channel


def fit_recipe(write_recipe, **budgets) -> Path:
    # a loaded test machine stretches P99 to several ms: pin the latency budget so only the asked ones decide
    return write_recipe(validate={**FAST, "budgets": {"latency_ms_p99": 1000.0, **budgets}})


def errors_of(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("Error: ")]


def test_a_tight_budget_picks_the_smallest_candidate_and_the_cache_is_hit(cli, write_recipe) -> None:
    recipe = fit_recipe(write_recipe, params_m=0.2)
    first = cli("fit-student", recipe, "--candidates", f"{LARGE},{SMALL}", "--json")
    assert first.exit_code == 0, first.stderr
    out = json.loads(first.stdout)  # --json keeps stdout clean (onnxruntime's quantizer prints go to stderr)
    rows = {r["arch"]: r for r in out["candidates"]}
    assert out["picked"] == SMALL and rows[SMALL]["fits"] and not rows[LARGE]["fits"]
    assert [m["budget"] for m in rows[LARGE]["misses"]] == ["params_m"]
    assert rows[SMALL]["params"] < 200_000 < rows[LARGE]["params"]
    assert rows[SMALL]["int8"]["median_ms"] > 0 and rows[SMALL]["size_bytes"]["int8"] > 0 and rows[SMALL]["flops"] > 0
    assert out["basis"]["kind"] in ("measured", "estimated") and not any(r["cached"] for r in rows.values())
    teacher = out["teacher_fit"]["teacher"]  # the recipe's teacher is test_resnet: the LARGE candidate is its twin
    assert teacher["arch"] == LARGE and rows[LARGE]["teacher_fit"]["params_ratio"] == 1.0
    assert rows[SMALL]["teacher_fit"]["params_ratio"] == pytest.approx(teacher["params"] / rows[SMALL]["params"])
    fitted = yaml.safe_load(Path(out["outputs"]["recipe"]).read_text())
    assert fitted["student"]["arch"] == SMALL and fitted["teacher"]["arch"] == "test_resnet"
    assert Path(out["outputs"]["json"]).name == "fit_student.json"

    t0 = time.perf_counter()
    second = cli("fit-student", recipe, "--candidates", f"{LARGE},{SMALL}", "--json")
    again = json.loads(second.stdout)
    assert all(r["cached"] for r in again["candidates"]) and again["picked"] == SMALL
    assert {r["arch"]: r["int8"]["median_ms"] for r in again["candidates"]} == {a: r["int8"]["median_ms"] for a, r in rows.items()}
    assert time.perf_counter() - t0 < 30
    # another image size is another measurement
    other = cli("fit-student", recipe, "--candidates", SMALL, "--set", "data.image_size=20", "--json")
    assert not json.loads(other.stdout)["candidates"][0]["cached"]


def test_an_impossible_budget_exits_1_with_the_closest_miss(cli, write_recipe) -> None:
    recipe = fit_recipe(write_recipe, params_m=0.01)
    result = cli("fit-student", recipe, "--candidates", f"{LARGE},{SMALL}")
    assert result.exit_code == 1
    [err] = errors_of(result)
    assert f"closest miss {SMALL}: params_m 0.1" in err and "> 0.01" in err and "(+9" in err  # +913%
    assert "gap to teacher test_resnet" in " ".join(result.stderr.split())  # the table's gap column is explained
    assert not recipe.with_name("tiny.fit.yaml").exists()
    saved = json.loads((recipe.parent / "run" / "fit" / "fit_student.json").read_text())
    assert saved["picked"] is None and saved["closest_miss"]["arch"] == SMALL


def test_a_candidate_that_cannot_export_is_marked_and_the_search_goes_on(cli, write_recipe) -> None:
    import timm
    from timm.models import register_model

    from cann_distill.core.recipe import timm_archs

    class Spectral(torch.nn.Module):
        def __init__(self, num_classes: int = 10, in_chans: int = 1, **_) -> None:
            super().__init__()
            self.stem = torch.nn.Conv2d(in_chans, 4, 3)
            self.head = torch.nn.Linear(4, num_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.fft.rfft(self.stem(x), dim=-1).abs().mean((2, 3)))

    if "fit_test_spectral" not in timm.list_models("fit_test_*"):

        @register_model
        def fit_test_spectral(pretrained: bool = False, **kwargs) -> torch.nn.Module:
            return Spectral(**kwargs)

    timm_archs.cache_clear()
    result = cli("fit-student", fit_recipe(write_recipe), "--candidates", f"fit_test_spectral,{SMALL}", "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    rows = {r["arch"]: r for r in out["candidates"]}
    assert rows["fit_test_spectral"]["status"] == "export failed" and "aten::fft_rfft" in rows["fit_test_spectral"]["error"]
    assert rows[SMALL]["status"] == "ok" and out["picked"] == SMALL
    assert "fit_test_spectral: ONNX export" in result.stderr  # warned, not fatal


def test_unknown_candidate_suggests_close_names(cli, write_recipe) -> None:
    result = cli("fit-student", fit_recipe(write_recipe), "--candidates", "resnet10,lcnet_050")
    assert result.exit_code == 2
    [err] = errors_of(result)
    assert "unknown timm architecture 'resnet10'" in err and "resnet10t" in err


def test_unknown_profile_key_is_a_usage_error(cli, write_recipe, tmp_path: Path) -> None:
    profile = tmp_path / "edge.yaml"
    profile.write_text("name: edge\nprovider: CPUExecutionProvider\nthreds: 2\n")
    result = cli("fit-student", fit_recipe(write_recipe), "--target", str(profile), "--candidates", SMALL)
    assert result.exit_code == 2
    assert "threds: unknown key" in errors_of(result)[0]


def test_a_student_over_the_parameter_budget_stops_distill_before_training(write_recipe, tmp_path: Path) -> None:
    recipe = write_recipe(validate={"budgets": {"params_m": 0.05}})
    t0 = time.perf_counter()
    with pytest.raises(StageError, match=r"student test_efficientnet cannot fit the budget before training: params_m 0\.1\d* > 0\.05"):
        run_stages(recipe, ["teacher", "select", "distill"])
    assert time.perf_counter() - t0 < 20
    assert not (tmp_path / "run" / "teacher").exists()  # stopped before the teacher trained, too
    with pytest.raises(MissingInputError):  # --no-budget-check: on to the usual checks (select has not run)
        run_stages(recipe, ["distill"], budget_check=False)


@pytest.mark.parametrize("targets", ["cached", "replay"])
def test_probe_epochs_distill_each_candidate_from_what_select_wrote(cli, write_recipe, targets: str) -> None:
    from tests.conftest import TINY

    extra = {} if targets == "cached" else {"data": {**TINY["data"], "augment": {"enabled": True}}}
    recipe = write_recipe(
        validate={**FAST, "budgets": {"latency_ms_p99": 1000.0}},
        teacher={"arch": "test_resnet", "train": {"epochs": 1}},
        distill={**TINY["distill"], "teacher_targets": targets, **({"replay": {"draws": 2}} if targets == "replay" else {})},
        **extra,
    )
    early = cli("fit-student", recipe, "--candidates", SMALL, "--probe-epochs", "1")
    assert early.exit_code == 1 and "run `cann-distill select RECIPE` first" in errors_of(early)[0]
    run_stages(recipe, ["teacher", "select"])
    result = cli("fit-student", recipe, "--candidates", f"{LARGE},{SMALL}", "--probe-epochs", "1", "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    probes = {r["arch"]: r["probe"] for r in out["candidates"]}
    num_val = 60  # 300 digits, 20% val
    assert all(p["epochs"] == 1 and round(p["val_acc"] * num_val, 6) % 1 == 0 for p in probes.values()), probes  # an accuracy on val
    assert out["picked"] == max(probes, key=lambda a: probes[a]["val_acc"])  # most accurate probe, both fit
    row = next(r for r in out["candidates"] if r["arch"] == SMALL)
    assert row["probe"]["val_acc_per_ms"] == pytest.approx(row["probe"]["val_acc"] / row["int8"]["median_ms"])
    assert not (Path(out["outputs"]["json"]).parent.parent / "distill").exists()  # probes never touch the run dir's stages
