"""`cann-distill env`: versions, CPU features, devices and onnxruntime providers, as text and as JSON."""

from __future__ import annotations

import json

import onnxruntime as ort

from cann_distill.core.version import __version__
from cann_distill.runtime.environment import cpuinfo

X86 = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Example Xeon
flags\t\t: fpu sse4_2 avx avx2 fma avx512f avx512_vnni
processor\t: 1
model name\t: Example Xeon
flags\t\t: fpu
"""
ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd asimddp i8mm sve
CPU implementer\t: 0x41
"""


def test_env_json_holds_what_a_bug_report_needs(cli) -> None:
    result = cli("env", "--json")
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["versions"]["cann-distill"] == __version__ and info["versions"]["onnxruntime"] == ort.__version__
    assert info["onnxruntime"]["available_providers"] == ort.get_available_providers()
    assert "cpu" in info["torch"]["devices"]
    assert info["cpu"]["cores"] >= 1 and isinstance(info["cpu"]["flags"], dict)


def test_env_text_names_versions_flags_and_providers(cli) -> None:
    result = cli("env")
    assert result.exit_code == 0
    text = " ".join(result.stderr.split())
    assert f"cann-distill {__version__}" in text and "onnxruntime providers: " in text and "cpu flags: " in text


def test_cpuinfo_reads_x86_flags_and_arm_features() -> None:
    x86 = cpuinfo(X86)
    assert x86["model"] == "Example Xeon"
    assert {f for f, on in x86["flags"].items() if on} == {"sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni"}
    assert x86["flags"]["avx_vnni"] is False  # from the first processor's line only
    arm = cpuinfo(ARM)
    assert {f for f, on in arm["flags"].items() if on} == {"asimd", "asimddp", "i8mm", "sve"} and "avx2" not in arm["flags"]
    assert cpuinfo("")["flags"] == {}
