"""Several teachers end to end on tiny digits: each trained with its own artifacts, its logits cached per teacher,
the ensemble's targets in distill, each teacher's accuracy and agreement with the student in report.json; and the
inputs refused before any work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from jsonschema import Draft202012Validator

from cann_distill.core.recipe import ModelConfig, TeacherConfig
from cann_distill.core.recipe_load import load_recipe
from cann_distill.data.loading import load_splits
from cann_distill.models.build import build_model, create_model, save_checkpoint, with_teacher_input
from cann_distill.reporting.schema import schema
from cann_distill.training.loop import predict
from tests.conftest import TINY

pytestmark = pytest.mark.slow

DATA = {"source": "digits", "image_size": 16, "max_samples": 100, "batch_size": 32, "augment": {"enabled": False}}
BASE = {k: v for k, v in TINY.items() if k != "teacher"}  # `teachers:` instead
TEACHERS = [
    {"arch": "test_resnet", "train": {"epochs": 1}},
    {"arch": "test_efficientnet_gn", "weight": 2.0, "mean": [0.4], "std": [0.6], "train": {"epochs": 1}},
]


def run_ok(cli, *args: str) -> dict:
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.stderr
    return {s["stage"]: s for s in json.loads(result.stdout)["stages"]}


def recipe_with(write_recipe, **distill):
    return write_recipe(BASE, data=DATA, teachers=TEACHERS, distill={"epochs": 1, "lr": 0.05, **distill})


def test_two_teachers_train_distill_and_report_each(cli, write_recipe, tmp_path: Path) -> None:
    recipe = recipe_with(write_recipe, ensemble="confidence")
    run = tmp_path / "run"
    for stage in ("teacher", "select"):
        run_ok(cli, stage, recipe)
    assert {p.name for p in (run / "teacher").iterdir()} == {"teacher.pt", "metrics.json", "teacher_1.pt", "metrics_1.json"}
    assert json.loads((run / "teacher" / "metrics_1.json").read_text())["arch"] == "test_efficientnet_gn"
    assert [t["arch"] for t in json.loads((run / "teacher" / "metrics.json").read_text())["teachers"]] == [
        "test_resnet",
        "test_efficientnet_gn",
    ]
    per_teacher = [np.load(run / "select" / f"teacher_logits_{k}.npy") for k in range(2)]
    assert per_teacher[0].shape == per_teacher[1].shape == (80, 10) and not np.array_equal(*per_teacher)

    result = cli("distill", recipe)
    assert result.exit_code == 0, result.stderr
    assert "teachers[1] (test_efficientnet_gn) gets its inputs re-normalised to its own mean/std" in " ".join(result.stderr.split())
    summary = json.loads((run / "distill" / "metrics.json").read_text())
    assert [t["renormalized"] for t in summary["teachers"]] == [False, True]
    assert summary["ensemble"]["rule"] == "confidence" and sum(summary["ensemble"]["chosen_share"]) == pytest.approx(1.0)

    # teacher 1's agreement with the student, recomputed from the two checkpoints
    r = load_recipe(recipe)
    val = load_splits(r.data).val
    cfg = TeacherConfig(arch="test_efficientnet_gn", mean=[0.4], std=[0.6])
    teacher = with_teacher_input(build_model(cfg, 10, 1, checkpoint=run / "teacher" / "teacher_1.pt"), r.data, cfg)
    student = build_model(ModelConfig(arch="test_efficientnet"), 10, 1, checkpoint=run / "distill" / "student.pt")
    t_pred, s_pred = predict(teacher, val).argmax(1), predict(student, val).argmax(1)
    assert summary["teachers"][1]["val_agreement"] == pytest.approx(float((t_pred == s_pred).mean()))
    assert summary["teachers"][1]["val_acc"] == pytest.approx(float((t_pred == val.targets).mean()))

    run_ok(cli, "report", recipe)
    report = json.loads((run / "report" / "report.json").read_text())
    assert [e.message for e in Draft202012Validator(schema()).iter_errors(report)] == []
    modes = report["modes"]["teachers"]
    assert modes["rule"] == "confidence" and [t["arch"] for t in modes["teachers"]] == ["test_resnet", "test_efficientnet_gn"]
    page = (run / "report" / "report.html").read_text()
    assert '<section id="modes">' in page and "Several teachers, combined by confidence." in page

    # online targets: both teachers run on every training batch (80 images, batch 32: 2 batches)
    online = run_ok(cli, "distill", recipe, "--set", "distill.teacher_targets=online", "--set", "distill.ensemble=per_teacher")
    assert online["distill"]["summary"]["teacher"]["teacher_forwards"] == 2 * 2
    # nothing changed: every stage is up to date
    for stage in ("teacher", "select", "distill"):
        again = run_ok(cli, stage, recipe, "--set", "distill.teacher_targets=online", "--set", "distill.ensemble=per_teacher")
        assert again[stage]["status"] == "skipped"


def test_teachers_replay_targets_have_an_entry_per_teacher(cli, write_recipe) -> None:
    recipe = recipe_with(write_recipe, teacher_targets="replay", ensemble="mean")
    run_ok(cli, "teacher", recipe)
    select = run_ok(cli, "select", recipe)["select"]["summary"]
    keys = [t["replay"]["key"] for t in select["teachers"]]
    assert len(set(keys)) == 2 and select["replay"]["key"] == keys[0]
    summary = run_ok(cli, "distill", recipe)["distill"]["summary"]
    assert summary["teacher"]["cache_keys"] == keys and summary["ensemble"]["weights"] == pytest.approx([1 / 3, 2 / 3])


def other_classes_checkpoint(tmp_path: Path) -> str:
    path = tmp_path / "three.pt"
    save_checkpoint(path, create_model("test_resnet", 3, 1), "test_resnet", 3, 1, classes=["cat", "dog", "owl"])
    return str(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda tmp: {"teachers": [TEACHERS[0], {"arch": "test_resnet", "checkpoint": other_classes_checkpoint(tmp)}]},
            "teachers[1].checkpoint: trained on other classes than the data: 3 classes (cat, dog, owl), the data has 10",
        ),
        (lambda tmp: {"teachers": [{**t, "weight": 0.0} for t in TEACHERS]}, "teachers: every weight is 0"),
        (lambda tmp: {"teachers": TEACHERS, "teacher": {"arch": "test_vit"}}, "teacher: set either teacher or teachers"),
        (lambda tmp: {"teachers": TEACHERS[:1]}, "teachers: List should have at least 2 items"),
        (
            lambda tmp: {
                "teachers": TEACHERS,
                "distill": {"losses": [{"kind": "ce"}, {"kind": "at", "student": "1", "teacher": "layer1"}]},
            },
            "distill.losses[1] (at): reads teacher features, which several teachers do not combine",
        ),
        (lambda tmp: {"distill": {"ensemble": "mean"}}, "distill.ensemble: only read with several teachers"),
    ],
)
def test_bad_teachers_stop_before_any_work_with_one_line(cli, write_recipe, tmp_path: Path, change, message) -> None:
    recipe = write_recipe(BASE, data=DATA, **change(tmp_path))
    result = cli("run", recipe)
    assert result.exit_code == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and message in errors[0]
    assert not (tmp_path / "run" / "teacher").exists()
