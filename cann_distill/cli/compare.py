"""`cann-distill report --compare`: the key numbers of two or more run dirs side by side."""

from __future__ import annotations

from cann_distill.cli.app import invoke
from cann_distill.runtime.terminal import ui


def compare_cmd(targets: list[str], fmt: str, as_json: bool, quiet: bool, debug: bool) -> None:
    from pathlib import Path

    from rich.markup import escape
    from rich.table import Table

    from cann_distill.core.errors import UsageError
    from cann_distill.reporting.compare import compare as compare_runs
    from cann_distill.reporting.compare import to_markdown

    fmt = "json" if as_json else fmt

    def run_compare() -> dict:
        if fmt not in ("table", "json", "markdown"):
            raise UsageError(f"--format must be table, json or markdown, got {fmt!r}")
        result = compare_runs([Path(t) for t in targets])
        for w in result["warnings"]:
            ui.warn(escape(w))
        return result

    def render(result: dict) -> None:
        if fmt == "markdown":
            print(to_markdown(result), end="")
            return
        t = Table(title="cann-distill report --compare", title_justify="left")
        for col in ("metric", *[escape(r["name"]) for r in result["runs"]], "winner"):
            t.add_column(col)
        for row in result["rows"]:
            cells = [f"[bold green]{escape(d)}[/bold green]" if i == row["winner"] else escape(d) for i, d in enumerate(row["display"])]
            win = escape(result["runs"][row["winner"]]["name"]) if row["winner"] is not None else "–"
            t.add_row(f"{row['metric']} ({row['better']})", *cells, win if row.get("comparable", True) else f"– ({row['why']})")
        ui.console.print(t)

    invoke(run_compare, fmt == "json", quiet and fmt == "table", debug, render=render)
