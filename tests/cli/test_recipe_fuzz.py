"""Property: whatever is done to a shipped recipe, `cann-distill run` either accepts a sound recipe or
refuses it with the project's own error (exit 2, one `Error:` line under 500 characters), fast, in
bounded memory, writing nothing.

Mutations: values replaced by other types, huge/negative/non-finite numbers, unicode and control
characters, long strings; keys deleted or added; raw YAML spliced in (1.1-isms, tags that would call
Python, aliases and alias bombs, deep nesting, duplicate keys, broken syntax); the bytes re-encoded
(BOM, Latin-1, UTF-16), truncated or salted; `--set` overrides with odd paths and values.

Deterministic (derandomized, no example database): CANN_DISTILL_FUZZ_EXAMPLES (default 300) sets
how many examples run; raise it for a longer search.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, Iterator
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cann_distill.cli import app
from cann_distill.core.errors import MAX_LINE
from cann_distill.core.recipe import Recipe
from cann_distill.core.recipe_load import resolve
from cann_distill.core.safeyaml import load_value, value_errors

REPO = Path(__file__).resolve().parents[2]
RECIPES = {p.name: yaml.safe_load(p.read_text()) for p in sorted((REPO / "recipes").glob("*.yaml"))}
EXAMPLES = int(os.environ.get("CANN_DISTILL_FUZZ_EXAMPLES", "300"))
MAX_SECONDS = 2.0
MAX_PYTHON_MB = 64  # peak Python allocations while one mutated recipe is refused

RAW_YAML = [
    "yes",
    "no",
    "on",
    "off",
    "y",
    "12:30:00",
    "1:30",
    "0b101",
    "1_000",
    "0x_1",
    "0o8",
    "2001-12-14",
    "~",
    ".NaN",
    "+.inf",
    "-.Inf",
    "1e9999",
    "-1e400",
    "99999999999999999999999999",
    "-0",
    "0.",
    "'true'",
    '"\\0"',
    '"\\e"',
    '"\\u202e"',
    '"\\x85"',
    '"\\ud800"',
    "!!python/object/apply:os.system ['touch pwned']",
    "!!python/name:os.system",
    "!!python/tuple [1, 2]",
    "!custom x",
    "!!binary aGk=",
    "!!set {a: null}",
    "!!timestamp 2001-12-14",
    "!!omap [{a: 1}]",
    "!!int '3'",
    "!!float x",
    "!!str 5",
    "*undefined",
    "&a 1",
    "{<<: {a: 1}}",
    "'unterminated",
    "[1, 2",
    "{a: 1, a: 2}",
    "{? [a]: b}",
    "|\n  literal",
    "- a\n- b",
    "\t",
    "@reserved",
    "`tick",
    "%",
    "---",
    "...",
]


def alias_bomb(levels: int) -> str:
    """`[&a0 [x, ×9], &a1 [*a0, ×9], ...]`: 9**levels strings once expanded."""
    items = ["&a0 [" + ", ".join(["lol"] * 9) + "]"]
    items += [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "[" + ", ".join(items) + "]"


raw_yaml = st.one_of(
    st.sampled_from(RAW_YAML),
    st.integers(1, 10).map(alias_bomb),
    st.integers(20, 3000).map(lambda n: "[" * n + "]" * n),
    st.integers(20, 300).map(lambda n: "{a: " * n + "1" + "}" * n),
)

wild_scalar = st.one_of(
    st.booleans(),
    st.none(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 2**31, 2**32, 2**63, -(2**63) - 1, 10**26]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.text(st.characters(min_codepoint=0, max_codepoint=0x20) | st.sampled_from("\x7f\x85\u2028\u202e\ufeff\u200b"), max_size=5),
    st.builds(lambda n, c: c * n, st.integers(0, 20_000), st.sampled_from(["x", "é", "\x00", "\u202e", "測"])),
)
wild_value = st.recursive(
    wild_scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=8,
)


def value_paths(data: Any, prefix: tuple = ()) -> Iterator[tuple]:
    yield prefix
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for k, v in items:
        yield from value_paths(v, prefix + (k,))


def parent_of(data: Any, path: tuple) -> Any:
    for part in path[:-1]:
        data = data[part]
    return data


def dotted(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


@st.composite
def overrides(draw: st.DrawFn, data: dict) -> str:
    paths = [p for p in value_paths(data) if p]
    key = draw(
        st.one_of(
            st.sampled_from(paths).map(dotted) if paths else st.just("seed"),
            st.sampled_from(["distill.losses[99].weight", "a..b", "", "seed.x", "distill.losses.x", "x" * 300, "[0]", "seed[0]"]),
            st.text(max_size=20),
        )
    )
    value = draw(st.one_of(st.sampled_from(RAW_YAML), wild_scalar.map(lambda v: yaml.safe_dump(v).strip()), raw_yaml))
    return draw(st.sampled_from([f"{key}={value}", key]))  # sometimes no '='


@st.composite
def mutated_recipe(draw: st.DrawFn) -> tuple[bytes, list[str]]:
    data = copy.deepcopy(RECIPES[draw(st.sampled_from(sorted(RECIPES)))])
    raws: list[str] = []
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in value_paths(data) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, last = parent_of(data, path), path[-1]
        kind = draw(st.sampled_from(["replace", "replace", "delete", "unknown_key", "raw", "raw"]))
        if kind == "replace":
            parent[last] = draw(wild_value)
        elif kind == "delete":
            del parent[last]
        elif kind == "unknown_key" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=12))] = draw(wild_scalar)
        elif kind == "raw":
            parent[last] = f"@@RAW{len(raws)}@@"
            raws.append(draw(raw_yaml))
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=draw(st.booleans()))
    for i, raw in enumerate(raws):
        text = text.replace(f"'@@RAW{i}@@'", raw)
    if draw(st.integers(0, 5)) == 0 and data:  # a duplicate top-level key
        text += f"{draw(st.sampled_from(list(data)))}: 1\n"
    encoding = draw(st.sampled_from(["utf-8"] * 6 + ["utf-8-sig", "latin-1", "utf-16", "cp1252"]))
    if encoding in ("latin-1", "cp1252"):
        text = text.replace("\n", "\n# café — ½\n", 1)
    content = text.encode(encoding, errors="replace")
    damage = draw(st.integers(0, 9))
    if damage == 0:
        content = content[: draw(st.integers(0, len(content)))]
    elif damage == 1:
        at = draw(st.integers(0, len(content)))
        content = content[:at] + draw(st.binary(min_size=1, max_size=4)) + content[at:]
    return content, draw(st.lists(overrides(data), max_size=2))


@contextlib.contextmanager
def chdir(path: str) -> Iterator[None]:
    """contextlib.chdir, which Python 3.10 lacks."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


