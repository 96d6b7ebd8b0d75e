"""The CE-only baseline gets distill's number of optimizer steps, whatever the critical-sample mode."""

import pytest

from cann_distill.core.recipe import Recipe
from cann_distill.stages.baseline import training_budget


@pytest.mark.parametrize(
    "critical, epochs",
    [
        ({"mode": "weight"}, 8),  # every sample every epoch: the same epochs
        ({"mode": "none"}, 8),
        ({"mode": "subset"}, 3),  # 35% of the samples for 8 epochs = 2.8 full-set epochs
        ({"mode": "curriculum", "curriculum_epochs": 4}, 5),  # 4 epochs on 35%, 4 on all: 1.4 + 4
        ({"mode": "curriculum"}, 5),  # curriculum_epochs defaults to half of distill.epochs
    ],
)
def test_baseline_epochs_match_distill_steps(critical: dict, epochs: int) -> None:
    recipe = Recipe(select={"top_k_ratio": 0.35}, distill={"epochs": 8, "lr": 0.05, "critical": critical})
    cfg = training_budget(recipe)
    assert cfg.epochs == epochs and cfg.lr == 0.05


def test_a_tiny_subset_still_trains_one_epoch() -> None:
    recipe = Recipe(select={"top_k_ratio": 0.05}, distill={"epochs": 2, "critical": {"mode": "subset"}})
    assert training_budget(recipe).epochs == 1
