"""The audit log: one record per decision an action takes or declines (time, action, target, outcome, reason),
kept in the state store (SQLite in the state directory, or the shared PostgreSQL store).

A store that cannot be written never loses the decision silently: the record goes to the error log instead.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from loguru import logger

from daemon.core.errors import GuardianError
from daemon.core.redact import REDACTOR, redact_tree

if TYPE_CHECKING:
    from daemon.adapters.statestore import StateStore


def person() -> str:
    """Who runs this process, for a person's request: user@host."""
    return f"{os.environ.get('USER') or 'someone'}@{socket.gethostname()}"


class AuditLog:
    """Append-only audit records in `store`; `read()` returns them for the CLI, oldest first."""

    def __init__(self, store: StateStore, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 on_record: Callable[[list[dict[str, Any]]], None] | None = None) -> None:
        self.store = store
        self.clock = clock
        self.on_record = on_record  # hears every record (the status page's recent decisions); must not raise

    def record(self, action: str, target: str, outcome: str, reason: str, **details: Any) -> dict[str, Any]:
        entry = {"time": self.clock().isoformat(), "action": action, "target": target, "outcome": outcome,
                 "reason": REDACTOR(reason), **redact_tree({k: v for k, v in details.items() if v is not None})}
        try:
            self.store.add_audit(entry)
        except GuardianError as exc:
            logger.error("audit record not stored ({}); the decision was: {}", exc,
                         json.dumps(entry, default=str, sort_keys=True))
        if self.on_record is not None:
            self.on_record([entry])
        return entry

    def read(self, limit: int | None = None, action: str | None = None,
             target: str | None = None) -> list[dict[str, Any]]:
        return self.store.audit(limit=limit, action=action, target=target)

