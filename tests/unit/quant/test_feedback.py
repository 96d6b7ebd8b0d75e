"""The feedback loop's "run QAD" fix: when it is offered, how it is measured and ranked, how it is written into a recipe."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from cann_distill.core.errors import RecipeError
from cann_distill.core.recipe import FeedbackConfig, QatConfig, ValidateConfig
from cann_distill.core.recipe_load import load_recipe
from cann_distill.quant.feedback import (
    QAD_ENABLED,
    QAD_EPOCHS,
    Baseline,
    patched_recipe,
    qat_config,
    recipe_key,
    suggest_fixes,
    write_patched_recipe,
)
from tests.conftest import TINY

SCHEME = {"activation_type": "uint8", "reduce_range": False}
N = 1000  # val images of the fake evaluator: the shipped INT8 model gets the first 200 wrong (top-1 0.80)
LABELS = np.zeros(N, dtype=np.int64)
SHIPPED = np.where(np.arange(N) < 200, 1, 0)
BASELINE = Baseline({"val": LABELS}, {"val": SHIPPED})


def trial_pred(gain: float) -> dict[str, np.ndarray]:
    """Predictions of a trial that also gets right round(gain × N) of the images the shipped model misses."""
    pred = SHIPPED.copy()
    pred[: int(round(gain * N))] = 0
    return {"val": pred}


def run(drop: float, qad: bool = True, fb: FeedbackConfig | None = None, gains: dict[str, float] | None = None) -> tuple[dict, list]:
    """suggest_fixes on a fake evaluator that scores each candidate by its best key's gain (baseline 0.80)."""
    seen: list[dict] = []
    gains = gains or {}

    def evaluate(changes: dict) -> dict[str, np.ndarray]:
        seen.append(changes)
        return trial_pred(max((gains.get(k, 0.0) for k in changes), default=0.0))

    cfg = ValidateConfig()
    return suggest_fixes(
        cfg, fb or FeedbackConfig(), drop, [], "test_resnet", BASELINE, SCHEME, evaluate, qat=QatConfig() if qad else None
    ), seen


def qad_suggestions(result: dict) -> list[dict]:
    return [s for s in result["suggestions"] if QAD_ENABLED in s["changes"]]


def test_qad_fix_is_offered_only_when_the_drop_exceeds_the_budget() -> None:
    result, seen = run(drop=0.05)
    [s] = qad_suggestions(result)
    # cheap by default: one epoch; the default teacher is already float_student, so only the two keys
    assert s["changes"] == {QAD_ENABLED: True, QAD_EPOCHS: 1}
    assert s["int8_acc"] == 0.80 and s["gain"] == 0.0 and s["changes"] in seen  # measured like the others
    assert s["paired"]["verdict"] == "too_few" and s["paired"]["n"] == N  # the same images, paired
    assert result["suggestions"][-1] is s  # the costly fix is tried last
    assert not qad_suggestions(run(drop=0.005)[0])  # within max_int8_drop (0.01): not offered
    assert not qad_suggestions(run(drop=0.05, qad=False)[0])  # the recipe already runs QAD
    assert not qad_suggestions(run(drop=0.05, fb=FeedbackConfig(qad_epochs=0))[0])
    [s] = qad_suggestions(run(drop=0.05, fb=FeedbackConfig(qad_epochs=3))[0])
    assert s["changes"][QAD_EPOCHS] == 3


def test_qad_fix_is_ranked_and_combined_by_its_measured_gain() -> None:
    result, seen = run(drop=0.05, gains={QAD_ENABLED: 0.04, "calibration.method": 0.01})
    # percentile and entropy tie at +0.01 (both set calibration.method: the later one stays)
    assert result["apply"] == {QAD_ENABLED: True, QAD_EPOCHS: 1, "calibration.method": "entropy"}
    assert result["combined_int8_acc"] == pytest.approx(0.84)
    # both helped: the combination was measured too (QAD starting from the changed calibration)
    assert any(QAD_ENABLED in c and "calibration.method" in c for c in seen)
    result, _ = run(drop=0.05, gains={"calibration.method": 0.01})
    assert QAD_ENABLED not in result["apply"]  # measured, did not help: not applied
    # unmeasured (search off): suggested, but a retraining phase is never switched on blind
    result = suggest_fixes(ValidateConfig(), FeedbackConfig(search=False), 0.05, [], "test_resnet", BASELINE, SCHEME, None, qat=QatConfig())
    assert qad_suggestions(result) and QAD_ENABLED not in result["apply"] and result["apply"]


