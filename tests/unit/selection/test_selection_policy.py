"""Selection policies (class balance, hard/easy/mix/auto), the new scores, re-mining and the cost report."""

import math

import numpy as np
import pytest
import torch

from cann_distill.core.recipe import DataConfig, MixConfig, Recipe, SelectConfig
from cann_distill.data.loading import load_splits
from cann_distill.selection import SELECTORS
from cann_distill.selection.pick import pick_critical
from cann_distill.selection.policy import band_counts, equal_quotas, select_samples
from cann_distill.selection.remining import Refresher, steps_in_epoch, training_cost
from cann_distill.training.loop import predict

CLASSES = [str(c) for c in range(5)]


def test_equal_quotas_water_fill_small_classes() -> None:
    assert equal_quotas([10, 2, 10], 15).tolist() == [7, 2, 6]
    assert equal_quotas([10, 10, 10], 7).tolist() == [3, 2, 2]
    assert equal_quotas([1, 1], 5).tolist() == [1, 1]  # the budget cannot exceed the data


def test_class_balance_holds_per_class() -> None:
    rng = np.random.default_rng(0)
    sizes = [40, 30, 20, 50, 8]
    targets = np.repeat(np.arange(5), sizes)
    scores = rng.random(len(targets))
    sel = select_samples(scores, targets, CLASSES, 0.35, policy="hard")
    total = round(0.35 * len(targets))  # 52: 5 classes × 10.4; class 4 has only 8
    assert int(sel.mask.sum()) == total
    taken = [sel.per_class[c]["taken"] for c in CLASSES]
    assert taken[4] == 8 and all(sel.per_class[c]["taken"] == sel.per_class[c]["quota"] for c in CLASSES)
    assert max(taken[:4]) - min(taken[:4]) <= 1 and min(taken[:4]) >= 10
    assert any("class 4: 8 samples, fewer than the balanced quota" in n and "took all" in n for n in sel.notes)
    assert sel.empty == []
    for c in range(4):  # hard = the class's own highest scores
        idx = np.flatnonzero(targets == c)
        kept = np.sort(scores[idx][sel.mask[idx]])
        assert kept.min() >= np.sort(scores[idx])[-len(kept)]


def test_hard_and_easy_take_the_ends() -> None:
    targets = np.repeat([0, 1], 10)
    scores = np.tile(np.arange(10.0), 2)
    hard = select_samples(scores, targets, ["a", "b"], 0.3, policy="hard")
    easy = select_samples(scores, targets, ["a", "b"], 0.3, policy="easy")
    assert sorted(scores[hard.mask]) == [7, 7, 8, 8, 9, 9]
    assert sorted(scores[easy.mask]) == [0, 0, 1, 1, 2, 2]


def test_mix_quantiles_hold_on_hand_made_scores() -> None:
    targets = np.zeros(30, dtype=np.int64)
    scores = np.arange(30.0)  # thirds: easy 0-9, medium 10-19, hard 20-29
    mix = {"hard": 0.2, "medium": 0.5, "easy": 0.3}
    for seed in range(5):
        sel = select_samples(scores, targets, ["a"], 10 / 30, policy="mix", mix=mix, seed=seed)
        kept = scores[sel.mask]
        assert len(kept) == 10
        assert [int((kept >= 20).sum()), int(((kept >= 10) & (kept < 20)).sum()), int((kept < 10).sum())] == [2, 5, 3]
    a = select_samples(scores, targets, ["a"], 10 / 30, policy="mix", mix=mix, seed=0).mask
    b = select_samples(scores, targets, ["a"], 10 / 30, policy="mix", mix=mix, seed=1).mask
    assert not np.array_equal(a, b)  # random within a band, seeded


def test_band_counts_round_and_spill() -> None:
    assert band_counts(10, {"hard": 1 / 3, "medium": 1 / 3, "easy": 1 / 3}, [10, 10, 10]) == [4, 3, 3]
    assert band_counts(6, {"hard": 1.0, "medium": 0.0, "easy": 0.0}, [4, 4, 4]) == [4, 2, 0]  # hard band too small
    assert band_counts(6, {"hard": 0.0, "medium": 0.0, "easy": 1.0}, [4, 4, 4]) == [2, 0, 4]  # wraps round


