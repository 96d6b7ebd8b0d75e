"""The recipe reference page and the shipped JSON Schema, both generated from the recipe's pydantic schema.

`mkdocs build` calls `recipe_reference_markdown()` through `scripts/docs/mkdocs_hooks.py`, so the page lists
every key, type, default and description that `cann_distill/core/recipe.py` declares at build time.

    python scripts/docs/gen_recipe_reference.py                 # print the page
    python scripts/docs/gen_recipe_reference.py --out FILE      # write it
    python scripts/docs/gen_recipe_reference.py --write-schema  # rewrite cann_distill/schemas/recipe.schema.json
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO / "cann_distill" / "schemas" / "recipe.schema.json"


def schema_text() -> str:
    """The JSON Schema file's exact text (what `--write-schema` writes and the test compares)."""
    from cann_distill.core.recipe import recipe_json_schema

    return json.dumps(recipe_json_schema(), indent=2, ensure_ascii=False) + "\n"


def _cell(text: Any) -> str:
    """One Markdown table cell: one line; pipes escaped, and outside code spans `<`, `>` and `*` kept as text
    (runs/<name>, train/<class>/* would otherwise turn into HTML tags and emphasis)."""
    parts = " ".join(str(text).split()).split("`")
    for i in range(0, len(parts), 2):  # even parts are outside code spans
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;").replace("*", "\\*")
    return "`".join(parts).replace("|", "\\|")


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    return defs[ref.rsplit("/", 1)[-1]] if ref else node


def _is_section(node: dict[str, Any], defs: dict[str, Any]) -> bool:
    """A nested model with declared keys (documented in its own table)."""
    target = _resolve(node, defs)
    return target.get("type") == "object" and bool(target.get("properties"))


def _constraints(node: dict[str, Any]) -> str:
    marks = []
    for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<")):
        if key in node:
            marks.append(f"{sign} {node[key]}")
    if "minItems" in node and "prefixItems" not in node:
        marks.append(f"at least {node['minItems']} item(s)")
    if "pattern" in node:
        marks.append(f"matches `{node['pattern']}`")
    return ", ".join(marks)


def _type(node: dict[str, Any], defs: dict[str, Any], path: str) -> str:
    """A JSON Schema node as a short type text; nested sections become links to their table."""
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        return f"[section](#{_anchor(path)})" if _is_section(node, defs) else name
    if "anyOf" in node:
        return " or ".join(_type(n, defs, path) for n in node["anyOf"])
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "enum" in node:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    kind = node.get("type")
    text: str
    if kind == "array":
        if "prefixItems" in node:
            text = "[" + ", ".join(_type(n, defs, path) for n in node["prefixItems"]) + "]"
        else:
            text = f"list of {_type(node.get('items', {}), defs, path + '[]')}"
    elif kind == "object":
        extra = node.get("additionalProperties")
        text = f"mapping to {_type(extra, defs, path)}" if isinstance(extra, dict) else "mapping"
    elif kind == "null":
        text = "null"
    else:
        text = {"integer": "integer", "number": "number", "string": "string", "boolean": "boolean"}.get(str(kind), "any")
    bounds = _constraints(node)
    return f"{text} ({bounds})" if bounds else text


def _anchor(path: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in path.lower()).strip("-") or "top-level"


def _lookup(defaults: Any, path: list[str]) -> tuple[bool, Any]:
    for key in path:
        if isinstance(defaults, dict) and key in defaults:
            defaults = defaults[key]
        else:
            return False, None
    return True, defaults


def _default_text(node: dict[str, Any], found: bool, value: Any) -> str:
    if "default" in node:
        value, found = node["default"], True
    if not found:
        return "required" if node.get("_required") else ""
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def _sections(schema: dict[str, Any], defaults: dict[str, Any], root: str = "", level: str = "##") -> list[str]:
    """One table per nested model, depth first, in declaration order; `root` prefixes every key path."""
    defs = schema.get("$defs", {})
    out: list[str] = []

    def walk(model: dict[str, Any], path: list[str]) -> None:
        title = ".".join([root, *path] if root else path)
        rows, children = [], []
        required = set(model.get("required", []))
        for key, node in model.get("properties", {}).items():
            full = ".".join([*([root] if root else []), *path, key])
            nested = _section_of(node, defs)
            found, value = _lookup(defaults, [*path, key])
            node = {**node, "_required": key in required}
            shown_default = _default_text(node, found, value)
            if nested is not None:
                child_path = [*path, key] if nested[1] == "object" else [*path, key + "[]"]
                children.append((nested[0], child_path))
                if nested[1] == "object" and "anyOf" not in node:
                    shown_default = ""  # a section's default is its keys' defaults, listed in its own table
            rows.append(f"| `{key}` | {_type(node, defs, full)} | {shown_default} | {_cell(node.get('description', ''))} |")
        extra = model.get("additionalProperties")
        if isinstance(extra, dict) and (nested := _section_of(extra, defs)) is not None:  # any key, each a section (tune:)
            full = ".".join([*([root] if root else []), *path, "<key>"])
            children.append((nested[0], [*path, "<key>"]))
            rows.append(f"| any other key | {_type(extra, defs, full)} |  | {_cell(nested[0].get('description', ''))} |")
        heading = f"{level} `{title}` {{#{_anchor(title)}}}" if title else f"{level} Top level"
        out.extend([heading, ""])
        if path and model.get("description"):
            out.extend([_cell(model["description"]), ""])
        if model.get("additionalProperties") is True:
            out.extend(["Keys other than those below are passed to the named component as keyword arguments.", ""])
        out.extend(["| key | type | default | description |", "|---|---|---|---|", *rows, ""])
        for child, child_path in children:
            walk(child, child_path)

    walk(schema, [])
    return out


