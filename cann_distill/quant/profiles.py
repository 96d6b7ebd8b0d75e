"""Hardware profiles in use: what a profile leaves to the recipe, whether this host can stand for the
target (measured) or only approximates it (estimated), and the budgets checked before training."""

from __future__ import annotations

from typing import Any, Mapping, Optional

from cann_distill.core.errors import StageError
from cann_distill.core.recipe import BudgetConfig, HardwareProfile, Recipe, ValidateConfig, hardware_profile
from cann_distill.quant.latency import TAILS, runs_for

BUDGET_KEYS = ("latency_ms_p99", "latency_ms_median", "size_mb", "params_m", "max_accuracy_drop")
INT8_BYTES_PER_PARAM = 1.0
"""Estimated INT8 file size before export: one byte per weight (biases, scales and graph add a few %)."""


def effective_validate(cfg: ValidateConfig, profile: HardwareProfile) -> ValidateConfig:
    """The validate section with what the recipe leaves open (`auto` / null) taken from the profile.

    The recipe wins where it is explicit; `auto` that the profile also leaves `auto` stays `auto`
    (the host CPU decides, see `quant.ort.choose_scheme`). When a P99 latency budget applies and the recipe
    does not set `latency.runs`, the runs are raised to what P99 needs (`quant.latency.runs_for`), so the
    percentile the gate checks is measured rather than the slowest run.
    """
    update: dict[str, Any] = {}
    if cfg.activation_type == "auto":
        update["activation_type"] = profile.int8.activation_type
    if cfg.reduce_range == "auto":
        update["reduce_range"] = profile.int8.reduce_range
    if cfg.per_channel is None:
        update["per_channel"] = profile.int8.per_channel
    lat_update: dict[str, Any] = {"threads": cfg.latency.threads or profile.threads}
    if "latency_ms_p99" in limits(cfg.budgets, profile.budgets.model_dump()) and "runs" not in cfg.latency.model_fields_set:
        lat_update["runs"] = max(cfg.latency.runs, runs_for(TAILS["p99_ms"], cfg.latency.rounds))
    latency = cfg.latency.model_copy(update=lat_update)
    return ValidateConfig.model_validate({**cfg.model_dump(), **update, "latency": latency.model_dump()})


def basis(profile: HardwareProfile, provider_used: str, cpu: dict[str, Any]) -> dict[str, Any]:
    """Whether figures taken on this host are `measured` for the profile's target, or `estimated` and why."""
    why: list[str] = []
    if not profile.measured_here:
        why.append(f"profile '{profile.name}' is never measured on a host CPU")
    if provider_used != profile.provider:
        why.append(f"ran on {provider_used}, not the profile's {profile.provider}")
    if profile.machine and cpu.get("machine") not in _MACHINES[profile.machine]:
        why.append(f"host is {cpu.get('machine')}, target is {profile.machine}")
    for feature, wanted in profile.cpu_features.items():
        if bool(cpu.get(feature)) != wanted:
            why.append(f"host {'lacks' if wanted else 'has'} {feature}")
    return {"kind": "estimated" if why else "measured", "why": "; ".join(why)}


_MACHINES = {"x86_64": ("x86_64", "amd64"), "aarch64": ("aarch64", "arm64")}


def limits(recipe_budgets: BudgetConfig, profile_budgets: Mapping[str, Any]) -> dict[str, tuple[float, str]]:
    """budget -> (limit, "recipe" | "profile"): the recipe's `validate.budgets` override the profile's."""
    out = {}
    for key in BUDGET_KEYS:
        value, source = getattr(recipe_budgets, key), "recipe"
        if value is None:
            value, source = profile_budgets.get(key), "profile"
        if value is not None:
            out[key] = (float(value), source)
    return out


def misses(measured: dict[str, float], budget_limits: dict[str, tuple[float, str]]) -> list[dict[str, Any]]:
    """Every budget a measurement breaks, with by how much (`excess`: value / limit - 1); keys not measured are skipped."""
    out = []
    for key, (limit, source) in budget_limits.items():
        value = measured.get(key)
        if value is not None and value > limit:
            out.append({"budget": key, "value": float(value), "limit": limit, "excess": float(value) / limit - 1, "source": source})
    return out


def student_budget_problem(arch: str, params: int, budget_limits: dict[str, tuple[float, str]]) -> Optional[str]:
    """Why a student cannot fit before any training (parameters, estimated INT8 size), or None."""
    est = {"params_m": params / 1e6, "size_mb": params * INT8_BYTES_PER_PARAM / 1e6}
    broken = misses(est, {k: v for k, v in budget_limits.items() if k in est})
    if not broken:
        return None
    what = "; ".join(
        f"{m['budget']} {m['value']:.3g}{' (estimated INT8, 1 byte per weight)' if m['budget'] == 'size_mb' else ''} "
        f"> {m['limit']:.3g} ({m['source']} budget, +{100 * m['excess']:.0f}%)"
        for m in broken
    )
    return (
        f"student {arch} cannot fit the budget before training: {what}; pick a smaller student "
        "(`cann-distill fit-student RECIPE` measures candidates) or pass --no-budget-check"
    )


def check_student_budget(recipe: Recipe) -> None:
    """Stop before any training when the recipe's student cannot meet the target's parameter or size budget."""
    from cann_distill.data.loading import count_classes
    from cann_distill.data.transforms import channels_of
    from cann_distill.models.build import count_params, create_model

    profile = hardware_profile(recipe.validate_.target)
    budget_limits = {
        k: v for k, v in limits(recipe.validate_.budgets, profile.budgets.model_dump()).items() if k in ("params_m", "size_mb")
    }
    if not budget_limits:
        return
    model = create_model(recipe.student.arch, max(1, count_classes(recipe.data)), channels_of(recipe.data))
    problem = student_budget_problem(recipe.student.arch, count_params(model), budget_limits)
    if problem is not None:
        raise StageError(problem)
