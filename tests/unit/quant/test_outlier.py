"""An outlier activation channel: measured on the float activation, named in validate's notes."""

import numpy as np
import pytest

from cann_distill.quant.feedback import outlier_note
from cann_distill.quant.gap import channel_outlier


def test_channel_outlier_is_the_largest_channel_peak_over_the_median_one() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1.0, 1.0, size=(8, 16, 4, 4)).astype(np.float32)
    x[:, :, 0, 0] = 1.0  # every channel peaks at exactly 1
    x[3, 8, 2, 2] = -25.0  # channel 8 once reaches -25
    ratio, channel = channel_outlier(x)
    assert channel == 8 and ratio == pytest.approx(25.0)
    assert channel_outlier(np.ones((4, 16), np.float32)) == (1.0, 0)  # [N, C] counts channels too
    assert channel_outlier(np.ones(10, np.float32)) == (1.0, 0)  # no channel axis
    assert channel_outlier(np.zeros((2, 4, 3), np.float32)) == (1.0, 0)  # no non-zero channel


def row(module: str, ratio: float, channel: int = 8, sqnr: float = 17.3) -> dict:
    return {"module": module, "outlier_ratio": ratio, "outlier_channel": channel, "sqnr_db": sqnr}


def test_the_note_names_the_layer_channel_ratio_and_levels_left() -> None:
    note = outlier_note([row("blocks.0.0.conv_pw", 2.0), row("conv_stem", 26.7)])
    assert note is not None
    assert note.startswith("conv_stem: channel 8 of its output spans 27× the median channel's range")
    assert "about 10 of 256 levels" in note and "(17 dB SQNR there)" in note
    assert "distill.qat.enabled: true" in note


def test_no_note_below_the_ratio_or_outside_the_worst_layers() -> None:
    assert outlier_note([row("conv_stem", 9.9)]) is None
    assert outlier_note([row("a", 1.0), row("b", 1.0), row("c", 1.0), row("conv_stem", 40.0)]) is None  # 4th worst
    assert outlier_note([{"module": "old", "sqnr_db": 3.0}]) is None  # rows written before the field existed
    assert outlier_note([]) is None
