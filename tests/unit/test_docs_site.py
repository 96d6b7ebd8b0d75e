"""The README and the documentation site: size, links, page list, scrubbed text, recipe snippets, generated reference.

`mkdocs build --strict` runs in CI (.ci/run); these checks need no mkdocs and run with the tests.
"""

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator, get_args, get_origin

import pytest
import yaml
from jsonschema import Draft202012Validator

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
README = REPO / "README.md"
PAGES = sorted(DOCS.rglob("*.md"))
README_LIMIT = 10 * 1024
HOOKS = REPO / "scripts" / "docs" / "mkdocs_hooks.py"

FENCE = re.compile(r"^(```|~~~).*?^\1", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# text the README and the docs must not hold: paths of one machine, issue references, how the work was organised
BANNED = [
    (re.compile(r"/work/"), "an absolute path of one machine"),
    (re.compile(r"/tmp/"), "an absolute path of one machine"),
    (re.compile(r"\bissue\s*#?\s*\d+", re.I), "an issue number"),
    (re.compile(r"\bissue\s*#", re.I), "an issue reference"),
    (re.compile(r"\buncommitted\b", re.I), "a measurement from a modified working tree, described as such"),
    # an onnxruntime "inference session" is the library's term; any other session is how the work was organised
    (re.compile(r"(?<!inference )\bsessions?\b", re.I), "how the work was organised"),
]


def generated_pages() -> set[str]:
    """Pages the mkdocs hook adds at build time (not files in docs/), read from the hook's GENERATED table."""
    return set(re.findall(r'"(reference/[\w-]+\.md)"\s*:', HOOKS.read_text(encoding="utf-8")))


def prose(text: str) -> str:
    """Markdown without fenced code blocks and code spans (a link inside code is not a link)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def relative_links(path: Path) -> Iterator[str]:
    for target in LINK.findall(prose(path.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # a URL, or an anchor on the same page
        yield target


def test_readme_is_at_most_10_kb() -> None:
    size = len(README.read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes (limit {README_LIMIT}): move the detail to a page under docs/"


def test_the_link_pattern_finds_links_and_skips_code() -> None:
    text = 'see [a](x.md#y), ![img](img/p.png), [b [c]](d/e.md "t") and `[no](code.md)`\n```\n[no](fence.md)\n```\n'
    assert LINK.findall(prose(text)) == ["x.md#y", "img/p.png", "d/e.md"]


@pytest.mark.parametrize("path", [README, *PAGES], ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(path: Path) -> None:
    generated = generated_pages()
    broken = []
    for target in relative_links(path):
        file_part = target.split("#", 1)[0]
        if not file_part:
            continue
        resolved = (path.parent / file_part).resolve()
        in_site = resolved.relative_to(DOCS).as_posix() if resolved.is_relative_to(DOCS) else None
        if not resolved.exists() and in_site not in generated:
            broken.append(target)
        elif path != README and not resolved.is_relative_to(DOCS):
            broken.append(f"{target} (outside docs/: the site cannot serve it)")
    assert broken == []


@pytest.mark.parametrize(
    "path", [README, *sorted(p for p in DOCS.rglob("*") if p.is_file() and p.suffix != ".png")], ids=lambda p: str(p.relative_to(REPO))
)
def test_no_machine_paths_issue_numbers_or_work_notes(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    found = [f"{m.group(0)!r} ({why})" for pattern, why in BANNED for m in pattern.finditer(text)]
    assert found == []


def nav_pages(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from nav_pages(item)
    elif isinstance(node, dict):
        for value in node.values():
            yield from nav_pages(value)


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text(encoding="utf-8"))
    nav = list(nav_pages(config["nav"]))
    on_disk = {p.relative_to(DOCS).as_posix() for p in PAGES}
    assert sorted(set(nav) - on_disk - generated_pages()) == []  # nav names no missing page
    assert sorted(on_disk - set(nav)) == []  # no page outside the nav
    assert len(nav) == len(set(nav))


def recipe_snippets() -> Iterator[tuple[str, str]]:
    """YAML blocks of the README and the docs that are whole recipes (a top-level `name:` and recipe sections)."""
    for path in [README, *PAGES]:
        for block in re.findall(r"^```ya?ml\n(.*?)^```", path.read_text(encoding="utf-8"), re.S | re.M):
            if re.search(r"^name:", block, re.M) and re.search(r"^(data|teacher|student|distill):", block, re.M):
                yield str(path.relative_to(REPO)), block


def test_there_are_recipe_snippets_to_check() -> None:
    assert {where for where, _ in recipe_snippets()} >= {"README.md", "docs/getting-started.md"}


@pytest.mark.parametrize(("where", "block"), list(recipe_snippets()), ids=lambda v: v if v.endswith(".md") else "")
def test_recipe_snippets_pass_the_recipe_json_schema(where: str, block: str) -> None:
    schema = json.loads((REPO / "cann_distill" / "schemas" / "recipe.schema.json").read_text(encoding="utf-8"))
    errors = [
        f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in Draft202012Validator(schema).iter_errors(yaml.safe_load(block))
    ]
    assert errors == []


def load_script(name: str) -> ModuleType:
    path = REPO / "scripts" / "docs" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"docs_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_cli_reference_lists_every_command_with_its_options_and_example() -> None:
    import typer.main

    from cann_distill.cli import app

    page = load_script("gen_cli_reference").cli_reference_markdown()
    group = typer.main.get_command(app)
    ctx = group.context_class(group, info_name="cann-distill")
    names = group.list_commands(ctx)
    assert len(names) >= 10
    for name in names:
        command = group.get_command(ctx, name)
        section = page.split(f"## `{name}`", 1)[1].split("\n## ", 1)[0]
        for param in command.params:
            if param.param_type_name == "option":
                assert all(opt in section for opt in param.opts), (name, param.opts)
        assert f"cann-distill {name}" in section.split("Example:", 1)[-1], f"{name}: no example"


def nested_models(annotation: Any, in_list: bool = False) -> Iterator[tuple[Any, bool]]:
    """The pydantic models a field holds: directly, optionally (a Union with None) or as a list of them."""
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation, in_list
    elif get_origin(annotation) is list:
        yield from nested_models(get_args(annotation)[0], True)
    else:
        for arg in get_args(annotation):
            yield from nested_models(arg, in_list)


def model_keys(model: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(section title, key) for every field of the recipe, nested sections included."""
    for name, field in model.model_fields.items():
        key = field.alias or name
        yield prefix, key
        for nested, in_list in nested_models(field.annotation):
            if nested.model_fields:
                yield from model_keys(nested, ".".join(filter(None, [prefix, key + ("[]" if in_list else "")])))


def test_recipe_reference_lists_every_key_in_its_section() -> None:
    from cann_distill.core.recipe import Recipe

    page = load_script("gen_recipe_reference").recipe_reference_markdown()
    sections = {}
    for chunk in re.split(r"^## ", page, flags=re.M)[1:]:
        title = chunk.split("\n", 1)[0]
        match = re.match(r"`([^`]+)`", title)
        sections["" if title.startswith("Top level") else (match.group(1) if match else title)] = chunk
    missing = [f"{section or 'top level'}: {key}" for section, key in model_keys(Recipe) if f"| `{key}` |" not in sections.get(section, "")]
    assert missing == []
    for kind in ("kd", "fitnet", "margin", "cosine"):  # registered components, with their arguments
        assert f"| `{kind}` |" in page
