"""PostgreSQL programs: finding them, and running them as argument lists with a timeout.

Debian keeps server binaries (initdb, pg_ctl, postgres) off PATH, in `pg_config --bindir` or
`/usr/lib/postgresql/<major>/bin`; client tools (pg_dump, pg_restore) are usually on PATH.
Every child runs in its own process group so shutdown can kill it with everything it started.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path

from daemon.core.errors import ToolMissingError
from daemon.core.names import escaped
from daemon.core.redact import REDACTOR
from daemon.core.versions import ClientTools

INSTALL_HINT = (
    "install PostgreSQL with `apt-get install postgresql` (Debian/Ubuntu) or `brew install postgresql` (macOS), "
    "or set GUARDIAN_PG_BINDIR to the folder holding it"
)


def _candidate_dirs() -> list[str]:
    """Folders to look in, best first. GUARDIAN_PG_BINDIR, when set, is the only one."""
    if os.environ.get("GUARDIAN_PG_BINDIR"):
        return [os.environ["GUARDIAN_PG_BINDIR"]]
    dirs = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=False)
            if out.returncode == 0 and out.stdout.strip():
                dirs.append(out.stdout.strip())
        except (OSError, subprocess.TimeoutExpired):
            pass
    # Newest major first: a newer pg_dump reads older servers, never the reverse.
    dirs += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_major_of_dir, reverse=True)
    dirs += ["/usr/local/pgsql/bin", "/opt/homebrew/bin", "/usr/local/bin"]
    return dirs


def _major_of_dir(path: str) -> int:
    try:
        return int(Path(path).parent.name)
    except ValueError:
        return 0


@functools.cache
def find_tool(name: str) -> str:
    """Absolute path of a PostgreSQL program; raises ToolMissingError with install advice."""
    for folder in _candidate_dirs():
        path = os.path.join(folder, name)
        if os.access(path, os.X_OK):
            return path
    found = None if os.environ.get("GUARDIAN_PG_BINDIR") else shutil.which(name)
    if found:
        return found
    raise ToolMissingError(f"the PostgreSQL program {name!r} was not found: {INSTALL_HINT}")


@functools.cache
def tool_version(name: str) -> str:
    """`pg_dump --version` style first line, e.g. 'pg_dump (PostgreSQL) 15.18'."""
    out = subprocess.run([find_tool(name), "--version"], capture_output=True, text=True, timeout=10, check=False)
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else name


def program_error(program: str, stderr: str, most: int = 1000) -> str:
    """What a PostgreSQL program said when it failed, whole and on one line: each `error:` line with the lines
    that continue it (libpq's "Is the server running on that host and accepting TCP/IP connections?") and its
    `detail:` and `hint:` lines (pg_dump's "server version: 17.2; pg_dump version: 15.18"), without its warnings;
    the last line when it said nothing in that form. Passwords masked, control characters escaped, at most
    `most` characters."""
    kept: list[str] = []
    following = False
    for line in stderr.splitlines():
        if not line.strip():
            continue
        head, _, rest = line.partition(": ")
        kind, _, message = rest.partition(": ")
        if head == program and kind in ("error", "detail", "hint"):
            kept.append(message.strip() if kind == "error" else f"{kind}: {message.strip()}")
            following = True
        elif head == program:
            following = False  # a warning or progress line: not the cause
        elif following and kept:
            kept[-1] += " " + line.strip()
    if not kept:
        lines = [line for line in stderr.splitlines() if line.strip()]
        kept = [lines[-1].removeprefix(f"{program}: ").strip()] if lines else []
    text = escaped(REDACTOR(re.sub(r"\s+", " ", "; ".join(kept)).strip()))
    return text if len(text) <= most else text[: most - 1] + "…"


def client_tools() -> ClientTools:
    """The versions of the pg_restore and pg_dump the guardian runs (None for a program not found), and where."""
    found: dict[str, str | None] = {}
    bindir = None
    for name in ("pg_restore", "pg_dump"):
        try:
            found[name] = tool_version(name)
            bindir = bindir or os.path.dirname(find_tool(name))
        except (ToolMissingError, OSError, subprocess.TimeoutExpired):
            found[name] = None
    return ClientTools(pg_restore=found["pg_restore"], pg_dump=found["pg_dump"], bindir=bindir)


class ProcessRegistry:
    """Tracks running children so shutdown can terminate them (and their process groups)."""

    def __init__(self) -> None:
        self._procs: set[subprocess.Popen[bytes]] = set()
        self._stopped: set[int] = set()  # pids of children the shutdown signalled
        self._lock = threading.Lock()
        self.closing = threading.Event()

    def add(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._procs.add(proc)
            late = self.closing.is_set()  # started after terminate_all took its list: stop it here
            if late:
                self._stopped.add(proc.pid)
        if late:
            kill_group(proc)

    def stopped_by_shutdown(self, proc: subprocess.Popen[bytes]) -> bool:
        """Whether the shutdown signalled `proc` (its failure is then the shutdown's, not the child's)."""
        with self._lock:
            return proc.pid in self._stopped

    def discard(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._procs.discard(proc)

    def terminate_all(self) -> None:
        """Ask every child to stop (SIGTERM to its group), then SIGKILL whatever is left after 3 s."""
        with self._lock:
            self.closing.set()
            procs = list(self._procs)
            self._stopped.update(p.pid for p in procs)
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                kill_group(proc)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    _signal_group(proc, signal.SIGKILL)


#: The process-wide registry used by captures and the embedded cluster.
PROCESSES = ProcessRegistry()
