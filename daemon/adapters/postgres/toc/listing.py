"""pg_restore's table of contents: the listing (`pg_restore --list`) parsed into header facts and entries, its
TABLE entries matched to exact names, and the entries of given tables selected for `pg_restore --use-list`.

Names in the listing are printed as they are, unquoted and separated by spaces (newlines in a name become
spaces), so a name cannot be read back out of a line for sure. What is exact: each entry's dump id and catalog
OIDs. So a table entry keeps its line's text, and is matched against names taken from elsewhere (the restored
database's catalog: `match_tables`), and `table_entries` selects a table's entries with pg_restore's own exact
`--schema`/`--table` comparison.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from daemon.adapters.postgres.toc.messages import explain
from daemon.adapters.postgres.tools import find_tool
from daemon.core.errors import GuardianError
from daemon.core.names import TableName

# One entry: "<dump id>; <catalog table OID> <object OID> <kind> <schema> <name> <owner>".
_LINE = re.compile(r"^(?P<id>\d+);\s*(?P<tableoid>\d+)\s+(?P<oid>\d+)\s+(?P<rest>.*)$", re.DOTALL)
_COUNTED = re.compile(r"(TABLE DATA|TABLE|SEQUENCE SET|INDEX|CONSTRAINT|FK CONSTRAINT|VIEW|MATERIALIZED VIEW DATA|"
                      r"SCHEMA|EXTENSION) ")
PG_CLASS = 1259  # OID of pg_class: a TABLE entry's catalog table (a table in a schema named "DATA" is no TABLE DATA)


@dataclass(frozen=True)
class TocEntry:
    """A TABLE entry of the listing: its dump id, the table's OID in the dumped database, and the rest of its
    line after the kind ("schema name owner", unquoted: not split back into names, see `match_tables`)."""

    dump_id: int
    oid: int
    text: str


@dataclass(frozen=True)
class Toc:
    """What `pg_restore --list` showed (or why it could not)."""

    ok: bool
    error: str | None = None
    # False when the check could not judge the dump: this pg_restore is older than the pg_dump that wrote it
    # (the policy's client_tools_too_old finding then says so), or the check stalled (logged; the next check
    # tries again). Such a dump is not called unreadable: its backup stays good.
    judged: bool = True
    tables: tuple[str, ...] = ()  # "schema.name" for display only: a name holding a space cannot be told apart
    tables_with_data: tuple[str, ...] = ()  # the same, for tables whose rows are in the dump
    table_entries: tuple[TocEntry, ...] = ()  # every TABLE entry, whatever its name
    data_oids: frozenset[int] = frozenset()  # OIDs of the tables with a TABLE DATA entry
    unparsed: int = 0  # lines that are neither comments nor entries (a name broken over lines by an old pg_restore)
    dumped_from: str | None = None  # server version, e.g. "15.18"
    dumped_by: str | None = None  # pg_dump version
    archive_version: str | None = None  # e.g. "1.14-0"
    entries: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {"ok": self.ok, "error": self.error, "judged": self.judged, "tables": len(self.tables),
                "tables_with_data": list(self.tables_with_data), "dumped_from": self.dumped_from,
                "dumped_by": self.dumped_by, "archive_version": self.archive_version, "entries": self.entries}


def parse_toc(text: str) -> Toc:
    """The listing's header facts and entries. Lines are split on newlines only (a name may hold any other
    separator); a line that is neither a comment nor an entry is counted in `unparsed`, never guessed at."""
    tables, data, entries_of_tables = [], [], []
    data_oids: set[int] = set()
    meta: dict[str, str] = {}
    entries = unparsed = 0
    for line in text.split("\n"):
        if line.startswith(";"):
            m = re.match(r";\s*(Dumped from database version|Dumped by pg_dump version|Format|"
                         r"Archive created at|dbname|TOC Entries)\s*:\s*(.*)", line)
            if m:
                meta[m.group(1)] = m.group(2).strip()
            m = re.search(r"Dump Version:\s*(\S+)", line)
            if m:
                meta["archive_version"] = m.group(1)
            continue
        entry = _LINE.match(line)
        if not entry:
            unparsed += bool(line.strip())
            continue
        rest, tableoid, oid = entry.group("rest"), int(entry.group("tableoid")), int(entry.group("oid"))
        entries += bool(_COUNTED.match(rest))
        if tableoid == PG_CLASS and rest.startswith("TABLE "):
            entries_of_tables.append(TocEntry(int(entry.group("id")), oid, rest.removeprefix("TABLE ")))
            tables.append(_display(rest.removeprefix("TABLE ")))
        elif tableoid == 0 and oid and rest.startswith("TABLE DATA "):
            data_oids.add(oid)
            data.append(_display(rest.removeprefix("TABLE DATA ")))
    fmt = meta.get("Format")
    if fmt is not None and fmt.upper() != "CUSTOM":
        return Toc(ok=False, error=f"not a custom-format dump (format {fmt})")
    return Toc(ok=True, tables=tuple(tables), tables_with_data=tuple(data), table_entries=tuple(entries_of_tables),
               data_oids=frozenset(data_oids), unparsed=unparsed,
               dumped_from=meta.get("Dumped from database version"), dumped_by=meta.get("Dumped by pg_dump version"),
               archive_version=meta.get("archive_version"), entries=entries)


def _display(text: str) -> str:
    """ "schema name owner" as "schema.name": right for names without spaces, a best guess for the others."""
    schema, _, rest = text.partition(" ")
    return f"{schema}.{rest.rsplit(' ', 1)[0]}"


def listing_key(table: TableName) -> str:
    """How a TABLE entry's line begins for this table: pg_restore prints schema and name unquoted, a space
    after each, newlines and carriage returns in them replaced by spaces (its `sanitize_line`)."""
    def clean(part: str) -> str:
        return part.replace("\n", " ").replace("\r", " ")

    return f"{clean(table.schema)} {clean(table.name)} "


def match_tables(entries: tuple[TocEntry, ...], names: list[TableName]
                 ) -> tuple[list[tuple[TocEntry, TableName]], list[TocEntry]]:
    """Pair each TABLE entry with a distinct table of `names` (exact names, e.g. from a restored database's
    catalog) whose `listing_key` begins the entry's line. Owners and names may hold spaces, so a line can fit
    several names: a maximum matching (augmenting paths) pairs as many entries as possible, trying the longest
    name first. Returns the pairs in entry order and the entries no table fits."""
    by_key: dict[str, list[TableName]] = {}
    for name in names:
        by_key.setdefault(listing_key(name), []).append(name)
    fits = [[t for cut in _space_cuts(e.text) for t in by_key.get(e.text[:cut], ())] for e in entries]
    holder: dict[TableName, int] = {}

    def place(i: int, tried: set[TableName]) -> bool:
        for table in fits[i]:
            if table not in tried:
                tried.add(table)
                if table not in holder or place(holder[table], tried):
                    holder[table] = i
                    return True
        return False

    for i in range(len(entries)):
        place(i, set())
    pair = {i: t for t, i in holder.items()}
    return ([(e, pair[i]) for i, e in enumerate(entries) if i in pair],
            [e for i, e in enumerate(entries) if i not in pair])


def _space_cuts(text: str) -> list[int]:
    """Ends of the prefixes of `text` that end in a space, longest first."""
    return [i + 1 for i in range(len(text) - 1, -1, -1) if text[i] == " "]


def table_entries(path: Path, tables: list[TableName], timeout: float) -> tuple[list[str], list[TableName]]:
    """The listing lines of these tables' entries (TABLE, TABLE DATA), for `pg_restore --use-list`, and the
    tables the dump does not hold. pg_restore selects the entries itself with `--schema`/`--table`, which compare
    exact names: nothing is read back from a line. One listing per table, so schema and table are never
    crossed (`-n a -n b -t x -t y` would also take a.y and b.x). Raises GuardianError when pg_restore fails."""
    lines: dict[int, str] = {}
    absent = []
    for table in tables:
        try:
            out = subprocess.run([find_tool("pg_restore"), "--list", f"--schema={table.schema}",
                                  f"--table={table.name}", str(path)], capture_output=True, timeout=timeout,
                                 check=False)
        except subprocess.TimeoutExpired:
            raise GuardianError(f"pg_restore did not list the dump in {timeout:.0f}s") from None
        if out.returncode != 0:
            raise GuardianError(f"pg_restore could not list the dump: {explain(out.stderr.decode(errors='replace'))}")
        listing = out.stdout.decode(errors="replace")
        if not parse_toc(listing).table_entries:
            absent.append(table)
        for line in listing.split("\n"):
            if m := _LINE.match(line):
                lines.setdefault(int(m.group("id")), line)  # in the listing's order, which pg_restore follows
    return list(lines.values()), absent
