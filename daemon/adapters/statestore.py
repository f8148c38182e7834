"""The guardian's durable state: audit log, finding states, drill and action history, a key-value table.

SQLite (`<state_dir>/guardian.db`) by default; PostgreSQL when a URL is configured, because Heroku wipes the
disk and several replicas must share one store. Both behave the same: one base class holds the SQL, two
subclasses the connection handling, the locking and the dialect differences. Every method is thread-safe and
raises `StateStoreError` (never a library error, never a password) when the store fails.

Times are stored as fixed-width ISO-8601 UTC text in both dialects, so text order is time order; they come
back as aware UTC datetimes. Naive datetimes are refused with `ValueError`.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from loguru import logger
from psycopg.conninfo import conninfo_to_dict

from daemon.core.errors import GuardianError
from daemon.core.redact import REDACTOR, redact_url

T = TypeVar("T")
APPLICATION_NAME = "pg-backup-guardian"
#: The leadership session: client keepalives and a TCP user timeout notice a dead server; the server-side
#: keepalives (session settings any role may change) make PostgreSQL end the session of a leader whose host
#: vanished within about 25 s, which frees its advisory lock for a successor.
_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
               "tcp_user_timeout": 25000,
               "options": "-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3 "
                          "-c statement_timeout=15000"}


class StateStoreError(GuardianError):
    """The state store failed; the message names the store and the operation, never a password."""


class LockBusy(GuardianError):
    """An `exclusive()` section of the same name is held by another process or store instance."""


@dataclass(frozen=True)
class ActionRecord:
    """One executed action: `outcome` is "running" until `finish_action` sets the final one."""

    id: int
    action: str
    target: str
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    reason: str
    details: dict[str, Any]
    owner: str | None = None  # the process that ran it ("pid N on host"), for the record; None before v4


@dataclass(frozen=True)
class ScratchEntry:
    """A scratch database a drill created and has not dropped yet, on the scratch server whose
    `system_identifier` is `server_id`; `token` is the marker written into its `COMMENT ON DATABASE`;
    `process` describes the pg_restore writing into it ({"pid", "host", "boot", "start"}), when one runs."""

    server_id: str
    name: str
    token: str
    database: str
    created_at: datetime
    process: dict[str, Any] | None = None


def lock_key(text: str) -> int:
    """A stable signed 64-bit key for PostgreSQL advisory locks: the first 8 bytes of sha256(text)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big", signed=True)


def _short_sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _utc_text(when: datetime) -> str:
    """Fixed-width UTC text (always with microseconds), so that text order is time order."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"naive datetime {when!r}: the state store needs aware datetimes")
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def _from_text(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str, sort_keys=True)


# -- schema ------------------------------------------------------------------------------------------------

_TABLES = """
CREATE TABLE guardian_audit (id {pk}, time TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL,
    outcome TEXT NOT NULL, reason TEXT NOT NULL, details TEXT NOT NULL);
CREATE INDEX guardian_audit_time ON guardian_audit (time);
CREATE INDEX guardian_audit_action ON guardian_audit (action, time);
CREATE INDEX guardian_audit_target ON guardian_audit (target, time);
CREATE TABLE guardian_actions (id {pk}, action TEXT NOT NULL, target TEXT NOT NULL, started_at TEXT NOT NULL,
    finished_at TEXT, outcome TEXT NOT NULL, reason TEXT NOT NULL, details TEXT NOT NULL);