def test_auto_follows_the_data_regime() -> None:
    targets = np.repeat([0, 1], 100)
    scores = np.tile(np.arange(100.0), 2)
    scarce = select_samples(scores, targets, ["a", "b"], 0.5, policy="auto", scarce_below=60)
    plenty = select_samples(scores, targets, ["a", "b"], 0.5, policy="auto", scarce_below=40)
    assert scarce.resolved == "easy" and scores[scarce.mask].max() == 49
    assert plenty.resolved == "hard" and scores[plenty.mask].min() == 50
    assert "Sorscher" in scarce.notes[0] and "50 kept samples per class < scarce_below=60" in scarce.notes[0]


def test_pooled_selection_reports_an_empty_class() -> None:
    targets = np.repeat([0, 1, 2], 10)
    scores = np.concatenate([np.full(10, 0.9), np.full(10, 0.8), np.full(10, 0.1)])
    sel = select_samples(scores, targets, ["a", "b", "c"], 0.5, policy="hard", class_balanced=False)
    assert sel.empty == ["c"] and sel.per_class["c"]["taken"] == 0
    assert select_samples(scores, targets, ["a", "b", "c"], 0.5, policy="hard").empty == []


def test_pick_critical_reads_the_recipe() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.05])
    targets = np.array([0, 0, 0, 1, 1, 1])
    cfg = SelectConfig(top_k_ratio=1 / 3, policy="mix", mix=MixConfig(hard=0.0, medium=0.0, easy=1.0))
    assert pick_critical(scores, targets, Recipe(select=cfg)).mask.tolist() == [False, False, True, False, False, True]
    # no policy in the recipe: its default follows the mode (mix for the weighted samples, random for a subset),
    # the same rule for select, re-mining and the report's critical samples
    open_policy = SelectConfig(top_k_ratio=1 / 3)
    assert pick_critical(scores, targets, Recipe(select=open_policy)).resolved == "mix"
    subset = Recipe(select=open_policy, distill={"epochs": 3, "critical": {"mode": "subset"}})
    chosen = pick_critical(scores, targets, subset)
    assert chosen.resolved == "random" and chosen.mask.sum() == 2
    hard = Recipe(select=SelectConfig(top_k_ratio=1 / 3, policy="hard"), distill={"epochs": 3, "critical": {"mode": "subset"}})
    assert pick_critical(scores, targets, hard).mask.tolist() == [True, False, False, False, True, False]


def onehot_logits(targets: np.ndarray, scale: float = 5.0, c: int = 3) -> np.ndarray:
    return scale * np.eye(c)[targets]


def test_view_scores() -> None:
    targets = np.array([0, 1])
    right = onehot_logits(targets)
    wrong = onehot_logits(np.array([1, 0]))
    views = np.stack([right, wrong])  # sample 0 and 1 each right on one view, wrong on the other
    loss = SELECTORS.build("view_loss").score(right, targets, view_logits=views)
    p_hi = math.exp(5) / (math.exp(5) + 2)
    p_lo = 1 / (math.exp(5) + 2)
    assert loss == pytest.approx([-(math.log(p_hi) + math.log(p_lo)) / 2] * 2)
    assert SELECTORS.build("view_margin").score(right, targets, view_logits=views) == pytest.approx([0.5, 0.5])  # p̄_y = p̄ of the rival
    assert SELECTORS.build("view_margin").score(right, targets, view_logits=right[None]) == pytest.approx([(1 - (p_hi - p_lo)) / 2] * 2)
    with pytest.raises(ValueError, match="view_logits"):
        SELECTORS.build("view_loss").score(right, targets)


def test_el2n_and_forgetting_scores() -> None:
    targets = np.array([0, 0, 0])
    teacher = onehot_logits(targets)
    right, wrong = onehot_logits(np.array([0])), onehot_logits(np.array([1]))
    # sample 0 always right; sample 1 right, wrong, right (one forgetting event); sample 2 never right
    history = np.stack(
        [np.concatenate([right, right, wrong]), np.concatenate([right, wrong, wrong]), np.concatenate([right, right, wrong])]
    )
    e_right = math.sqrt((1 - math.exp(5) / (math.exp(5) + 2)) ** 2 + 2 / (math.exp(5) + 2) ** 2)
    el2n = SELECTORS.build("el2n").score(teacher, targets, student_history=history)
    assert el2n[0] == pytest.approx(e_right) and el2n[0] < el2n[1] < el2n[2]
    forgetting = SELECTORS.build("forgetting").score(teacher, targets, student_history=history)
    assert np.floor(forgetting).tolist() == [0, 1, 3]  # never learned = E events
    assert forgetting[0] == pytest.approx(e_right / 2)


