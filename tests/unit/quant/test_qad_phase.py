"""The QAD phase ships the best of its PTQ start and its epochs on val, not its last epoch."""

from pathlib import Path

import pytest
import torch
import yaml

from cann_distill.core.recipe_load import load_recipe
from cann_distill.data.loading import load_splits
from cann_distill.models.build import create_model
from cann_distill.quant import qad
from cann_distill.training import loop
from tests.conftest import TINY


def state_key(model: torch.nn.Module) -> tuple:
    """The exact weights, BatchNorm statistics and quantizer ranges a model holds."""
    return tuple((k, v.detach().cpu().numpy().tobytes()) for k, v in model.state_dict().items())


@pytest.mark.parametrize("scripted, shipped", [([0.40, 0.60, 0.30], 1), ([0.40, 0.30, 0.35], 0), ([0.40, 0.45, 0.50], 2)])
def test_the_best_on_val_ships(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scripted: list[float], shipped: int) -> None:
    """Val accuracy is scripted per state seen (start, epoch 1, epoch 2); what ships is the best of them, weights
    and ranges together — a worse last epoch is not shipped, and the start only when no epoch beats it."""
    path = tmp_path / "r.yaml"
    qat = {"enabled": True, "epochs": 2, "keep_start": True}
    data = {**TINY["data"], "max_samples": 120}
    path.write_text(yaml.safe_dump({**TINY, "data": data, "run_dir": str(tmp_path / "run"), "distill": {**TINY["distill"], "qat": qat}}))
    recipe = load_recipe(path)
    splits = load_splits(recipe.data)
    torch.manual_seed(0)
    seen: dict[tuple, float] = {}
    order: list[tuple] = []

    def fake_evaluate(model, split, desc, runtime=None) -> float:
        key = state_key(model)
        if key not in seen:
            seen[key], _ = scripted[len(order)], order.append(key)
        return seen[key]

    monkeypatch.setattr(loop, "evaluate", fake_evaluate)
    monkeypatch.setattr(qad, "evaluate", fake_evaluate)
    prepared, history, _ = qad.train(create_model("test_resnet", 10, 1).eval(), recipe, splits)
    assert [row["val_acc"] for row in history] == scripted[1:] and prepared.start_val_acc == scripted[0]
    assert len(order) == 3 and state_key(prepared.model) == order[shipped]
    assert prepared.val_acc == scripted[shipped] == max(scripted) and prepared.kept_start == (shipped == 0)
