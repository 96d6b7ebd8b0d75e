"""QAT fake quantization against onnxruntime's own static QDQ INT8 (tiny model, 16 px digits)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cann_distill.core.errors import ArtifactError, RecipeError
from cann_distill.quant import ort as q
from cann_distill.quant import qat, qat_export, qat_plan
from cann_distill.quant.export import export_onnx

SIZE = 16


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images[:, None].astype(np.float32) / 16.0)
    x = (F.interpolate(x, size=SIZE, mode="bilinear", align_corners=False) - 0.5) / 0.5
    return x.numpy(), d.target.astype(np.int64)


@pytest.fixture(scope="module")
def trained(digits: tuple[np.ndarray, np.ndarray]) -> torch.nn.Module:
    """test_resnet trained briefly on digits, so its logits have real margins."""
    import timm

    x, y = torch.from_numpy(digits[0][:800]), torch.from_numpy(digits[1][:800])
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=10, in_chans=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(2):
        for i in range(0, len(x), 64):
            loss = F.cross_entropy(model(x[i : i + 64]), y[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def prepared(trained: torch.nn.Module, digits: tuple[np.ndarray, np.ndarray], tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("qat")
    calib = digits[0][:128]
    fp32, prep, ptq = work / "fp32.onnx", work / "prep.onnx", work / "ptq.onnx"
    export_onnx(trained, fp32, 1, SIZE, 17)
    q.preprocess(fp32, prep)
    scheme = {"activation_type": "uint8", "weight_type": "int8", "reduce_range": False}
    q.quantize_int8(prep, ptq, calib, scheme, True, "minmax")
    student = copy.deepcopy(trained)
    plan = qat_plan.build_plan(student, prep, ptq, calib[:8], scheme, True, [], [], work)
    model = qat.attach(student, plan, qat.conv_bn_pairs(student, torch.from_numpy(calib[:2])))
    qat.freeze_bn(model)
    return model.eval(), plan, prep, ptq, work


def test_plan_follows_onnxruntime(prepared) -> None:
    model, plan, _, ptq, _ = prepared
    assert not plan.unmatched
    assert {a["tensor"] for a in plan.activations} == {qat_plan._original(t) for t in qat_plan.qdq_activations(ptq)}
    assert len(plan.weights) == len(qat_plan.qdq_weights(ptq)) > 0
    assert plan.activations[0]["tensor"] == "input" and plan.activations[0]["side"] == "in"


def test_fake_quant_error_at_most_half_a_step_per_layer(prepared, digits) -> None:
    model, plan, *_ = prepared
    seen = []
    hooks = [
        qz.register_forward_hook(lambda m, a, o: seen.append((m, a[0].detach().clone(), o.detach().clone())))
        for qz in getattr(model, qat.QUANTIZERS)
    ]
    with torch.no_grad():
        model(torch.from_numpy(digits[0][:32]))
    for h in hooks:
        h.remove()
    assert len(seen) == len(plan.activations)
    for qz, x, y in seen:
        scale, zp = float(qz.scale), int(qz.zero_point)
        lo, hi = (qz.qmin - zp) * scale, (qz.qmax - zp) * scale
        inside = (x >= lo) & (x <= hi)
        if inside.any():
            assert float((y - x)[inside].abs().max()) <= scale / 2 + 1e-6
        assert float((y - x.clamp(lo, hi)).abs().max()) <= scale / 2 + 1e-6


def test_weight_scales_equal_onnxruntime(prepared) -> None:
    model, _, _, ptq, _ = prepared
    ort_w = qat_plan.qdq_weights(ptq)
    modules = dict(model.named_modules())
    for w in model.qat_plan.weights:  # the scale each layer's forward fake-quantizes its folded weight with
        m = modules[w["module"]]
        with torch.no_grad():
            _, scales = qat._fq(m, qat_export.folded_weight(m))
        np.testing.assert_allclose(scales.numpy(), ort_w[w["node"]]["scale"], rtol=1e-6)


def test_biases_are_onnxruntime_int32_biases(prepared) -> None:
    """Each quantized layer's bias is onnxruntime's int32 bias: scale = its input quantizer's scale × the weight scale."""
    import onnx

    model, plan, _, ptq, _ = prepared
    graph = onnx.load(str(ptq)).graph
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    by_name = {n.name: n for n in graph.node}
    modules = dict(model.named_modules())
    checked = 0
    for spec in plan.weights:
        node = by_name[spec["node"]]
        assert spec.get("input"), spec  # every layer's input is quantized in test_resnet
        if len(node.input) < 3:
            continue
        dq = producer[node.input[2]]
        ints, ort_scale = inits[dq.input[0]], inits[dq.input[1]]
        m = modules[spec["module"]]
        w, w_scale = qat._fq(m, qat_export.folded_weight(m))
        bn = getattr(m, "bn", None)
        bias = (
            m.bias
            if bn is None
            else ((m.bias if m.bias is not None else 0) - bn.running_mean) * bn.weight / torch.sqrt(bn.running_var + bn.eps) + bn.bias
        )
        with torch.no_grad():
            fq = qat._fq_bias(m, bias, w_scale)
        scale = (m.input_quant.scale * w_scale).numpy()
        np.testing.assert_allclose(scale, ort_scale, rtol=1e-6)
        np.testing.assert_array_equal(np.round(fq.numpy() / scale).astype(np.int64), ints.astype(np.int64))
        checked += 1
    assert checked >= 3


