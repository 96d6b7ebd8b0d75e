"""The report's figures: constrained layout, labelled axes, legends and colour bars, no overlapping labels,
worst classes first, counts in confusion cells, one attention scale, log counts, names never drawn as maths."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cbook import is_math_text
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.text import Text

from cann_distill.reporting import charts

MATH = "$\\frac{1}{2}$"


def drawn(fig: Any) -> Any:
    FigureCanvasAgg(fig)
    fig.canvas.draw()
    return fig.canvas.get_renderer()


def overlapping(labels: list[Text], renderer: Any) -> list[tuple[str, str]]:
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in labels if t.get_text() and t.get_visible()]
    return [(a, b) for (a, ba), (b, bb) in itertools.combinations(boxes, 2) if ba.overlaps(bb)]


def per_class(n: int, seed: int = 0) -> dict[str, list[float]]:
    rng = np.random.default_rng(seed)
    return {name: list(rng.random(n)) for name in ("teacher", "baseline", "student")}


def test_per_class_errors_worst_first_titled_and_readable() -> None:
    classes = [f"c{i:02d} with a rather long class name" for i in range(40)] + [MATH]
    acc = per_class(len(classes))
    acc["student"][-1] = 0.0  # the maths-named class is the student's worst
    fig = charts.per_class_errors(classes, acc, "test")
    ax = fig.axes[0]
    renderer = drawn(fig)
    assert isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine)
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert len(ticks) == charts.MAX_CLASSES_SHOWN and ticks[0] == "\\$\\frac{1}{2}\\$"  # worst first, its $ escaped
    shown_errors = [1 - acc["student"][int(t[1:3])] for t in ticks[1:]]
    assert shown_errors == sorted(shown_errors, reverse=True)
    assert shown_errors[0] == max(1 - a for a in acc["student"][:-1])
    assert "worst first" in ax.get_title() and "test" in ax.get_title() and "test" in ax.get_xlabel() and ax.get_legend() is not None
    assert overlapping(ax.get_yticklabels(), renderer) == []
    assert not any(is_math_text(t.get_text()) for t in fig.findobj(Text))


def test_worst_classes_orders_by_error_and_puts_empty_classes_last() -> None:
    assert charts.worst_classes({"student": [0.9, None, 0.2, 0.5]}, "student") == [2, 3, 0, 1]


def test_confusions_have_counts_and_one_colour_bar() -> None:
    classes = ["cat", "dog", MATH]
    cm = {"teacher": [[5, 1, 0], [2, 3, 0], [0, 0, 4]], "student": [[4, 2, 0], [1, 4, 0], [1, 0, 3]]}
    fig = charts.confusions(classes, cm, "val")
    renderer = drawn(fig)
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1 and "share of the true class" in bars[0].get_ylabel()
    mats = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    cells = sorted(t.get_text() for t in mats[0].texts)
    assert cells == sorted(str(n) for row in cm["teacher"] for n in row if n)
    assert all(ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class" for ax in mats)
    for ax in mats:
        assert overlapping(ax.get_xticklabels(), renderer) == []
    assert not any(is_math_text(t.get_text()) for t in fig.findobj(Text))


def test_attention_overlays_share_one_scale_and_show_agreeing_and_disagreeing() -> None:
    rng = np.random.default_rng(0)
    shown = [
        {
            "image": rng.normal(size=(3, 16, 16)),
            "critical": i < 2,
            "label": MATH,
            "teacher": "a",
            "student": "b" if i % 2 else "a",
            "agree": not i % 2,
        }
        for i in range(4)
    ]
    fig = charts.attention_overlays(shown, rng.random((4, 4, 4)), rng.random((4, 4, 4)) * 5, "test")
    drawn(fig)
    overlays = [im for ax in fig.axes for im in ax.get_images() if im.get_cmap().name == "inferno"]
    assert len(overlays) == 8 and {im.get_clim() for im in overlays} == {(0, 1)}
    assert sum(ax.get_label() == "<colorbar>" for ax in fig.axes) == 1
    titles = [ax.get_title() for ax in fig.axes]
    assert any(t.startswith("agree") for t in titles) and any(t.startswith("disagree") for t in titles)
    assert not any(is_math_text(t.get_text()) for t in fig.findobj(Text))


def test_critical_histogram_uses_log_counts_and_labels() -> None:
    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(0, 0.01, 5000), rng.normal(3, 0.5, 20)])  # a spike and a thin tail
    fig = charts.critical_histogram(scores, scores > 2, "margin")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and "log" in ax.get_ylabel() and "margin" in ax.get_xlabel() and ax.get_legend() is not None


@pytest.mark.parametrize(
    "build",
    [
        lambda: charts.curves(
            [{"epoch": e, "lr": 0.1, "loss": 1 / e, "kd": 0.5 / e, "val_acc": 0.5, "temperature_mean": 4.0} for e in (1, 2, 3)],
            [{"epoch": e, "val_acc": 0.4} for e in (1, 2, 3)],
            [{"epoch": e, "val_acc": 0.8} for e in (1, 2, 3, 4)],
            ["kd", "loss"],
        ),
        lambda: charts.gap_bars([{"module": f"blocks.{i}.conv", "gap_db": 3.0 - i / 10} for i in range(10)], 64, "val"),
        lambda: charts.latency_histogram(
            {"threads": 1, "fp32": {"times_ms": [1.0, 1.1], "median_ms": 1.05}, "int8": {"times_ms": [0.7], "median_ms": 0.7}}
        ),
        lambda: charts.cka_bars([{"teacher_module": "layer1", "student_module": "blocks.0", "cka": 0.7}] * 3, 100, "test"),
    ],
    ids=["curves", "gap", "latency", "cka"],
)
def test_every_axis_is_labelled(build: Any) -> None:
    fig = build()
    renderer = drawn(fig)
    assert isinstance(fig.get_layout_engine(), ConstrainedLayoutEngine)
    for ax in fig.axes:
        assert ax.get_xlabel() or ax.get_ylabel(), ax
        assert overlapping(ax.get_xticklabels(), renderer) == [] and overlapping(ax.get_yticklabels(), renderer) == []
    main = [ax for ax in fig.axes if ax.get_title()]
    assert all(ax.get_ylabel() for ax in main)


def test_labels_from_data_are_inert_and_plain() -> None:
    assert charts.label("a\u202eb\nc") == "a\\u202eb\\nc"
    assert charts.label("x" * 100).endswith("…") and len(charts.label("x" * 100)) == charts.MAX_LABEL
    assert charts.label("$x$") == "\\$x\\$" and not is_math_text(charts.label("$x$"))
    assert charts.inert("tab\tline\nkept") == "tab\tline\nkept"
