"""Typer CLI: parse → call the library → print; exit codes 0 done, 1 a stage failed, 2 bad recipe or usage.

`app` (the Typer app, shared options, error handling) is in `app`; the commands, by help panel, in `pipeline`,
`inspection` and `tools`; what they print for people in `render`. Nothing imported here imports torch.
"""

from cann_distill.cli import inspection, pipeline, tools, tune  # noqa: F401  (register the commands, in help order)
from cann_distill.cli.app import app, main

__all__ = ["app", "main"]
