"""Issue 9's reproductions, each through the CLI: exit 2, one short `Error:` line, nothing written."""

import time
from pathlib import Path
from typing import Callable, Union

import pytest

from cann_distill.core.errors import MAX_LINE
from cann_distill.core.recipe_load import load_recipe

REPO = Path(__file__).resolve().parents[2]
SHIPPED = (REPO / "recipes" / "resnet10t_from_resnet18_digits.yaml").read_text()
MGD = (REPO / "recipes" / "resnet10t_from_resnet18_digits_mgd.yaml").read_text()


def sub(old: str, new: str, text: str = SHIPPED) -> str:
    assert old in text
    return text.replace(old, new, 1)


def line_of(needle: str, text: str = SHIPPED) -> int:
    """1-based line of `needle` in the shipped recipe (so the cases survive edits to it)."""
    return text[: text.index(needle)].count("\n") + 1


END = SHIPPED.count("\n") + 1  # the line a key appended to the shipped recipe lands on


def alias_bomb_in_tap() -> str:
    """Nine levels of nine aliases (9**9 strings) as a fitnet tap name."""
    anchors = "[" + ", ".join(["lol"] * 9) + "]"
    args = [f"a0: &a0 {anchors}"] + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    return sub(
        '{kind: fitnet, weight: 0.3, student: "3", teacher: "3"}',
        "{kind: fitnet, weight: 0.3, teacher: '3', " + ", ".join(args) + ", student: [*a8, *a8, *a8]}",
        MGD,
    )


CASES: dict[str, tuple[Union[str, bytes, Callable[[], str]], str]] = {
    "latin1_comment": (
        sub("name:", "# recette de caf\xe9\nname:").encode("latin-1"),
        rf"r\.yaml:{line_of('name:')}:17: not UTF-8: byte 0xe9 at byte offset \d+; save the recipe as UTF-8",
    ),
    "utf16": (SHIPPED.encode("utf-16"), r"not UTF-8: byte 0xff at byte offset 0 \(it looks like UTF-16\)"),
    "nesting_1000": (SHIPPED + "runtime: " + "[" * 1000 + "]" * 1000 + "\n", rf"r\.yaml:{END}:\d+: "),
    "nesting_200_block": ("".join(f"{' ' * i}k{i}:\n" for i in range(200)), r"r\.yaml:33:33: nested more than 32 levels deep"),
    "alias_bomb_in_tap_arg": (alias_bomb_in_tap, r"more than 20,000 YAML nodes \(after expanding aliases\)"),
    "huge_seed": (
        sub("seed: 0", "seed: 99999999999999999999999999"),
        rf"r\.yaml:{line_of('seed:')}:1: seed: 9999.* does not fit in 64 bits",
    ),
    "seed_over_2_32": (sub("seed: 0", "seed: 4294967296"), r"seed: Input should be less than or equal to 4294967295"),
    "negative_seed": (sub("seed: 0", "seed: -1"), r"seed: Input should be greater than or equal to 0"),
    "nul_in_name": (
        sub("name: resnet10t_from_resnet18_digits", 'name: "runs\\0x"'),
        rf"r\.yaml:{line_of('name:')}:1: name: 'runs\\x00x' contains the control or invisible character U\+0000",
    ),
    "nul_in_run_dir": (SHIPPED + 'run_dir: "out\\0put"\n', rf"r\.yaml:{END}:1: run_dir: 'out\\x00put' contains the control"),
    "newline_in_run_dir": (SHIPPED + 'run_dir: "out\\nput"\n', r"run_dir: 'out\\nput' contains the control"),
    "arch_1mb": (sub("arch: resnet10t ", "arch: " + "x" * 1_000_000 + " "), r"r\.yaml: larger than 256 KiB"),
    "arch_200k": (
        sub("arch: resnet10t ", "arch: " + "x" * 200_000 + " "),
        r"student\.arch: 'x{38}… is 200,000 characters long \(at most 4,096\)",
    ),
    "arch_4k": (sub("arch: resnet10t ", "arch: " + "x" * 4000 + " "), r"student\.arch: unknown timm architecture 'x{38}…$"),
    "batch_size_true": (
        sub("batch_size: 64", "batch_size: true"),
        rf"r\.yaml:{line_of('batch_size:')}:3: data\.batch_size: Input should be a valid integer, got True",
    ),
    "sexagesimal_epochs": (sub("epochs: 30", "epochs: 12:30:00"), r"distill\.epochs: Input should be a valid integer, got '12:30:00'"),
    "yes_as_bool": (sub("per_channel: true", "per_channel: yes"), r"validate\.per_channel: Input should be a valid boolean, got 'yes'"),
    "string_number": (sub("epochs: 30", "epochs: '30'"), r"distill\.epochs: Input should be a valid integer, got '30'"),
    "duplicate_top_key": (SHIPPED + "seed: 5\n", rf"r\.yaml:{END}:1: seed: duplicate key \(first at line {line_of('seed:')}\)"),
    "duplicate_nested_key": (
        sub("  batch_size: 64\n", "  batch_size: 64\n  image_size: 16\n"),
        rf"r\.yaml:{line_of('batch_size: 64') + 1}:3: data\.image_size: duplicate key "
        rf"\(first at line {line_of('image_size:')}\)",
    ),
    "nan_loss_weight": (
        sub("{kind: ce, weight: 0.5}", "{kind: ce, weight: .nan}"),
        rf"r\.yaml:{line_of('{kind: ce')}:\d+: distill\.losses\[0\]\.weight: Input should be a finite number, got nan",
    ),
    "inf_loss_weight": (sub("{kind: ce, weight: 0.5}", "{kind: ce, weight: .inf}"), r"distill\.losses\[0\]\.weight: .*finite"),
    "inf_loss_argument": (
        sub("temperature: 4.0}", "temperature: .inf}"),
        r"distill\.losses\[1\]\.temperature: Input should be a finite number, got inf",
    ),
    "nan_strategy_argument": (
        sub("strategy: margin", "strategy: confidence_entropy_balance\n  strategy_args: {alpha: .nan}"),
        r"select\.strategy_args\.alpha: Input should be a finite number, got nan",
    ),
    "bool_loss_argument": (
        sub("temperature: 4.0}", "temperature: true}"),
        r"distill\.losses\[1\]\.temperature: Input should be a valid number, got True",
    ),
    "inf_float_field": (sub("lr: 0.05\n  losses", "lr: .inf\n  losses"), r"distill\.lr: Input should be a finite number, got inf"),
    "python_tag": (
        SHIPPED + "runtime: !!python/object/apply:os.system ['touch pwned']\n",
        rf"r\.yaml:{END}:10: YAML tag '!!python/object/apply:os\.system' is not allowed",
    ),
}


