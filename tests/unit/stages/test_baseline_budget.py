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


def test_the_baseline_uses_the_recipes_ce_term() -> None:
    """Label smoothing on distill's CE term is the baseline's too: same loss on the same logits, and a baseline key of
    its own (a plain-CE recipe keeps the key it had)."""
    import torch
    import torch.nn.functional as F

    from cann_distill.stages.baseline import CeStep, baseline_parts, ce_arguments

    smoothed = Recipe(distill={"losses": [{"kind": "ce", "weight": 0.3, "label_smoothing": 0.1}, {"kind": "kd", "weight": 0.7}]})
    plain = Recipe(distill={"losses": [{"kind": "kd"}]})
    assert ce_arguments(smoothed) == {"label_smoothing": 0.1} and ce_arguments(plain) == {}
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    loss, parts = CeStep(ce_arguments(smoothed))(model, (x, y, None))
    assert loss.item() == pytest.approx(F.cross_entropy(model(x), y, label_smoothing=0.1).item())
    assert loss.item() != pytest.approx(F.cross_entropy(model(x), y).item())
    soft = torch.softmax(torch.randn(8, 3), 1)  # mixup targets: already smoothed when mixed, taken as they are
    assert CeStep(ce_arguments(smoothed))(model, (x, soft, None))[0].item() == pytest.approx(F.cross_entropy(model(x), soft).item())
    assert baseline_parts(smoothed, 1)["ce"] == {"label_smoothing": 0.1} and "ce" not in baseline_parts(plain, 1)
