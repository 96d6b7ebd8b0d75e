"""Two CPU processes (gloo) through torchrun against one process, on the same teacher.

select: the sharded teacher pass and the sharded replay draws merge into the very index and cache
entries one process writes.
distill: rank 0 alone writes; the 2-process student's val accuracy is within VAL_TOLERANCE of the
1-process one (same global batches; the ranks differ only in BatchNorm statistics and float
summation order). A rank killed mid-epoch stops the other with one clear line and leaves nothing
half-written, and 1 process resumes the 2-process checkpoint. A batch size the world size does not
divide is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cann_distill.stages.distill import RESUME
from tests.conftest import TINY

pytestmark = pytest.mark.slow

VAL_TOLERANCE = 0.10  # 2 epochs on 160 digits at 16 px: seed-level noise of this recipe is several points
RECIPE = {  # conftest's tiny recipe on 200 digits with a 2-epoch teacher, distilled from replayed augmented views
    **TINY,
    "data": {**TINY["data"], "max_samples": 200, "augment": {"scale": [0.7, 1.0], "hflip": 0.0}},
    "teacher": {**TINY["teacher"], "train": {**TINY["teacher"]["train"], "epochs": 2, "warmup_epochs": 0}},
    "select": {**TINY["select"], "batch_size": 64},  # 2 draws × 160 samples = 5 batches of views, sharded 3 + 2
    # no warmup: at 5 steps an epoch the default 1-epoch ramp leaves the 3-epoch student near chance, where one
    # image decides the comparison
    "distill": {**TINY["distill"], "teacher_targets": "replay", "replay": {"draws": 2}, "warmup_epochs": 0},
}
ENV = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}


def torchrun(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "cann_distill", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **ENV})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(run: Path) -> dict:
    return json.loads((run / "distill" / "metrics.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One teacher (1 process); select and distill once with 1 process and once with 2."""
    import yaml
    from typer.testing import CliRunner

    from cann_distill.cli import app

    root = tmp_path_factory.mktemp("torchrun")
    paths: dict[str, Path] = {"root": root}
    for name in ("one", "two"):
        recipe = {
            **RECIPE,
            "name": name,
            "run_dir": str(root / name),
            "select": {**RECIPE["select"], "cache_dir": str(root / f"cache_{name}")},
        }
        paths[name], paths[f"{name}.yaml"] = root / name, root / f"{name}.yaml"
        paths[f"{name}.yaml"].write_text(yaml.safe_dump(recipe, sort_keys=False))
    cli = CliRunner()
    assert cli.invoke(app, ["teacher", str(paths["one.yaml"]), "-q"]).exit_code == 0
    shutil.copytree(root / "one", root / "two")  # the same teacher checkpoint (and its manifest record) for both
    for stage in ("select", "distill"):
        res = cli.invoke(app, [stage, str(paths["one.yaml"]), "-q"])
        assert res.exit_code == 0, res.output
        two = torchrun(stage, str(paths["two.yaml"]), "-q")
        assert two.returncode == 0, two.stderr[-3000:]
        paths[f"{stage}_stderr"] = root / f"{stage}.stderr"
        paths[f"{stage}_stderr"].write_text(two.stderr)
    return paths


def test_select_merges_into_the_single_process_index_and_cache(runs: dict[str, Path]) -> None:
    one, two, root = runs["one"], runs["two"], runs["root"]
    assert (two / "select" / "index.csv").read_bytes() == (one / "select" / "index.csv").read_bytes()
    assert (two / "select" / "teacher_logits.npy").read_bytes() == (one / "select" / "teacher_logits.npy").read_bytes()
    entries = sorted((root / "cache_two" / "teacher_outputs").glob("*.npy"))
    assert [p.name for p in entries] == [p.name for p in sorted((root / "cache_one" / "teacher_outputs").glob("*.npy"))]
    assert len(entries) == 1 and entries[0].read_bytes() == (root / "cache_one" / "teacher_outputs" / entries[0].name).read_bytes()
    # the replay draws: each rank labelled its batches of the 2 × 160 views, rank 0 wrote them into one entry
    draws = sorted(p.relative_to(root / "cache_two") for p in (root / "cache_two" / "teacher_replay").rglob("*.npy"))
    assert len(draws) == 2 and draws == sorted(
        p.relative_to(root / "cache_one") for p in (root / "cache_one" / "teacher_replay").rglob("*.npy")
    )
    for rel in draws:
        assert (root / "cache_two" / rel).read_bytes() == (root / "cache_one" / rel).read_bytes(), rel
    assert json.loads((two / "select" / "summary.json").read_text())["replay"]["shape"] == [2, 160, 10]


