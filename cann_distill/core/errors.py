"""One error hierarchy. The CLI turns these into one `Error: ...` line and an exit code."""

from __future__ import annotations

import reprlib

MAX_LINE = 480  # an error line, "Error: " included, stays under 500 characters

_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxdict, _repr.maxlist, _repr.maxtuple, _repr.maxset = 2, 4, 4, 4, 4
_repr.maxstring, _repr.maxlong, _repr.maxother = 40, 40, 40


def cut(text: str, limit: int) -> str:
    """`text` on one line, at most `limit` characters (an ellipsis marks the cut)."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def preview(value: object, limit: int = 40) -> str:
    """A user-supplied value as it may appear in a message: repr, escaped, on one line, cut to `limit`.

    reprlib bounds the work too: an alias-expanded list of millions of items costs a few items.
    """
    return cut(repr(value[: limit + 1]) if isinstance(value, str) else _repr.repr(value), limit)


class CannDistillError(Exception):
    """Base class: a failure the user can act on, shown without a traceback."""

    exit_code: int = 1

    def __str__(self) -> str:
        return cut(super().__str__(), MAX_LINE - len("Error: "))


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
