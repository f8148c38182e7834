"""The state store's schema, the same in both dialects: the tables, the ordered migrations that create and
extend them, and how values are stored (times as fixed-width ISO-8601 UTC text, so that text order is time
order; details as sorted JSON). `Transaction` runs SQL written with `?` placeholders in either dialect.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol


class HasStateDir(Protocol):
    """A migration step's store: where the files of earlier versions lie."""

    state_dir: Path


def utc_text(when: datetime) -> str:
    """Fixed-width UTC text (always with microseconds), so that text order is time order."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"naive datetime {when!r}: the state store needs aware datetimes")
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def from_utc_text(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def dumps_json(value: Any) -> str:
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
_FINDING_HISTORY = """
CREATE TABLE guardian_finding_history (id {pk}, time TEXT NOT NULL, database_name TEXT NOT NULL,
    check_name TEXT NOT NULL, kind TEXT NOT NULL, severity TEXT NOT NULL, hint TEXT NOT NULL, details TEXT NOT NULL);
CREATE INDEX guardian_finding_history_time ON guardian_finding_history (time);
CREATE INDEX guardian_finding_history_db ON guardian_finding_history (database_name, time)
"""
_PROVIDER_HISTORY = """
CREATE TABLE guardian_provider_history (id {pk}, time TEXT NOT NULL, provider TEXT NOT NULL, incident TEXT NOT NULL,
    event TEXT NOT NULL, title TEXT NOT NULL, systems TEXT NOT NULL, status TEXT NOT NULL, url TEXT NOT NULL,
    details TEXT NOT NULL);
CREATE INDEX guardian_provider_history_time ON guardian_provider_history (time);
CREATE INDEX guardian_provider_history_incident ON guardian_provider_history (provider, incident, time)
"""
MIGRATIONS_TABLE = ("CREATE TABLE IF NOT EXISTS guardian_schema_migrations (version INTEGER PRIMARY KEY, "
                     "description TEXT NOT NULL, applied_at TEXT NOT NULL)")
AUDIT_CORE = ("time", "action", "target", "outcome", "reason")


class Transaction:
    """One open transaction: `rows(sql, params)` with `?` placeholders in either dialect."""

    def __init__(self, cursor: Any, placeholder: str) -> None:
        self._cur = cursor
        self._placeholder = placeholder

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        self._cur.execute(sql.replace("?", self._placeholder), params)
        return list(self._cur.fetchall()) if self._cur.description else []


def audit_row(entry: dict[str, Any]) -> tuple[Any, ...]:
    """(time, action, target, outcome, reason, details) for an audit entry; ValueError when a key is missing."""
    missing = [k for k in AUDIT_CORE if k not in entry]
    if missing:
        raise ValueError(f"audit entry lacks {', '.join(missing)}")
    when = entry["time"]
    when = when if isinstance(when, datetime) else datetime.fromisoformat(str(when))
    details = {k: v for k, v in entry.items() if k not in AUDIT_CORE}
    return (utc_text(when), *(str(entry[k]) for k in AUDIT_CORE[1:]), dumps_json(details))


def _import_legacy(store: HasStateDir, tx: Transaction) -> None:
    """Import `audit.jsonl` and `findings.json` of earlier versions into empty tables; the files stay."""
    audit_file, findings_file = store.state_dir / "audit.jsonl", store.state_dir / "findings.json"
    if audit_file.is_file() and not tx.rows("SELECT 1 FROM guardian_audit LIMIT 1"):
        for line in audit_file.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = audit_row(json.loads(line))
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
            tx.rows("INSERT INTO guardian_findings (name, state) VALUES (?, ?)", (name, dumps_json(state)))


Step = str | Callable[[HasStateDir, Transaction], None]
#: (version, description, DDL template formatted with the dialect's types, or a function) in order.
MIGRATIONS: list[tuple[int, str, Step]] = [
    (1, "create the audit, actions, findings, drills and kv tables", _TABLES),
    (2, "import audit.jsonl and findings.json of earlier versions", _import_legacy),
    (3, "create the scratch database ledger", _SCRATCH_LEDGER),
    (4, "record which process runs each action", "ALTER TABLE guardian_actions ADD COLUMN owner TEXT"),
    (5, "keep the history of finding transitions (opened, resolved, notified)", _FINDING_HISTORY),
    (6, "keep the history of provider incidents (opened, updated, resolved)", _PROVIDER_HISTORY),
]
SCHEMA_VERSION: int = MIGRATIONS[-1][0]