class Accepted(Exception):
    """Raised where `run` would create its run dir: the recipe was accepted."""


def sound(recipe: Recipe) -> None:
    """What every accepted recipe must be: plain values only, and it reloads to itself."""
    data = recipe.to_dict()
    assert value_errors(data) == []
    assert 0 <= recipe.seed < 2**32
    again = load_value(yaml.safe_dump(data, sort_keys=False), "resolved")
    assert resolve(again, "resolved", recipe.name).to_dict() == data


@pytest.fixture(scope="module")
def warm() -> None:
    """Import what a refusal can touch (torch, timm, onnxruntime) before anything is timed."""
    with mock.patch("cann_distill.api.run_dir_of", side_effect=Accepted):
        result = CliRunner().invoke(
            app, ["run", str(REPO / "recipes" / sorted(RECIPES)[0]), "--set", "validate.provider=CPUExecutionProvider"]
        )
    assert "Accepted" in result.stderr, result.stderr


@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(case=mutated_recipe())
def test_mutated_shipped_recipes_are_refused_cleanly_or_sound(warm: None, case: tuple[bytes, list[str]]) -> None:
    content, sets = case
    accepted: list[Recipe] = []

    def accept(recipe: Recipe, run_dir: Any = None) -> None:
        accepted.append(recipe)
        raise Accepted

    args = ["run", "r.yaml"] + [a for s in sets for a in ("--set", s)]
    with tempfile.TemporaryDirectory() as tmp, chdir(tmp), mock.patch("cann_distill.api.run_dir_of", side_effect=accept):
        Path("r.yaml").write_bytes(content)
        tracemalloc.start()
        t0 = time.perf_counter()
        try:
            result = CliRunner().invoke(app, args)
        finally:
            seconds = time.perf_counter() - t0
            peak_mb = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
        written = sorted(os.listdir("."))

    assert seconds < MAX_SECONDS, f"{seconds:.2f}s"
    assert peak_mb < MAX_PYTHON_MB, f"{peak_mb:.0f} MB"
    assert written == ["r.yaml"], written
    assert "Traceback" not in result.stderr
    msg = re.sub(r"^Error: (r\.yaml)?(:\d+:\d+)?:? ?(--set )?([^ ]+: )?", "", result.stderr.strip())
    # --hypothesis-show-statistics lists how often each outcome came up
    event("accepted" if accepted else "refused: " + " ".join(re.sub(r"'.*?'|\d+", "_", msg).split()[:5]))
    if accepted:
        assert result.exit_code == 1 and "Accepted" in result.stderr
        sound(accepted[0])
        return
    lines = result.stderr.splitlines()
    assert result.exit_code == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines[:3]
    assert len(lines[0]) < MAX_LINE, len(lines[0])