def test_exported_scales_are_the_learned_ones_and_agree_with_onnxruntime(prepared, trained, digits) -> None:
    model, _, _, _, work = prepared
    model = copy.deepcopy(model)  # the hooks of a deep copy still call the original quantizers: use the original's ranges
    learned_model = prepared[0]
    learned_model.train()
    with torch.no_grad():  # move the ranges away from calibration: the export must carry these, not re-calibrated ones
        for i in range(0, 256, 64):
            learned_model(torch.from_numpy(digits[0][i : i + 64]) * 1.3)
    learned_model.eval()
    ranges = qat.learned_ranges(learned_model)
    import timm

    plain = timm.create_model("test_resnet", num_classes=10, in_chans=1)
    plain.load_state_dict(qat.plain_state(learned_model))
    fp32, prep, out = work / "l_fp32.onnx", work / "l_prep.onnx", work / "learned.onnx"
    export_onnx(plain.eval(), fp32, 1, SIZE, 17)
    q.preprocess(fp32, prep)
    info = qat_export.quantize_learned(learned_model, prep, out, digits[0][:64])
    written = {qat_plan._original(t): v for t, v in qat_plan.qdq_activations(out).items()}
    for tensor, r in ranges.items():
        assert written[tensor][0] == pytest.approx(r["scale"], rel=0, abs=1e-12)
        assert written[tensor][1] == r["zero_point"]
    assert info["exported_equal"] == info["learned"] == len(ranges)
    x = digits[0][1200:1456]  # held out from training
    with torch.no_grad():
        fq = learned_model(torch.from_numpy(x)).numpy()
    ort8 = q.run_logits(q.session(out, "CPUExecutionProvider"), x)
    assert (fq.argmax(1) == ort8.argmax(1)).mean() >= 0.99


def test_fake_quant_off_gives_the_float_model(prepared, trained, digits) -> None:
    model = prepared[0]
    x = torch.from_numpy(digits[0][:16])
    quantizers, layers = getattr(model, qat.QUANTIZERS), qat.quant_modules(model)
    planned = [m.quantize for m in layers]
    for q_ in quantizers:  # every fake quantizer off: what is left is BatchNorm folding, which must be exact
        q_.enabled = False
    for m in layers:
        m.quantize = False
    try:
        with torch.no_grad():
            np.testing.assert_allclose(model(x).numpy(), trained(x).numpy(), atol=1e-4)
    finally:
        for q_ in quantizers:
            q_.enabled = True
        for m, on in zip(layers, planned):
            m.quantize = on


def test_layer_overrides_name_conv_layers(trained) -> None:
    with pytest.raises(RecipeError, match="no module 'nope'"):
        qat_plan.check_overrides(trained, ["nope"], [])
    with pytest.raises(RecipeError, match="is a ReLU, not a Conv/Linear"):
        qat_plan.check_overrides(trained, [], ["act1"])


