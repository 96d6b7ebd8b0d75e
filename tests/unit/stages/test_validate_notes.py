"""validate's closing notes name what triggered the INT8 feedback: the accuracy drop, or a layer's gap alone."""

from __future__ import annotations

from types import SimpleNamespace

from cann_distill.stages.validate import _notes

STEADY = {"fp32": {"unstable": False}, "int8": {"unstable": False}, "comparison": {"verdict": "same", "int8_over_fp32": 1.0}}


def run_with(drop: float, threshold: float = 0.01, apply: bool = False) -> SimpleNamespace:
    return SimpleNamespace(
        float_ops={},
        metrics={"val": {"accuracy": {"int8_drop": drop}}},
        feedback={"triggered": True, "threshold": threshold, "apply": {"x": 1} if apply else {}},
        gap_rows=[],
    )


def test_a_drop_beyond_the_budget_is_named_as_the_drop() -> None:
    (note,) = _notes(run_with(0.025), STEADY)
    assert note.startswith("INT8 drop 2.50 pt on val: no measured fix helped")


def test_a_layer_gap_alone_is_not_called_an_accuracy_drop() -> None:
    (note,) = _notes(run_with(-0.0037), STEADY)  # INT8 better than FP32 on val: only a layer's gap can have triggered it
    assert note.startswith("a layer's INT8 gap beyond feedback.max_layer_gap_db (INT8 drop -0.37 pt on val, within its budget)")
    assert "no measured fix helped" in note


def test_no_trigger_no_note() -> None:
    run = run_with(0.0)
    run.feedback["triggered"] = False
    assert _notes(run, STEADY) == []


def test_an_outlier_channel_at_a_worst_layer_adds_its_own_note() -> None:
    run = run_with(0.025)
    run.gap_rows = [{"module": "conv_stem", "sqnr_db": 17.2, "outlier_ratio": 19.0, "outlier_channel": 8}]
    drop, outlier = _notes(run, STEADY)
    assert drop.startswith("INT8 drop 2.50 pt on val")
    assert outlier.startswith("conv_stem: channel 8 of its output spans 19× the median channel's range")
    assert "about 13 of 256 levels (17 dB SQNR there)" in outlier


def test_a_channel_within_the_ratio_adds_no_note() -> None:
    run = run_with(0.025)
    run.gap_rows = [{"module": "conv_stem", "sqnr_db": 30.0, "outlier_ratio": 4.0, "outlier_channel": 8}]
    assert len(_notes(run, STEADY)) == 1
