"""Unlabelled images in a batch (label -1, data.unlabeled): label-reading terms average over the labelled samples
only, teacher terms over all; on hand-made logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cann_distill.core.recipe import LossSpec
from cann_distill.models.build import create_model
from cann_distill.teaching.distiller import Distiller


def distiller() -> Distiller:
    torch.manual_seed(0)
    specs = [LossSpec(kind="ce", weight=0.5), LossSpec(kind="kd", weight=0.5, temperature=2.0)]
    return Distiller(specs, create_model("test_efficientnet", 3, 1), student_arch="test_efficientnet", sample=torch.randn(2, 1, 16, 16))


S = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 1.0, 3.0], [0.5, -0.5, 0.0]])
T = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0], [2.0, 0.0, 1.0]])


def test_ce_counts_labelled_samples_only_and_kd_counts_all() -> None:
    y = torch.tensor([0, -1, 2, -1])
    w = torch.tensor([1.0, 1.0, 3.0, 1.0])
    total, parts = distiller().loss({"student.logits": S, "teacher.logits": T, "targets": y, "labelled": y >= 0}, w)
    ce = F.cross_entropy(S[[0, 2]], y[[0, 2]], reduction="none")
    assert parts["ce"] == pytest.approx(float((ce * w[[0, 2]]).sum() / w[[0, 2]].sum()), rel=1e-6)
    p_t = torch.softmax(T / 2, 1)
    kd = (p_t * (p_t.log() - torch.log_softmax(S / 2, 1))).sum(1) * 4
    assert parts["kd"] == pytest.approx(float((kd * w).sum() / w.sum()), rel=1e-5)
    assert total.item() == pytest.approx(0.5 * parts["ce"] + 0.5 * parts["kd"], rel=1e-6)


def test_a_batch_without_labels_learns_from_the_teacher_alone() -> None:
    y = torch.full((4,), -1)
    total, parts = distiller().loss({"student.logits": S, "teacher.logits": T, "targets": y, "labelled": y >= 0}, torch.ones(4))
    assert parts["ce"] == 0.0 and torch.isfinite(total) and total.item() == pytest.approx(0.5 * parts["kd"])
    # without the mask (every image labelled) the result is the plain weighted mean, as before
    labels = torch.tensor([0, 1, 2, 0])
    _, plain = distiller().loss({"student.logits": S, "teacher.logits": T, "targets": labels}, torch.ones(4))
    assert plain["ce"] == pytest.approx(float(F.cross_entropy(S, labels)), rel=1e-6)
