"""`check` prints the teacher–student capacity gap and warns when the run dir's teacher is not clearly better than
fit-student's probe of the student."""

from __future__ import annotations

import json
from pathlib import Path

from cann_distill.models.build import count_params, create_model


def flat(text: str) -> str:
    return " ".join(text.split())


def write_probe(run: Path, teacher_arch: str, teacher_acc: float, student_arch: str, probe_acc: float) -> None:
    (run / "teacher").mkdir(parents=True)
    (run / "teacher" / "metrics.json").write_text(json.dumps({"arch": teacher_arch, "val_acc": teacher_acc}))
    (run / "fit").mkdir()
    row = {"arch": student_arch, "status": "ok", "probe": {"val_acc": probe_acc, "epochs": 1}}
    (run / "fit" / "fit_student.json").write_text(json.dumps({"candidates": [row]}))


def test_check_prints_the_capacity_gap(cli, write_recipe) -> None:
    recipe = write_recipe()  # test_resnet teaches test_efficientnet, 1 channel, 10 classes, 16 px
    ratio = count_params(create_model("test_resnet", 10, 1)) / count_params(create_model("test_efficientnet", 10, 1))
    result = cli("check", recipe)
    assert result.exit_code == 0, result.stderr
    err = flat(result.stderr)
    assert "capacity gap teacher test_resnet → student test_efficientnet: params" in err
    assert f"= {ratio:.1f}×; FLOPs" in err and "(moderate: params and FLOPs ratios below 10×)" in err
    assert "Warning" not in err  # no run dir yet: nothing to compare the teacher with
    out = json.loads(cli("check", recipe, "--json").stdout)["fit"]
    assert out["capacity"]["params_ratio"] == ratio and out["capacity"]["flops_ratio"] > 1
    assert out["capacity"]["latency_ratio"] is None and out["teacher_vs_probe"] is None and out["advice"] == []


def test_check_warns_when_the_teacher_is_near_the_students_probe(cli, write_recipe, tmp_path: Path) -> None:
    recipe = write_recipe()
    write_probe(tmp_path / "run", "test_resnet", 0.80, "test_efficientnet", 0.79)
    [advice] = json.loads(cli("check", recipe, "--json").stdout)["fit"]["advice"]
    assert advice["kind"] == "teacher_near_probe"
    result = cli("check", recipe)
    assert result.exit_code == 0, result.stderr
    err = flat(result.stderr)
    assert "Warning: the teacher's val top-1 (80.00%) is within 2 pt of the test_efficientnet probe's (79.00%, +1.00 pt)" in err
    # metrics of another teacher arch say nothing about this one
    other = write_recipe(teacher={"arch": "resnet10t"}, name="other.yaml")
    assert json.loads(cli("check", other, "--json").stdout)["fit"]["teacher_vs_probe"] is None
