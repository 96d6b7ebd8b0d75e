"""report.html's words and numbers: every accuracy names its split, TE is "not meaningful" when the teacher's lead is
within the noise, the feedback names --apply-feedback only when something would be applied, settings as YAML."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import yaml

from cann_distill.reporting.html import Visuals, feedback_blocks, render, selection_caption
from cann_distill.reporting.numbers import headline, wilson_interval
from tests.report_fixtures import synthetic_report


@pytest.fixture(scope="module")
def clear() -> dict[str, Any]:
    """A report whose teacher beats the baseline by far (200 images): TE is meaningful."""
    return synthetic_report(["a", "b", "c"], teacher=0.95, baseline=0.5, student=0.8)[0]


@pytest.fixture(scope="module")
def noisy() -> dict[str, Any]:
    """A teacher barely above the baseline on 40 images: the lead is within the noise."""
    return synthetic_report(["a", "b", "c"], teacher=0.62, baseline=0.6, student=0.61, n=40, seed=3)[0]


def text_of(blocks: list[dict[str, Any]]) -> str:
    out = []
    for b in blocks:
        out.append(str(b.get("text", "")))
        out += ["".join(s["text"] for s in item) for item in b.get("items", [])]
        out.append("".join(s["text"] for s in b.get("segments", [])))
    return " ".join(out)


def test_te_is_shown_when_the_teacher_leads_beyond_the_noise(clear: dict[str, Any]) -> None:
    h = headline(clear)
    assert clear["distillation"]["status"] != "undefined" and h["meaningful"]
    assert h["te"] == pytest.approx(clear["knowledge"]["transfer_efficiency"]["value"]) and "95% CI" in h["te_note"]


def test_te_is_not_meaningful_when_the_lead_is_within_the_noise(noisy: dict[str, Any]) -> None:
    assert noisy["distillation"]["status"] == "undefined"
    h = headline(noisy)
    assert h["te"] is None and h["dqi"] is None and h["te_note"].startswith("not meaningful: ")
    assert noisy["distillation"]["line"] in h["te_note"]
    html = render(noisy, Visuals())
    row = re.search(r"<td>transfer efficiency \(TE\)</td><td>([^<]*)</td><td>([^<]*)</td>", html)
    assert row is not None and row.group(1) == "not meaningful" and "exact McNemar" in row.group(2)


def test_numbers_from_another_split_are_left_out(clear: dict[str, Any]) -> None:
    r = copy.deepcopy(clear)
    r["validate"]["accuracy"]["split"] = "val"
    h = headline(r)
    assert h["split"] == "test" and h["onnx_int8"] is None and "validate measured on val" in h["other_split"]
    assert h["teacher"] == r["knowledge"]["accuracy"]["teacher"]


def test_every_accuracy_names_its_split(clear: dict[str, Any]) -> None:
    html = render(clear, Visuals())
    assert "<th>top-1 on test</th>" in html and "How much knowledge arrived (on test)" in html
    assert re.search(r"<td>teacher–student agreement, all</td><td>[^<]*</td><td>200 test images</td>", html)
    assert "ECE student (test)" in html and "on the test split, 200 images" in html


def test_wilson_interval_matches_known_values() -> None:
    assert wilson_interval(50, 100) == pytest.approx((0.4038, 0.5962), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(10, 10)[1] == 1.0


def feedback(apply: dict[str, Any], gains: list[float]) -> dict[str, Any]:
    sugg = [{"why": f"fix {i}", "changes": {"reduce_range": True}, "int8_acc": 0.5 + g, "gain": g} for i, g in enumerate(gains)]
    return {"triggered": True, "int8_drop": 0.05, "threshold": 0.01, "split": "val", "suggestions": sugg, "apply": apply}


def test_feedback_names_apply_feedback_only_when_something_helps() -> None:
    none = text_of(feedback_blocks(feedback({}, [-0.01, 0.0])))
    assert "--apply-feedback" not in none and "none of the 2 measured fixes raised INT8 accuracy on val" in none
    some = text_of(feedback_blocks({**feedback({"reduce_range": True}, [0.02]), "combined_int8_acc": 0.52}))
    assert "--apply-feedback" in some and "reduce_range: true" in some and "measured INT8 52.00% on val" in some
    quiet = text_of(feedback_blocks({"triggered": False}))
    assert "nothing to suggest" in quiet


def test_settings_are_shown_as_yaml(clear: dict[str, Any]) -> None:
    html = render(clear, Visuals())
    pre = re.search(r'<section id="settings">.*?<pre>(.*?)</pre>', html, re.S)
    assert pre is not None and yaml.safe_load(pre.group(1)) == clear["recipe"]


@pytest.mark.parametrize(
    "policy, resolved, words",
    [
        ("random", "random", "drawn at random (seeded); the scores are ignored"),
        ("auto", "easy", "policy auto → easy: the lowest scores"),
        ("hard", "hard", "policy hard: the highest scores"),
    ],
)
def test_selection_caption_says_what_was_picked_and_how(policy: str, resolved: str, words: str) -> None:
    sel = {
        "strategy": "margin",
        "num_samples": 100,
        "num_critical": 30,
        "ratio": 0.3,
        "selection": {"policy": policy, "resolved": resolved, "class_balanced": True},
    }
    caption = selection_caption(sel)
    assert words in caption and "30 of 100 training samples (30%)" in caption and "'margin'" in caption
