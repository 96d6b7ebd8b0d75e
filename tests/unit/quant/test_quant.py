from cann_distill.quant.ort import choose_scheme, float_ops

X86_NO_VNNI = {"machine": "x86_64", "x86": True, "avx2": True, "avx512": False, "vnni": False}
X86_VNNI = {**X86_NO_VNNI, "vnni": True}
ARM = {"machine": "aarch64", "x86": False, "avx2": False, "avx512": False, "vnni": False}


def test_auto_scheme_follows_cpu_features() -> None:
    s = choose_scheme("auto", "auto", X86_NO_VNNI)
    assert (s["activation_type"], s["reduce_range"]) == ("uint8", True)
    assert any("without VNNI" in r for r in s["reasons"])
    s = choose_scheme("auto", "auto", X86_VNNI)
    assert (s["activation_type"], s["reduce_range"]) == ("uint8", False)
    s = choose_scheme("auto", "auto", ARM)
    assert (s["activation_type"], s["reduce_range"]) == ("int8", False)


def test_recipe_choice_wins_and_is_recorded() -> None:
    s = choose_scheme("int8", True, X86_VNNI)
    assert (s["activation_type"], s["reduce_range"]) == ("int8", True)
    assert all("set in the recipe" in r for r in s["reasons"])


def test_float_ops_are_the_ones_fed_by_dequantize() -> None:
    from onnx import helper

    nodes = [
        helper.make_node("QLinearConv", ["xq", "s", "z", "w", "s", "z", "s", "z"], ["c"], name="conv"),
        helper.make_node("Transpose", ["c"], ["ct"], name="layout_on_uint8"),
        helper.make_node("DequantizeLinear", ["ct", "s", "z"], ["f"], name="dq"),
        helper.make_node("HardSigmoid", ["f"], ["h"], name="hs"),
        helper.make_node("Mul", ["f", "h"], ["m"], name="mul"),
        helper.make_node("QuantizeLinear", ["m", "s", "z"], ["mq"], name="q"),
        helper.make_node("QLinearGlobalAveragePool", ["mq", "s", "z", "s", "z"], ["p"], name="pool"),
    ]
    graph = helper.make_graph(nodes, "g", [], [])
    assert float_ops(graph) == {"HardSigmoid": 1, "Mul": 1}