def test_steps_and_cost() -> None:
    assert steps_in_epoch(35, 10) == 3 and steps_in_epoch(8, 10) == 1 and steps_in_epoch(100, 10) == 10
    rows = [{"samples": 35, "train_s": 3.0}, {"samples": 35, "train_s": 3.0}]
    cost = training_cost(rows, num_train=100, batch_size=10, epochs=2, extra_s=1.0)
    assert cost["steps"] == 6 and cost["full_set_steps"] == 20 and cost["step_fraction"] == pytest.approx(0.3)
    assert cost["full_set_train_s_estimate"] == pytest.approx(20.0)  # 1 s per step
    assert cost["time_fraction_estimate"] == pytest.approx(7.0 / 20.0) and cost["saved_s_estimate"] == pytest.approx(13.0)


def test_refresh_changes_the_index_when_the_student_changes() -> None:
    recipe = Recipe(
        data=DataConfig(source="digits", image_size=8, max_samples=60, augment={"enabled": False}),
        select=SelectConfig(top_k_ratio=0.3, refresh_every=2),
    )
    train = load_splits(recipe.data).train
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(len(train), 10)).astype(np.float32)

    def student(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))

    start = np.zeros(len(train), dtype=bool)
    masks = []
    for seed in (0, 1):
        model = student(seed)
        refresh = Refresher(recipe, model, train, teacher, start)
        assert [refresh.due(e) for e in range(5)] == [False, False, True, False, True]
        sel = refresh(2)
        kl = SELECTORS.build("disagreement").score(teacher, train.targets, student_logits=predict(model, train))
        assert np.array_equal(sel.mask, pick_critical(kl, train.targets, recipe, train.classes, seed=recipe.seed + 2).mask)
        assert refresh.records[0]["changed"] == int(sel.mask.sum()) == round(0.3 * len(train))
        masks.append(sel.mask)
    assert not np.array_equal(masks[0], masks[1])  # another student, other critical samples
    resumed = Refresher(recipe, student(0), train, teacher, start)
    assert resumed.due(3) and resumed.due(4) and not resumed.due(5)  # a resumed run re-mines at once, then keeps the period


def test_refresh_by_reducible_loss_and_the_subset_default() -> None:
    # a subset picked by a score-based policy is re-mined every epoch; by reducible_loss when asked
    data = DataConfig(source="digits", image_size=8, max_samples=60, augment={"enabled": False})
    recipe = Recipe(
        data=data,
        select=SelectConfig(top_k_ratio=0.3, policy="hard", refresh_by="reducible_loss"),
        distill={"epochs": 4, "critical": {"mode": "subset"}},
    )
    train = load_splits(recipe.data).train
    teacher = np.random.default_rng(1).normal(size=(len(train), 10)).astype(np.float32)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    refresh = Refresher(recipe, model, train, teacher, np.zeros(len(train), dtype=bool))
    assert refresh.every == 1 and [refresh.due(e) for e in range(4)] == [False, True, True, True]
    sel = refresh(1)
    rho = SELECTORS.build("reducible_loss").score(teacher, train.targets, student_logits=predict(model, train))
    assert sel.resolved == "hard"
    assert np.array_equal(sel.mask, pick_critical(rho, train.targets, recipe, train.classes, seed=recipe.seed + 1).mask)
    # hard = the top of each class's ranking (class-balanced quotas)
    for c in np.unique(train.targets):
        members = np.flatnonzero(train.targets == c)
        kept = members[sel.mask[members]]
        if 0 < len(kept) < len(members):
            assert rho[kept].min() >= rho[members[~sel.mask[members]]].max()
    assert refresh.records[0]["score"] == "reducible_loss" and refresh.records[0]["mean_score"] == pytest.approx(float(rho.mean()))
