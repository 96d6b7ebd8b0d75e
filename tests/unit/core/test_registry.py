import pytest

from cann_distill.core.registry import Registry, suggest


def test_register_bare_and_keyed() -> None:
    reg: Registry = Registry("widget")

    @reg.register
    class Alpha:
        def __init__(self, size: int, colour: str = "red") -> None:
            self.size = size

    @reg.register("b")
    class Beta:
        pass

    assert reg.names() == ["alpha", "b"]
    assert reg.build("alpha", size=3).size == 3
    with pytest.raises(KeyError, match=r"unknown widget 'c' \(known: alpha, b\)"):
        reg.get("c")
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("b", Beta)


def test_check_kwargs_names_bad_and_missing_arguments() -> None:
    reg: Registry = Registry("widget")

    @reg.register("a")
    class A:
        def __init__(self, size: int, colour: str = "red") -> None:
            pass

    assert reg.check_kwargs("a", {"size": 1, "colour": "blue"}) == []
    errors = dict(reg.check_kwargs("a", {"colur": "x"}))
    assert "unexpected argument for widget 'a' (accepts: size, colour)" in errors["colur"]
    assert "missing argument" in errors["size"]


def test_suggest_close_names() -> None:
    assert "resnet18" in suggest("resnet181", ["resnet18", "resnet34", "vit_base"])
    assert suggest("zzzz", ["resnet18"]) == ""
