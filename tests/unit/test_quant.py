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


def test_float_ops_excludes_quantized_and_shape_ops() -> None:
    hist = {"QLinearConv": 5, "QGemm": 1, "QuantizeLinear": 3, "DequantizeLinear": 4, "HardSigmoid": 2, "Reshape": 1, "Mul": 2}
    assert float_ops(hist) == {"HardSigmoid": 2, "Mul": 2}
