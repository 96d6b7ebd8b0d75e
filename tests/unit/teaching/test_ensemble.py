"""Several teachers: the targets each distill.ensemble rule makes, on hand-made logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cann_distill.teaching.ensemble import KEY, TeacherEnsemble, combined_logits, confident_teacher, mean_target, normalised
from cann_distill.teaching.losses import LOSSES
from cann_distill.teaching.targets import CachedTargets, EnsembleTargets

Z = torch.tensor(
    [
        [[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]],  # teacher 0, samples 0 and 1
        [[0.0, 3.0, 0.0], [1.0, 0.0, 2.0]],  # teacher 1
    ]
)


def test_mean_target_softens_to_the_weighted_mean_distribution_at_each_samples_temperature() -> None:
    w = normalised([1.0, 3.0])
    assert w.tolist() == pytest.approx([0.25, 0.75])
    temps = torch.tensor([[1.0], [4.0]])
    t = mean_target(Z, w, temps)
    for i, temp in enumerate([1.0, 4.0]):
        expected = 0.25 * torch.softmax(Z[0, i] / temp, 0) + 0.75 * torch.softmax(Z[1, i] / temp, 0)
        torch.testing.assert_close(torch.softmax(t[i] / temp, 0), expected, rtol=1e-6, atol=1e-7)
    # a teacher of weight 0 drops out: the target is the other teacher's distribution
    alone = mean_target(Z, normalised([0.0, 1.0]), torch.ones(2, 1))
    torch.testing.assert_close(torch.softmax(alone, 1), torch.softmax(Z[1], 1), rtol=1e-6, atol=1e-7)


def test_mean_rule_feeds_kd_the_mean_of_softened_distributions() -> None:
    kd = LOSSES.build("kd", temperature=2.0)
    s = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    got = TeacherEnsemble("mean", [1.0, 1.0]).term(kd, kd.temperature, {"student.logits": s, KEY: Z})
    p = 0.5 * torch.softmax(Z[0] / 2, 1) + 0.5 * torch.softmax(Z[1] / 2, 1)
    by_hand = (p * (p.log() - torch.log_softmax(s / 2, 1))).sum(1) * 4.0
    torch.testing.assert_close(got, by_hand, rtol=1e-5, atol=1e-6)


def test_per_teacher_rule_is_the_weighted_sum_of_one_term_per_teacher() -> None:
    kd = LOSSES.build("kd", temperature=3.0)
    s = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    got = TeacherEnsemble("per_teacher", [1.0, 3.0]).term(kd, kd.temperature, {"student.logits": s, KEY: Z})
    each = [kd({"student.logits": s, "teacher.logits": Z[k]}) for k in range(2)]
    torch.testing.assert_close(got, 0.25 * each[0] + 0.75 * each[1])


def test_confidence_picks_per_sample_the_teacher_most_sure_of_the_label() -> None:
    w = normalised([1.0, 1.0])
    # label 1 for both: sample 0 p(1) = 0.11 (teacher 0) vs 0.91 (teacher 1); sample 1 p(1) = 0.58 vs 0.09
    p = torch.softmax(Z, 2)
    labels = torch.tensor([1, 1])
    expected = [int(torch.argmax(p[:, i, labels[i]])) for i in range(2)]
    assert confident_teacher(Z, w, labels).tolist() == expected == [1, 0]
    # unknown labels (< 0): the top-1 probability decides (sample 1: 0.58 vs 0.67, teacher 1 now)
    top = [int(torch.argmax(p[:, i].max(1).values)) for i in range(2)]
    assert confident_teacher(Z, w, torch.tensor([-1, -1])).tolist() == top == [1, 1]
    # soft labels (mixup): the expected probability of the label
    soft = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    expected_soft = [int(torch.argmax((p[:, i] * soft[i]).sum(1))) for i in range(2)]
    assert confident_teacher(Z, w, soft).tolist() == expected_soft
    # weights scale the confidence; a weight-0 teacher never teaches, even when it is the surest
    assert confident_teacher(Z, normalised([0.0, 1.0]), torch.tensor([0, 0])).tolist() == [1, 1]
    assert confident_teacher(Z, normalised([1.0, 0.0]), torch.tensor([1, 1])).tolist() == [0, 0]


def test_confidence_rule_feeds_each_sample_its_chosen_teachers_logits_and_counts_them() -> None:
    kd = LOSSES.build("kd", temperature=1.0)
    s = torch.zeros(2, 3)
    ensemble = TeacherEnsemble("confidence", [1.0, 1.0])
    got = ensemble.term(kd, 1.0, {"student.logits": s, KEY: Z, "targets": torch.tensor([0, 2])})
    chosen = confident_teacher(Z, normalised([1.0, 1.0]), torch.tensor([0, 2]))
    assert chosen.tolist() == [0, 1]
    torch.testing.assert_close(got, kd({"student.logits": s, "teacher.logits": torch.stack([Z[0, 0], Z[1, 1]])}))
    assert ensemble.describe()["chosen_share"] == [0.5, 0.5]


def test_bad_rules_and_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="positive sum"):
        normalised([0.0, 0.0])
    with pytest.raises(ValueError, match="unknown ensemble rule 'vote'"):
        TeacherEnsemble("vote", [1.0, 1.0])


def test_combined_logits_are_the_log_of_the_weighted_mean_probabilities() -> None:
    a, b = np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([[0.0, 0.0], [3.0, 0.0]])
    got = np.exp(combined_logits([a, b], [3.0, 1.0]))
    soft = lambda z: np.exp(z) / np.exp(z).sum(1, keepdims=True)  # noqa: E731
    np.testing.assert_allclose(got, 0.75 * soft(a) + 0.25 * soft(b), rtol=1e-6)
    np.testing.assert_allclose(got.sum(1), 1.0, rtol=1e-6)


def test_ensemble_targets_stack_every_teachers_output() -> None:
    logits = [torch.randn(5, 3), torch.randn(5, 3)]
    source = EnsembleTargets([CachedTargets(z, augmented=False) for z in logits])
    batch = (torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long), torch.tensor([4, 1]))
    out = source(batch, 0)
    assert set(out) == {KEY} and out[KEY].shape == (2, 2, 3)
    torch.testing.assert_close(out[KEY][1], logits[1][[4, 1]])
    assert source.mode == "cached" and source.describe()["source"] == "cached"