def _section_of(node: dict[str, Any], defs: dict[str, Any]) -> Optional[tuple[dict[str, Any], str]]:
    """The nested model a key holds (directly, optionally, or as a list of them), and how."""
    for option in node.get("anyOf", [node]):
        if "$ref" in option and _is_section(option, defs):
            return _resolve(option, defs), "object"
        items = option.get("items")
        if option.get("type") == "array" and isinstance(items, dict) and "$ref" in items and _is_section(items, defs):
            return _resolve(items, defs), "list"
    return None


def _registered() -> list[str]:
    """The names a recipe's `kind` / `strategy` keys accept, with their arguments and papers."""
    from cann_distill.core.registries import DETECTION_LOSSES, DETECTION_SELECTORS, LOSSES, SCHEDULES, SELECTORS

    out: list[str] = ["## Registered components", ""]
    out += [
        "Recipes name components by these short strings; a recipe never imports code. The keyword arguments are "
        "bound against the component's signature when the recipe is loaded (unknown or mistyped ones are errors).",
        "",
    ]
    for registry, key in (
        (LOSSES, "distill.losses[].kind"),
        (SELECTORS, "select.strategy"),
        (SCHEDULES, "distill.temperature_schedule.kind"),
        (DETECTION_LOSSES, "distill.losses[].kind with task: detect"),
        (DETECTION_SELECTORS, "select.strategy with task: detect"),
    ):
        out += [f"### `{key}`", "", "| name | arguments | what it is |", "|---|---|---|"]
        for name in registry.names():
            obj = registry.get(name)
            params = [p for p in inspect.signature(obj).parameters.values() if p.name != "self"]
            args = ", ".join(f"`{p.name}`" + ("" if p.default is inspect.Parameter.empty else f" = `{p.default!r}`") for p in params)
            doc = (inspect.getdoc(obj) or "").strip().split("\n\n")[0]
            out.append(f"| `{name}` | {args or '–'} | {_cell(doc)} |")
        out.append("")
    return out


def recipe_reference_markdown(with_components: bool = True) -> str:
    """Every recipe key with its type, default and description, plus the hardware-profile keys."""
    from cann_distill.core.recipe import HardwareProfile, Recipe, recipe_json_schema

    lines = [
        "# Recipe reference",
        "",
        "Generated from the recipe schema (`cann_distill/core/recipe.py`) each time the site is built: every key a "
        "recipe may hold, its type, its default and what it does. A key left out takes its default; `null` "
        "defaults are filled in when the recipe is resolved (the description says from what), and the resolved "
        "recipe is saved as `recipe.resolved.yaml` in the run dir. Unknown keys are errors.",
        "",
        "## Editor support: JSON Schema",
        "",
        "The same schema ships as JSON Schema in the package: `cann_distill/schemas/recipe.schema.json` "
        "(regenerated with `python scripts/docs/gen_recipe_reference.py --write-schema`; a test keeps the "
        "committed file equal to what the schema generates). Editors that use the YAML language server "
        "(VS Code's YAML extension, Neovim, Helix, ...) complete and check recipe keys when the recipe's first "
        "line names it:",
        "",
        "```yaml",
        "# yaml-language-server: $schema=../cann_distill/schemas/recipe.schema.json",
        "name: my_recipe",
        "```",
        "",
        "The path is relative to the recipe file (the line above fits a recipe in `recipes/` of a checkout). For an "
        "installed package, print the file's location with "
        "`python -c \"import cann_distill.schemas as s, pathlib; print(pathlib.Path(s.__file__).with_name('recipe.schema.json'))\"`. "
        "The JSON Schema holds keys, types and ranges; the checks that need code (timm arch names, registered "
        "losses and their arguments, rules across keys) run when cann-distill loads the recipe.",
        "",
    ]
    lines += _sections(recipe_json_schema(), Recipe().to_dict())
    if with_components:
        lines += _registered()
    profile = HardwareProfile.model_json_schema()
    lines += [
        "## Hardware profiles",
        "",
        "`validate.target` names a profile in `configs/hardware/` (shipped as `cann_distill.configs.hardware`) or a "
        "path to a profile YAML of the same form; see [hardware profiles](../guides/hardware-profiles.md). "
        + _cell(profile.get("description", "")),
        "",
    ]
    lines += _sections(profile, HardwareProfile(name="example").model_dump(mode="json"), root="profile", level="###")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the page here instead of stdout")
    ap.add_argument("--write-schema", action="store_true", help=f"rewrite {SCHEMA_PATH.relative_to(REPO)} and exit")
    args = ap.parse_args(argv)
    if args.write_schema:
        SCHEMA_PATH.write_text(schema_text(), encoding="utf-8")
        print(f"wrote {SCHEMA_PATH.relative_to(REPO)}", file=sys.stderr)
        return 0
    text = recipe_reference_markdown()
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
