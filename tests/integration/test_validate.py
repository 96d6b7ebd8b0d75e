"""validate: per-layer gap, deployment gate (--strict), providers, and the feedback loop (--apply-feedback)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from cann_distill.api import run_stages
from cann_distill.core.recipe_load import load_recipe
from cann_distill.data.loading import load_splits
from cann_distill.models.build import create_model
from cann_distill.quant import ort as q
from cann_distill.quant.export import export_onnx
from cann_distill.quant.gap import layer_gap

pytestmark = pytest.mark.slow


def quantized_gap(model: torch.nn.Module, work: Path) -> list[dict]:
    x = np.random.default_rng(0).standard_normal((64, 1, 16, 16)).astype(np.float32)
    export_onnx(model, work / "f.onnx", 1, 16, 17)
    q.preprocess(work / "f.onnx", work / "p.onnx")
    q.quantize_int8(work / "p.onnx", work / "q.onnx", x[:32], q.choose_scheme("auto", "auto", q.cpu_features()), True, "minmax")
    return layer_gap(work / "p.onnx", work / "q.onnx", x, work)


def test_layer_gap_finds_a_deliberately_damaged_layer(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("test_resnet", 10, 1).eval()
    (tmp_path / "healthy").mkdir()
    healthy = quantized_gap(model, tmp_path / "healthy")
    assert healthy[0]["module"] != "layer2.0.act2"
    # one huge channel in layer2.0's output: per-tensor activation quantization crushes its other channels
    with torch.no_grad():
        model.layer2[0].bn2.bias[0] += 1e5
    (tmp_path / "damaged").mkdir()
    damaged = quantized_gap(model, tmp_path / "damaged")
    worst = damaged[0]
    assert worst["module"] == "layer2.0.act2", [r["module"] for r in damaged[:5]]
    assert worst["gap_db"] > 15 and worst["sqnr_db"] < 20
    assert worst["node"] == "/layer2/layer2.0/act2/Relu"


@pytest.fixture(scope="module")
def distilled(tmp_path_factory) -> tuple[Path, dict]:
    """A tiny run dir with teacher, select and distill done, shared by the CLI tests below."""
    from tests.conftest import TINY

    root = tmp_path_factory.mktemp("validate")
    data = {
        **TINY,
        "run_dir": str(root / "run"),
        "validate": {**TINY["validate"], "gap": {"samples": 32}, "feedback": {"search": True, "max_exclude": 2}},
    }
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    run_stages(load_recipe(path), ["teacher", "select", "distill"])
    return path, data


def test_strict_gate_fails_and_passes(cli, distilled) -> None:
    path, _ = distilled
    result = cli("validate", path, "--strict", "--set", "validate.budgets.params_m=0.0001")
    assert result.exit_code == 1
    assert "Error: deployment gate failed: params_m" in result.stderr
    assert "FAIL" in result.stderr
    result = cli(
        "validate", path, "--strict", "--json", "--set", "validate.budgets.params_m=100", "--set", "validate.budgets.max_accuracy_drop=1.0"
    )
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)["stages"][0]["summary"]
    gate = summary["gate"]
    # 10 timed runs measure no P99: that budget is named as not measured, never passed or failed on the slowest run
    assert {g["budget"] for g in gate} == {"size_mb", "params_m", "max_accuracy_drop"}
    assert all(g["pass"] for g in gate)
    [unmeasured] = summary["gate_not_measured"]
    assert unmeasured["budget"] == "latency_ms_p99" and "P99 needs ≥ 100 timed runs, got 10" in unmeasured["why"]
    assert "budget latency_ms_p99 not checked: P99 needs ≥ 100 timed runs" in result.stderr
    result = cli("validate", path, "--json", "--set", "validate.latency.runs=100")
    assert result.exit_code == 0, result.stderr
    gate = {g["budget"]: g for g in json.loads(result.stdout)["stages"][0]["summary"]["gate"]}
    run = Path(yaml.safe_load(path.read_text())["run_dir"])
    lat = json.loads((run / "validate" / "validation.json").read_text())["latency_batch1"]["int8"]
    assert lat["runs"] == 100 and gate["latency_ms_p99"]["value"] == lat["p99_ms"]
    assert lat["p99_ms"] == pytest.approx(sorted(lat["times_ms"])[98], abs=1e-5)  # the 99th of 100 runs (times kept to 5 decimals)
    # without --strict a failed budget is reported but does not fail the job
    assert cli("validate", path, "--set", "validate.budgets.params_m=0.0001").exit_code == 0


def test_providers(cli, distilled) -> None:
    path, _ = distilled
    result = cli("validate", path, "--provider", "NoSuchExecutionProvider")
    assert result.exit_code == 2
    assert "validate.provider: onnxruntime does not know 'NoSuchExecutionProvider'" in result.stderr
    result = cli("validate", path, "--provider", "CANNExecutionProvider", "--json")
    assert result.exit_code == 0, result.stderr
    assert "CANNExecutionProvider is not available" in result.stderr
    run = Path(yaml.safe_load(path.read_text())["run_dir"])
    v = json.loads((run / "validate" / "validation.json").read_text())
    assert v["provider"] == "CPUExecutionProvider" and "falling back" in v["provider_warning"]


def test_validation_json_measurements(cli, distilled) -> None:
    path, _ = distilled
    assert cli("validate", path).exit_code == 0
    run = Path(yaml.safe_load(path.read_text())["run_dir"])
    v = json.loads((run / "validate" / "validation.json").read_text())
    splits = load_splits(load_recipe(path).data)
    for key, file in (("onnx_fp32", "student_fp32.onnx"), ("onnx_int8", "student_int8.onnx")):
        sess = q.session(run / "validate" / file, "CPUExecutionProvider")
        logits = q.run_logits(sess, np.stack([splits.headline.fetch(i).numpy() for i in range(len(splits.headline))]))
        assert v["accuracy"][key] == float((logits.argmax(1) == splits.headline.targets).mean()), key
        top5 = np.argsort(-logits, axis=1, kind="stable")[:, :5]
        assert v["top5"][key] == float((top5 == splits.headline.targets[:, None]).any(1).mean()), key
    assert v["accuracy"]["int8_drop"] == v["accuracy"]["onnx_fp32"] - v["accuracy"]["onnx_int8"]
    assert v["shipped"]["quantization"] == "ptq" and "ptq" not in v  # without QAD the PTQ model ships, nothing beside it
    assert v["agreement"]["torch_vs_onnx_fp32_top1"] >= 0.99
    assert v["agreement"]["torch_vs_onnx_fp32_max_abs_logit_diff"] < 1e-3
    lat = v["latency_batch1"]["int8"]
    assert lat["median_ms"] <= lat["p90_ms"] <= lat["max_ms"] and lat["p99_ms"] is None  # 10 runs: P90 yes, P99 no
    assert lat["tail"] == {"label": "p90", "value_ms": lat["p90_ms"], "runs": 10}
    # FP32 and INT8 timed in alternating rounds; "INT8 is N× slower" only when the difference exceeds the spread
    cmp = v["latency_batch1"]["comparison"]
    assert len(lat["round_medians_ms"]) == v["latency_batch1"]["rounds"] == 5 and lat["spread_ms"] >= 0
    assert cmp["significant"] == (abs(cmp["difference_ms"]) > cmp["spread_ms"])
    assert any("slower than FP32" in n for n in v["notes"]) == (cmp["verdict"] == "slower")
    assert v["latency_batch1"]["basis"]["kind"] == "measured" and v["latency_batch1"]["load_avg"]["after"] is not None
    assert v["throughput"]["int8_img_s"] > 0 and v["flops"] > 0 and v["params"] > 0
    assert v["int8_optimized_ops"] and v["layer_gap"]["worst"]
    assert v["layer_gap"]["worst"][0]["gap_db"] >= v["layer_gap"]["worst"][-1]["gap_db"]


def test_apply_feedback_writes_a_patched_recipe(cli, distilled, tmp_path: Path, monkeypatch) -> None:
    path, data = distilled
    # whether a real fix helps a tiny model is luck: measure every candidate, but let entropy calibration "win"
    import cann_distill.stages.validate as validate_stage

    real = validate_stage.suggest_fixes

    def rigged(cfg, fb, drop, gap_rows, arch, baseline, scheme, evaluate, **kw):
        def measured(changes):  # every candidate really runs; entropy "gets every image right", the others match the shipped model
            got = evaluate(changes)
            assert set(got) == set(baseline.labels) and all(len(got[k]) == len(baseline.labels[k]) for k in got)
            return dict(baseline.labels) if changes.get("calibration.method") == "entropy" else dict(baseline.pred)

        return real(cfg, fb, drop, gap_rows, arch, baseline, scheme, measured, **kw)

    monkeypatch.setattr(validate_stage, "suggest_fixes", rigged)
    # thresholds so low that every layer is a float candidate: the loop must trigger
    data = {**data, "validate": {**data["validate"], "feedback": {"max_layer_gap_db": 0.001, "max_exclude": 2, "search": True}}}
    recipe = path.with_name("strict_fb.yaml")
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    original_text = recipe.read_text()
    result = cli("validate", recipe, "--apply-feedback", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)["stages"][0]["summary"]
    assert summary["feedback"]["triggered"]
    patched = recipe.with_name("strict_fb.feedback.yaml")
    assert patched.is_file() and recipe.read_text() == original_text  # the user's file is untouched
    new = yaml.safe_load(patched.read_text())
    applied = summary["feedback"]["apply"]
    assert applied
    # differs only where suggested
    assert {k: v for k, v in new.items() if k != "validate"} == {k: v for k, v in data.items() if k != "validate"}
    flat_old, flat_new = _flatten(data["validate"]), _flatten(new["validate"])
    changed = {k for k in flat_old.keys() | flat_new.keys() if flat_old.get(k) != flat_new.get(k)}
    assert changed == set(applied) == {"calibration.method"} and new["validate"]["calibration"]["method"] == "entropy"
    v = json.loads((Path(data["run_dir"]) / "validate" / "validation.json").read_text())
    for s in v["feedback"]["suggestions"]:
        if not s.get("manual"):  # every automatic suggestion was measured on val, paired with the shipped model
            assert s["paired"]["n"] == v["num_val"] and s["paired"]["verdict"] == ("better" if s["gain"] > 0 else "too_few")
    # the patched recipe is valid and re-validates without re-distilling
    result = cli("run", patched, "--json")
    assert result.exit_code == 0, result.stderr
    statuses = {s["stage"]: s["status"] for s in json.loads(result.stdout)["stages"]}
    assert statuses["teacher"] == statuses["select"] == statuses["distill"] == "skipped"
    assert statuses["validate"] == "done"


def test_feedback_measures_and_applies_the_qad_fix(cli, distilled, monkeypatch) -> None:
    """The drop is forced over the budget (a tiny model's real drop is luck); the QAD trial and its INT8 score are real."""
    import cann_distill.stages.validate as validate_stage
    from cann_distill.quant import qad
    from cann_distill.quant.feedback import QAD_ENABLED

    path, data = distilled
    real, real_trial = validate_stage.suggest_fixes, qad.trial_int8
    trials: list[dict] = []

    def trial(*args, **kw):
        trials.append(real_trial(*args, **kw))
        return trials[-1]

    def rigged(cfg, fb, drop, gap_rows, arch, baseline, scheme, evaluate, **kw):
        def measured(changes):  # every candidate really runs; QAD is made to win so that it gets applied
            evaluate(changes)
            return dict(baseline.labels) if QAD_ENABLED in changes else dict(baseline.pred)

        return real(cfg, fb, 0.5, gap_rows, arch, baseline, scheme, measured, **kw)

    monkeypatch.setattr(qad, "trial_int8", trial)
    monkeypatch.setattr(validate_stage, "suggest_fixes", rigged)
    recipe = path.with_name("qad_fb.yaml")
    recipe.write_text(yaml.safe_dump(data, sort_keys=False))
    result = cli("validate", recipe, "--apply-feedback", "--json")
    assert result.exit_code == 0, result.stderr
    num_val = json.loads((Path(data["run_dir"]) / "validate" / "validation.json").read_text())["num_val"]
    assert len(trials) == 1 and trials[0]["val"].shape == (num_val,)  # one class per val image
    assert set(np.unique(trials[0]["val"])) <= set(range(10))
    v = json.loads((Path(data["run_dir"]) / "validate" / "validation.json").read_text())
    [s] = [s for s in v["feedback"]["suggestions"] if QAD_ENABLED in s.get("changes", {})]
    assert s["changes"] == {QAD_ENABLED: True, "distill.qat.epochs": 1} and "run QAD" in s["why"]
    assert v["feedback"]["apply"] == s["changes"]
    assert "feedback applied: distill.qat.enabled, distill.qat.epochs" in recipe.with_name("qad_fb.feedback.yaml").read_text()
    patched = load_recipe(recipe.with_name("qad_fb.feedback.yaml"))
    assert patched.distill.qat.enabled and patched.distill.qat.epochs == 1
    assert patched.validate_ == load_recipe(recipe).validate_


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_export_failure_names_the_op_and_layer(tmp_path: Path) -> None:
    from cann_distill.core.errors import StageError

    class Spectrum(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.fft.rfft(x, dim=-1).abs()

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = torch.nn.Conv2d(1, 4, 3)
            self.block = torch.nn.Sequential(torch.nn.ReLU(), Spectrum())

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.block(self.stem(x)).mean((2, 3))

    with pytest.raises(StageError, match=r"failed \(op aten::fft_rfft in layer 'block\.1'\)"):
        export_onnx(Net().eval(), tmp_path / "net.onnx", 1, 8, 17)
