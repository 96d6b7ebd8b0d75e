"""Recipe text as untrusted input: UTF-8 YAML in, plain data out, or one RecipeError.

Recipes are shared and run by CI on pull requests, so loading must stay cheap and predictable
whatever the file holds:

- bytes: at most MAX_BYTES; UTF-8 with or without a BOM; any other encoding is refused with the
  offset of the first bad byte;
- structure: PyYAML's event parser (libyaml when installed) feeds our own iterative composer, which
  refuses more than MAX_DEPTH levels, MAX_NODES nodes after alias expansion (an alias bomb stops
  after a few thousand nodes, not gigabytes), duplicate keys (naming both lines), non-scalar keys,
  merge keys, more than one document and every YAML tag that is not a core type;
- scalars: the YAML 1.2 core schema: `true`/`false` only (no `yes`/`on`), no sexagesimal
  (`12:30:00` stays a string), decimal/0o/0x integers, `1e-3` is a float;
- values (`value_errors`, run by recipe.resolve on the merged data): finite floats, integers that
  fit 64 bits, strings and keys without control, format or line-separator characters, bounded length.

The composer records where each key path was written (`Document.positions`), so schema errors
can point at `file:line:col`.
"""

from __future__ import annotations

import codecs
import copy
import math
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Union

import yaml

from cann_distill.core.errors import MAX_LINE, RecipeError, cut, preview

MAX_BYTES = 256 * 1024  # the shipped recipes are about 2 KB
MAX_DEPTH = 32  # they nest 4 levels
MAX_NODES = 20_000  # after alias expansion; they hold about 100
MAX_ALIASES = 100
MAX_TEXT = 4096  # characters in one string (PATH_MAX)
MAX_KEY = 100  # characters in one mapping key
MAX_INT = 2**63 - 1  # what torch, numpy and onnxruntime can hold

_PARSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # only its event parser is used
_CORE = "tag:yaml.org,2002:"
_NULL = {"", "~", "null", "Null", "NULL"}
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_INF = re.compile(r"[-+]?\.(inf|Inf|INF)")
_NAN = re.compile(r"\.(nan|NaN|NAN)")
# YAML's printable set (1.2, 5.1); anything else is refused before parsing, with its line and column
_NOT_PRINTABLE = re.compile("[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_BAD_CATEGORIES = {"Cc", "Cf", "Cs", "Zl", "Zp"}  # control, format (bidi overrides, zero-width), surrogate, separators

Position = tuple[int, int]  # 1-based line, column


class YAMLSyntaxError(RecipeError):
    """The text is not YAML (as opposed to YAML that breaks a limit or a rule)."""


@dataclass
class Document:
    """Plain data and where each key path came from: `(line, col)` in the file or `"--set"`."""

    data: Any
    positions: dict[str, Union[Position, str]] = field(default_factory=dict)

    def where(self, path: str) -> Union[Position, str, None]:
        """Position of `path` or of its nearest ancestor that has one."""
        while path:
            if path in self.positions:
                return self.positions[path]
            cut_at = max(path.rfind("."), path.rfind("["))
            path = path[:cut_at] if cut_at > 0 else ""
        return None


# ----------------------------------------------------------------------------- bytes → text


def read_text(path: Path, source: str) -> str:
    """The file's text, refused when it is too large or not UTF-8."""
    with open(path, "rb") as f:
        raw = f.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise RecipeError(f"{source}: larger than {MAX_BYTES // 1024} KiB; a recipe is a short YAML file")
    return decode(raw, source)


def decode(raw: bytes, source: str) -> str:
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8) :]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        at = exc.start
        line = raw.count(b"\n", 0, at) + 1
        col = at - (raw.rfind(b"\n", 0, at) + 1) + 1
        utf16 = " (it looks like UTF-16)" if raw[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE) else ""
        raise RecipeError(
            f"{source}:{line}:{col}: not UTF-8: byte 0x{raw[at]:02x} at byte offset {at}{utf16}; save the recipe as UTF-8"
        ) from None


