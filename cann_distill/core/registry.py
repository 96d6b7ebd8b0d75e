"""One generic registry for named components (losses, selectors, hardware profiles, ...).

Recipes refer to components by short names only: loading a recipe never imports code.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import json
import typing
from functools import lru_cache
from typing import Any, Callable, Generic, Iterator, Optional, TypeVar, cast, overload

from pydantic import ConfigDict, TypeAdapter, ValidationError

from cann_distill.core.errors import preview

T = TypeVar("T")
_STRICT = ConfigDict(strict=True, allow_inf_nan=False)


def suggest(name: str, known: list[str], n: int = 3) -> str:
    """`" (did you mean: a, b?)"` or `""` when nothing is close."""
    if not isinstance(name, str) or len(name) > 100:
        return ""
    close = difflib.get_close_matches(name, known, n=n, cutoff=0.6)
    return f" (did you mean: {', '.join(close)}?)" if close else ""


class Registry(Generic[T]):
    """Name → component. `@REG.register` or `@REG.register("name")` both work."""

    def __init__(self, kind: str, provider: Optional[str] = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._provider = provider  # module whose import registers the built-ins; loaded on first lookup

    def _load(self) -> None:
        if self._provider is not None:
            provider, self._provider = self._provider, None
            importlib.import_module(provider)

    @overload
    def register(self, name_or_obj: str) -> Callable[[T], T]: ...
    @overload
    def register(self, name_or_obj: T) -> T: ...
    def register(self, name_or_obj: Any) -> Any:
        if isinstance(name_or_obj, str):
            name = name_or_obj

            def deco(obj: T) -> T:
                self.add(name, obj)
                return obj

            return deco
        obj = name_or_obj
        self.add(getattr(obj, "name", None) or obj.__name__.lower(), obj)
        return obj

    def add(self, name: str, obj: T) -> None:
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' registered twice")
        self._items[name] = obj

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def unknown_message(self, name: str) -> str:
        return f"unknown {self.kind} {preview(name)} (known: {', '.join(self.names())})"

    def get(self, name: str) -> T:
        self._load()
        if name not in self._items:
            raise KeyError(self.unknown_message(name))
        return self._items[name]

    def check_kwargs(self, name: str, kwargs: dict[str, Any]) -> list[tuple[str, str]]:
        """Bind recipe keyword arguments against the component's signature.

        Returns (argument, message) pairs; empty when the arguments fit.
        """
        sig = inspect.signature(cast(Callable[..., Any], self.get(name)))
        params = {k: p for k, p in sig.parameters.items() if k != "self"}
        if any(p.kind is p.VAR_KEYWORD for p in params.values()):
            return []
        accepted = [k for k, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        errors = []
        for key in kwargs:
            if key not in accepted:
                errors.append((key, f"unexpected argument for {self.kind} '{name}' (accepts: {', '.join(accepted) or 'nothing'})"))
        for key, p in params.items():
            if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and key not in kwargs:
                errors.append((key, f"missing argument for {self.kind} '{name}'"))
        hints = _type_hints(self.get(name))
        for key, value in kwargs.items():
            problem = _type_problem(hints[key], value) if key in accepted and key in hints else None
            if problem:
                errors.append((key, problem))
        return errors

    def build(self, name: str, **kwargs: Any) -> Any:
        return cast(Callable[..., Any], self.get(name))(**kwargs)


def _type_hints(obj: Any) -> dict[str, Any]:
    """Annotations of a component's parameters (its __init__ for a class); {} when they do not resolve."""
    try:
        return typing.get_type_hints(obj.__init__ if inspect.isclass(obj) else obj)
    except Exception:  # an annotation that does not resolve only costs the type check
        return {}


@lru_cache(maxsize=None)
def _adapter(hint: Any) -> TypeAdapter:
    return TypeAdapter(hint, config=_STRICT)


def _type_problem(hint: Any, value: Any) -> Optional[str]:
    """Strict check of a recipe argument against its annotation: `true` is no float, `"2"` no int, NaN no number."""
    try:
        _adapter(hint).validate_json(json.dumps(value, default=str))
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"]
        quote = " (quote numbers in YAML: '2')" if hint is str and isinstance(value, (int, float)) else ""
        return f"{msg}, got {preview(value)}{quote}"
    except TypeError:  # an annotation pydantic cannot check (hashable or not)
        return None
    return None
