"""distill.teacher_targets end to end: cached / online / replay on tiny digits with augmentation on,
teacher forwards counted, the timing history, and --resume with replay + mixup."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator

import pytest
import torch
from timm.models.resnet import ResNet

from cann_distill.teaching.distiller import Distiller

pytestmark = pytest.mark.slow

DATA = {
    "source": "digits",
    "image_size": 16,
    "max_samples": 300,
    "batch_size": 32,
    "augment": {"enabled": True, "scale": [0.5, 1.0], "ratio": [0.8, 1.25], "hflip": 0.0, "color_jitter": 0.2},
}


def run_ok(cli, *args: str) -> dict:
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.stderr
    return {s["stage"]: s for s in json.loads(result.stdout)["stages"]}


@contextlib.contextmanager
def teacher_forwards() -> Iterator[list[int]]:
    """Counts forward passes of the teacher (test_resnet is the only ResNet here; the student is an EfficientNet)."""
    count = [0]

    def hook(module: torch.nn.Module, _inp: object) -> None:
        if type(module) is ResNet:
            count[0] += 1

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        yield count
    finally:
        handle.remove()


def test_each_target_source_end_to_end(cli, write_recipe, tmp_path: Path) -> None:
    recipe = write_recipe(data=DATA, distill={"epochs": 2, "lr": 0.05})
    run_ok(cli, "teacher", recipe)
    seen = {}
    for mode in ("cached", "online", "replay"):
        chosen = ("--set", f"distill.teacher_targets={mode}")
        with teacher_forwards() as in_select:
            select = run_ok(cli, "select", recipe, *chosen)["select"]
        with teacher_forwards() as in_distill:
            summary = run_ok(cli, "distill", recipe, *chosen)["distill"]["summary"]
        seen[mode] = (summary, in_select[0], in_distill[0], select)
        assert summary["teacher_targets"] == mode and summary["teacher"]["source"] == mode
        metrics = json.loads((tmp_path / "run" / "distill" / "metrics.json").read_text())
        for row in metrics["history"]:
            assert {"samples_per_s", "data_share", "teacher_share", "student_share", "peak_rss_mb"} <= set(row)
            assert row["data_share"] + row["teacher_share"] + row["student_share"] == pytest.approx(1.0)
        assert summary["throughput"]["samples_per_s"] > 0

    cached, online, replay = seen["cached"][0], seen["online"][0], seen["replay"][0]
    assert cached["teacher"]["views_differ"] and "teacher and student see different views" in cached["teacher"]["note"]
    assert not cached["teacher"]["forward"] and seen["cached"][2] == 0
    assert online["teacher"]["forward"] and seen["online"][2] == 1 + 2 * (240 // 32)  # the shape dry run, then one per training batch
    assert online["teacher"]["why_online"] == ["distill.teacher_targets: online"]
    assert not replay["teacher"]["forward"] and seen["replay"][2] == 0  # distill ran no teacher forward
    assert seen["replay"][1] > 0 and seen["replay"][3]["summary"]["replay"]["draws"] == 2  # select labelled 2 views per sample
    assert replay["teacher"]["draws"] == 2 and replay["teacher"]["top_k"] == 10
    assert "remaining mass spread uniformly" in replay["teacher"]["targets"]
    assert seen["replay"][3]["summary"]["replay_cache"] == "miss"


def test_replay_with_mixup_resumes_bit_exactly(cli, write_recipe, tmp_path: Path, monkeypatch) -> None:
    recipe = write_recipe(
        data={**DATA, "augment": {**DATA["augment"], "mixup_alpha": 0.4, "cutmix_alpha": 1.0}},
        distill={"epochs": 3, "lr": 0.05, "teacher_targets": "replay", "replay": {"draws": 2, "top_k": 4}},
    )
    run_ok(cli, "teacher", recipe)
    run_ok(cli, "select", recipe)
    summary = run_ok(cli, "distill", recipe)["distill"]["summary"]
    assert summary["teacher"]["mixing"].startswith("approximate: the teacher's distributions of the two images are mixed")
    run = tmp_path / "run"
    reference = torch.load(run / "distill" / "student.pt", weights_only=True)["state_dict"]

    calls = {"n": 0}
    original = Distiller.loss

    def interrupted(self, outputs, sample_weight=None):
        calls["n"] += 1
        if calls["n"] == 10:  # 7 batches per epoch: epoch 2, step 3
            raise KeyboardInterrupt
        return original(self, outputs, sample_weight)

    monkeypatch.setattr(Distiller, "loss", interrupted)
    assert cli("distill", recipe, "--force").exit_code == 130
    monkeypatch.setattr(Distiller, "loss", original)
    resumed = run_ok(cli, "distill", recipe, "--resume")["distill"]["summary"]
    assert resumed["resumed_from"] == {"epoch": 2, "step": 3}
    state = torch.load(run / "distill" / "student.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(state[k], v) for k, v in reference.items())
