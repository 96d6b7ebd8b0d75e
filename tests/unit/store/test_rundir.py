import json
from pathlib import Path

import pytest

from cann_distill.core.errors import ArtifactError, MissingInputError, StageError
from cann_distill.core.files import atomic_path, sha256_file, write_json_atomic
from cann_distill.store.rundir import RunDir, StageRecord


def test_atomic_path_keeps_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    write_json_atomic(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_staging_replaces_stage_dir_only_on_success(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    with run.staging("distill") as out:
        (out / "student.pt").write_text("v1")
    assert (tmp_path / "distill" / "student.pt").read_text() == "v1"
    with pytest.raises(KeyboardInterrupt):
        with run.staging("distill") as out:
            (out / "student.pt").write_text("half-written")
            raise KeyboardInterrupt
    assert (tmp_path / "distill" / "student.pt").read_text() == "v1"
    assert not list(tmp_path.glob(".*staging"))


def test_require_names_the_stage_to_run_and_detects_tampering(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    with pytest.raises(MissingInputError, match=r"run `cann-distill select` first"):
        run.require("select", "select/index.csv", "distill")
    (tmp_path / "select").mkdir()
    f = tmp_path / "select" / "index.csv"
    f.write_text("id\n")
    run.write_record("select", StageRecord("fp", {}, {"select/index.csv": sha256_file(f)}, 0.0, 1.0))
    assert run.require("select", "select/index.csv", "distill")[0] == f
    f.write_text("id\nedited\n")
    with pytest.raises(ArtifactError, match="hash does not match"):
        run.require("select", "select/index.csv", "distill")


def test_corrupt_manifest_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match=r"manifest\.json is unreadable \(.*\); rerun the command with --force to rebuild"):
        RunDir(tmp_path).read_manifest()


def test_records_vouch_only_for_their_own_verified_files(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    for stage, name in (("teacher", "teacher.pt"), ("select", "index.csv")):
        (tmp_path / stage).mkdir()
        (tmp_path / stage / name).write_text(stage)
    teacher = StageRecord("fp", {}, {"teacher/teacher.pt": sha256_file(tmp_path / "teacher" / "teacher.pt")}, 0.0, 1.0)
    select = StageRecord(
        "fp",
        {"artifacts": {"teacher/teacher.pt": teacher.outputs["teacher/teacher.pt"]}},
        {"select/index.csv": sha256_file(tmp_path / "select" / "index.csv")},
        0.0,
        1.0,
    )
    run.write_record("teacher", teacher)
    run.write_record("select", select)
    assert json.loads(run.record_path("select").read_text())["outputs"] == select.outputs
    assert list(run.verified_records(["teacher", "select"])) == ["teacher", "select"]
    # made from another teacher than the one on disk: not kept
    (tmp_path / "teacher" / "teacher.pt").write_text("another teacher")
    assert list(run.verified_records(["teacher", "select"])) == []
    # a record that claims files outside its own folder is not kept either
    run.write_record("teacher", StageRecord("fp", {}, {"select/index.csv": select.outputs["select/index.csv"]}, 0.0, 1.0))
    assert "teacher" not in run.verified_records(["teacher"])
    run.forget("teacher")
    assert not run.record_path("teacher").exists() and run.record("teacher") is None
    run.record_path("select").write_text("{")
    assert run.verified_records(["select"]) == {}


def test_lock_rejects_a_second_writer(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    with run.lock():
        with pytest.raises(StageError, match="in use by another"):
            with RunDir(tmp_path).lock():
                pass
    with run.lock():  # released
        pass
