"""The state store's contract and its shared SQL: `StateStore` holds every query (audit log, action history,
finding states, drill history, scratch ledger, key-value, migrations); its subclasses (`sqlite`, `postgresql`)
provide the transaction, the locks and leadership.
"""

from __future__ import annotations

import contextlib
import functools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from loguru import logger

from daemon.adapters.statestore.records import ActionRecord, FindingEvent, LockBusy, ScratchEntry, StateStoreError
from daemon.adapters.statestore.schema import (
    AUDIT_CORE,
    MIGRATIONS,
    MIGRATIONS_TABLE,
    SCHEMA_VERSION,
    Step,
    Transaction,
    audit_row,
    dumps_json,
    from_utc_text,
    utc_text,
)
from daemon.core.provider import ProviderEvent
from daemon.core.redact import REDACTOR

T = TypeVar("T")


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

    def _run(self, what: str, fn: Callable[[Transaction], T]) -> T:
        """Run `fn` in one transaction; library errors become StateStoreError naming `what`."""
        raise NotImplementedError

    def _migration_lock(self, tx: Transaction) -> None:
        """Serialise migrations of concurrent openers inside the migration transaction."""

    def _transaction_lock(self, tx: Transaction, name: str) -> None:
        """Serialise the transactions that take `name` until this one ends. SQLite needs nothing: `BEGIN
        IMMEDIATE` already queues every writer."""

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
        def prepare(tx: Transaction) -> int:
            self._migration_lock(tx)
            tx.rows(MIGRATIONS_TABLE)
            return self._version(tx)

        current = self._run("prepare migrations", prepare)
        if current > SCHEMA_VERSION:
            raise StateStoreError(f"state store {self.describe()} has schema version {current}, newer than this "
                                  f"guardian's {SCHEMA_VERSION}: upgrade the guardian (no downgrade)")
        for version, description, step in MIGRATIONS:
            if version > current:
                self._run(f"migration {version} ({description})",
                          functools.partial(self._apply, version=version, description=description, step=step))

    def _apply(self, tx: Transaction, version: int, description: str, step: Step) -> None:
        self._migration_lock(tx)
        if tx.rows("SELECT 1 FROM guardian_schema_migrations WHERE version = ?", (version,)):
            return  # another opener applied it while we waited for the lock
        if isinstance(step, str):
            for statement in step.format(**self._types).split(";"):
                tx.rows(statement)
        else:
            step(self, tx)
        tx.rows("INSERT INTO guardian_schema_migrations (version, description, applied_at) VALUES (?, ?, ?)",
                (version, description, utc_text(datetime.now(UTC))))
        logger.info("state store {}: applied migration {} ({})", self.describe(), version, description)

    @staticmethod
    def _version(tx: Transaction) -> int:
        return int(tx.rows("SELECT COALESCE(MAX(version), 0) FROM guardian_schema_migrations")[0][0])

    def schema_version(self) -> int:
        """The highest applied migration."""
        return self._run("read schema version", self._version)

    # -- audit log -----------------------------------------------------------------------------------------
    def add_audit(self, entry: dict[str, Any]) -> None:
        """Append one decision. `entry` needs time (ISO-8601 with offset), action, target, outcome and reason;
        other keys are kept as details. ValueError for a missing key or a time without offset."""
        row = audit_row(entry)
        self._run("add audit entry", lambda tx: tx.rows(
            "INSERT INTO guardian_audit (time, action, target, outcome, reason, details) VALUES (?, ?, ?, ?, ?, ?)",
            row))

    def audit(self, limit: int | None = None, action: str | None = None,
              target: str | None = None, since: datetime | None = None) -> list[dict[str, Any]]:
        """The newest `limit` (all when None) entries matching the filters (time >= since), oldest first, as
        flat dicts; the time comes back in UTC (`+00:00`), the same instant as added."""
        where, params = _filters(action=action, target=target, since=since, time_column="time")
        sql = (f"SELECT time, action, target, outcome, reason, details, id FROM guardian_audit{where} "
               "ORDER BY time DESC, id DESC" + (f" LIMIT {int(limit)}" if limit is not None else ""))
        rows = self._run("read audit", lambda tx: tx.rows(sql, params))
        return [{**json.loads(r[5]), "time": from_utc_text(r[0]).isoformat(),
                 **dict(zip(AUDIT_CORE[1:], r[1:5], strict=True))} for r in reversed(rows)]

    # -- action history ------------------------------------------------------------------------------------
    def begin_action(self, action: str, target: str, started_at: datetime, reason: str,
                     details: dict[str, Any] | None = None, owner: str | None = None) -> int:
        """Record an action that starts now, outcome "running"; returns its id. The caller holds
        `exclusive(f"{action}:{target}")` until it finishes the action: that lock is how a later reader tells
        a live execution from one whose process died (see `running_actions`)."""
        params = (action, target, utc_text(started_at), reason, dumps_json(details or {}), owner)
        rows = self._run("begin action", lambda tx: tx.rows(
            "INSERT INTO guardian_actions (action, target, started_at, outcome, reason, details, owner) "
            "VALUES (?, ?, ?, 'running', ?, ?, ?) RETURNING id", params))
        return int(rows[0][0])

    def finish_action(self, action_id: int, finished_at: datetime, outcome: str,
                      details: dict[str, Any] | None = None) -> None:
        """Set the end and outcome of action `action_id`, merging `details` into the stored ones.
        StateStoreError when there is no such action."""
        finished = utc_text(finished_at)

        def finish(tx: Transaction) -> None:
            found = tx.rows("SELECT details FROM guardian_actions WHERE id = ?", (action_id,))
            if not found:
                raise LookupError(f"no action with id {action_id}")
            merged = dumps_json({**json.loads(found[0][0]), **(details or {})})
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
        return [ActionRecord(int(r[0]), r[1], r[2], from_utc_text(r[3]), from_utc_text(r[4]) if r[4] else None, r[5],
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

        def save(tx: Transaction) -> None:
            if scope is None:
                tx.rows("DELETE FROM guardian_findings")
            else:
                for (name,) in tx.rows("SELECT name FROM guardian_findings"):
                    if mine(name):
                        tx.rows("DELETE FROM guardian_findings WHERE name = ?", (name,))
            for name, state in doc.items():
                if mine(name):
                    tx.rows("INSERT INTO guardian_findings (name, state) VALUES (?, ?)", (name, dumps_json(state)))

        self._run("save findings", save)

    # -- finding history ----------------------------------------------------------------------------------
    def add_finding_events(self, events: Iterable[FindingEvent], prune_before: datetime | None = None) -> None:
        """Append finding transitions, and (with `prune_before`) delete the history older than that, in one
        transaction: the history stays bounded however long the guardian runs."""
        rows = [(utc_text(e.time), e.database, e.check, e.kind, e.severity, e.hint, dumps_json(e.details))
                for e in events]
        cut = utc_text(prune_before) if prune_before is not None else None

        def add(tx: Transaction) -> None:
            for row in rows:
                tx.rows("INSERT INTO guardian_finding_history (time, database_name, check_name, kind, severity, "
                        "hint, details) VALUES (?, ?, ?, ?, ?, ?, ?)", row)
            if cut is not None:
                tx.rows("DELETE FROM guardian_finding_history WHERE time < ?", (cut,))

        self._run("add finding history", add)

    def finding_history(self, since: datetime | None = None, database: str | None = None) -> list[FindingEvent]:
        """The finding transitions at or after `since` (all when None), of `database` only when given, oldest
        first."""
        where, params = _filters(since=since, time_column="time")
        if database is not None:
            where, params = (where + " AND " if where else " WHERE ") + "database_name = ?", (*params, database)
        rows = self._run("read finding history", lambda tx: tx.rows(
            "SELECT time, database_name, check_name, kind, severity, hint, details "
            f"FROM guardian_finding_history{where} ORDER BY time, id", params))
        return [FindingEvent(from_utc_text(r[0]), r[1], r[2], r[3], r[4], r[5], json.loads(r[6])) for r in rows]

    # -- provider history ---------------------------------------------------------------------------------
    def record_provider_transitions(self, provider: str,
                                    changes: Callable[[list[ProviderEvent]], list[ProviderEvent]],
                                    prune_before: datetime | None = None) -> list[ProviderEvent]:
        """Append what changed in `provider`'s incidents and return it, in one transaction that replicas take in
        turn: `changes` gets the newest recorded event of each incident the history still has open (oldest
        first) and returns the transitions to append (`daemon.core.provider.transitions`), so each transition is
        recorded once however many polls or replicas see it. With `prune_before`, when something was appended,
        the history older than that is deleted in the same transaction (as the finding history is pruned)."""
        cut = utc_text(prune_before) if prune_before is not None else None

        def record(tx: Transaction) -> list[ProviderEvent]:
            self._transaction_lock(tx, f"provider-history:{provider}")
            rows = tx.rows(
                f"SELECT {_PROVIDER_COLUMNS} FROM (SELECT h.*, ROW_NUMBER() OVER (PARTITION BY incident "
                "ORDER BY time DESC, id DESC) AS newest FROM guardian_provider_history h WHERE provider = ?) n "
                "WHERE newest = 1 AND event <> 'resolved' ORDER BY time, id", (provider,))
            added = changes([_provider_event(r) for r in rows])
            for e in added:
                tx.rows(f"INSERT INTO guardian_provider_history ({_PROVIDER_COLUMNS}) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", _provider_row(replace(e, provider=provider)))
            if cut is not None and added:
                tx.rows("DELETE FROM guardian_provider_history WHERE time < ?", (cut,))
            return added

        return self._run("record provider incidents", record)

    def provider_history(self, since: datetime | None = None, provider: str | None = None) -> list[ProviderEvent]:
        """The recorded provider incident transitions at or after `since` (all when None), of `provider` only
        when given, oldest first."""
        where, params = _filters(since=since, time_column="time")
        if provider is not None:
            where, params = (where + " AND " if where else " WHERE ") + "provider = ?", (*params, provider)
        rows = self._run("read provider history", lambda tx: tx.rows(
            f"SELECT {_PROVIDER_COLUMNS} FROM guardian_provider_history{where} ORDER BY time, id", params))
        return [_provider_event(r) for r in rows]

    # -- drill history -------------------------------------------------------------------------------------
    def add_drill(self, database: str, scenario: str, started_at: datetime, succeeded: bool,
                  doc: dict[str, Any]) -> None:
        """Record one drill report document."""
        params = (database, scenario, utc_text(started_at), bool(succeeded), dumps_json(doc))
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

    def drills_since(self, since: datetime | None = None, database: str | None = None) -> list[dict[str, Any]]:
        """Every drill document that started at or after `since` (all when None), of `database` only when
        given, oldest first."""
        where, params = _filters(since=since)
        if database is not None:
            where, params = (where + " AND " if where else " WHERE ") + "database_name = ?", (*params, database)
        rows = self._run("read drills since", lambda tx: tx.rows(
            f"SELECT doc FROM guardian_drills{where} ORDER BY started_at, id", params))
        return [json.loads(r[0]) for r in rows]

    # -- scratch database ledger -----------------------------------------------------------------------------
    def add_scratch(self, entry: ScratchEntry) -> None:
        """Record a scratch database before it is created (StateStoreError when the name is recorded already)."""
        params = (entry.server_id, entry.name, entry.token, entry.database, utc_text(entry.created_at),
                  dumps_json(entry.process) if entry.process is not None else None)
        self._run("add scratch database", lambda tx: tx.rows(
            "INSERT INTO guardian_scratch_ledger (server_id, name, token, database_name, created_at, process) "
            "VALUES (?, ?, ?, ?, ?, ?)", params))

    def set_scratch_process(self, server_id: str, name: str, process: dict[str, Any] | None) -> None:
        """Record (or clear) the process restoring into a recorded scratch database."""
        text = dumps_json(process) if process is not None else None
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
        return [ScratchEntry(r[0], r[1], r[2], r[3], from_utc_text(r[4]), json.loads(r[5]) if r[5] else None)
                for r in rows]

    # -- key-value -----------------------------------------------------------------------------------------
    def get(self, key: str) -> Any | None:
        """The JSON value stored under `key`, or None."""
        rows = self._run(f"get {key}", lambda tx: tx.rows("SELECT value FROM guardian_kv WHERE name = ?", (key,)))
        return json.loads(rows[0][0]) if rows else None

    def put(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable `value` under `key`, replacing any earlier one."""
        text = dumps_json(value)
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


_PROVIDER_COLUMNS = "time, provider, incident, event, title, systems, status, url, details"
_PROVIDER_TIMES = ("since", "updated_at", "opened_at")


def _provider_row(e: ProviderEvent) -> tuple[Any, ...]:
    """A provider history row (the columns of _PROVIDER_COLUMNS); the provider's own times go in details."""
    times = {k: utc_text(getattr(e, k)) for k in _PROVIDER_TIMES if getattr(e, k) is not None}
    return (utc_text(e.time), e.provider, e.incident, e.event, e.title, ",".join(e.systems), e.status, e.url or "",
            dumps_json(times))


def _provider_event(r: tuple[Any, ...]) -> ProviderEvent:
    times = json.loads(r[8])
    return ProviderEvent(from_utc_text(r[0]), r[2], r[3], r[4], tuple(s for s in r[5].split(",") if s), r[6],
                         r[7] or None, provider=r[1],
                         **{k: from_utc_text(times[k]) for k in _PROVIDER_TIMES if times.get(k)})


def _filters(action: str | None = None, target: str | None = None, since: datetime | None = None,
             time_column: str = "started_at") -> tuple[str, tuple[Any, ...]]:
    """A WHERE clause and its parameters for the given optional filters (`since` bounds `time_column`)."""
    clauses = [("action = ?", action), ("target = ?", target),
               (f"{time_column} >= ?", utc_text(since) if since else None)]
    used = [(sql, value) for sql, value in clauses if value is not None]
    where = " WHERE " + " AND ".join(sql for sql, _ in used) if used else ""
    return where, tuple(value for _, value in used)
