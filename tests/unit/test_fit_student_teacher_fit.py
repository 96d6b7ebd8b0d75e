"""fit-student shows each candidate's capacity gap to the teacher and warns when the teacher's recorded val top-1 is
not clearly above a candidate's probe."""

import json
from pathlib import Path

import numpy as np
import pytest

from cann_distill.cli.render import gap_cell
from cann_distill.core.recipe import Recipe, ValidateConfig, hardware_profile
from cann_distill.fit_student import Setup, candidate_fit
from cann_distill.models.build import count_params, create_model


def test_each_candidate_gets_its_gap_and_a_near_probe_is_flagged(tmp_path: Path) -> None:
    recipe = Recipe.model_validate({"teacher": {"arch": "test_resnet"}, "student": {"arch": "test_efficientnet"}})
    setup = Setup(
        10,
        1,
        16,
        np.zeros((1, 1, 16, 16), np.float32),
        np.zeros((1, 1, 16, 16), np.float32),
        ValidateConfig(),
        hardware_profile("cpu"),
        "CPUExecutionProvider",
    )
    (tmp_path / "teacher").mkdir()
    (tmp_path / "teacher" / "metrics.json").write_text(json.dumps({"arch": "test_resnet", "val_acc": 0.80}))
    teacher_params = count_params(create_model("test_resnet", 10, 1))
    rows = [
        {"arch": "tiny", "params": teacher_params // 20, "flops": 1_000, "probe": {"val_acc": 0.60}},
        {"arch": "close", "params": teacher_params // 2, "flops": None, "probe": {"val_acc": 0.795}},
        {"arch": "unprobed", "params": teacher_params // 4, "flops": 2_000},
    ]
    fit = candidate_fit(recipe, setup, rows, tmp_path)
    assert fit["teacher"]["arch"] == "test_resnet" and fit["teacher"]["params"] == teacher_params and fit["teacher"]["val_acc"] == 0.80
    by = {r["arch"]: r["teacher_fit"] for r in rows}
    assert by["tiny"]["params_ratio"] == pytest.approx(teacher_params / (teacher_params // 20)) and by["tiny"]["large"]
    assert by["tiny"]["flops_ratio"] == pytest.approx(fit["teacher"]["flops"] / 1_000)
    assert by["close"]["flops_ratio"] is None and not by["close"]["large"]
    assert by["tiny"]["teacher_vs_probe"]["status"] == "leads" and by["close"]["teacher_vs_probe"]["status"] == "near"
    assert "teacher_vs_probe" not in by["unprobed"]
    assert [(a["arch"], a["kind"]) for a in fit["advice"]] == [("close", "teacher_near_probe")]
    assert gap_cell(by["tiny"]).endswith(" !") and gap_cell(by["close"]) == f"{by['close']['params_ratio']:.1f}× / ?"
