"""The guardian's durable state: audit log, finding states and their history, drill and action history, a
key-value table.

SQLite (`<state_dir>/guardian.db`) by default; PostgreSQL when a URL is configured, because Heroku wipes the
disk and several replicas must share one store. Both behave the same: one base class (`store`) holds the SQL,
two subclasses (`sqlite`, `postgresql`) the connection handling, the locking and the dialect differences;
`schema` holds the tables and migrations, `records` what the store returns and raises. Every method is
thread-safe and raises `StateStoreError` (never a library error, never a password) when the store fails.

Times are stored as fixed-width ISO-8601 UTC text in both dialects, so text order is time order; they come
back as aware UTC datetimes. Naive datetimes are refused with `ValueError`.
"""

from __future__ import annotations

from pathlib import Path

from daemon.adapters.statestore.postgresql import PostgresStateStore, lock_key
from daemon.adapters.statestore.records import ActionRecord, FindingEvent, LockBusy, ScratchEntry, StateStoreError
from daemon.adapters.statestore.schema import MIGRATIONS, SCHEMA_VERSION
from daemon.adapters.statestore.sqlite import SQLiteStateStore
from daemon.adapters.statestore.store import StateStore
from daemon.core.redact import redact_url

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "ActionRecord",
    "FindingEvent",
    "LockBusy",
    "PostgresStateStore",
    "SQLiteStateStore",
    "ScratchEntry",
    "StateStore",
    "StateStoreError",
    "lock_key",
    "open_state_store",
]


def open_state_store(url: str | None, state_dir: Path) -> StateStore:
    """The PostgreSQL store at `url` (postgres:// or postgresql://), else SQLite in `state_dir`; migrated to
    SCHEMA_VERSION. StateStoreError when unreachable, invalid, or written by a newer guardian."""
    if not url:
        return SQLiteStateStore(state_dir)
    if url.startswith(("postgres://", "postgresql://")):
        return PostgresStateStore(url, state_dir)
    raise StateStoreError(f"state store URL must start with postgresql://, got {redact_url(url)!r}")
