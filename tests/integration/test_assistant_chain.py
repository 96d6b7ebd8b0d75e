"""distill.chain (teacher-assistant knowledge distillation) end to end on tiny digits: one distillation per hop, each
hop's student the next hop's teacher, Ctrl-C + --resume across hops; and the chains refused before any work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cann_distill.core.recipe import ModelConfig
from cann_distill.core.recipe_load import load_recipe
from cann_distill.data.loading import load_splits
from cann_distill.models.build import build_model
from cann_distill.teaching.distiller import Distiller
from cann_distill.training.loop import predict

pytestmark = pytest.mark.slow

DATA = {"source": "digits", "image_size": 16, "max_samples": 100, "batch_size": 32, "augment": {"enabled": False}}
TEACHER = {"arch": "test_resnet", "train": {"epochs": 1}}
CHAIN = ["test_resnet", "test_nfnet", "test_efficientnet"]  # 373k -> 192k -> 101k parameters


def run_ok(cli, *args: str) -> dict:
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.stderr
    return {s["stage"]: s for s in json.loads(result.stdout)["stages"]}


def test_each_hop_teaches_the_next_and_resumes_across_hops(cli, write_recipe, tmp_path: Path, monkeypatch) -> None:
    recipe = write_recipe(data=DATA, teacher=TEACHER, distill={"epochs": 1, "lr": 0.05, "chain": CHAIN})
    run = tmp_path / "run"
    for stage in ("teacher", "select"):
        run_ok(cli, stage, recipe)
    summary = run_ok(cli, "distill", recipe)["distill"]["summary"]
    assert [(h["hop"], h["teacher"], h["student"]) for h in summary["chain"]] == [(1, *CHAIN[:2]), (2, *CHAIN[1:])]
    assert summary["chain"][0]["student_params"] > summary["chain"][1]["student_params"] == summary["params"]
    assert {p.name for p in (run / "distill" / "hop_1").iterdir()} == {"student.pt", "metrics.json", "train_logits.npy"}
    # hop 2's cached targets are the assistant's logits over the training split
    train = load_splits(load_recipe(recipe).data).train
    assistant = build_model(ModelConfig(arch="test_nfnet"), 10, 1, checkpoint=run / "distill" / "hop_1" / "student.pt")
    np.testing.assert_allclose(np.load(run / "distill" / "hop_1" / "train_logits.npy"), predict(assistant, train), rtol=1e-5, atol=1e-5)
    assert json.loads((run / "distill" / "metrics.json").read_text())["chain"] == summary["chain"]
    reference = torch.load(run / "distill" / "student.pt", weights_only=True)["state_dict"]

    # Ctrl-C in the second hop (2 batches a hop): --resume skips the trained hop and continues the second
    calls = {"n": 0}
    original = Distiller.loss

    def interrupted(self, outputs, sample_weight=None):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(self, outputs, sample_weight)

    monkeypatch.setattr(Distiller, "loss", interrupted)
    assert cli("distill", recipe, "--force").exit_code == 130
    assert (run / ".distill.hop1.resume.pt").is_file() and (run / ".distill.resume.pt").is_file()
    monkeypatch.setattr(Distiller, "loss", original)
    resumed = run_ok(cli, "distill", recipe, "--resume")["distill"]["summary"]
    assert resumed["resumed_from"] == {"epoch": 1, "step": 2}
    state = torch.load(run / "distill" / "student.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(state[k], v) for k, v in reference.items())
    assert not list(run.glob(".distill*.resume.pt"))

    run_ok(cli, "report", recipe)
    report = json.loads((run / "report" / "report.json").read_text())
    assert [h["student"] for h in report["modes"]["chain"]] == CHAIN[1:]


@pytest.mark.parametrize(
    ("distill", "message"),
    [
        (
            {"chain": ["test_resnet", "test_efficientnet", "test_nfnet"], "student": "test_nfnet"},
            "distill.chain: hop 2 does not shrink: test_efficientnet (101,334 parameters) -> test_nfnet (191,722)",
        ),
        ({"chain": ["test_nfnet", "test_resnet", "test_efficientnet"]}, "distill.chain[0]: the chain starts at the teacher (test_resnet)"),
        ({"chain": ["test_resnet", "test_efficientnet"]}, "distill.chain: List should have at least 3 items"),
        ({"chain": CHAIN, "teacher_targets": "replay"}, "distill.teacher_targets: replay (the assistants' views are not stored)"),
    ],
)
def test_bad_chains_stop_before_any_work(cli, write_recipe, tmp_path: Path, distill: dict, message: str) -> None:
    distill = dict(distill)
    student = {"arch": distill.pop("student", "test_efficientnet")}
    recipe = write_recipe(data=DATA, teacher=TEACHER, student=student, distill=distill)
    result = cli("run", recipe)
    assert result.exit_code == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and message in errors[0]
    assert not (tmp_path / "run" / "teacher").exists()