def test_a_gain_within_the_noise_is_not_applied() -> None:
    """One or a few more right images are not a fix: only a gain the exact McNemar test calls `better` is applied."""
    result, _ = run(drop=0.05, gains={"calibration.method": 1 / N, QAD_ENABLED: 3 / N})
    assert result["apply"] == {} and "combined_int8_acc" not in result
    gains = {s["why"][:20]: (s["gain"], s["paired"]["verdict"]) for s in result["suggestions"] if "gain" in s}
    assert (pytest.approx(1 / N), "too_few") in gains.values() and (pytest.approx(3 / N), "too_few") in gains.values()
    result, _ = run(drop=0.05, gains={"calibration.method": 8 / N})  # 8 images, none lost: p = 2 / 2^8 < 0.05
    assert result["apply"] == {"calibration.method": "entropy"} and result["combined_paired"]["verdict"] == "better"
    assert result["combined_paired"]["p_value"] == pytest.approx(2 / 2**8)


def test_fixes_are_reported_on_test_but_chosen_on_val() -> None:
    """A fix that wins on val is applied; its test figures are reported next to it, never used to choose."""
    base = Baseline({"val": LABELS, "test": LABELS}, {"val": SHIPPED, "test": SHIPPED})

    def evaluate(changes: dict) -> dict[str, np.ndarray]:
        got = trial_pred(0.05 if changes.get("calibration.method") == "percentile" else 0.0)
        return {"val": got["val"], "test": SHIPPED.copy()}  # helps on val only

    result = suggest_fixes(ValidateConfig(), FeedbackConfig(), 0.05, [], "test_resnet", base, SCHEME, evaluate)
    assert result["apply"] == {"calibration.method": "percentile"}
    assert result["test"]["gain"] == 0.0 and result["test"]["paired"]["verdict"] == "too_few"
    [s] = [s for s in result["suggestions"] if s["changes"] == {"calibration.method": "percentile"}]
    assert s["test"]["int8_acc"] == 0.80 and s["gain"] == pytest.approx(0.05)


def test_patch_writes_keys_outside_the_validate_section(tmp_path: Path) -> None:
    assert recipe_key("calibration.method") == "validate.calibration.method" and recipe_key(QAD_ENABLED) == QAD_ENABLED
    original = {**TINY, "run_dir": str(tmp_path / "run")}
    data = patched_recipe(original, {QAD_ENABLED: True, QAD_EPOCHS: 1, "calibration.method": "entropy"})
    assert data["distill"] == {**TINY["distill"], "qat": {"enabled": True, "epochs": 1}}
    assert data["validate"]["calibration"] == {"samples": 32, "method": "entropy"}
    assert {k: v for k, v in data.items() if k not in ("distill", "validate")} == {
        k: v for k, v in original.items() if k not in ("distill", "validate")
    }
    assert original["distill"] == TINY["distill"]  # the input is not modified
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(original))
    out = write_patched_recipe(path, original, {QAD_ENABLED: True, QAD_EPOCHS: 1}, "feedback applied: distill.qat.enabled")
    recipe = load_recipe(out)  # the patched recipe loads
    assert recipe.distill.qat.enabled and recipe.distill.qat.epochs == 1
    assert recipe.distill.epochs == TINY["distill"]["epochs"] and recipe.validate_.calibration.method == "minmax"


def test_patched_qad_runs_what_was_measured(tmp_path: Path) -> None:
    """A recipe with QAD off but `teacher: teacher` and a late freeze epoch: the fix writes the keys its trial ran with."""
    original = {
        **TINY,
        "run_dir": str(tmp_path / "run"),
        "distill": {**TINY["distill"], "qat": {"teacher": "teacher", "epochs": 3, "freeze_bn_epoch": 3, "freeze_observers_epoch": 1}},
    }
    recipe_qat = load_recipe_data(tmp_path, original).distill.qat
    result = suggest_fixes(
        ValidateConfig(), FeedbackConfig(), 0.05, [], "test_resnet", BASELINE, SCHEME, lambda c: trial_pred(0.1), qat=recipe_qat
    )
    [s] = qad_suggestions(result)
    assert s["changes"] == {QAD_ENABLED: True, QAD_EPOCHS: 1, "distill.qat.teacher": "float_student", "distill.qat.freeze_bn_epoch": 1}
    trial = qat_config(recipe_qat, s["changes"])  # what the measured trial trains with
    assert (trial.enabled, trial.epochs, trial.teacher, trial.freeze_bn_epoch, trial.freeze_observers_epoch) == (
        True,
        1,
        "float_student",
        1,
        1,
    )
    path = tmp_path / "qad.yaml"
    path.write_text(yaml.safe_dump(original))
    patched = load_recipe(write_patched_recipe(path, original, result["apply"], "feedback applied"))  # loads: freeze epochs fit
    assert patched.distill.qat == trial


def load_recipe_data(tmp_path: Path, data: dict):
    path = tmp_path / "in.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_recipe(path)


def test_bad_qad_epochs_is_rejected_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**TINY, "validate": {**TINY["validate"], "feedback": {"qad_epochs": -1}}}))
    with pytest.raises(RecipeError, match=r"validate\.feedback\.qad_epochs"):
        load_recipe(path)
