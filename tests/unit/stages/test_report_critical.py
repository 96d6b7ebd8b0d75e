"""The report's critical samples of the headline split are chosen from the teacher alone."""

import numpy as np
import pytest

from cann_distill.core.recipe import Recipe
from cann_distill.stages.report import eval_critical


@pytest.mark.parametrize("strategy", ["disagreement", "reducible_loss"])
def test_student_scored_strategies_fall_back_to_a_teacher_only_rule(strategy: str) -> None:
    """With disagreement or reducible_loss the select stage scores with the student; the report must not, or the
    agreement it measures on "critical" samples would be low by construction. The set is margin's, whatever
    the student predicts."""
    rng = np.random.default_rng(0)
    teacher, y = rng.normal(size=(200, 5)), rng.integers(0, 5, 200)
    classes = [str(c) for c in range(5)]
    recipe = Recipe(select={"strategy": strategy, "top_k_ratio": 0.3})
    mask, rule = eval_critical(recipe, teacher, y, classes)
    margin, _ = eval_critical(Recipe(select={"strategy": "margin", "top_k_ratio": 0.3}), teacher, y, classes)
    assert mask.sum() == 60 and np.array_equal(mask, margin)
    assert rule.startswith(f"margin (teacher-only: '{strategy}' scores with the student")
