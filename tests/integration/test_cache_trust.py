"""Issue 9: a teacher-logit cache entry swapped for another teacher's, sidecar re-hashed, is refused by select."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cann_distill.core.files import sha256_file

pytestmark = pytest.mark.slow

QUICK_TEACHER = {"arch": "test_resnet", "train": {"epochs": 1}}


def select_summary(cli, recipe: Path, *args: str) -> tuple[dict, str]:
    result = cli("select", recipe, "--json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["stages"][0]["summary"], " ".join(result.stderr.split())


def test_swapped_and_replaced_entries_are_refused(cli, write_recipe, tmp_path: Path, isolated_cache: Path) -> None:
    recipe_a = write_recipe(teacher=QUICK_TEACHER)
    recipe_b = write_recipe(name="b.yaml", run_dir=str(tmp_path / "run_b"), seed=1, teacher=QUICK_TEACHER)
    for recipe in (recipe_a, recipe_b):
        assert cli("teacher", recipe).exit_code == 0
    a, _ = select_summary(cli, recipe_a)
    b, _ = select_summary(cli, recipe_b)
    assert a["cache"] == b["cache"] == "miss" and a["cache_key"] != b["cache_key"]
    logits_a = np.load(tmp_path / "run" / "select" / "teacher_logits.npy")
    entries = isolated_cache / "teacher_outputs"
    npy_a, side_a = entries / f"{a['cache_key']}.npy", entries / f"{a['cache_key']}.json"
    npy_b, side_b = entries / f"{b['cache_key']}.npy", entries / f"{b['cache_key']}.json"

    # teacher B's entry copied over teacher A's, the sidecar's key edited (its hash matches the content)
    shutil.copyfile(npy_b, npy_a)
    side_a.write_text(json.dumps({**json.loads(side_b.read_text()), "key": a["cache_key"]}))
    summary, err = select_summary(cli, recipe_a, "--force")
    assert summary["cache"] == "invalid"
    assert "was produced with different weights (weights: " in err and "recomputing" in err
    assert np.array_equal(np.load(tmp_path / "run" / "select" / "teacher_logits.npy"), logits_a)

    # B's logits written into A's entry with A's own sidecar, sha256 updated: the spot check sees it
    meta = json.loads(side_a.read_text())
    shutil.copyfile(npy_b, npy_a)
    side_a.write_text(json.dumps({**meta, "sha256": sha256_file(npy_a)}))
    summary, err = select_summary(cli, recipe_a, "--force")
    assert summary["cache"] == "invalid" and "does not match the teacher on 8 spot-checked samples" in err
    assert np.array_equal(np.load(tmp_path / "run" / "select" / "teacher_logits.npy"), logits_a)

    # and the honest entry is a hit again
    assert select_summary(cli, recipe_a, "--force")[0]["cache"] == "hit"
