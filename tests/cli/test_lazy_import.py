"""`cann-distill --help` and `cann-distill COMMAND --help` answer without importing torch (seconds saved per call)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
sys.argv = ["cann-distill", *sys.argv[1:]]
from cann_distill.cli import main
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
heavy = sorted(m for m in ("torch", "timm", "torchvision", "onnx", "onnxruntime", "numpy") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy}), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "args",
    [["--help"], ["run", "--help"], ["fit-student", "--help"], ["predict", "--help"], ["status", "--help"], ["--version"], ["nosuch"]],
    ids=" ".join,
)
def test_help_imports_no_torch(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120)
    result = json.loads(proc.stderr.strip().splitlines()[-1])
    assert result["code"] in ((0, None) if args != ["nosuch"] else (2,)), proc.stderr
    assert "Usage" in proc.stdout or "cann-distill" in proc.stdout or "No such command" in proc.stderr
    assert "torch" not in result["heavy"], f"{' '.join(args)} imported {result['heavy']}"


def test_package_names_load_on_first_use() -> None:
    code = (
        "import sys; import cann_distill; assert 'torch' not in sys.modules;"
        "from cann_distill import load_recipe, run_pipeline, run_stages, Recipe, StageError;"
        "assert callable(load_recipe) and callable(run_pipeline) and callable(run_stages); print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "ok", proc.stderr
