"""The CLI reference page, generated from the Typer app, so a new command or option appears by itself.

`mkdocs build` calls `cli_reference_markdown()` through `scripts/docs/mkdocs_hooks.py`;
`python scripts/docs/gen_cli_reference.py [--out FILE]` prints (or writes) the same page.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import typer.main


def _cell(text: Any) -> str:
    """One Markdown table cell: one line; pipes escaped, and outside code spans `<`, `>` and `*` kept as text
    (runs/<name>, train/<class>/* would otherwise turn into HTML tags and emphasis)."""
    parts = " ".join(str(text).split()).split("`")
    for i in range(0, len(parts), 2):  # even parts are outside code spans
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;").replace("*", "\\*")
    return "`".join(parts).replace("|", "\\|")


# Typer builds on click, and recent Typer releases carry their own copy of it: the code below reads the command
# objects by their attributes (duck typing), so it works with either.


def _is_flag(param: Any) -> bool:
    return bool(getattr(param, "is_flag", False))


def _param_row(param: Any, ctx: Any) -> list[str]:
    record = param.get_help_record(ctx)  # ("--run-dir <path>", help) as --help prints it
    shown = record[0] if record else param.name.upper()
    kind = "argument" if param.param_type_name == "argument" else ("flag" if _is_flag(param) else "option")
    if kind == "argument" and not param.required:
        kind += " (optional)"
    if getattr(param, "multiple", False):
        kind += ", repeatable"
    help_text = (record[1] if record else None) or getattr(param, "help", None) or ""
    code = shown.replace("|", "\\|")  # a code span: only the table's pipes need escaping
    return [f"`{code}`", kind, _cell(help_text)]  # the help text carries [default: ...] / [required]


def _usage_piece(arg: Any) -> str:
    """`RECIPE`, `[RECIPE]` or `TARGETS...`, as click's own usage line spells arguments."""
    piece = (getattr(arg, "metavar", None) or arg.name).upper() + ("..." if getattr(arg, "nargs", 1) == -1 else "")
    return piece if arg.required else f"[{piece}]"


def _command_section(name: str, cmd: Any, parent: Any) -> list[str]:
    ctx = cmd.context_class(cmd, info_name=name, parent=parent)
    usage = " ".join(["cann-distill", name, "[OPTIONS]", *(_usage_piece(p) for p in cmd.params if p.param_type_name == "argument")])
    lines = [f"## `{name}`", "", _cell(cmd.help or ""), "", "```", usage, "```", ""]
    params = [p for p in cmd.params if not getattr(p, "hidden", False)]
    if params:
        lines += ["| argument / option | kind | what it does |", "|---|---|---|"]
        lines += ["| " + " | ".join(_param_row(p, ctx)) + " |" for p in params]
        lines += [""]
    if cmd.epilog:
        example = cmd.epilog.strip()
        example = example[len("Example:") :].strip() if example.startswith("Example:") else example
        lines += ["Example:", "", "```bash", example, "```", ""]
    return lines


def cli_reference_markdown() -> str:
    """Every command of `cann-distill`, in the order `--help` lists them, with its options and example."""
    from cann_distill.cli import app

    group = typer.main.get_command(app)
    root = group.context_class(group, info_name="cann-distill")
    lines = [
        "# CLI reference",
        "",
        "Generated from the command-line app (`cann_distill/cli.py`) each time the site is built: every command, "
        "argument and option below is the one `cann-distill COMMAND --help` shows.",
        "",
        (group.help or "").strip(),
        "",
        "Conventions shared by the stage commands: human output goes to stderr and `--json` puts only the machine "
        "result on stdout; exit 0 done or up to date, 1 a stage failed, 2 bad recipe or usage; errors are one "
        "`Error: ...` line (`--debug` adds the traceback).",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    commands = group.list_commands(root) if hasattr(group, "list_commands") else []
    for name in commands:
        cmd = group.get_command(root, name)
        if cmd is None or cmd.hidden:
            continue
        lines.append(f"| [`{name}`](#{name}) | {_cell((cmd.help or '').strip().split('. ')[0].rstrip('.'))} |")
    lines.append("")
    for name in commands:
        cmd = group.get_command(root, name)
        if cmd is not None and not cmd.hidden:
            lines += _command_section(name, cmd, root)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, help="write the page here instead of stdout")
    args = ap.parse_args(argv)
    text = cli_reference_markdown()
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
