"""Hardware profiles: shipped ones load, unknown keys are rejected, the recipe/profile precedence,
measured vs estimated, and the student budget checked before training."""

from pathlib import Path

import pytest

from cann_distill.core.errors import RecipeError
from cann_distill.core.recipe import BudgetConfig, ValidateConfig, hardware_profile, hardware_profiles
from cann_distill.quant.profiles import basis, effective_validate, limits, student_budget_problem

VNNI_HOST = {"machine": "x86_64", "x86": True, "avx2": True, "avx512": True, "vnni": True}


def test_shipped_profiles_load() -> None:
    assert {"cpu", "x86-avx2", "arm64", "ascend_cann", "ascend310p"} <= set(hardware_profiles())
    for name in hardware_profiles():
        assert hardware_profile(name).name == name
    assert hardware_profile("x86-avx2").int8.reduce_range is True
    assert hardware_profile("ascend_cann").provider_options["device_id"] == 0


def test_profile_with_unknown_keys_is_rejected_with_the_key_path(tmp_path: Path) -> None:
    bad = tmp_path / "mine.yaml"
    bad.write_text("name: mine\nthreads: 2\nbudgets:\n  latency_ms: 3\nint8:\n  scheme: u8s8\n")
    with pytest.raises(RecipeError) as err:
        hardware_profile(str(bad))
    assert "budgets.latency_ms: unknown key" in str(err.value) and "int8.scheme: unknown key" in str(err.value)
    with pytest.raises(RecipeError, match=r"unknown hardware profile 'x86_avx2'.*x86-avx2"):
        hardware_profile("x86_avx2")


def test_a_profile_file_can_be_used_by_path(tmp_path: Path) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text("name: mine\nthreads: 2\nbatch: 4\nbudgets: {latency_ms_p99: 1.5}\n")
    p = hardware_profile(str(mine))
    assert (p.threads, p.batch, p.budgets.latency_ms_p99) == (2, 4, 1.5)


def test_the_recipe_wins_where_explicit_the_profile_fills_the_rest() -> None:
    avx2 = hardware_profile("x86-avx2")
    cfg = effective_validate(ValidateConfig(), avx2)
    assert (cfg.activation_type, cfg.reduce_range, cfg.per_channel, cfg.latency.threads) == ("uint8", True, True, 1)
    cfg = effective_validate(ValidateConfig.model_validate({"reduce_range": False, "per_channel": False, "latency": {"threads": 2}}), avx2)
    assert (cfg.reduce_range, cfg.per_channel, cfg.latency.threads) == (False, False, 2)
    assert effective_validate(ValidateConfig(), hardware_profile("cpu")).reduce_range == "auto"  # the host decides


def test_figures_say_whether_they_were_measured_or_estimated() -> None:
    assert basis(hardware_profile("cpu"), "CPUExecutionProvider", VNNI_HOST) == {"kind": "measured", "why": ""}
    avx2 = basis(hardware_profile("x86-avx2"), "CPUExecutionProvider", VNNI_HOST)
    assert avx2["kind"] == "estimated" and "host has vnni" in avx2["why"]
    arm = basis(hardware_profile("arm64"), "CPUExecutionProvider", VNNI_HOST)
    assert arm["kind"] == "estimated" and "target is aarch64" in arm["why"]
    npu = basis(hardware_profile("ascend_cann"), "CPUExecutionProvider", VNNI_HOST)
    assert npu["kind"] == "estimated" and "not the profile's CANNExecutionProvider" in npu["why"]


def test_student_budget_names_the_numbers() -> None:
    lim = limits(BudgetConfig(params_m=1.0), {"size_mb": 25.0, "latency_ms_p99": 5.0})
    assert lim["params_m"] == (1.0, "recipe") and lim["size_mb"] == (25.0, "profile")
    assert student_budget_problem("tiny", 900_000, lim) is None
    problem = student_budget_problem("big", 4_900_000, lim)
    assert problem is not None and "params_m 4.9 > 1 (recipe budget, +390%)" in problem and "--no-budget-check" in problem


def test_shipped_profiles_measure_the_percentile_they_gate_on() -> None:
    """Every shipped profile with a P99 budget, under the default validate section (and under an uneven round
    count), times enough runs for a P99 (not the slowest run); an explicit `latency.runs` is the recipe's to choose."""
    from cann_distill.quant.latency import min_samples

    gated = [name for name in hardware_profiles() if hardware_profile(name).budgets.latency_ms_p99 is not None]
    assert "cpu" in gated
    for name in gated:
        for cfg in (ValidateConfig(), ValidateConfig.model_validate({"latency": {"rounds": 3}})):
            lat = effective_validate(cfg, hardware_profile(name)).latency
            assert (lat.runs // lat.rounds) * lat.rounds >= min_samples(0.99), (name, lat)
    explicit = ValidateConfig.model_validate({"latency": {"runs": 10}})
    assert effective_validate(explicit, hardware_profile("cpu")).latency.runs == 10


def test_a_budget_on_an_unmeasured_percentile_is_not_gated() -> None:
    from cann_distill.quant.feedback import gate, not_measured

    measured = {"latency_ms_p99": None, "size_mb": 3.0, "params_m": 1.0}
    why = {"latency_ms_p99": "P99 needs ≥ 100 timed runs, got 10"}
    lines = gate(BudgetConfig(), hardware_profile("cpu").budgets.model_dump(), measured)
    assert {g["budget"] for g in lines} == {"size_mb", "params_m"} and all(g["pass"] for g in lines)
    [line] = not_measured(BudgetConfig(), hardware_profile("cpu").budgets.model_dump(), measured, why)
    assert line == {"budget": "latency_ms_p99", "limit": 5.0, "source": "profile", "why": why["latency_ms_p99"]}
