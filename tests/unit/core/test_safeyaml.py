"""The recipe reader on its own: encodings, limits, YAML 1.2 core scalars, positions, value checks, messages."""

import math
from pathlib import Path

import pytest
import yaml

from cann_distill.core.errors import MAX_LINE, RecipeError, preview
from cann_distill.core.safeyaml import (
    MAX_BYTES,
    MAX_DEPTH,
    MAX_NODES,
    Document,
    YAMLSyntaxError,
    compose,
    load_document,
    load_value,
    render_errors,
    value_errors,
)

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("path", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_read_as_pyyaml_reads_them(path: Path) -> None:
    assert load_document(path).data == yaml.safe_load(path.read_text())


@pytest.mark.parametrize(
    "text, value",
    [
        ("true", True),
        ("False", False),
        ("yes", "yes"),
        ("on", "on"),
        ("~", None),
        ("null", None),
        ("", None),
        ("12", 12),
        ("-3", -3),
        ("012", 12),
        ("0o17", 15),
        ("0x1F", 31),
        ("1_000", "1_000"),
        ("1e-3", 1e-3),
        ("5.", 5.0),
        (".5", 0.5),
        ("-1.5E2", -150.0),
        ("12:30:00", "12:30:00"),
        ("1:30", "1:30"),
        ("'1'", "1"),
        ('"true"', "true"),
        ("!!str 5", "5"),
        ("!!float 5", 5.0),
        ("2024-01-01", "2024-01-01"),
    ],
)
def test_core_schema_scalars(text: str, value: object) -> None:
    got = load_value(f"a: {text}", "t")["a"]
    assert got == value and type(got) is type(value)


def test_non_finite_scalars_load_and_are_refused_by_the_value_check() -> None:
    data = load_value("a: .nan\nb: -.inf\nc: [1e999]", "t")
    assert math.isnan(data["a"]) and data["b"] == -math.inf
    assert [p for p, _ in value_errors(data)] == ["a", "b", "c[0]"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("a: 1\nb: 2\na: 3\n", r"t:3:1: a: duplicate key \(first at line 1\)"),
        ("a:\n  b: 1\n  b: 2\n", r"t:3:3: a\.b: duplicate key \(first at line 2\)"),
        ("a: !!python/object/apply:os.system ['id']\n", r"t:1:4: YAML tag '!!python/object/apply:os\.system' is not allowed"),
        ("a: !custom x\n", r"t:1:4: YAML tag '!custom' is not allowed"),
        ("a: !!int x\n", r"t:1:4: 'x' is not a valid int"),
        ("<<: {a: 1}\n", r"merge keys \(<<\) are not supported"),
        ("? [a]\n: b\n", r"mapping keys must be plain names"),
        ("a: 1\n---\nb: 2\n", r"t:2:1: a recipe is one YAML document"),
        ("a: *nothing\n", r"alias \*'nothing' names no anchor"),
        ("a: " + "9" * 5000 + "\n", r"t:1:4: number '9999.*has too many digits"),
        ("a: [1\n", r"t:2:1: YAML syntax error"),
        ("a: b\x07\n", r"t:1:5: YAML syntax error: character U\+0007 is not allowed"),
    ],
)
def test_refused_yaml_names_line_and_column(text: str, message: str) -> None:
    with pytest.raises(RecipeError, match=message):
        compose(text, "t")


