"""distill.mode: mutual end to end on tiny digits: peers trained together, every one evaluated and kept, the best
on val exported, validated and reported; and the recipes refused before any work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cann_distill.core.recipe import ModelConfig
from cann_distill.core.recipe_load import load_recipe
from cann_distill.data.loading import load_splits
from cann_distill.models.build import build_model, read_checkpoint
from cann_distill.teaching import mutual
from cann_distill.training.loop import predict

pytestmark = pytest.mark.slow

DATA = {"source": "digits", "image_size": 16, "max_samples": 100, "batch_size": 32, "augment": {"enabled": False}}
PEERS = [{"arch": "test_efficientnet"}, {"arch": "test_resnet"}]
MUTUAL = {
    "epochs": 1,
    "lr": 0.05,
    "mode": "mutual",
    "peers": PEERS,
    "losses": [{"kind": "ce", "weight": 1.0}, {"kind": "kd", "weight": 0.5}, {"kind": "dml", "weight": 1.0}],
}
FAST = {"calibration": {"samples": 16}, "latency": {"warmup": 1, "runs": 5}, "feedback": {"search": False, "qad_epochs": 0}}


def run_ok(cli, *args: str) -> dict:
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.stderr
    return {s["stage"]: s for s in json.loads(result.stdout)["stages"]}


def test_peers_train_together_and_the_best_on_val_is_exported(cli, write_recipe, tmp_path: Path, monkeypatch) -> None:
    recipe = write_recipe(data=DATA, teacher={"arch": "test_resnet", "train": {"epochs": 1}}, distill=MUTUAL, validate=FAST)
    run = tmp_path / "run"
    for stage in ("teacher", "select"):
        run_ok(cli, stage, recipe)
    # the second peer (not the recipe's student arch) made the best on val, so validate must export that arch
    real = mutual.evaluate_peers

    def second_is_best(*args, **kwargs):
        _, rows = real(*args, **kwargs)
        for row in rows:
            row["exported"] = row["index"] == 1
        return 1, rows

    monkeypatch.setattr("cann_distill.stages.distill.evaluate_peers", second_is_best)
    summary = run_ok(cli, "distill", recipe)["distill"]["summary"]
    assert summary["best_peer"] == 1 and summary["arch"] == "test_resnet"
    assert [p["arch"] for p in summary["peers"]] == ["test_efficientnet", "test_resnet"]
    history = json.loads((run / "distill" / "metrics.json").read_text())["history"]
    assert {"ce", "kd", "dml", "peer1.ce", "peer1.kd", "peer1.dml"} <= set(history[0])
    exported, second = (torch.load(run / "distill" / name, weights_only=True) for name in ("student.pt", "peer_1.pt"))
    assert exported["arch"] == "test_resnet" and all(torch.equal(exported["state_dict"][k], v) for k, v in second["state_dict"].items())
    assert read_checkpoint(run / "distill" / "peer_0.pt")["arch"] == "test_efficientnet"

    # each peer's val accuracy, recomputed from its checkpoint
    val = load_splits(load_recipe(recipe).data).val
    for row in summary["peers"]:
        model = build_model(ModelConfig(arch=row["arch"]), 10, 1, checkpoint=run / "distill" / f"peer_{row['index']}.pt")
        assert row["val_acc"] == pytest.approx(float((predict(model, val).argmax(1) == val.targets).mean()))

    validation = run_ok(cli, "validate", recipe)["validate"]["summary"]
    assert validation["accuracy"]["torch_fp32"] == pytest.approx(summary["peers"][1]["val_acc"])
    run_ok(cli, "report", recipe)
    report = json.loads((run / "report" / "report.json").read_text())
    assert report["modes"]["mutual"]["best_peer"] == 1 and report["modes"]["mutual"]["exported"] == "test_resnet"
    assert '<section id="modes">' in (run / "report" / "report.html").read_text()


@pytest.mark.parametrize(
    ("distill", "message"),
    [
        ({**MUTUAL, "peers": PEERS[:1]}, "distill.peers: mutual learning trains two or more students together, got 1"),
        ({**MUTUAL, "teacher_targets": "replay"}, "distill.teacher_targets: replay stores the teacher's labels of past views"),
        ({**MUTUAL, "losses": [{"kind": "ce"}, {"kind": "kd"}]}, "distill.losses: mutual learning needs a dml term"),
        (
            {"losses": [{"kind": "ce"}, {"kind": "dml"}]},
            "distill.losses[1] (dml): learns from peers, which only distill.mode: mutual trains",
        ),
        ({"peers": PEERS}, "distill.peers: only read with distill.mode: mutual"),
        ({**MUTUAL, "select_best": True}, "distill.select_best: the best epoch of one peer"),
    ],
)
def test_bad_mutual_recipes_stop_before_any_work(cli, write_recipe, tmp_path: Path, distill: dict, message: str) -> None:
    recipe = write_recipe(data=DATA, student={"arch": "test_efficientnet"}, distill=distill)
    result = cli("run", recipe)
    assert result.exit_code == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and message in errors[0]
    assert not (tmp_path / "run" / "teacher").exists()


def test_student_and_peers_must_agree(cli, write_recipe) -> None:
    result = cli("run", write_recipe(data=DATA, student={"arch": "test_vit"}, distill=MUTUAL))
    assert result.exit_code == 2 and "student: set either student or distill.peers" in result.stderr