# ----------------------------------------------------------------------------- text → data


@dataclass
class _Open:
    """A collection being composed."""

    value: Union[list[Any], dict[str, Any]]
    path: str
    anchor: Optional[str]
    first_node: int
    depth: int = 0  # levels of collections below this one
    key: Optional[str] = None  # mapping: the key waiting for its value
    key_lines: dict[str, int] = field(default_factory=dict)


def _line_col(text: str, index: int) -> Position:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _mark(event: Any) -> Position:
    m = event.start_mark
    return m.line + 1, m.column + 1


class _Composer:
    def __init__(self, source: str) -> None:
        self.source = source
        self.positions: dict[str, Union[Position, str]] = {}
        self.anchors: dict[str, tuple[Any, int, int]] = {}  # name -> (value, nodes, depth)
        self.stack: list[_Open] = []
        self.nodes = 0
        self.aliases = 0
        self.documents = 0
        self.root: Any = None

    def fail(self, at: Position, msg: str) -> RecipeError:
        return RecipeError(f"{self.source}:{at[0]}:{at[1]}: {msg}")

    def count(self, at: Position, n: int = 1) -> None:
        self.nodes += n
        if self.nodes > MAX_NODES:
            raise self.fail(at, f"more than {MAX_NODES:,} YAML nodes (after expanding aliases); a recipe holds about 100")

    def child_path(self, at: Position) -> str:
        """Path of the node that starts now, inside the innermost open collection."""
        top = self.stack[-1]
        if isinstance(top.value, list):
            path = f"{top.path}[{len(top.value)}]"
        else:
            path = f"{top.path}.{top.key}" if top.path else str(top.key)
        self.positions.setdefault(path, at)
        return path

    def feed(self, event: Any) -> None:
        at = _mark(event)
        if isinstance(event, yaml.DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                raise self.fail(at, "a recipe is one YAML document; found a second one (---)")
        elif isinstance(event, yaml.ScalarEvent):
            self.count(at)
            if self.stack and isinstance(self.stack[-1].value, dict) and self.stack[-1].key is None:
                self.take_key(event, at)
                return
            self.add(self.scalar(event, at), event.anchor, at, nodes=1, depth=0)
        elif isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            self.count(at)
            self.check_key_position(at)
            kind = "seq" if isinstance(event, yaml.SequenceStartEvent) else "map"
            if event.tag not in (None, "!", _CORE + kind):
                raise self.fail(at, f"YAML tag {_tag(event.tag)} is not allowed: recipes are plain data")
            if len(self.stack) >= MAX_DEPTH:
                raise self.fail(at, f"nested more than {MAX_DEPTH} levels deep")
            path = self.child_path(at) if self.stack else ""
            self.stack.append(_Open([] if kind == "seq" else {}, path, event.anchor, self.nodes))
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            done = self.stack.pop()
            self.add(done.value, done.anchor, at, nodes=self.nodes - done.first_node + 1, depth=1 + done.depth, composed=True)
        elif isinstance(event, yaml.AliasEvent):
            if event.anchor not in self.anchors:
                raise self.fail(at, f"alias *{preview(event.anchor)} names no anchor defined before it")
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise self.fail(at, f"more than {MAX_ALIASES} aliases")
            value, nodes, depth = self.anchors[event.anchor]
            self.count(at, nodes)
            if len(self.stack) + depth > MAX_DEPTH:
                raise self.fail(at, f"nested more than {MAX_DEPTH} levels deep (through alias *{preview(event.anchor)})")
            self.check_key_position(at)
            self.add(copy.deepcopy(value), None, at, nodes=nodes, depth=depth)

    def check_key_position(self, at: Position) -> None:
        if self.stack and isinstance(self.stack[-1].value, dict) and self.stack[-1].key is None:
            raise self.fail(at, "mapping keys must be plain names, not lists, mappings or aliases")

    def take_key(self, event: Any, at: Position) -> None:
        top = self.stack[-1]
        if event.tag not in (None, "!", _CORE + "str"):
            raise self.fail(at, f"YAML tag {_tag(event.tag)} is not allowed on a key")
        key = event.value
        if key == "<<" and not event.style:
            raise self.fail(at, "merge keys (<<) are not supported; write the keys out")
        if event.anchor:
            raise self.fail(at, "anchors on keys are not supported")
        path = f"{top.path}.{key}" if top.path else key
        if key in top.value:
            raise self.fail(at, f"{key_text(path)}: duplicate key (first at line {top.key_lines[key]}); keep one")
        top.key_lines[key] = at[0]
        top.key = key
        self.positions[path] = at

    def add(self, value: Any, anchor: Optional[str], at: Position, nodes: int, depth: int, composed: bool = False) -> None:
        if anchor is not None:
            self.anchors[anchor] = (value, nodes, depth)
        if not self.stack:
            self.root = value
            return
        top = self.stack[-1]
        top.depth = max(top.depth, depth)
        if not composed:
            self.child_path(at)
        if isinstance(top.value, list):
            top.value.append(value)
        else:
            assert top.key is not None
            top.value[top.key] = value
            top.key = None

    def scalar(self, event: Any, at: Position) -> Any:
        """YAML 1.2 core schema: plain scalars resolve to null/bool/int/float/str, quoted ones stay strings."""
        text, tag = event.value, event.tag
        if tag in (None, "!") and event.style:
            return text
        if tag not in (None, "!", _CORE + "str", _CORE + "int", _CORE + "float", _CORE + "bool", _CORE + "null"):
            raise self.fail(at, f"YAML tag {_tag(tag)} is not allowed: recipes are plain data")
        if tag == _CORE + "str":
            return text
        value = resolve_scalar(text)
        if value is _TOO_LONG:
            raise self.fail(at, f"number {preview(text)} has too many digits")
        wanted = {_CORE + "int": int, _CORE + "float": float, _CORE + "bool": bool, _CORE + "null": type(None)}.get(tag or "")
        if wanted is not None:
            if wanted is float and type(value) is int:
                return float(value)
            if type(value) is not wanted:
                raise self.fail(at, f"{preview(text)} is not a valid {tag[len(_CORE) :]}")
        return value


_TOO_LONG = object()


def resolve_scalar(text: str) -> Any:
    """A plain scalar under the YAML 1.2 core schema."""
    if text in _NULL:
        return None
    if text in _BOOL:
        return _BOOL[text]
    if _INT.fullmatch(text):
        try:
            return int(text, 0) if text[:2] in ("0o", "0x") else int(text)
        except ValueError:  # more digits than Python converts
            return _TOO_LONG
    if _FLOAT.fullmatch(text):
        return float(text)
    if _INF.fullmatch(text):
        return -math.inf if text.startswith("-") else math.inf
    if _NAN.fullmatch(text):
        return math.nan
    return text


def compose(text: str, source: str) -> Document:
    """Parse one YAML document under the limits above; a syntax error names line and column."""
    bad = _NOT_PRINTABLE.search(text)
    if bad:
        line, col = _line_col(text, bad.start())
        raise YAMLSyntaxError(f"{source}:{line}:{col}: YAML syntax error: character U+{ord(bad.group()):04X} is not allowed in YAML")
    composer = _Composer(source)
    try:
        for event in yaml.parse(text, Loader=_PARSER):
            composer.feed(event)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise YAMLSyntaxError(f"{source}{where}: YAML syntax error: {cut(problem, 120)}") from None
    except yaml.YAMLError as exc:
        raise YAMLSyntaxError(f"{source}: YAML syntax error: {cut(str(exc), 120)}") from None
    return Document(composer.root, composer.positions)


def load_document(path: Path, source: Optional[str] = None) -> Document:
    """A recipe file as a mapping (empty file: `{}`) with the positions of its keys."""
    source = source or str(path)
    doc = compose(read_text(path, source), source)
    if doc.data is None:
        doc.data = {}
    if not isinstance(doc.data, dict):
        raise RecipeError(f"{source}: a recipe must be a YAML mapping, got a {_kind(doc.data)}")
    return doc


def load_value(text: str, source: str) -> Any:
    """One value written on the command line (`--set key=VALUE`), under the same rules as a file."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise RecipeError(f"{source}: value larger than {MAX_BYTES // 1024} KiB")
    return compose(text, source).data


def _tag(tag: str) -> str:
    return preview("!!" + tag[len(_CORE) :] if tag.startswith(_CORE) else tag)


def _kind(value: Any) -> str:
    return {list: "list", dict: "mapping", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(value), "null")


# ----------------------------------------------------------------------------- values


def text_problem(text: str, limit: int = MAX_TEXT) -> Optional[str]:
    """Why a string cannot go into a recipe (None when it can): too long, or a control/invisible character."""
    if len(text) > limit:
        return f"is {len(text):,} characters long (at most {limit:,})"
    for ch in text:
        if unicodedata.category(ch) in _BAD_CATEGORIES:
            return f"contains the control or invisible character U+{ord(ch):04X}"
    return None


def value_errors(value: Any, path: str = "") -> list[tuple[str, str]]:
    """(path, message) for every value no recipe field may hold, wherever it sits (typed or free-form)."""
    errors: list[tuple[str, str]] = []
    stack: list[tuple[str, Any]] = [(path, value)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, float) and not math.isfinite(v):
            errors.append((where, f"Input should be a finite number, got {v}"))
        elif isinstance(v, int) and not -MAX_INT - 1 <= v <= MAX_INT:
            errors.append((where, f"{preview(v)} does not fit in 64 bits"))
        elif isinstance(v, str):
            problem = text_problem(v)
            if problem:
                errors.append((where, f"{preview(v)} {problem}"))
        elif isinstance(v, dict):
            for k, item in reversed(list(v.items())):
                problem = text_problem(k, MAX_KEY) if isinstance(k, str) else "is not a name"
                at = f"{where}.{key_text(k)}" if where else key_text(k)
                if problem:
                    errors.append((at, f"key {problem}"))
                else:
                    stack.append((at, item))
        elif isinstance(v, (list, tuple)):
            stack.extend((f"{where}[{i}]", item) for i, item in reversed(list(enumerate(v))))
    return errors


def key_text(part: object) -> str:
    """A key as it may appear in a message path: as written when plain and short, else a preview."""
    text = str(part)
    return text if text.isprintable() and len(text) <= 40 else preview(text)


# ----------------------------------------------------------------------------- messages


def render_errors(source: str, errors: Iterable[tuple[str, str]], doc: Optional[Document] = None) -> str:
    """One line, in file order: `file:line:col: path: message; line N: path: message; ... (+K more)`, under MAX_LINE."""
    parts: list[str] = []
    placed = [(doc.where(path) if doc is not None and path else None, path, msg) for path, msg in errors]
    # in file order, then the ones from --set or the defaults
    items = sorted(placed, key=lambda item: item[0] if isinstance(item[0], tuple) else (1 << 62, 0))
    budget = MAX_LINE - len("Error: ") - len("; (+999 more)")
    for i, (at, path, msg) in enumerate(items):
        head = f"{path}: " if path else ""
        if isinstance(at, tuple):
            text = f"{source}:{at[0]}:{at[1]}: {head}{msg}" if i == 0 else f"line {at[0]}: {head}{msg}"
        elif at is not None:  # an override
            text = f"{source}: {at} {head}{msg}" if i == 0 else f"{at} {head}{msg}"
        else:
            text = f"{source}: {head}{msg}" if i == 0 else f"{head}{msg}"
        if i == 0:
            parts.append(cut(text, budget))
        elif sum(len(p) + 2 for p in parts) + len(text) <= budget:
            parts.append(text)
        else:
            return "; ".join(parts) + f" (+{len(items) - i} more)"
    return "; ".join(parts)
