"""The readability check: the cheap proof that a backup is a whole, readable custom-format dump.

Two reads, no database: `pg_restore --list` gives the table of contents (tables, which carry data, versions),
and `pg_restore -f /dev/null` reads every data block through (the TOC alone says nothing of a dump cut short
or corrupted after its header). `read_toc(path)` checks a file; `TocTee` checks a stream as the dump goes by
(a capture or a mirror), so no second pass over the dump is needed.
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

from daemon.errors import GuardianError
from daemon.pgtools import find_tool, tool_version

_ENTRY = re.compile(r"^\d+;\s*\d+\s+\d+\s+(?P<kind>TABLE DATA|TABLE|SEQUENCE SET|INDEX|CONSTRAINT|FK CONSTRAINT|"
                    r"VIEW|MATERIALIZED VIEW DATA|SCHEMA|EXTENSION)\s+(?P<schema>\S+)\s+(?P<name>\S+)")


@dataclass(frozen=True)
class Toc:
    """What `pg_restore --list` showed (or why it could not)."""

    ok: bool
    error: str | None = None
    tables: tuple[str, ...] = ()  # schema.name
    tables_with_data: tuple[str, ...] = ()
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
    tables, data = [], []
    meta: dict[str, str] = {}
    entries = 0
    for line in text.splitlines():
        if line.startswith(";"):
            m = re.match(r";\s*(Dumped from database version|Dumped by pg_dump version|Format|"
                         r"Archive created at|dbname|TOC Entries)\s*:\s*(.*)", line)
            if m:
                meta[m.group(1)] = m.group(2).strip()
            m = re.search(r"Dump Version:\s*(\S+)", line)
            if m:
                meta["archive_version"] = m.group(1)
            continue
        entry = _ENTRY.match(line)
        if not entry:
            continue
        entries += 1
        qualified = f"{entry.group('schema')}.{entry.group('name')}"
        if entry.group("kind") == "TABLE":
            tables.append(qualified)
        elif entry.group("kind") == "TABLE DATA":
            data.append(qualified)
    fmt = meta.get("Format")
    if fmt is not None and fmt.upper() != "CUSTOM":
        return Toc(ok=False, error=f"not a custom-format dump (format {fmt})")
    return Toc(ok=True, tables=tuple(tables), tables_with_data=tuple(data),
               dumped_from=meta.get("Dumped from database version"), dumped_by=meta.get("Dumped by pg_dump version"),
               archive_version=meta.get("archive_version"), entries=entries)


def explain(stderr: str) -> str:
    """pg_restore's complaint in plain words (version mismatches above all)."""
    text = stderr.strip().splitlines()[-1] if stderr.strip() else "pg_restore failed"
    text = text.removeprefix("pg_restore: error: ")
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


def _safe_version() -> str:
    try:
        return tool_version("pg_restore")
    except Exception:
        return "unknown version"


def read_toc(path: Path, timeout: float = 3600) -> Toc:
    """The readability check of a dump file: its table of contents, and every data block read through."""
    try:
        listing = subprocess.run([find_tool("pg_restore"), "--list", str(path)], capture_output=True, text=True,
                                 timeout=timeout, check=False)
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
