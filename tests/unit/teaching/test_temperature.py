import math

import numpy as np
import pytest

from cann_distill.teaching.temperature import (
    SCHEDULES,
    TemperatureSchedule,
    per_sample_temperature,
    rank_percentile,
    temperature_at,
)

# five samples, easiest → hardest: percentiles u = 0, 1/4, 1/2, 3/4, 1
DIFFICULTY = np.array([0.1, 0.4, 0.5, 0.7, 3.0])


def test_rank_percentile_ties_and_single_sample() -> None:
    assert rank_percentile(np.array([3.0, 1.0, 2.0])).tolist() == [1.0, 0.0, 0.5]
    # ties average their 0-based ranks: (0 + 1) / 2 = 0.5 → u = 0.25
    assert rank_percentile(np.array([1.0, 1.0, 2.0])).tolist() == [0.25, 0.25, 1.0]
    assert rank_percentile(np.array([7.0])).tolist() == [0.5]
    assert rank_percentile(np.array([2.0, 2.0, 2.0])).tolist() == [0.5, 0.5, 0.5]


def test_mapping_endpoints_and_quartiles() -> None:
    t = per_sample_temperature(DIFFICULTY)
    assert t[0] == pytest.approx(2.1)  # easiest → t_easy
    assert t[2] == pytest.approx(3.0)  # median → base
    assert t[4] == pytest.approx(4.7)  # hardest → t_hard
    assert t[1] == pytest.approx(math.sqrt(6.3))  # 3 * (2.1/3)^(1/2)
    assert t[3] == pytest.approx(math.sqrt(14.1))  # 3 * (4.7/3)^(1/2)


def test_mapping_uses_ranks_not_scale() -> None:
    a = per_sample_temperature(DIFFICULTY)
    b = per_sample_temperature(DIFFICULTY * 1000 - 5)
    assert np.allclose(a, b)
    assert per_sample_temperature(np.array([0.3])).tolist() == pytest.approx([3.0])


def test_mapping_is_monotone_in_difficulty() -> None:
    d = np.random.default_rng(0).normal(size=200)
    t = per_sample_temperature(d)
    order = np.argsort(d)
    assert np.all(np.diff(t[order]) >= 0)
    assert t.min() == pytest.approx(2.1) and t.max() == pytest.approx(4.7)


def test_mapping_clips_to_bounds() -> None:
    t = per_sample_temperature(DIFFICULTY, t_min=2.5, t_max=4.0)
    assert t[0] == pytest.approx(2.5)
    assert t[1] == pytest.approx(math.sqrt(6.3))  # 2.51 stays inside
    assert t[2] == pytest.approx(3.0)
    assert t[4] == pytest.approx(4.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"t_min": 5.0, "t_max": 2.0},
        {"base": 9.0},  # above t_max
        {"base": 0.5},  # below t_min
        {"t_min": 0.0, "base": 3.0},
        {"t_easy": 0.0},
        {"t_easy": 3.5},  # above base
        {"t_hard": 2.0},  # below base
    ],
)
def test_mapping_rejects_bad_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        per_sample_temperature(DIFFICULTY, **kwargs)


def test_mapping_rejects_bad_difficulty() -> None:
    with pytest.raises(ValueError, match="NaN"):
        per_sample_temperature(np.array([0.1, np.nan]))
    with pytest.raises(ValueError, match="1-D"):
        per_sample_temperature(np.zeros((2, 2)))


EPOCHS = 11  # epochs 0..10, middle = 5


@pytest.mark.parametrize(
    ("name", "kwargs", "first", "middle", "last"),
    [
        ("constant", {"temperature": 4.0}, 4.0, 4.0, 4.0),
        ("linear", {"start": 10.0, "end": 1.0}, 10.0, 5.5, 1.0),
        ("cosine", {"start": 10.0, "end": 1.0}, 10.0, 5.5, 1.0),
        ("adaptive", {"start": 4.0, "min_value": 1.0}, 4.0, 4.0, 4.0),  # no update → no decay
    ],
)
def test_schedule_values(name: str, kwargs: dict[str, float], first: float, middle: float, last: float) -> None:
    s = SCHEDULES.build(name, **kwargs)
    assert s.value(0, EPOCHS) == pytest.approx(first)
    assert s.value(5, EPOCHS) == pytest.approx(middle)
    assert s.value(10, EPOCHS) == pytest.approx(last)
    assert s.multiplier(0, EPOCHS) == pytest.approx(1.0)
    assert s.multiplier(10, EPOCHS) == pytest.approx(last / first)


