"""Human output on stderr: messages and rich progress bars (off when quiet or not a terminal)."""

from __future__ import annotations

import contextlib
import logging
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
        """Called by the CLI: library warnings logged under `cann_distill` reach stderr as `Warning: ...` lines."""
        self.quiet = quiet
        logger = logging.getLogger("cann_distill")
        if not any(isinstance(h, _ToUI) for h in logger.handlers):
            logger.addHandler(_ToUI(self))
            logger.setLevel(logging.WARNING)
            logger.propagate = False

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
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
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


class _ToUI(logging.Handler):
    def __init__(self, target: UI) -> None:
        super().__init__(logging.WARNING)
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        self.target.warn(record.getMessage())


ui = UI()