@pytest.fixture(scope="module", autouse=True)
def warm() -> None:
    """Import timm and list its archs before anything is timed."""
    load_recipe(REPO / "recipes" / "resnet10t_from_resnet18_digits.yaml")


@pytest.mark.parametrize("name", list(CASES))
def test_issue_reproduction_is_a_recipe_error(name: str, cli, tmp_path: Path, monkeypatch) -> None:
    content, message = CASES[name]
    content = content() if callable(content) else content
    recipe = tmp_path / "r.yaml"
    recipe.write_bytes(content if isinstance(content, bytes) else content.encode())
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    result = cli("run", "r.yaml")
    assert time.perf_counter() - t0 < 2.0
    assert result.exit_code == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and len(lines[0]) < MAX_LINE, lines
    import re

    assert re.search(message, lines[0]), lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]  # nothing written, not even a run dir


@pytest.mark.parametrize(
    "override, message",
    [
        ("seed=99999999999999999999999999", r"--set seed: 9999.* does not fit in 64 bits"),
        ("name=a\x01b", r"--set name: 'a\\x01b' contains the control"),
        ("distill.losses[1].temperature=.nan", r"--set distill\.losses\[1\]\.temperature: Input should be a finite number"),
        ("data.batch_size=true", r"--set data\.batch_size: Input should be a valid integer, got True"),
        ("teacher.arch=" + "y" * 5000, r"--set teacher\.arch: 'y{38}… is 5,000 characters long"),
        ("report=" + "[" * 1000 + "]" * 1000, r"--set report: YAML syntax error|--set report.*nested more than"),
        ("report.title=" + "&a [x, x, x, x, x, x, x, x, x]", None),  # valid (title is a list: refused by the schema)
        ("x" * 10_000 + "=1", r"^Error: r\.yaml: --set 'x{38}…: key is 10,000 characters long \(at most 100\)$"),
        (".".join(["a"] * 1000) + "=1", r"^Error: --set 'a\.a\.a.*…: 1,000 key segments \(a recipe nests at most 32 levels\)$"),
        (".".join(["a"] * 5000) + "=1", r"--set 'a\.a.*…: 5,000 key segments"),
        (".".join(["report"] * 32) + "=1", r"--set report\.report.*: unknown key|report\.report"),  # 32 levels: the schema answers
    ],
)
def test_bad_overrides(override: str, message, cli, tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "r.yaml").write_text(SHIPPED)
    monkeypatch.chdir(tmp_path)
    result = cli("run", "r.yaml", "--set", override)
    assert result.exit_code == 2
    (line,) = result.stderr.splitlines()
    assert len(line) < MAX_LINE
    import re

    assert message is None or re.search(message, line), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.yaml"]


def test_all_problems_at_once_in_file_order_with_positions(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_text(sub("lr: 0.05\n  losses", "lr: -1\n  losses", sub("image_size: 32", "image_size: big")))
    with pytest.raises(Exception) as exc:
        load_recipe(p)
    msg = str(exc.value)
    assert msg.startswith(
        f"{p}:{line_of('image_size:')}:3: data.image_size: Input should be a valid integer, got 'big'; "
        f"line {line_of('lr: 0.05' + chr(10) + '  losses')}: distill.lr: "
    )


def test_utf8_bom_and_unicode_names_are_fine(tmp_path: Path) -> None:
    p = tmp_path / "r.yaml"
    p.write_bytes(b"\xef\xbb\xbf" + sub("name: resnet10t_from_resnet18_digits", "name: r\u00e9sum\u00e9_\u6e2c\u8a66").encode())
    assert load_recipe(p).name == "r\u00e9sum\u00e9_\u6e2c\u8a66"
