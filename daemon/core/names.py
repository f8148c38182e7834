"""Names of tables and columns: how the configuration spells them, and how reports show them.

The configuration's syntax is SQL's: parts separated by dots, each part either written as is or in double
quotes. Inside double quotes any character may appear (dots, spaces, newlines) and a double quote is written
twice: `app.inv`, `"my.schema"."inv"`, `public."we""ird"`. A part written as is is taken verbatim (its case is
kept, as the guardian always did) and may hold no dot, no double quote and no leading or trailing space. A
table written without a schema is in `public`.

Names are never pasted into SQL: queries take them as `psycopg.sql.Identifier` or as parameters. `shown()`
renders a name for people (logs, reports): the same syntax, with unprintable characters escaped and a bounded
length, so a name can neither break a log line nor flood it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: PostgreSQL keeps the first 63 bytes of an identifier (NAMEDATALEN - 1): a longer name never matches a table.
MAX_IDENTIFIER_BYTES = 63
#: The longest rendering `shown()` returns (a name is at most 63 bytes, but text from a dump listing is not).
MAX_SHOWN = 160
DEFAULT_SCHEMA = "public"

_BARE = re.compile(r"[\w$]+")  # shown without quotes: letters (any script), digits, underscore, dollar


@dataclass(frozen=True, order=True)
class TableName:
    """A table's exact schema and name, as PostgreSQL stores them (no quoting, no case folding)."""

    schema: str
    name: str

    def __str__(self) -> str:
        return shown(self.schema, self.name)


def split_name(text: str, most: int) -> list[str]:
    """The parts of a dotted name, unquoted. Raises ValueError saying what is wrong: unbalanced quotes, an
    empty part, text after a closing quote, surrounding spaces on an unquoted part, more than `most` parts,
    or a part longer than PostgreSQL keeps."""
    parts: list[str] = []
    i = 0
    while True:
        if text.startswith('"', i):
            part, i = _quoted(text, i)
        else:
            end = text.find(".", i)
            end = len(text) if end < 0 else end
            part, i = text[i:end], end
            if '"' in part:
                raise ValueError(f"a double quote inside an unquoted part ({part!r}): quote the whole part "
                                 'and double the quote, as in "we""ird"')
            if part != part.strip():
                raise ValueError(f"leading or trailing spaces in {part!r}: quote the part to keep them")
        if not part:
            raise ValueError("an empty part: every part of a dotted name must be non-empty")
        if len(part.encode()) > MAX_IDENTIFIER_BYTES:
            raise ValueError(f"{shown(part)} is longer than the {MAX_IDENTIFIER_BYTES} bytes PostgreSQL keeps")
        parts.append(part)
        if i == len(text):
            break
        if text[i] != ".":
            raise ValueError(f"unexpected {text[i]!r} after a closing quote: parts are separated by dots")
        i += 1
        if i == len(text):
            raise ValueError("an empty part after the last dot")
    if len(parts) > most:
        raise ValueError(f"{len(parts)} dotted parts, at most {most} expected: quote a part that holds a dot, "
                         'as in "my.schema".table')
    return parts


def _quoted(text: str, start: int) -> tuple[str, int]:
    """The double-quoted part starting at `start` (unquoted) and the index just past its closing quote."""
    out, i = [], start + 1
    while True:
        end = text.find('"', i)
        if end < 0:
            raise ValueError("unbalanced double quote: a quoted part has no closing quote")
        out.append(text[i:end])
        if text.startswith('"', end + 1):  # a doubled quote stands for one quote
            out.append('"')
            i = end + 2
            continue
        return "".join(out), end + 1


def parse_table(text: str) -> TableName:
    """`table` (in public) or `schema.table`, in the syntax of this module. Raises ValueError."""
    parts = split_name(text, 2)
    return TableName(*parts) if len(parts) == 2 else TableName(DEFAULT_SCHEMA, parts[0])


def parse_column(text: str) -> tuple[TableName, str]:
    """`table.column` (table in public) or `schema.table.column`. Raises ValueError."""
    parts = split_name(text, 3)
    if len(parts) < 2:
        raise ValueError("a column is written table.column or schema.table.column")
    table = TableName(*parts[:2]) if len(parts) == 3 else TableName(DEFAULT_SCHEMA, parts[0])
    return table, parts[-1]


def shown(*parts: str) -> str:
    """Parts of a name for people: bare when made of letters, digits, `_` and `$`, else double-quoted with
    quotes doubled, backslashes doubled and unprintable characters escaped (`\\n`, `\\x07`, `\\u2028`), joined
    by dots; at most MAX_SHOWN characters (cut with an ellipsis)."""
    text = ".".join(p if _BARE.fullmatch(p) else '"' + escaped(p).replace('"', '""') + '"' for p in parts)
    return bounded(text)


def shown_text(text: str) -> str:
    """Free text that may hold a name (a configuration key, a dump listing's line), escaped and bounded."""
    return bounded(escaped(text))


def escaped(text: str) -> str:
    """Backslashes doubled, unprintable characters as their Python escapes: one line, nothing hidden."""
    out = []
    for c in text:
        if c == "\\":
            out.append("\\\\")
        else:
            out.append(c if c.isprintable() else repr(c)[1:-1])
    return "".join(out)


def bounded(text: str) -> str:
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"
