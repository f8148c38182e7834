"""The readability check: the cheap proof that a backup is a whole, readable custom-format dump.

Two reads, no database: `pg_restore --list` gives the table of contents (tables, which carry data, versions),
and `pg_restore -f /dev/null` reads every data block through (the TOC alone says nothing of a dump cut short
or corrupted after its header). `read_toc(path)` checks a file; `TocTee` checks a stream as the dump goes by
(a capture or a mirror), so no second pass over the dump is needed.

Names in the listing are printed as they are, unquoted and separated by spaces (newlines in a name become
spaces), so a name cannot be read back out of a line for sure. What is exact: each entry's dump id and catalog
OIDs. So a table entry keeps its line's text, and is matched against names taken from elsewhere (the restored
database's catalog: `match_tables`), and `table_entries` selects a table's entries with pg_restore's own exact
`--schema`/`--table` comparison.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import queue
import re
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from daemon.adapters.postgres.tools import find_tool, tool_version
from daemon.core.errors import GuardianError
from daemon.core.names import TableName, escaped

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
        return {"ok": self.ok, "error": self.error, "tables": len(self.tables),
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


def explain(stderr: str) -> str:
    """pg_restore's complaint in plain words (version mismatches above all)."""
    text = _last_error(stderr)
    m = re.search(r"unsupported version \(([\d.]+)\) in file header", stderr)
    if m:
        return (f"the dump was written by a newer pg_dump (archive format {m.group(1)}) than this pg_restore "
                f"({_safe_version()}) can read: install the PostgreSQL client tools of the dump's major version")
    if "input file does not appear to be a valid archive" in stderr or "did not find magic string" in stderr:
        return "not a PostgreSQL custom-format dump (no PGDMP header)"
    if "end of file" in stderr or "could not read input file" in stderr:
        return f"the dump is truncated: it ends in the middle ({text})"
    if "could not uncompress data" in stderr or "incorrect data check" in stderr:
        return f"the dump is corrupted: a data block does not decompress ({text})"
    return text


def _last_error(stderr: str, most: int = 400) -> str:
    """pg_restore's last error: its `error:` line and the server's message lines after it (DETAIL, HINT), not
    the SQL it was running (`LINE n:`, `Command was:` and after, whose last line is often just `);`), followed
    by the TOC entry it was processing when pg_restore names it; on one line, at most `most` characters."""
    lines = stderr.strip().split("\n")
    errors = [i for i, line in enumerate(lines) if line.startswith("pg_restore: error: ")]
    if not errors:
        return escaped(lines[-1].removeprefix("pg_restore: ")).strip() or "pg_restore failed"
    first = errors[-1]
    message = [lines[first].removeprefix("pg_restore: error: ")]
    for line in lines[first + 1:]:
        if line.startswith(("Command was:", "pg_restore: ")):
            break
        if not re.match(r"LINE \d+: |\s*\^\s*$", line):  # the server's quote of the SQL, and its caret
            message.append(line)
    text = re.sub(r"\s+", " ", " ".join(message)).strip()
    entries = [line.removeprefix("pg_restore: from TOC entry ") for line in lines[:first]
               if line.startswith("pg_restore: from TOC entry ")]
    if entries:
        text += f" (at TOC entry {entries[-1].strip()})"
    text = escaped(text)
    return text if len(text) <= most else text[: most - 1] + "…"


def _safe_version() -> str:
    try:
        return tool_version("pg_restore")
    except Exception:
        return "unknown version"


def read_toc(path: Path, timeout: float = 3600) -> Toc:
    """The readability check of a dump file: its table of contents, and every data block read through."""
    try:
        listing = subprocess.run([find_tool("pg_restore"), "--list", str(path)], capture_output=True, text=True,
                                 encoding="utf-8", errors="replace", timeout=timeout, check=False)
        if listing.returncode != 0:
            return Toc(ok=False, error=explain(listing.stderr))
        through = subprocess.run([find_tool("pg_restore"), "--file=/dev/null", str(path)], capture_output=True,
                                 text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return Toc(ok=False, error=f"pg_restore did not finish reading the dump in {timeout:.0f}s")
    except GuardianError as exc:
        return Toc(ok=False, error=str(exc))
    if through.returncode != 0:
        return Toc(ok=False, error=explain(through.stderr))
    return parse_toc(listing.stdout)


class _Reader:
    """One pg_restore fed through its stdin."""

    def __init__(self, args: list[str]) -> None:
        self.out = tempfile.TemporaryFile()  # noqa: SIM115 - lives until finish() closes it
        self.err = tempfile.TemporaryFile()  # noqa: SIM115 - lives until finish() closes it
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=self.out, stderr=self.err,
                                     start_new_session=True)

    @property
    def done(self) -> bool:
        """It takes no more input (it has what it needs, or gave up)."""
        return self.proc.stdin is None or self.proc.stdin.closed

    def write(self, chunk: bytes | memoryview) -> None:
        stdin = self.proc.stdin
        if stdin is None or stdin.closed:
            return
        try:
            stdin.write(chunk)
        except (BrokenPipeError, OSError, ValueError):  # it has what it needs, or gave up: ignore the rest
            with contextlib.suppress(Exception):
                stdin.close()

    def finish(self, timeout: float) -> tuple[int, str, str]:
        with contextlib.suppress(Exception):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = -9
        self.out.seek(0)
        self.err.seek(0)
        out, err = self.out.read().decode(errors="replace"), self.err.read().decode(errors="replace")
        self.out.close()
        self.err.close()
        return rc, out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def read_stream(chunks: Iterator[bytes]) -> Toc:
    """The readability check of a dump arriving in chunks (nothing is stored)."""
    tee = TocTee()
    try:
        for chunk in chunks:
            tee.write(chunk)
    except BaseException:
        tee.abort()
        raise
    return tee.result()


