"""The report's fit section, from a tiny run dir of untrained checkpoints (nothing is trained): the capacity gap,
the teacher's lead by the report's own paired test, the warning; a chain with an assistant for a large gap."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import torch

from cann_distill.core.recipe import Recipe
from cann_distill.models.build import count_params, create_model, save_checkpoint
from cann_distill.reporting.schema import schema
from cann_distill.stages.base import Context
from cann_distill.stages.report import ReportStage, measure_fit
from cann_distill.store.rundir import RunDir

TINY = {
    "name": "tiny",
    "seed": 0,
    "data": {"source": "digits", "image_size": 16, "max_samples": 120, "batch_size": 32, "augment": {"enabled": False}},
    "teacher": {"arch": "test_resnet"},
    "student": {"arch": "test_efficientnet"},
    "report": {"baseline": True, "samples": 16},
}


def tiny_run(root: Path) -> dict[str, Path]:
    """Untrained teacher, student and baseline checkpoints and the teacher's metrics, as the stages would leave them."""
    torch.manual_seed(0)
    classes = [str(c) for c in range(10)]
    artifacts = {}
    for stage, arch, name in (
        ("teacher", "test_resnet", "teacher.pt"),
        ("distill", "test_efficientnet", "student.pt"),
        ("baseline", "test_efficientnet", "student.pt"),
    ):
        (root / stage).mkdir(parents=True)
        save_checkpoint(root / stage / name, create_model(arch, 10, 1), arch, 10, 1, classes=classes)
        artifacts[f"{stage}/{name}"] = root / stage / name
    (root / "teacher" / "metrics.json").write_text(json.dumps({"arch": "test_resnet", "val_acc": 0.1}))
    artifacts["teacher/metrics.json"] = root / "teacher" / "metrics.json"
    return artifacts


def test_report_of_a_tiny_run_has_the_fit_section(tmp_path: Path) -> None:
    run = tmp_path / "run"
    artifacts = tiny_run(run)
    out = run / "report.tmp"
    out.mkdir()
    ReportStage().execute(Context(Recipe.model_validate(TINY), RunDir(run), out, artifacts=artifacts))
    report = json.loads((out / "report.json").read_text())
    jsonschema.Draft202012Validator(schema()).validate(report)
    fit, k = report["fit"], report["knowledge"]
    gap = fit["capacity"]
    assert gap["teacher"]["params"] == count_params(create_model("test_resnet", 10, 1))
    assert gap["params_ratio"] == pytest.approx(gap["teacher"]["params"] / gap["student"]["params"])
    assert gap["latency_ratio"] is None and "not measured" in gap["latency_note"]
    lead = k["teacher_vs_baseline"]
    assert lead["verdict"] != "better"  # untrained models, seeded: the teacher has no lead beyond the noise
    assert fit["teacher_lead"]["status"] == "not_beyond_noise" and fit["teacher_lead"]["p_value"] == lead["p_value"]
    assert [a["kind"] for a in fit["advice"]] == ["weak_teacher"]
    html = (out / "report.html").read_text()
    assert '<section id="fit">' in html and "distillation cannot be expected to help" in html


def test_a_large_gap_with_low_te_names_an_assistant_between_teacher_and_student() -> None:
    recipe = Recipe.model_validate({**TINY, "teacher": {"arch": "resnet18"}})
    lead = {"verdict": "better", "difference": 0.3, "ci95": [0.25, 0.35], "p_value": 1e-9, "n": 400}
    knowledge = {
        "split": "val",
        "accuracy": {"teacher": 0.9, "baseline": 0.6, "student": 0.63},
        "teacher_vs_baseline": lead,
        "transfer_efficiency": {"value": 0.1},
    }
    fit = measure_fit(recipe, {"distill": {"arch": "test_efficientnet"}}, knowledge, 10)
    [advice] = fit["advice"]
    teacher, assistant, student = advice["chain"]
    assert (teacher, student) == ("resnet18", "test_efficientnet") and fit["capacity"]["large"]
    assert fit["capacity"]["student"]["params"] < advice["assistant_params"] < fit["capacity"]["teacher"]["params"]
    assert advice["assistant_params"] == count_params(create_model(assistant, 10, 1))
    chained = measure_fit(recipe, {"distill": {"arch": "test_efficientnet", "chain": [{"hop": 1}]}}, knowledge, 10)
    assert chained["advice"] == [] and chained["chained"]
