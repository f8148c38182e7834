"""What the state store hands out and raises: the records of executed actions and of scratch databases, and
the two errors (the store failed; an exclusive section is held elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from daemon.core.errors import GuardianError


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


@dataclass(frozen=True)
class FindingEvent:
    """One transition of a finding, kept in the finding history: `kind` is "opened", "resolved" or "notified"
    (who was told: `details["channels"]`, channel names only, never an address; `details["transition"]` says
    which transition was told). `hint` is the finding's text at that moment (redacted before it is stored)."""

    time: datetime
    database: str
    check: str
    kind: str
    severity: str = ""
    hint: str = ""
    details: dict[str, Any] = field(default_factory=dict)
