"""A damaged or foreign manifest: the error says what --force will do, and --force does exactly that."""

import json
from pathlib import Path

import pytest

from cann_distill.core.files import sha256_file

pytestmark = pytest.mark.slow

QUICK = {"teacher": {"arch": "test_resnet", "train": {"epochs": 1}}}


def error_line(result) -> str:
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    return line


def statuses(result) -> dict[str, str]:
    assert result.exit_code == 0, result.stderr
    return {s["stage"]: s["status"] for s in json.loads(result.stdout)["stages"]}


def assert_manifest_matches_disk(run: Path) -> None:
    manifest = json.loads((run / "manifest.json").read_text())
    for rec in manifest["stages"].values():
        for rel, digest in rec["outputs"].items():
            assert sha256_file(run / rel) == digest, rel


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda text: text[: len(text) // 2], r"is unreadable \(.*: line \d+ column \d+\)"),
        (lambda text: "[]", r"is not a cann-distill manifest \(a JSON array\)"),
        (lambda text: '{"version": 1, "stages": {"teacher": 5}}', r"is damaged \(the record of teacher is malformed\)"),
        (lambda text: '{"version": 7, "stages": {}}', r"has manifest version 7"),
    ],
)
def test_damaged_manifest_is_rebuilt_from_verified_records(damage, problem, cli, write_recipe, tmp_path: Path) -> None:
    import re

    recipe = write_recipe(**QUICK)
    run = tmp_path / "run"
    assert statuses(cli("teacher", recipe, "--json")) == {"teacher": "done"}
    assert statuses(cli("select", recipe, "--json")) == {"select": "done"}
    good = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(damage((run / "manifest.json").read_text()))

    result = cli("select", recipe)
    assert result.exit_code == 1
    line = error_line(result)
    assert re.search(problem, line), line
    assert line.endswith(
        "rerun with --force: it is moved aside, rebuilt with teacher, select from their verified artifacts, and nothing rerun"
    )

    result = cli("select", recipe, "--force", "--json")
    assert statuses(result) == {"select": "skipped"}
    (warning,) = [line for line in result.stderr.splitlines() if line.startswith("Warning: ")]
    assert re.search(problem, warning) and "; moved to manifest.json.damaged-" in warning
    assert warning.endswith("rebuilt teacher, select from their verified artifacts; nothing to rerun")
    assert json.loads((run / "manifest.json").read_text())["stages"] == good["stages"]
    (aside,) = run.glob("manifest.json.damaged-*")
    assert aside.read_text() == damage(json.dumps(good, indent=2) + "\n")  # moved aside, not deleted


def test_unverifiable_stages_rerun_and_the_message_says_so(cli, write_recipe, tmp_path: Path) -> None:
    recipe = write_recipe(**QUICK)
    run = tmp_path / "run"
    assert statuses(cli("teacher", recipe, "--json")) == {"teacher": "done"}
    assert statuses(cli("select", recipe, "--json")) == {"select": "done"}
    (run / "select" / "index.csv").write_text("id\n")  # select's artifact no longer matches its record
    (run / "manifest.json").write_text("{")
    result = cli("select", recipe)
    assert error_line(result).endswith("rebuilt with teacher from its verified artifacts, and select reruns")
    result = cli("select", recipe, "--force", "--json")
    assert statuses(result) == {"select": "done"}
    assert "rebuilt teacher from its verified artifacts; rerunning select" in result.stderr
    assert_manifest_matches_disk(run)

    # no records at all (a run dir from before records existed): nothing is trusted, everything reruns
    (run / "manifest.json").write_text("garbage")
    for rec in (run / ".records").iterdir():
        rec.unlink()
    result = cli("teacher", recipe, "--force", "--json")
    assert statuses(result) == {"teacher": "done"}
    assert "rebuilt no stage (none could be verified); rerunning teacher" in result.stderr
    assert statuses(cli("select", recipe, "--json")) == {"select": "done"}
    assert_manifest_matches_disk(run)
