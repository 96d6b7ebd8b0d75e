"""One error hierarchy. The CLI turns these into one `Error: ...` line and an exit code."""

from __future__ import annotations


class CannDistillError(Exception):
    """Base class: a failure the user can act on, shown without a traceback."""

    exit_code: int = 1


class RecipeError(CannDistillError):
    """The recipe (or a command-line override) is invalid. Nothing has run."""

    exit_code = 2


class UsageError(CannDistillError):
    """The command was called wrongly (bad option value, missing file argument)."""

    exit_code = 2


class StageError(CannDistillError):
    """A stage failed while doing its work."""

    exit_code = 1


class MissingInputError(StageError):
    """A stage needs an artifact that an earlier stage has not produced (or that is stale)."""


class ArtifactError(StageError):
    """An artifact on disk is corrupt, does not match its hash, or does not fit the recipe."""


class GateError(StageError):
    """A deployment budget failed under --strict (the stage itself completed and wrote its outputs)."""
