"""Human output on stderr: messages and rich progress bars (off when quiet or not a terminal)."""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator, Optional, TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")


class UI:
    def __init__(self) -> None:
        self.console = Console(stderr=True)
        self.quiet = False
        self._progress: Optional[Progress] = None

    def configure(self, quiet: bool = False) -> None:
        self.quiet = quiet

    @property
    def bars_enabled(self) -> bool:
        return not self.quiet and self.console.is_terminal

    def info(self, msg: str) -> None:
        if not self.quiet:
            self.console.print(msg, highlight=False)

    def warn(self, msg: str) -> None:
        # warnings are shown even in quiet mode: they change how results should be read; one line each (grep-able logs)
        self.console.print(f"[yellow]Warning:[/yellow] {msg}", highlight=False, soft_wrap=True)

    @contextlib.contextmanager
    def progress(self) -> Iterator[Optional[Progress]]:
        if not self.bars_enabled or self._progress is not None:
            yield self._progress
            return
        prog = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=True,
        )
        self._progress = prog
        try:
            with prog:
                yield prog
        finally:
            self._progress = None

    def track(self, items: Iterable[T], description: str, total: Optional[int] = None) -> Iterator[T]:
        """Iterate with a progress bar when bars are enabled."""
        with self.progress() as prog:
            if prog is None:
                yield from items
                return
            task = prog.add_task(description, total=total if total is not None else len(items), status="")  # type: ignore[arg-type]
            try:
                for item in items:
                    yield item
                    prog.advance(task)
            finally:
                prog.remove_task(task)


ui = UI()