def test_two_process_distill_matches_one_and_writes_once(runs: dict[str, Path]) -> None:
    one, two = metrics(runs["one"]), metrics(runs["two"])
    assert two["runtime"]["processes"] == 2 and two["runtime"]["backend"] == "gloo"
    assert abs(two["val_acc"] - one["val_acc"]) <= VAL_TOLERANCE, (one["val_acc"], two["val_acc"])
    assert len(two["history"]) == len(one["history"]) == RECIPE["distill"]["epochs"]
    # rank 0 alone wrote: one stage folder, no leftovers, the manifest vouches for every output
    run = runs["two"]
    assert sorted(p.name for p in run.iterdir() if p.name.startswith(".") and p.name not in (".lock", ".records", ".live")) == []
    manifest = json.loads((run / "manifest.json").read_text())
    assert set(manifest["stages"]["distill"]["outputs"]) == {"distill/metrics.json", "distill/student.pt"}
    assert "rank 1" not in runs["distill_stderr"].read_text()


def test_validate_under_torchrun_runs_on_rank_0_alone_and_says_so(runs: dict[str, Path]) -> None:
    res = torchrun("validate", str(runs["two.yaml"]), timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stderr.count("validate: runs on rank 0 only under torchrun (the other 1 process(es) have finished)") == 1
    assert (runs["two"] / "validate" / "validation.json").is_file()
    manifest = json.loads((runs["two"] / "manifest.json").read_text())
    assert "validate/validation.json" in manifest["stages"]["validate"]["outputs"]


def test_batch_size_not_divisible_is_refused(runs: dict[str, Path]) -> None:
    res = torchrun("distill", str(runs["two.yaml"]), "--set", "distill.batch_size=33", timeout=120)
    assert res.returncode != 0
    assert "Error: distill.batch_size=33: not divisible by the 2 processes of this torchrun job" in res.stderr


def test_qad_and_probe_batch_sizes_are_refused_before_any_stage(tmp_path: Path) -> None:
    """Checked when the job starts, not when QAD begins after the float distillation (or the probe after the teacher)."""
    import yaml

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**RECIPE, "run_dir": str(tmp_path / "run")}, sort_keys=False))
    qad = torchrun("distill", str(recipe), "--set", "distill.qat.enabled=true", "--set", "distill.qat.batch_size=33", timeout=120)
    assert qad.returncode != 0
    assert "Error: distill.qat.batch_size=33: not divisible by the 2 processes of this torchrun job" in qad.stderr
    probe = torchrun("select", str(recipe), "--set", "select.strategy=el2n", "--set", "distill.batch_size=33", timeout=120)
    assert probe.returncode != 0
    assert "Error: distill.batch_size=33: not divisible by the 2 processes of this torchrun job" in probe.stderr
    assert not [p for p in (tmp_path / "run").glob("*") if p.is_dir() and not p.name.startswith(".")]


def test_dead_rank_stops_the_other_and_one_process_resumes(runs: dict[str, Path], tmp_path: Path) -> None:
    """Ranks started by hand (torchrun would SIGTERM the survivor itself): kill rank 1 after the first epoch's checkpoint."""
    run = runs["two"]
    args = [str(runs["two.yaml"]), "--force", "--set", "distill.epochs=5", "--set", "runtime.dist_timeout_s=60"]
    env = {**os.environ, **ENV, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "cann_distill", "distill", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
        )
        for r in (0, 1)
    ]
    resume = run / RESUME
    deadline = time.monotonic() + 180
    while not resume.exists() and time.monotonic() < deadline and procs[0].poll() is None:
        time.sleep(0.01)
    assert resume.exists(), procs[0].communicate()[1]
    procs[1].send_signal(signal.SIGKILL)
    procs[1].wait()
    t0 = time.monotonic()
    _, err = procs[0].communicate(timeout=90)
    assert procs[0].returncode == 1, err
    assert time.monotonic() - t0 < 60
    assert "rank 0/2: another process of this torchrun job stopped or did not answer" in err
    assert resume.exists()
    # the interrupted --force run left distill's previous, complete outputs as the manifest records them
    assert not [p for p in run.iterdir() if p.name.endswith((".staging", ".old", ".tmp"))]

    from typer.testing import CliRunner

    from cann_distill.cli import app

    res = CliRunner().invoke(app, ["distill", *args[:1], "--resume", *args[2:]])
    assert res.exit_code == 0, res.output
    m = metrics(run)
    assert m["resumed_from"]["epoch"] >= 2 and len(m["history"]) == 5
    assert "processes" not in m["runtime"]  # the resumed run was one process
    assert not resume.exists()
