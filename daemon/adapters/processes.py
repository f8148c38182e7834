"""Children that must not outlive the guardian (a drill's pg_restore), and proof that a process is one of ours.

A child runs in its own process group (so shutdown can kill it with everything it forked) and therefore does
not die with the guardian by itself. Two things tie it to the guardian's life on Linux:
- `PR_SET_PDEATHSIG` (SIGKILL) set in the child before exec: the kernel kills it when the thread that started
  it ends, which includes a kill -9 of the guardian. A fork of the child (pg_restore --jobs workers) does not
  inherit that setting, so:
- a `GroupReaper` sidecar: a tiny process holding the read end of a pipe whose write end only the guardian
  holds. When the guardian dies, the pipe reports end-of-file and the sidecar kills the child's whole process
  group. When the child ended normally, the guardian says so on the pipe and the sidecar leaves quietly.
Elsewhere these degrade to plain process groups (killed on an orderly shutdown only).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1
_REAPER = (
    "import os, signal, sys\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "pgid = int(sys.argv[1])\n"
    "if sys.stdin.buffer.read(1) != b'.':\n"
    "    try:\n"
    "        os.killpg(pgid, signal.SIGKILL)\n"
    "    except OSError:\n"
    "        pass\n"
)


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that asks the kernel to SIGKILL the child when its parent thread ends (Linux), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    prctl = libc.prctl

    def preexec() -> None:  # runs in the child between fork and exec: no Python objects beyond these
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return preexec


class GroupReaper:
    """Kills process group `pgid` if the guardian dies before calling `release()` (see the module docstring)."""

    def __init__(self, pgid: int) -> None:
        read_end, self._write = os.pipe()
        try:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                [sys.executable, "-c", _REAPER, str(pgid)], stdin=read_end, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True, close_fds=True)
        except OSError:
            self._proc = None
        finally:
            os.close(read_end)

    def release(self) -> None:
        """The group ended (or was killed) in an orderly way: let the sidecar go without killing anything."""
        with contextlib.suppress(OSError):
            os.write(self._write, b".")
        with contextlib.suppress(OSError):
            os.close(self._write)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat: when the process started, in clock ticks since boot (None when gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # fields after "(comm)" start at field 3


def describe(pid: int) -> dict[str, Any]:
    """What proves later that a process is this one: pid, host, boot and start time."""
    return {"pid": pid, "host": socket.gethostname(), "boot": _boot_id(), "start": _start_ticks(pid)}


def is_same(process: dict[str, Any], program: str, needle: str) -> bool:
    """True when `process` (from `describe`) still runs on this host, started at the recorded moment of this
    boot, runs `program`, and has `needle` in its command line. Anything unprovable is False."""
    try:
        pid = int(process["pid"])
    except (KeyError, TypeError, ValueError):
        return False
    if process.get("host") != socket.gethostname() or not process.get("boot") or process["boot"] != _boot_id():
        return False
    if process.get("start") is None or _start_ticks(pid) != process["start"]:
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return os.path.basename(argv[0].decode(errors="replace")) == program and any(
        needle.encode() in a for a in argv[1:])


def kill_proven(process: dict[str, Any], program: str, needle: str, timeout: float = 10) -> bool:
    """SIGKILL the recorded process (its whole group when it leads one) if `is_same` proves it ours; waits until
    it is gone. Returns whether it killed something."""
    if not is_same(process, program, needle):
        return False
    pid = int(process["pid"])
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while _start_ticks(pid) == process["start"] and time.monotonic() < deadline:
        time.sleep(0.05)  # a killed process vanishes within moments; poll for it with a deadline
    return True
