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
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from daemon.adapters.postgres.toc.listing import Toc, parse_toc
from daemon.adapters.postgres.toc.messages import STALLED, explain, too_new
from daemon.adapters.postgres.tools import find_tool
from daemon.core.errors import GuardianError


def read_toc(path: Path, timeout: float = 3600) -> Toc:
    """The readability check of a dump file: its table of contents, and every data block read through."""
    try:
        listing = subprocess.run([find_tool("pg_restore"), "--list", str(path)], capture_output=True, text=True,
                                 encoding="utf-8", errors="replace", timeout=timeout, check=False)
        if listing.returncode != 0:
            return _refused(listing.stderr)
        through = subprocess.run([find_tool("pg_restore"), "--file=/dev/null", str(path)], capture_output=True,
                                 text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return Toc(ok=False, error=f"pg_restore did not finish reading the dump in {timeout:.0f}s")
    except GuardianError as exc:
        return Toc(ok=False, error=str(exc))
    if through.returncode != 0:
        return _refused(through.stderr)
    return parse_toc(listing.stdout)


def _refused(stderr: str) -> Toc:
    """pg_restore's refusal as a verdict: unreadable, or not judged when only the tools are too old for it."""
    return Toc(ok=False, error=explain(stderr), judged=not too_new(stderr))


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
            return Toc(ok=False, judged=False,
                       error=f"the readability check stalled: pg_restore read nothing for "
                             f"{min(self.stall, timeout):.0f}s and was stopped ({STALLED})")
        if rc_list != 0:
            return _refused(err_list)
        if rc_all != 0:
            return _refused(err_all)
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