def test_float_checkpoint_is_refused_as_qat(tmp_path: Path, trained) -> None:
    from cann_distill.core.recipe_load import resolve
    from cann_distill.models.build import save_checkpoint
    from cann_distill.quant import qad

    path = tmp_path / "student.pt"
    save_checkpoint(path, trained, "test_resnet", 10, 1)
    recipe = resolve({"student": {"arch": "test_resnet"}, "data": {"image_size": SIZE}})
    with pytest.raises(ArtifactError, match="not a QAT checkpoint"):
        qad.load(path, recipe, 10, 1, [str(i) for i in range(10)])


def test_qad_keeps_its_ptq_start_unless_an_epoch_beats_it(trained, tmp_path: Path) -> None:
    """One QAD epoch at an absurd lr wrecks the student: the PTQ starting point (weights and ranges) is shipped instead."""
    from cann_distill.core.recipe import Recipe
    from cann_distill.data.loading import load_splits
    from cann_distill.quant import qad
    from tests.conftest import TINY

    recipe = Recipe.model_validate({**TINY, "run_dir": str(tmp_path / "run"), "student": {"arch": "test_resnet"}})
    splits = load_splits(recipe.data)
    wrecked = recipe.distill.qat.model_copy(update={"enabled": True, "epochs": 1, "lr": 50.0})
    prepared, history, _ = qad.train(copy.deepcopy(trained), recipe, splits, cfg=wrecked)
    assert prepared.kept_start and history[-1]["val_acc"] < prepared.start_val_acc
    start = qad.prepare(copy.deepcopy(trained), recipe, qad.calibration(recipe, splits), wrecked).model.state_dict()
    kept = prepared.model.state_dict()
    assert kept.keys() == start.keys() and all(torch.equal(v, kept[k]) for k, v in start.items())
    prepared, _, _ = qad.train(copy.deepcopy(trained), recipe, splits, cfg=wrecked.model_copy(update={"keep_start": False}))
    assert not prepared.kept_start and prepared.start_val_acc is None
    assert not all(torch.equal(v, prepared.model.state_dict()[k]) for k, v in start.items())


def qdq_onnxruntime(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, axis: int | None = None) -> np.ndarray:
    """QuantizeLinear → DequantizeLinear run by onnxruntime itself (the reference fake quantization must equal)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    attrs = {} if axis is None else {"axis": axis}
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **attrs),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **attrs),
        ],
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(x.shape))],
        [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zero_point, "z")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep the Q/DQ pair: no folding
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def test_fake_quant_is_onnxruntime_arithmetic() -> None:
    """Activations and weights quantize as onnxruntime does (x / scale, half to even), bit for bit, including
    quotients a hair off .5 (2×2 average pools make quarters), where x·(1/scale) lands one step off."""
    rng = np.random.default_rng(0)
    scale = np.float32(0.0392906)
    halves = ((np.arange(-120, 120) + 0.5) * scale).astype(np.float32)
    x = np.concatenate([halves, np.nextafter(halves, np.inf), np.nextafter(halves, -np.inf), rng.normal(0, 3, 4000).astype(np.float32)])
    x = x.reshape(1, -1, 1, 1)
    ours = qat.fake_quant(torch.from_numpy(x), torch.tensor([scale]), torch.tensor([128], dtype=torch.int32), 0, 255).numpy()
    np.testing.assert_array_equal(ours, qdq_onnxruntime(x, np.array(scale, np.float32), np.array(128, np.uint8)))
    w = rng.normal(0, 0.2, (8, 3, 3, 3)).astype(np.float32)
    w_scale = (np.abs(w).reshape(8, -1).max(1) * 2 / 254).astype(np.float32)
    w[:, 0, 0, 0] = (np.arange(8) + 0.5) * w_scale  # exact halves in every channel
    ours = qat.fake_quant(torch.from_numpy(w), torch.from_numpy(w_scale), torch.zeros(8, dtype=torch.int32), -127, 127, axis=0).numpy()
    np.testing.assert_array_equal(ours, qdq_onnxruntime(w, w_scale, np.zeros(8, np.int8), axis=0))


def test_fake_quant_gradient_is_straight_through_inside_the_range() -> None:
    x = torch.tensor([-2.0, -0.5, 0.0, 0.7, 1.9, 3.0], requires_grad=True)
    y = qat.fake_quant(x, torch.tensor([0.01]), torch.tensor([100], dtype=torch.int32), 0, 255)  # range [-1.0, 1.55]
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    assert y.detach().tolist() == pytest.approx([-1.0, -0.5, 0.0, 0.7, 1.55, 1.55])
