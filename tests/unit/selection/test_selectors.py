import math

import numpy as np
import pytest

from cann_distill.core.recipe import Recipe, SelectConfig
from cann_distill.selection import SELECTORS
from cann_distill.selection.pick import pick_critical

# rows: confident, near the boundary, uniform
LOGITS = np.array([[4.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
TARGETS = np.array([0, 1, 2])


def test_margin_scores() -> None:
    s = SELECTORS.build("margin").score(LOGITS, TARGETS)
    p0 = math.exp(4) / (math.exp(4) + 2)
    assert s[0] == pytest.approx(1 - (p0 - 1 / (math.exp(4) + 2)))
    assert s[1] == pytest.approx(1.0)  # top-1 and top-2 tie
    assert s[2] == pytest.approx(1.0)


def test_entropy_scores() -> None:
    s = SELECTORS.build("entropy").score(LOGITS, TARGETS)
    assert s[2] == pytest.approx(1.0)  # uniform → max entropy
    assert 0 < s[0] < s[1] < s[2]


def test_loss_scores_flag_wrong_labels() -> None:
    s = SELECTORS.build("loss").score(LOGITS, TARGETS)
    assert s[0] == pytest.approx(-math.log(math.exp(4) / (math.exp(4) + 2)))
    assert s[1] == pytest.approx(-math.log(math.e / (2 * math.e + 1)))
    assert s[2] == pytest.approx(math.log(3))


def test_random_is_seeded() -> None:
    r = SELECTORS.build("random")
    assert np.array_equal(r.score(LOGITS, TARGETS, seed=1), r.score(LOGITS, TARGETS, seed=1))
    assert not np.array_equal(r.score(LOGITS, TARGETS, seed=1), r.score(LOGITS, TARGETS, seed=2))


def test_pick_critical_top_k_and_class_balanced() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.05])
    targets = np.array([0, 0, 0, 1, 1, 1])
    top = pick_critical(scores, targets, Recipe(select=SelectConfig(top_k_ratio=0.34, class_balanced=False, policy="hard")))
    assert top.mask.tolist() == [True, True, False, False, False, False]
    bal = pick_critical(scores, targets, Recipe(select=SelectConfig(top_k_ratio=0.34, policy="hard")))  # class-balanced by default
    assert bal.mask.tolist() == [True, False, False, False, True, False]
    assert bal.policy == "hard" and bal.per_class == {
        "0": {"available": 3, "quota": 1, "taken": 1},
        "1": {"available": 3, "quota": 1, "taken": 1},
    }


@pytest.mark.parametrize("name", SELECTORS.names())
def test_every_selector_accepts_student_logits(name: str) -> None:
    sel = SELECTORS.build(name)
    extra = {"view_logits": np.stack([LOGITS, LOGITS])} if sel.needs_views else {}
    if sel.needs_history:
        extra["student_history"] = np.stack([LOGITS, -LOGITS])
    s = sel.score(LOGITS, TARGETS, seed=0, student_logits=np.zeros_like(LOGITS), **extra)
    assert s.shape == (len(TARGETS),) and np.all(np.isfinite(s))
    assert sel.needs_student is (name in ("disagreement", "reducible_loss"))
    assert sel.needs_views is name.startswith("view_") and sel.needs_history is (name in ("el2n", "forgetting"))


def test_confidence_entropy_balance_scores() -> None:
    # row 0: p = [e^4, 1, 1] / (e^4 + 2); row 1: p = [e, e, 1] / (2e + 1); row 2: uniform
    z0, z1 = math.exp(4) + 2, 2 * math.e + 1
    p0 = [math.exp(4) / z0, 1 / z0, 1 / z0]
    p1 = [math.e / z1, math.e / z1, 1 / z1]
    h0 = -sum(p * math.log(p) for p in p0) / math.log(3)
    h1 = -sum(p * math.log(p) for p in p1) / math.log(3)
    s = SELECTORS.build("confidence_entropy_balance").score(LOGITS, TARGETS)
    assert s[0] == pytest.approx(0.5 * (1 - p0[0]) + 0.5 * h0)
    assert s[1] == pytest.approx(0.5 * (1 - p1[0]) + 0.5 * h1)
    assert s[2] == pytest.approx(0.5 * (2 / 3) + 0.5 * 1.0)  # = 5/6
    s = SELECTORS.build("confidence_entropy_balance", alpha=0.25).score(LOGITS, TARGETS)
    assert s[1] == pytest.approx(0.25 * (1 - p1[0]) + 0.75 * h1)
    pure_conf = SELECTORS.build("confidence_entropy_balance", alpha=1.0).score(LOGITS, TARGETS)
    assert pure_conf.tolist() == pytest.approx([1 - p0[0], 1 - p1[0], 2 / 3])
    pure_ent = SELECTORS.build("confidence_entropy_balance", alpha=0.0).score(LOGITS, TARGETS)
    assert pure_ent.tolist() == pytest.approx([h0, h1, 1.0])


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_confidence_entropy_balance_rejects_bad_alpha(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha"):
        SELECTORS.build("confidence_entropy_balance", alpha=alpha)


# two classes; ln 9 / 2 = ln 3, so at T=2 the row [ln 9, 0] becomes p = [3/4, 1/4]
TEACHER2 = np.array([[0.0, 0.0], [math.log(9), 0.0], [1.0, -2.0]])
STUDENT2 = np.array([[math.log(9), 0.0], [0.0, 0.0], [1.0, -2.0]])
TARGETS2 = np.array([0, 0, 0])


def test_disagreement_scores() -> None:
    s = SELECTORS.build("disagreement").score(TEACHER2, TARGETS2, student_logits=STUDENT2)
    # KL([.5, .5] || [.9, .1]) = .5 ln(.5/.9) + .5 ln(.5/.1) = ln(5/3)
    assert s[0] == pytest.approx(math.log(5 / 3))
    # KL([.9, .1] || [.5, .5]) = .9 ln 1.8 + .1 ln .2
    assert s[1] == pytest.approx(0.9 * math.log(1.8) + 0.1 * math.log(0.2))
    assert s[2] == pytest.approx(0.0, abs=1e-12)  # identical logits


def test_disagreement_temperature_softens_both() -> None:
    s = SELECTORS.build("disagreement", temperature=2.0).score(TEACHER2, TARGETS2, student_logits=STUDENT2)
    # KL([.5, .5] || [.75, .25]) = .5 ln(2/3) + .5 ln 2 = .5 ln(4/3)
    assert s[0] == pytest.approx(0.5 * math.log(4 / 3))
    # KL([.75, .25] || [.5, .5]) = .75 ln 1.5 + .25 ln .5
    assert s[1] == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    assert s[2] == pytest.approx(0.0, abs=1e-12)


def test_disagreement_errors() -> None:
    sel = SELECTORS.build("disagreement")
    with pytest.raises(ValueError, match="needs student_logits"):
        sel.score(TEACHER2, TARGETS2)
    with pytest.raises(ValueError, match="shape"):
        sel.score(TEACHER2, TARGETS2, student_logits=STUDENT2[:2])
    for t in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature"):
            SELECTORS.build("disagreement", temperature=t)


def test_reducible_loss_is_student_ce_minus_teacher_ce() -> None:
    # sample 0: teacher sure of the label, student uniform → high; sample 1: the label is one the teacher
    # rejects too (a flipped label) → the student's loss there is not reducible → low; sample 2: both sure → 0
    teacher = np.array([[6.0, 0.0, 0.0], [0.0, 6.0, 0.0], [0.0, 0.0, 6.0]])
    student = np.array([[0.0, 0.0, 0.0], [0.0, 6.0, 0.0], [0.0, 0.0, 6.0]])
    y = np.array([0, 0, 2])
    s = SELECTORS.build("reducible_loss").score(teacher, y, student_logits=student)
    ce = lambda z, k: -(z[k] - np.log(np.exp(z).sum()))  # noqa: E731
    assert s == pytest.approx([ce(student[0], 0) - ce(teacher[0], 0), ce(student[1], 0) - ce(teacher[1], 0), 0.0])
    assert s[0] > 1.0 and abs(s[1]) < 1e-9 and s.argmax() == 0
    with pytest.raises(ValueError, match="reducible_loss' needs student_logits"):
        SELECTORS.build("reducible_loss").score(teacher, y)
