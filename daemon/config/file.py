"""Reading the YAML configuration file, whatever its bytes: the result is a mapping, or one line per problem
naming the file and where in it (line:column, or byte offset), never an exception.

The file is input like any other: it may be a directory, too large, not UTF-8, nested 20,000 levels deep
(PyYAML composes recursively), a "billion laughs" of aliases (a few lines that expand to billions of values),
or hold values PyYAML cannot build (`2026-02-30`, a 5,000-digit integer) or NUL characters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError
from yaml.reader import ReaderError

from daemon.core.redact import shorten

#: A configuration file is a few kilobytes (256 KiB holds hundreds of databases); a larger one is refused unparsed:
#: the pure-Python YAML parser reads about 100 KB a second of dense YAML.
MAX_BYTES = 256 * 1024
#: The model nests about six levels; YAML deeper than this is not a configuration.
MAX_DEPTH = 64
#: Values in the document once aliases are expanded (a real configuration has hundreds).
MAX_VALUES = 100_000


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses nesting deeper than MAX_DEPTH before it recurses, and reports a value it cannot
    build as a marked YAML error instead of letting ValueError or OverflowError escape."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self._depth >= MAX_DEPTH:
            mark = self.peek_event().start_mark
            raise ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:
            raise ConstructorError(None, None, f"cannot read this value ({exc})", node.start_mark) from None


def read_config_file(path: Path, problems: list[str]) -> dict[str, Any]:
    """The settings mapping in the YAML file at `path` ({} for an empty file); on any problem, append one line
    naming the file (and line:column or byte offset) to `problems` and return {}."""
    text = _read_text(path, problems)
    if text is None:
        return {}
    try:
        doc = yaml.load(text, Loader=_Loader)  # noqa: S506 -- _Loader is a SafeLoader
    except ReaderError as exc:  # a NUL or other control character: it has a position, not a mark
        problems.append(f"{path}:{_line_column(text, exc.position)}: invalid YAML: unacceptable character "
                        f"#x{exc.character:04x} ({exc.reason})")
        return {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        problems.append(f"{path}{at}: invalid YAML: {shorten(problem, 200)}")
        return {}
    except RecursionError:  # a safety net: MAX_DEPTH stops nesting long before Python's own limit
        problems.append(f"{path}: invalid YAML: nested too deeply")
        return {}
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        problems.append(f"{path}: the top level must be a mapping of settings, not {type(doc).__name__}")
        return {}
    problem = _check_values(doc)
    if problem:
        problems.append(f"{path}: {problem}")
        return {}
    return doc


def _read_text(path: Path, problems: list[str]) -> str | None:
    """The file's text, or None with a problem appended (unreadable, too large, not UTF-8)."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        problems.append(f"{path}: cannot read the config file: {exc.strerror or exc}")
        return None
    if len(data) > MAX_BYTES:
        problems.append(f"{path}: the config file is larger than {MAX_BYTES:,} bytes; not read")
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        problems.append(f"{path}: not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start} "
                        f"(line {line})")
        return None


def _line_column(text: str, position: int) -> str:
    line = text.count("\n", 0, position) + 1
    return f"{line}:{position - (text.rfind(chr(10), 0, position) + 1) + 1}"


def _check_values(doc: dict[str, Any]) -> str | None:
    """The first problem with the loaded document's values, or None: more than MAX_VALUES values once aliases
    are expanded (each reference counts again, as validation would walk it again), or a NUL character in a
    string (a double-quoted "\\0"), which no setting may hold and the OS refuses in paths and arguments.

    Bounded work: every value pushed is one that would be visited, so the walk stops after MAX_VALUES values
    and one container's worth."""
    stack: list[tuple[str, Any]] = [("", doc)]
    pushed = 1
    while stack:
        where, value = stack.pop()
        if isinstance(value, str) and "\0" in value:
            return f"{where or '(top level)'}: a NUL character in a value"
        children: list[tuple[str, Any]] = []
        if isinstance(value, dict):
            if any(isinstance(key, str) and "\0" in key for key in value):
                return f"{where or '(top level)'}: a NUL character in a key"
            children = [(_join(where, key), item) for key, item in value.items()]
        elif isinstance(value, list):
            children = [(f"{where}[{i}]", item) for i, item in enumerate(value)]
        pushed += len(children)
        if pushed > MAX_VALUES:
            return (f"the document expands to more than {MAX_VALUES:,} values (aliases repeating the same "
                    "values?); not a configuration")
        stack.extend(children)
    return None


def _join(where: str, key: object) -> str:
    key_text = shorten(str(key), 40)
    return f"{where}.{key_text}" if where else key_text