class TocTee:
    """Runs the readability check on a stream: `write` every chunk of the dump as it goes by (never raises),
    then `result()` for the verdict. Two pg_restore processes read along: --list and -f /dev/null.

    The readers are fed by a thread of their own through a queue of at most QUEUE chunks, so the stream goes on
    while pg_restore decompresses (on a compressed dump it reads at its own pace, about a core's worth); the
    stream waits only when the readers fall QUEUE chunks behind, which keeps memory bounded. Chunks are copied
    into the queue: the caller may reuse its buffer. Once every reader has stopped reading (a dump that is not
    a dump stops them at its first bytes), nothing more is queued. A reader that stays alive but reads nothing
    for `stall` seconds is killed, and the verdict says so: the stream is never held longer than that."""

    QUEUE = 2

    def __init__(self, stall: float = 600.0) -> None:
        self.error: str | None = None
        self.stall = stall
        self.stalled = False
        self.readers: list[_Reader] = []
        self._queue: queue.Queue[bytes | None] = queue.Queue(self.QUEUE)
        self._feeder: threading.Thread | None = None
        self._lock = threading.Lock()
        try:
            tool = find_tool("pg_restore")
            self.readers = [_Reader([tool, "--list"]), _Reader([tool, "--file=/dev/null"])]
        except (OSError, GuardianError) as exc:
            self.error = f"cannot run pg_restore: {exc}"
            return
        self._feeder = threading.Thread(target=self._feed, name="toc-tee", daemon=True)
        self._feeder.start()

    def _feed(self) -> None:
        while (chunk := self._queue.get()) is not None:
            for reader in self.readers:
                reader.write(chunk)

    def write(self, chunk: bytes | memoryview) -> None:
        if self._feeder is None or self.stalled or all(r.done for r in self.readers):
            return
        try:
            self._queue.put(bytes(chunk), timeout=self.stall)
        except queue.Full:  # the readers took nothing for `stall` seconds: stop them, the stream goes on
            self.stalled = True
            self._kill()

    def _kill(self) -> None:
        for reader in self.readers:
            reader.kill()  # a feeder blocked on a full pipe gets EPIPE and drains what is queued

    def _stop_feeding(self, timeout: float) -> None:
        with self._lock:  # result() and abort() may race (result_during): one of them stops the feeder
            feeder, self._feeder = self._feeder, None
        if feeder is None:
            return
        try:
            self._queue.put(None, timeout=timeout)  # the feeder drains the queue first: every chunk is read
        except queue.Full:  # a reader stopped reading without exiting: stop it, the feeder then drains fast
            self.stalled = True
            self._kill()
            self._queue.put(None)
        feeder.join(timeout)
        if feeder.is_alive():  # blocked in a write to a reader that reads nothing: stop it so finish() can close
            self.stalled = True
            self._kill()
            feeder.join()

    def result(self, timeout: float = 600) -> Toc:
        if not self.readers:
            return Toc(ok=False, error=self.error)
        self._stop_feeding(timeout)
        (rc_list, listing, err_list), (rc_all, _, err_all) = (r.finish(timeout) for r in self.readers)
        if self.stalled:
            return Toc(ok=False, error=f"the readability check stalled: pg_restore read nothing for "
                                       f"{min(self.stall, timeout):.0f}s and was stopped (the dump itself was "
                                       "not judged)")
        if rc_list != 0:
            return Toc(ok=False, error=explain(err_list))
        if rc_all != 0:
            return Toc(ok=False, error=explain(err_all))
        return parse_toc(listing)

    def result_during(self, work: Callable[[], None], timeout: float = 600) -> Toc:
        """The verdict, while `work` runs in this thread (sealing the copy: its last parts and S3's completion
        overlap with pg_restore reading the last blocks). When `work` raises, the readers are stopped (the
        verdict's thread then ends at once) and the error goes on."""
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="toc-result")
        verdict = pool.submit(self.result, timeout)
        try:
            work()
        except BaseException:
            self._kill()
            raise
        finally:
            pool.shutdown(wait=False)
        return verdict.result()

    def abort(self) -> None:
        self._kill()
        self._stop_feeding(timeout=30)