def test_cosine_is_flat_at_the_ends() -> None:
    s = SCHEDULES.build("cosine", start=10.0, end=1.0)
    # epoch 1 of 11: t = 0.1 → 1 + 9 * (1 + cos(0.1 pi)) / 2
    assert s.value(1, EPOCHS) == pytest.approx(1 + 9 * (1 + math.cos(0.1 * math.pi)) / 2)
    lin = SCHEDULES.build("linear", start=10.0, end=1.0)
    assert s.value(1, EPOCHS) > lin.value(1, EPOCHS)
    assert s.value(9, EPOCHS) < lin.value(9, EPOCHS)


def test_single_epoch_and_out_of_range() -> None:
    s = SCHEDULES.build("linear", start=10.0, end=1.0)
    assert s.value(0, 1) == pytest.approx(10.0)
    for epoch, epochs in ((11, 11), (-1, 11), (0, 0)):
        with pytest.raises(ValueError):
            s.value(epoch, epochs)


def test_adaptive_decays_on_plateau_and_stops_at_min() -> None:
    s = SCHEDULES.build("adaptive", start=4.0, min_value=2.0, patience=2, factor=0.5, threshold=0.01)
    s.update(1.0)  # first loss: best = 1.0
    s.update(0.9)  # 10% better: progress
    assert s.value(2, EPOCHS) == pytest.approx(4.0)
    s.update(0.895)  # < 1% better: stale 1
    assert s.value(3, EPOCHS) == pytest.approx(4.0)
    s.update(0.95)  # stale 2 → 4 * 0.5
    assert s.value(4, EPOCHS) == pytest.approx(2.0)
    assert s.multiplier(4, EPOCHS) == pytest.approx(0.5)
    s.update(0.9)
    s.update(0.9)  # another plateau, but already at min_value
    assert s.value(6, EPOCHS) == pytest.approx(2.0)
    s.update(0.5)  # progress resets the counter
    s.update(0.5)
    assert s.value(8, EPOCHS) == pytest.approx(2.0)


def test_adaptive_keeps_value_while_improving() -> None:
    s = SCHEDULES.build("adaptive", start=4.0, min_value=1.0)
    for loss in (1.0, 0.8, 0.6, 0.4, 0.2):
        s.update(loss)
    assert s.value(4, EPOCHS) == pytest.approx(4.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"start": 4.0, "min_value": 5.0},
        {"start": 4.0, "min_value": 1.0, "patience": 0},
        {"start": 4.0, "min_value": 1.0, "factor": 1.0},
        {"start": 4.0, "min_value": 1.0, "threshold": -0.1},
        {"start": 0.0, "min_value": 0.0},
    ],
)
def test_adaptive_rejects_bad_arguments(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SCHEDULES.build("adaptive", **kwargs)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_schedules_reject_non_positive(name: str) -> None:
    with pytest.raises(ValueError):
        SCHEDULES.build(name, start=10.0, end=0.0)


def test_fixed_schedules_ignore_update() -> None:
    for name, kwargs in (("constant", {}), ("linear", {"start": 10.0, "end": 1.0})):
        s = SCHEDULES.build(name, **kwargs)
        before = s.value(3, EPOCHS)
        s.update(1.0)
        s.update(1.0)
        s.update(1.0)
        assert s.value(3, EPOCHS) == before


def test_temperature_at_combines_per_sample_and_schedule() -> None:
    s = SCHEDULES.build("linear", start=10.0, end=1.0)
    per_sample = per_sample_temperature(DIFFICULTY)
    assert temperature_at(s, 5, EPOCHS) == pytest.approx(5.5)
    # T_i * value(5) / value(0) = T_i * 0.55
    assert temperature_at(s, 5, EPOCHS, per_sample).tolist() == pytest.approx(
        [2.1 * 0.55, math.sqrt(6.3) * 0.55, 3.0 * 0.55, math.sqrt(14.1) * 0.55, 4.7 * 0.55]
    )
    assert np.allclose(temperature_at(s, 0, EPOCHS, per_sample), per_sample)


def test_schedule_registry() -> None:
    assert SCHEDULES.names() == ["adaptive", "constant", "cosine", "linear"]
    assert all(issubclass(SCHEDULES.get(n), TemperatureSchedule) for n in SCHEDULES)
    assert SCHEDULES.check_kwargs("linear", {"start": 10.0}) == [("end", "missing argument for temperature schedule 'linear'")]
