import json
from pathlib import Path

import pytest

from cann_distill.errors import ArtifactError, MissingInputError, StageError
from cann_distill.rundir import RunDir, StageRecord, atomic_path, sha256_file, write_json_atomic


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
    with pytest.raises(ArtifactError, match="corrupt manifest"):
        RunDir(tmp_path).read_manifest()


def test_lock_rejects_a_second_writer(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    with run.lock():
        with pytest.raises(StageError, match="in use by another"):
            with RunDir(tmp_path).lock():
                pass
    with run.lock():  # released
        pass