CREATE INDEX guardian_actions_started ON guardian_actions (action, target, started_at);
CREATE TABLE guardian_findings (name TEXT PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE guardian_drills (id {pk}, database_name TEXT NOT NULL, scenario TEXT NOT NULL,
    started_at TEXT NOT NULL, succeeded {bool} NOT NULL, doc TEXT NOT NULL);
CREATE INDEX guardian_drills_db ON guardian_drills (database_name, scenario, started_at);
CREATE TABLE guardian_kv (name TEXT PRIMARY KEY, value TEXT NOT NULL)
"""
_SCRATCH_LEDGER = """
CREATE TABLE guardian_scratch_ledger (server_id TEXT NOT NULL, name TEXT NOT NULL, token TEXT NOT NULL,
    database_name TEXT NOT NULL, created_at TEXT NOT NULL, process TEXT, PRIMARY KEY (server_id, name))
"""
_MIGRATIONS_TABLE = ("CREATE TABLE IF NOT EXISTS guardian_schema_migrations (version INTEGER PRIMARY KEY, "
                     "description TEXT NOT NULL, applied_at TEXT NOT NULL)")
_AUDIT_CORE = ("time", "action", "target", "outcome", "reason")


class _Tx:
    """One open transaction: `rows(sql, params)` with `?` placeholders in either dialect."""

    def __init__(self, cursor: Any, placeholder: str) -> None:
        self._cur = cursor
        self._placeholder = placeholder

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        self._cur.execute(sql.replace("?", self._placeholder), params)
        return list(self._cur.fetchall()) if self._cur.description else []


def _audit_row(entry: dict[str, Any]) -> tuple[Any, ...]:
    """(time, action, target, outcome, reason, details) for an audit entry; ValueError when a key is missing."""
    missing = [k for k in _AUDIT_CORE if k not in entry]
    if missing:
        raise ValueError(f"audit entry lacks {', '.join(missing)}")
    when = entry["time"]
    when = when if isinstance(when, datetime) else datetime.fromisoformat(str(when))
    details = {k: v for k, v in entry.items() if k not in _AUDIT_CORE}
    return (_utc_text(when), *(str(entry[k]) for k in _AUDIT_CORE[1:]), _dumps(details))


def _import_legacy(store: StateStore, tx: _Tx) -> None:
    """Import `audit.jsonl` and `findings.json` of earlier versions into empty tables; the files stay."""
    audit_file, findings_file = store.state_dir / "audit.jsonl", store.state_dir / "findings.json"
    if audit_file.is_file() and not tx.rows("SELECT 1 FROM guardian_audit LIMIT 1"):
        for line in audit_file.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = _audit_row(json.loads(line))
            except (ValueError, TypeError, AttributeError):
                continue  # the old writer could leave a torn last line after a crash
            tx.rows("INSERT INTO guardian_audit (time, action, target, outcome, reason, details) "
                    "VALUES (?, ?, ?, ?, ?, ?)", row)
    if findings_file.is_file() and not tx.rows("SELECT 1 FROM guardian_findings LIMIT 1"):
        try:
            doc = json.loads(findings_file.read_text(encoding="utf-8"))
        except ValueError:
            doc = None
        for name, state in (doc.items() if isinstance(doc, dict) else []):
            tx.rows("INSERT INTO guardian_findings (name, state) VALUES (?, ?)", (name, _dumps(state)))


Step = str | Callable[["StateStore", _Tx], None]
#: (version, description, DDL template formatted with the dialect's types, or a function) in order.
MIGRATIONS: list[tuple[int, str, Step]] = [
    (1, "create the audit, actions, findings, drills and kv tables", _TABLES),
    (2, "import audit.jsonl and findings.json of earlier versions", _import_legacy),
    (3, "create the scratch database ledger", _SCRATCH_LEDGER),
    (4, "record which process runs each action", "ALTER TABLE guardian_actions ADD COLUMN owner TEXT"),
]
SCHEMA_VERSION: int = MIGRATIONS[-1][0]


class StateStore:
    """The shared SQL. Subclasses provide `_run` (one transaction on the query connection), the migration
    lock, leadership and exclusive sections."""

    kind: str = ""
    _types: dict[str, str] = {}

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    # -- what subclasses provide ---------------------------------------------------------------------------
    def describe(self) -> str:
        """"<kind> <where>" without user or password, for logs and messages."""
        raise NotImplementedError

    def _run(self, what: str, fn: Callable[[_Tx], T]) -> T:
        """Run `fn` in one transaction; library errors become StateStoreError naming `what`."""
        raise NotImplementedError

    def _migration_lock(self, tx: _Tx) -> None:
        """Serialise migrations of concurrent openers inside the migration transaction."""

    def _try_exclusive(self, name: str) -> Callable[[], None] | None:
        """Take the lock of `name` without waiting: its release function, or None when held elsewhere."""
        raise NotImplementedError

    def try_leadership(self, key: str) -> bool:
        """True while this instance is the leader for `key` (re-confirmed on every call). Never raises."""
        raise NotImplementedError

    def release_leadership(self) -> None:
        """Give up leadership (no-op when not leader)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release leadership and close every connection. Idempotent."""
        raise NotImplementedError

    def _error(self, what: str, exc: BaseException) -> StateStoreError:
        return StateStoreError(REDACTOR(f"state store {self.describe()}: {what}: {exc}".strip()))

    # -- migrations ----------------------------------------------------------------------------------------
    def _migrate_or_close(self) -> None:
        """Bring the schema up to date; a store that cannot be migrated is closed, never half used."""
        try:
            self._migrate()
        except BaseException:
            self.close()
            raise

    def _migrate(self) -> None:
        """Apply the missing migrations in order, each in its own transaction; refuse a newer schema."""
        def prepare(tx: _Tx) -> int:
            self._migration_lock(tx)
            tx.rows(_MIGRATIONS_TABLE)
            return self._version(tx)

        current = self._run("prepare migrations", prepare)
        if current > SCHEMA_VERSION:
            raise StateStoreError(f"state store {self.describe()} has schema version {current}, newer than this "
                                  f"guardian's {SCHEMA_VERSION}: upgrade the guardian (no downgrade)")
        for version, description, step in MIGRATIONS:
            if version > current:
                self._run(f"migration {version} ({description})",
                          functools.partial(self._apply, version=version, description=description, step=step))

    def _apply(self, tx: _Tx, version: int, description: str, step: Step) -> None:
        self._migration_lock(tx)
        if tx.rows("SELECT 1 FROM guardian_schema_migrations WHERE version = ?", (version,)):
            return  # another opener applied it while we waited for the lock
        if isinstance(step, str):
            for statement in step.format(**self._types).split(";"):
                tx.rows(statement)
        else:
            step(self, tx)
        tx.rows("INSERT INTO guardian_schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
                (version, description, _utc_text(datetime.now(UTC))))
        logger.info("state store {}: applied migration {} ({})", self.describe(), version, description)

    @staticmethod
    def _version(tx: _Tx) -> int:
        return int(tx.rows("SELECT COALESCE(MAX(version), 0) FROM guardian_schema_migrations")[0][0])

    def schema_version(self) -> int:
        """The highest applied migration."""
        return self._run("read schema version", self._version)

    # -- audit log -----------------------------------------------------------------------------------------
    def add_audit(self, entry: dict[str, Any]) -> None:
        """Append one decision. `entry` needs time (ISO-8601 with offset), action, target, outcome and reason;
        other keys are kept as details. ValueError for a missing key or a time without offset."""
        row = _audit_row(entry)
        self._run("add audit entry", lambda tx: tx.rows(
            "INSERT INTO guardian_audit (time, action, target, outcome, reason, details) VALUES (?, ?, ?, ?, ?, ?)",
            row))

    def audit(self, limit: int | None = None, action: str | None = None,
              target: str | None = None) -> list[dict[str, Any]]:
        """The newest `limit` (all when None) entries matching the filters, oldest first, as flat dicts; the
        time comes back in UTC (`+00:00`), the same instant as added."""
        where, params = _filters(action=action, target=target)
        sql = (f"SELECT time, action, target, outcome, reason, details, id FROM guardian_audit{where} "
               "ORDER BY time DESC, id DESC" + (f" LIMIT {int(limit)}" if limit is not None else ""))
        rows = self._run("read audit", lambda tx: tx.rows(sql, params))
        return [{**json.loads(r[5]), "time": _from_text(r[0]).isoformat(),
                 **dict(zip(_AUDIT_CORE[1:], r[1:5], strict=True))} for r in reversed(rows)]

    # -- action history ------------------------------------------------------------------------------------
    def begin_action(self, action: str, target: str, started_at: datetime, reason: str,
                     details: dict[str, Any] | None = None, owner: str | None = None) -> int:
        """Record an action that starts now, outcome "running"; returns its id. The caller holds
        `exclusive(f"{action}:{target}")` until it finishes the action: that lock is how a later reader tells
        a live execution from one whose process died (see `running_actions`)."""
        params = (action, target, _utc_text(started_at), reason, _dumps(details or {}), owner)
        rows = self._run("begin action", lambda tx: tx.rows(
            "INSERT INTO guardian_actions (action, target, started_at, outcome, reason, details, owner) "
            "VALUES (?, ?, ?, 'running', ?, ?, ?) RETURNING id", params))
        return int(rows[0][0])

    def finish_action(self, action_id: int, finished_at: datetime, outcome: str,
                      details: dict[str, Any] | None = None) -> None:
        """Set the end and outcome of action `action_id`, merging `details` into the stored ones.
        StateStoreError when there is no such action."""
        finished = _utc_text(finished_at)

        def finish(tx: _Tx) -> None:
            found = tx.rows("SELECT details FROM guardian_actions WHERE id = ?", (action_id,))
            if not found:
                raise LookupError(f"no action with id {action_id}")
            merged = _dumps({**json.loads(found[0][0]), **(details or {})})
            tx.rows("UPDATE guardian_actions SET finished_at = ?, outcome = ?, details = ? WHERE id = ?",
                    (finished, outcome, merged, action_id))

        self._run(f"finish action {action_id}", finish)

    def actions(self, action: str | None = None, target: str | None = None,
                since: datetime | None = None) -> list[ActionRecord]:
        """Executed actions matching the filters (started_at >= since), oldest first."""
        where, params = _filters(action=action, target=target, since=since)
        return self._actions("read actions", where, params)

    def running_actions(self, action: str | None = None, target: str | None = None) -> list[ActionRecord]:
        """Actions still marked "running" (matching the filters), oldest first: live executions, or ones whose
        process died. Only `exclusive(f"{action}:{target}")` tells them apart: when it can be taken, no live
        process runs that action."""
        where, params = _filters(action=action, target=target)
        where = (where + " AND " if where else " WHERE ") + "outcome = 'running'"
        return self._actions("read running actions", where, params)

    def _actions(self, what: str, where: str, params: tuple[Any, ...]) -> list[ActionRecord]:
        rows = self._run(what, lambda tx: tx.rows(
            "SELECT id, action, target, started_at, finished_at, outcome, reason, details, owner "
            f"FROM guardian_actions{where} ORDER BY started_at, id", params))
        return [ActionRecord(int(r[0]), r[1], r[2], _from_text(r[3]), _from_text(r[4]) if r[4] else None, r[5],
                             r[6], json.loads(r[7]), r[8]) for r in rows]

    # -- finding states ------------------------------------------------------------------------------------
    def load_findings(self) -> dict[str, dict[str, str]]:
        """The open findings, as FindingTracker keeps them: key -> {"opened_at": ..., "told_at": ...}."""
        rows = self._run("load findings", lambda tx: tx.rows("SELECT name, state FROM guardian_findings"))
        return {r[0]: json.loads(r[1]) for r in rows}

    def save_findings(self, doc: dict[str, dict[str, str]], databases: Iterable[str] | None = None) -> None:
        """Replace the finding states in one transaction: all of them, or with `databases` only those of these
        databases (keys are "database<US>check"), so shard groups sharing a store never undo each other's."""
        scope = None if databases is None else set(databases)

        def mine(name: str) -> bool:
            return scope is None or name.split("\x1f", 1)[0] in scope

        def save(tx: _Tx) -> None:
            if scope is None:
                tx.rows("DELETE FROM guardian_findings")
            else:
                for (name,) in tx.rows("SELECT name FROM guardian_findings"):
                    if mine(name):
                        tx.rows("DELETE FROM guardian_findings WHERE name = ?", (name,))
            for name, state in doc.items():
                if mine(name):
                    tx.rows("INSERT INTO guardian_findings (name, state) VALUES (?, ?)", (name, _dumps(state)))

        self._run("save findings", save)

    # -- drill history -------------------------------------------------------------------------------------
    def add_drill(self, database: str, scenario: str, started_at: datetime, succeeded: bool,
                  doc: dict[str, Any]) -> None:
        """Record one drill report document."""
        params = (database, scenario, _utc_text(started_at), bool(succeeded), _dumps(doc))
        self._run("add drill", lambda tx: tx.rows(
            "INSERT INTO guardian_drills (database_name, scenario, started_at, succeeded, doc) "
            "VALUES (?, ?, ?, ?, ?)", params))

    def drills(self, database: str) -> list[dict[str, Any]]:
        """Per scenario the newest drill, plus the newest successful one when the newest failed; oldest first."""
        rows = self._run("read drills", lambda tx: tx.rows(
            "SELECT doc FROM (SELECT doc, started_at, id, succeeded, "
            "ROW_NUMBER() OVER (PARTITION BY scenario ORDER BY started_at DESC, id DESC) AS newest, "
            "ROW_NUMBER() OVER (PARTITION BY scenario, succeeded ORDER BY started_at DESC, id DESC) AS newest_of "
            "FROM guardian_drills WHERE database_name = ?) d "
            "WHERE newest = 1 OR (succeeded = ? AND newest_of = 1) ORDER BY started_at, id", (database, True)))
        return [json.loads(r[0]) for r in rows]

    def drill_history(self, database: str, limit: int = 50) -> list[dict[str, Any]]:
        """The newest `limit` drill documents of `database`, oldest first."""
        rows = self._run("read drill history", lambda tx: tx.rows(
            "SELECT doc FROM guardian_drills WHERE database_name = ? ORDER BY started_at DESC, id DESC LIMIT ?",
            (database, int(limit))))
        return [json.loads(r[0]) for r in reversed(rows)]

    # -- scratch database ledger -----------------------------------------------------------------------------
    def add_scratch(self, entry: ScratchEntry) -> None:
        """Record a scratch database before it is created (StateStoreError when the name is recorded already)."""
        params = (entry.server_id, entry.name, entry.token, entry.database, _utc_text(entry.created_at),
                  _dumps(entry.process) if entry.process is not None else None)
        self._run("add scratch database", lambda tx: tx.rows(
            "INSERT INTO guardian_scratch_ledger (server_id, name, token, database_name, created_at, process) "
            "VALUES (?, ?, ?, ?, ?, ?)", params))

    def set_scratch_process(self, server_id: str, name: str, process: dict[str, Any] | None) -> None:
        """Record (or clear) the process restoring into a recorded scratch database."""
        text = _dumps(process) if process is not None else None
        self._run("set scratch process", lambda tx: tx.rows(
            "UPDATE guardian_scratch_ledger SET process = ? WHERE server_id = ? AND name = ?",
            (text, server_id, name)))

    def remove_scratch(self, server_id: str, name: str) -> None:
        """Forget a scratch database (after it was dropped, or proven never created)."""
        self._run("remove scratch database", lambda tx: tx.rows(
            "DELETE FROM guardian_scratch_ledger WHERE server_id = ? AND name = ?", (server_id, name)))

    def scratch_entries(self) -> list[ScratchEntry]:
        """Every recorded scratch database, oldest first."""
        rows = self._run("read scratch ledger", lambda tx: tx.rows(
            "SELECT server_id, name, token, database_name, created_at, process FROM guardian_scratch_ledger "
            "ORDER BY created_at, server_id, name"))
        return [ScratchEntry(r[0], r[1], r[2], r[3], _from_text(r[4]), json.loads(r[5]) if r[5] else None)
                for r in rows]

    # -- key-value -----------------------------------------------------------------------------------------
    def get(self, key: str) -> Any | None:
        """The JSON value stored under `key`, or None."""
        rows = self._run(f"get {key}", lambda tx: tx.rows("SELECT value FROM guardian_kv WHERE name = ?", (key,)))
        return json.loads(rows[0][0]) if rows else None

    def put(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable `value` under `key`, replacing any earlier one."""
        text = _dumps(value)
        self._run(f"put {key}", lambda tx: tx.rows(
            "INSERT INTO guardian_kv (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value", (key, text)))

    # -- single flight -------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """Hold `name` for the block, without waiting: LockBusy when another process or instance holds it."""
        release = self._try_exclusive(name)
        if release is None:
            raise LockBusy(f"{name} is running elsewhere")
        try:
            yield
        finally:
            release()


def _filters(action: str | None = None, target: str | None = None,
             since: datetime | None = None) -> tuple[str, tuple[Any, ...]]:
    """A WHERE clause and its parameters for the given optional filters."""
    clauses = [("action = ?", action), ("target = ?", target),
               ("started_at >= ?", _utc_text(since) if since else None)]
    used = [(sql, value) for sql, value in clauses if value is not None]
    where = " WHERE " + " AND ".join(sql for sql, _ in used) if used else ""
    return where, tuple(value for _, value in used)


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

    def _run(self, what: str, fn: Callable[[_Tx], T]) -> T:
        with self._lock:
            try:
                try:
                    cur = self._conn.cursor()
                    cur.execute("BEGIN IMMEDIATE")  # take the write lock now: no failed upgrade mid-way
                    result = fn(_Tx(cur, "?"))
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


class PostgresStateStore(StateStore):
    """Tables in an application database: one autocommit query connection, dedicated connections for the
    session-level advisory locks of leadership and exclusive sections."""

    kind = "postgresql"
    _types = {"pk": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", "bool": "BOOLEAN"}

    def __init__(self, url: str, state_dir: Path, statement_timeout: float = 15.0) -> None:
        """`statement_timeout` (seconds) bounds every query of the query connection, lock waits included: a
        hung or locked store answers with an error instead of stalling collection behind it."""
        super().__init__(state_dir)
        REDACTOR.add_url(url)
        self._url = url
        self._statement_timeout_ms = max(1, int(statement_timeout * 1000))
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise StateStoreError(REDACTOR(f"state store postgresql: invalid URL: {exc}")) from None
        REDACTOR.add(str(params.get("password") or ""))
        self._where = f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}/{params.get('dbname', '')}"
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = self._connect("cannot connect")
        self._leader_lock = threading.Lock()
        self._leader_conn: psycopg.Connection[Any] | None = None
        self._leader_key: str | None = None  # set while the advisory lock is held on _leader_conn
        self._leader_problem: str | None = None
        self._migrate_or_close()

    def describe(self) -> str:
        return f"postgresql {self._where}"

    def _raw_connect(self, **extra: Any) -> psycopg.Connection[Any]:
        return psycopg.connect(self._url, autocommit=True, connect_timeout=10, application_name=APPLICATION_NAME,
                               **extra)

    def _connect(self, what: str) -> psycopg.Connection[Any]:
        try:
            conn = self._raw_connect()
            # SET, not the `options` startup parameter, which PgBouncer-style poolers reject
            conn.execute(f"SET statement_timeout = {self._statement_timeout_ms}")
            return conn
        except psycopg.Error as exc:
            raise self._error(what, exc) from None

    def _run(self, what: str, fn: Callable[[_Tx], T]) -> T:
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._conn is None or self._conn.closed:
                        self._conn = self._connect("cannot connect")
                    with self._conn.transaction(), self._conn.cursor() as cur:
                        return fn(_Tx(cur, "%s"))
                except psycopg.OperationalError as exc:
                    # the connection may have died (server restart, failover): reconnect once; the
                    # failed transaction was rolled back, so running it again is safe
                    self._drop_query_conn()
                    if attempt == 2:
                        raise self._error(what, exc) from None
                except (psycopg.Error, LookupError, OSError) as exc:
                    raise self._error(what, exc) from None
        raise AssertionError("unreachable")

    def _drop_query_conn(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None

    def _migration_lock(self, tx: _Tx) -> None:
        # released at commit; makes replicas that start together apply each migration exactly once
        tx.rows("SELECT pg_advisory_xact_lock(?)", (lock_key("pg-backup-guardian:migrate"),))

    def _try_exclusive(self, name: str) -> Callable[[], None] | None:
        key = lock_key("exclusive:" + name)
        # a connection per section: advisory locks are re-entrant within a session, so sharing one
        # connection would let two threads of this process into the same section
        conn = self._connect(f"exclusive {name}: cannot connect")
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
        except psycopg.Error as exc:
            conn.close()
            raise self._error(f"exclusive {name}", exc) from None
        if not (row and row[0]):
            conn.close()
            return None

        def release() -> None:
            with contextlib.suppress(psycopg.Error):
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
            conn.close()

        return release

    def try_leadership(self, key: str) -> bool:
        with self._leader_lock:
            if self._leader_key is not None and self._leader_key != key:
                self._drop_leader_conn()
            try:
                if self._leader_key == key and self._leader_conn is not None:
                    self._leader_conn.execute("SELECT 1")  # confirm the session (and so the lock) still lives
                    return self._leader_ok(True)
                if self._leader_conn is None or self._leader_conn.closed:
                    self._leader_conn = self._raw_connect(**_KEEPALIVES)
                row = self._leader_conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(key),)).fetchone()
            except psycopg.Error as exc:
                was_leader = self._leader_key is not None
                self._drop_leader_conn()
                return self._leader_ok(False, f"{'lost leadership' if was_leader else 'leadership'}: {exc}")
            self._leader_key = key if row and row[0] else None
            return self._leader_ok(self._leader_key is not None)

    def _leader_ok(self, result: bool, problem: str | None = None) -> bool:
        """Log connection problems of the leadership session once per change, not on every try."""
        if problem is not None and self._leader_problem is None:
            logger.warning("state store {}: {}", self.describe(), REDACTOR(problem))
        elif problem is None and self._leader_problem is not None:
            logger.info("state store {}: leadership session works again", self.describe())
        self._leader_problem = problem
        return result

    def _drop_leader_conn(self) -> None:
        # Unlock explicitly first: closing the socket alone lets the server end the session (and free the lock)
        # a moment later, so a successor asking right after this returns could still be refused.
        if self._leader_conn is not None:
            with contextlib.suppress(psycopg.Error):
                if not self._leader_conn.closed:
                    self._leader_conn.execute("SELECT pg_advisory_unlock_all()")
            with contextlib.suppress(psycopg.Error):
                self._leader_conn.close()
        self._leader_conn, self._leader_key = None, None

    def release_leadership(self) -> None:
        # bounded: a confirmation stuck on a dead network must not hold shutdown past its budget
        if self._leader_lock.acquire(timeout=5):
            try:
                self._drop_leader_conn()
            finally:
                self._leader_lock.release()

    def close(self) -> None:
        self.release_leadership()
        if self._lock.acquire(timeout=5):
            try:
                self._drop_query_conn()
            finally:
                self._lock.release()


def open_state_store(url: str | None, state_dir: Path) -> StateStore:
    """The PostgreSQL store at `url` (postgres:// or postgresql://), else SQLite in `state_dir`; migrated to
    SCHEMA_VERSION. StateStoreError when unreachable, invalid, or written by a newer guardian."""
    if not url:
        return SQLiteStateStore(state_dir)
    if url.startswith(("postgres://", "postgresql://")):
        return PostgresStateStore(url, state_dir)
    raise StateStoreError(f"state store URL must start with postgresql://, got {redact_url(url)!r}")
