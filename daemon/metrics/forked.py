"""Rendering in a forked child process, so the work of rendering /metrics never holds the daemon's interpreter
lock (the same idea as a database forking to write its snapshot: the child sees the parent's memory as it was
at the fork, copy on write, and nothing has to be serialised to hand it over).

`ForkedRunner.run(work)` forks; the child closes every descriptor but its pipe's (a copy of a client's socket
would keep that connection open), lowers its priority, turns its garbage collector off (a short-lived process,
and a collection would copy every page it touches), runs `work()`, writes the pickled result (or the error)
into the pipe and ends with `os._exit`, so it never returns into the daemon's code, never runs its exit
handlers and never flushes its Sentry queue or log sinks. The parent only reads the pipe, which releases the
interpreter lock while it waits; it kills the child when it is asked to stop or when the child overruns its
deadline (a child can only hang on a lock another thread of the parent held at the instant of the fork; it
renders again on the next snapshot).

What runs in the child is the metric families over one immutable snapshot and prometheus-client's encoder: no
I/O, no logging, no lock of the daemon's own.
"""

from __future__ import annotations

import contextlib
import gc
import os
import pickle
import select
import signal
import threading
import time
import warnings
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

#: Niceness added in the child: rendering is background work, a scrape or a collection pass goes first.
CHILD_NICENESS = 10
#: Longest a child may take before it is killed (a rendering of 10,000 databases takes a few seconds).
DEFAULT_DEADLINE_SECONDS = 120.0
_READ_CHUNK = 1 << 20


def fork_available() -> bool:
    return hasattr(os, "fork") and hasattr(os, "pipe")


class ChildFailed(Exception):
    """The child raised, died or overran its deadline; the message says which (no traceback crosses over)."""


class Stopped(Exception):
    """`stop()` was called while a child ran; it was killed."""


class ForkedRunner(Generic[T]):
    """Runs one piece of work at a time in a forked child; `stop()` kills the running child."""

    def __init__(self, deadline_seconds: float = DEFAULT_DEADLINE_SECONDS) -> None:
        self.deadline_seconds = deadline_seconds
        self._lock = threading.Lock()  # guards _pid
        self._pid: int | None = None
        self._stopping = False

    def run(self, work: Callable[[], T]) -> T:
        """`work()`'s result, computed in a child process."""
        read_fd, write_fd = os.pipe()
        with self._lock:
            if self._stopping:
                os.close(read_fd)
                os.close(write_fd)
                raise Stopped("stopped before the child started")
            with warnings.catch_warnings():
                # Python 3.12+ warns on any fork of a multi-threaded process; the child here runs only `work`
                # and `os._exit`, and a child that hangs on a lock held at the fork is killed at its deadline.
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
            if pid == 0:  # the child: never leaves this branch
                _child(work, write_fd)
            self._pid = pid
        os.close(write_fd)
        try:
            data = self._read_all(read_fd, pid)
        finally:
            os.close(read_fd)
            status = self._reap(pid)
        return self._result(data, status)

    def stop(self) -> None:
        """Kill the running child, if any; later runs raise `Stopped`."""
        with self._lock:
            self._stopping = True
            pid = self._pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _read_all(self, fd: int, pid: int) -> bytes:
        chunks: list[bytes] = []
        deadline = time.monotonic() + self.deadline_seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                raise ChildFailed(f"the child did not finish within {self.deadline_seconds:g} s and was killed")
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if not ready:
                continue
            chunk = os.read(fd, _READ_CHUNK)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)

    def _reap(self, pid: int) -> int:
        _, status = os.waitpid(pid, 0)
        with self._lock:
            self._pid = None
        return status

    def _result(self, data: bytes, status: int) -> T:
        if self._stopping:
            raise Stopped("stopped while the child ran")
        if os.WIFSIGNALED(status):
            raise ChildFailed(f"the child was ended by signal {os.WTERMSIG(status)}")
        try:
            kind, value = pickle.loads(data)  # noqa: S301 - our own child's answer, through our own pipe
        except Exception as exc:
            raise ChildFailed(f"the child's answer could not be read ({type(exc).__name__})") from None
        if kind == "error":
            raise ChildFailed(str(value))
        return value


def _max_fd() -> int:
    try:
        return int(os.sysconf("SC_OPEN_MAX"))
    except (ValueError, OSError):
        return 65536


def _child(work: Callable[[], object], fd: int) -> None:
    """Run `work` in the child and hand its result back through `fd`; always ends the process."""
    code = 1
    try:
        os.closerange(3, fd)
        os.closerange(fd + 1, _max_fd())
        gc.disable()
        with contextlib.suppress(OSError):
            os.nice(CHILD_NICENESS)
        try:
            answer: tuple[str, object] = ("ok", work())
        except BaseException as exc:  # every failure is reported to the parent
            answer = ("error", f"{type(exc).__name__}: {exc}")
        data = memoryview(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
        while data:
            data = data[os.write(fd, data):]
        code = 0
    finally:
        os._exit(code)
