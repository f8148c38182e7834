"""The SQLite state store (`<state_dir>/guardian.db`, the default): one connection in WAL mode, writers
queued by `BEGIN IMMEDIATE`; exclusive sections and leadership are flocks on files next to it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from loguru import logger

from daemon.adapters.statestore.schema import Transaction
from daemon.adapters.statestore.store import StateStore
from daemon.core.redact import REDACTOR

T = TypeVar("T")


def _short_sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _try_flock(path: Path) -> int | None:
    """An open descriptor holding an exclusive flock on `path`, or None when another descriptor holds it.
    flock locks belong to the open file, so two instances in one process exclude each other too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _unflock(fd: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


class SQLiteStateStore(StateStore):
    """`<state_dir>/guardian.db` in WAL mode; locks are flocks on files next to it."""

    kind = "sqlite"
    _types = {"pk": "INTEGER PRIMARY KEY AUTOINCREMENT", "bool": "INTEGER"}

    def __init__(self, state_dir: Path) -> None:
        super().__init__(state_dir)
        self.path = state_dir / "guardian.db"
        self._lock = threading.Lock()
        self._leader: tuple[str, int] | None = None  # (key, descriptor holding the flock)
        self._leader_lock = threading.Lock()
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so writers queue on busy_timeout
            # instead of failing on a lock upgrade
            self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=5)
            self._conn.execute("PRAGMA busy_timeout = 5000")
            self._conn.execute("PRAGMA journal_mode = WAL")
        except (sqlite3.Error, OSError) as exc:
            raise self._error("cannot open", exc) from None
        self._migrate_or_close()

    def describe(self) -> str:
        return f"sqlite {self.path}"

    def _run(self, what: str, fn: Callable[[Transaction], T]) -> T:
        with self._lock:
            try:
                try:
                    cur = self._conn.cursor()
                    cur.execute("BEGIN IMMEDIATE")  # take the write lock now: no failed upgrade mid-way
                    result = fn(Transaction(cur, "?"))
                    cur.execute("COMMIT")
                    return result
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.rollback()
                    raise
            except (sqlite3.Error, LookupError, OSError) as exc:
                raise self._error(what, exc) from None

    def _try_exclusive(self, name: str) -> Callable[[], None] | None:
        try:
            fd = _try_flock(self.state_dir / f"exclusive-{_short_sha(name)}.lock")
        except OSError as exc:
            raise self._error(f"exclusive {name}", exc) from None
        return None if fd is None else (lambda: _unflock(fd))

    def try_leadership(self, key: str) -> bool:
        with self._leader_lock:
            if self._leader is not None and self._leader[0] == key:
                return True  # the flock lives as long as our descriptor: nothing can take it from us
            self._release_leader()
            try:
                fd = _try_flock(self.state_dir / f"leader-{_short_sha(key)}.lock")
            except OSError as exc:
                logger.warning("state store {}: cannot take leadership: {}", self.describe(), REDACTOR(str(exc)))
                return False
            if fd is not None:
                self._leader = (key, fd)
            return fd is not None

    def _release_leader(self) -> None:
        if self._leader is not None:
            _unflock(self._leader[1])
            self._leader = None

    def release_leadership(self) -> None:
        with self._leader_lock:
            self._release_leader()

    def close(self) -> None:
        self.release_leadership()
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._conn.close()