def test_depth_limit_before_recursion() -> None:
    compose("a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1), "t")
    with pytest.raises(RecipeError, match=f"nested more than {MAX_DEPTH} levels"):
        compose("a: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), "t")
    nested = "".join(f"{'  ' * i}k{i}:\n" for i in range(MAX_DEPTH + 2)) + "  " * (MAX_DEPTH + 2) + "x: 1\n"
    with pytest.raises(RecipeError, match="levels deep"):
        compose(nested, "t")
    for width in (1000, 100_000):  # the 1,000 levels, and far more: no RecursionError
        with pytest.raises(RecipeError):
            compose("a: " + "[" * width + "]" * width, "t")


def test_aliases_are_copied_and_budgeted() -> None:
    data = load_value("a: &x {k: [1, 2]}\nb: *x\n", "t")
    assert data["a"] == data["b"] and data["a"] is not data["b"]  # an override of one never changes the other
    bomb = "l0: &l0 [x, x, x, x, x, x, x, x, x]\n" + "".join(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]\n" for i in range(1, 10))
    with pytest.raises(RecipeError, match=f"more than {MAX_NODES:,} YAML nodes"):
        compose(bomb, "t")
    with pytest.raises(RecipeError, match="more than 100 aliases"):
        compose("a: &x 1\nb: [" + ", ".join(["*x"] * 101) + "]\n", "t")
    with pytest.raises(RecipeError, match="levels deep \\(through alias"):
        compose("a: &x " + "[" * 20 + "]" * 20 + "\nb: " + "[" * 20 + "*x" + "]" * 20 + "\n", "t")


def test_encodings_and_size(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_bytes(b"\xef\xbb\xbfname: caf\xc3\xa9\n")
    assert load_document(p).data == {"name": "café"}  # UTF-8 with a BOM
    p.write_bytes(b"name: x\n# caf\xe9\nseed: 1\n")
    with pytest.raises(RecipeError, match=r"r\.yaml:2:6: not UTF-8: byte 0xe9 at byte offset 13; save the recipe as UTF-8"):
        load_document(p)
    p.write_bytes("name: x\n".encode("utf-16"))
    with pytest.raises(RecipeError, match=r"byte 0xff at byte offset 0 \(it looks like UTF-16\)"):
        load_document(p)
    p.write_bytes(b"a: " + b"x" * MAX_BYTES + b"\n")
    with pytest.raises(RecipeError, match=r"larger than 256 KiB"):
        load_document(p)
    p.write_text("[1, 2]\n")
    with pytest.raises(RecipeError, match="a recipe must be a YAML mapping, got a list"):
        load_document(p)
    p.write_text("")
    assert load_document(p).data == {}


def test_syntax_errors_are_their_own_kind() -> None:
    with pytest.raises(YAMLSyntaxError):
        load_value("[x", "--set a")
    with pytest.raises(RecipeError) as exc:
        load_value("[" * 100 + "]" * 100, "--set a")
    assert not isinstance(exc.value, YAMLSyntaxError)  # a limit, not a string to fall back to


@pytest.mark.parametrize(
    "value, message",
    [
        ({"name": "a\x00b"}, r"name: 'a\\x00b' contains the control or invisible character U\+0000"),
        ({"name": "a\u202eb"}, r"U\+202E"),
        ({"name": "x" * 5000}, r"name: 'xxx.*… is 5,000 characters long \(at most 4,096\)"),
        ({"seed": 10**26}, r"seed: 1000.* does not fit in 64 bits"),
        ({"a": {"k\x01": 1}}, r"a\.'k\\x01': key contains the control"),
        ({"a": [{"w": math.inf}]}, r"a\[0\]\.w: Input should be a finite number, got inf"),
    ],
)
def test_value_errors(value: dict, message: str) -> None:
    errors = value_errors(value)
    assert len(errors) == 1
    import re

    assert re.search(message, f"{errors[0][0]}: {errors[0][1]}")


def test_render_errors_in_file_order_one_short_line() -> None:
    doc = Document({}, {"a": (3, 1), "a.b": (4, 3), "c": "--set"})
    line = render_errors("r.yaml", [("c", "bad c"), ("a.b.x", "bad x"), ("a", "bad a"), ("", "general")], doc)
    assert line == "r.yaml:3:1: a: bad a; line 4: a.b.x: bad x; --set c: bad c; general"
    many = [(f"k{i}", "y" * 60) for i in range(50)]
    line = render_errors("r.yaml", many)
    assert len("Error: " + line) < MAX_LINE and line.endswith(" more)") and "\n" not in line
    assert len(render_errors("r.yaml", [("k", "z" * 10_000)])) < MAX_LINE


def test_preview_is_short_and_bounded() -> None:
    assert preview("kdd") == "'kdd'"
    assert preview("x" * 10**6).endswith("…") and len(preview("x" * 10**6)) == 40
    huge = [["lol"] * 9] * 10**6  # an alias bomb's shape: costs a few items, not a million
    assert len(preview(huge)) <= 40
    assert preview("a\nb\x00") == "'a\\nb\\x00'"
