"""Device resolution, mixed precision per device and worker counts."""

from types import SimpleNamespace

import pytest
import torch

from cann_distill.core.errors import UsageError
from cann_distill.core.recipe_load import load_recipe
from cann_distill.runtime import devices
from cann_distill.runtime.devices import Runtime, device_string, resolve_device, worker_count


def test_auto_prefers_cuda_then_npu_then_cpu(monkeypatch) -> None:
    monkeypatch.setattr(devices, "_cuda_count", lambda: 0)
    monkeypatch.setattr(devices, "_npu_count", lambda: 0)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(devices, "_npu_count", lambda: 2)  # torch.device("npu") itself needs torch_npu imported
    assert device_string("auto") == "npu:0" and device_string("npu:1") == "npu:1" and device_string("cpu") == "cpu"
    monkeypatch.setattr(devices, "_cuda_count", lambda: 1)
    assert device_string("auto") == "cuda:0" and resolve_device("cuda") == torch.device("cuda", 0)


def test_absent_cuda_says_so_and_lists_what_exists(monkeypatch) -> None:
    monkeypatch.setattr(devices, "_cuda_count", lambda: 0)
    monkeypatch.setattr(devices, "_npu_count", lambda: 0)
    with pytest.raises(UsageError) as err:
        resolve_device("cuda")
    msg = str(err.value)
    assert "device 'cuda' is not available" in msg and "available here: cpu" in msg and "\n" not in msg
    monkeypatch.setattr(devices, "_cuda_count", lambda: 2)
    with pytest.raises(UsageError, match=r"'cuda:2' is not available: only 2 CUDA device\(s\).*cpu, cuda:0, cuda:1"):
        resolve_device("cuda:2")
    with pytest.raises(UsageError, match="npu' is not available: torch_npu is not installed"):
        resolve_device("npu")


def test_absent_cuda_through_the_cli_is_exit_2_before_any_work(cli, write_recipe, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(devices, "_cuda_count", lambda: 0)
    result = cli("teacher", write_recipe(), "--device", "cuda")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "Error: device 'cuda' is not available: " + result.stderr.split("available: ", 1)[1].strip()
    ]
    assert not (tmp_path / "run" / "teacher").exists()


def test_unknown_device_is_a_recipe_error(write_recipe) -> None:
    with pytest.raises(Exception, match=r"runtime\.device: String should match pattern"):
        load_recipe(write_recipe(runtime={"device": "tpu"}))


def test_fp16_on_cpu_is_refused_and_bf16_autocasts() -> None:
    cpu = Runtime(torch.device("cpu"))
    with pytest.raises(UsageError, match="fp16 needs a CUDA or NPU device"):
        cpu.check_amp("fp16")
    assert cpu.grad_scaler("bf16") is None and cpu.grad_scaler("none") is None
    with cpu.autocast("bf16"):
        assert torch.nn.Linear(4, 4)(torch.zeros(2, 4)).dtype == torch.bfloat16


def test_channels_last_moves_models_and_batches() -> None:
    rt = Runtime(torch.device("cpu"), channels_last=True)
    conv = rt.model(torch.nn.Conv2d(3, 8, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert rt.batch(torch.zeros(2, 3, 8, 8)).is_contiguous(memory_format=torch.channels_last)
    assert rt.describe()["channels_last"] and rt.describe()["device"] == "cpu"


def test_worker_count_defaults_and_caps(monkeypatch, capsys) -> None:
    from cann_distill.runtime.terminal import ui

    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert worker_count(None) == 1 and worker_count(None, in_memory=True) == 0 and worker_count(2) == 2
    ui.configure(quiet=True)  # as the CLI does: library warnings reach stderr even when quiet
    capsys.readouterr()
    assert worker_count(64) == 2
    assert "Warning: data.num_workers=64 is more than the 2 CPU core(s) here; using 2" in capsys.readouterr().err


def test_channels_last_auto_follows_the_device() -> None:
    from cann_distill.runtime.devices import channels_last_for

    assert channels_last_for(torch.device("cpu"), "auto") is True
    assert channels_last_for(torch.device("cuda", 0), "auto") is True
    npu = SimpleNamespace(type="npu")  # torch.device("npu") itself needs torch_npu imported
    assert channels_last_for(npu, "auto") is False  # Ascend keeps its own formats
    assert channels_last_for(torch.device("cpu"), False) is False
    assert channels_last_for(npu, True) is True  # asked for explicitly


def test_recipe_channels_last_accepts_auto_and_bools_only() -> None:
    from cann_distill.api import make_runtime
    from cann_distill.core.recipe import Recipe

    assert make_runtime(Recipe.model_validate({"runtime": {"device": "cpu"}})).channels_last is True
    assert make_runtime(Recipe.model_validate({"runtime": {"device": "cpu", "channels_last": False}})).channels_last is False
    with pytest.raises(Exception, match="channels_last"):
        Recipe.model_validate({"runtime": {"channels_last": "sometimes"}})
