"""distill end to end: feature taps and connectors, the exported plain student, Ctrl-C + --resume, bad taps."""

import json
from pathlib import Path

import pytest
import torch

from cann_distill.models.build import create_model, load_weights, read_checkpoint
from cann_distill.teaching.distiller import Distiller

pytestmark = pytest.mark.slow

DATA = {"source": "digits", "image_size": 16, "max_samples": 100, "batch_size": 32}
TEACHER = {"arch": "test_resnet", "train": {"epochs": 1}}
MGD = {
    "epochs": 2,
    "lr": 0.05,
    "warmup_epochs": 0.5,
    "grad_clip": 5.0,
    "ema_decay": 0.5,
    "select_best": True,
    "losses": [
        {"kind": "ce", "weight": 0.3},
        {"kind": "kd", "weight": 0.3},
        {"kind": "cw_mse", "weight": 0.3, "student": "2", "teacher": "2"},
        {"kind": "at", "weight": 0.1, "student": "1", "teacher": "layer1"},
    ],
}


def run_ok(cli, *args: str) -> dict:
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.stderr
    return {s["stage"]: s for s in json.loads(result.stdout)["stages"]}


def test_feature_distill_exports_the_plain_student_and_resumes(cli, write_recipe, tmp_path: Path, monkeypatch) -> None:
    recipe = write_recipe(data=DATA, teacher=TEACHER, distill=MGD)
    run = tmp_path / "run"
    summary = run_ok(cli, "run", recipe, "--set", "validate.latency.runs=5")["distill"]["summary"]
    assert summary["teacher"]["forward"] and summary["teacher"]["taps"] == ["2", "layer1"]
    assert list(summary["connectors"]) == ["2__2"] and summary["channel_sensitivity"] == {"2": "miss"}
    assert summary["weights"] == "ema (best)" and summary["best_epoch"] in (1, 2)
    metrics = json.loads((run / "distill" / "metrics.json").read_text())
    for row in metrics["history"]:
        assert {"loss", "ce", "kd", "cw_mse", "at", "lr", "val_acc", "best_val_acc", "grad_norm"} <= set(row)
    plain = create_model("test_efficientnet", 10, 1)
    load_weights(plain, read_checkpoint(run / "distill" / "student.pt"), "test_efficientnet", "student.pt")  # strict: no connectors
    assert not (run / ".distill.resume.pt").exists()
    reference = torch.load(run / "distill" / "student.pt", weights_only=True)["state_dict"]

    # Ctrl-C in the second epoch keeps a resumable checkpoint; --resume finishes with the same weights
    calls = {"n": 0}
    original = Distiller.loss

    def interrupted(self, outputs, sample_weight=None):
        calls["n"] += 1
        if calls["n"] == 4:  # 2 batches per epoch (80 images, batch 32, the last 16 dropped): epoch 2, step 2
            raise KeyboardInterrupt
        return original(self, outputs, sample_weight)

    monkeypatch.setattr(Distiller, "loss", interrupted)
    result = cli("distill", recipe, "--force")
    assert result.exit_code == 130 and "saved" in result.stderr and "--resume" in result.stderr
    assert (run / ".distill.resume.pt").is_file()
    monkeypatch.setattr(Distiller, "loss", original)

    result = cli("distill", recipe, "--resume", "--set", "distill.lr=0.01")
    assert result.exit_code == 2
    assert "was saved by another configuration" in [line for line in result.stderr.splitlines() if line.startswith("Error:")][0]

    resumed = run_ok(cli, "distill", recipe, "--resume")["distill"]
    assert resumed["status"] == "done" and resumed["summary"]["resumed_from"] == {"epoch": 2, "step": 2}
    state = torch.load(run / "distill" / "student.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(state[k], v) for k, v in reference.items())
    assert not (run / ".distill.resume.pt").exists()


def test_bad_tap_fails_before_training_with_one_line(cli, write_recipe) -> None:
    recipe = write_recipe(data=DATA, teacher={"arch": "test_resnet", "train": {"epochs": 0}}, distill={"epochs": 1})
    result = cli("run", recipe, "--set", "distill.losses=[{kind: ce}, {kind: fitnet, student: '9', teacher: '2'}]")
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert errors == [
        "Error: distill.losses[1].student: layer '9' not in test_efficientnet's taps "
        "(valid: 0, 1, 2, 3, 4 or a module path like blocks.2.0)"
    ]


def test_distill_and_baseline_warm_up_by_default(cli, write_recipe, tmp_path: Path) -> None:
    """SGD at full lr from the first step let the KD term (about twice CE's gradient at the start) throw the
    student off: the distilled student ended below its baseline on photos. Both now ramp up over one epoch."""
    recipe = write_recipe(data=DATA, teacher=TEACHER, distill={"epochs": 4, "lr": 0.05}, report={"baseline": True})
    for stage in ("teacher", "select", "distill", "baseline"):
        run_ok(cli, stage, recipe)
    for stage in ("distill", "baseline"):
        history = json.loads((tmp_path / "run" / stage / "metrics.json").read_text())["history"]
        lrs = [row["lr"] for row in history]
        # the end of epoch 1 is the end of the warmup: the peak lr, then the cosine over the 3 epochs left
        assert lrs[0] == pytest.approx(0.05) and lrs[1] == pytest.approx(0.05 * 0.75) and lrs[-1] == pytest.approx(0.0, abs=1e-9)
