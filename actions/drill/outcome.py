"""What one drill is and learns: the scenarios it rehearses, `DrillRun` (its phases, checks and verdict, which
the report is written from) and how it becomes the snapshot's `DrillResult`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from daemon.adapters.postgres.toc import Toc
from daemon.core.names import TableName
from daemon.core.snapshot import Backup, DrillResult

FULL, TABLE = "database_corruption", "accidental_deletion"
SCENARIOS = {"full": FULL, "table": TABLE}
Progress = Callable[[str, int, int | None], None]  # phase, bytes done, bytes total


@dataclass
class CheckResult:
    """One check of a drill: its name in the report, whether it passed, and what it saw."""

    name: str
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass
class DrillRun:
    """Everything one drill learned; becomes the report and a `DrillResult`."""

    database: str
    scenario: str
    started_at: datetime
    backup: Backup | None = None
    source: str | None = None
    phases: dict[str, float] = field(default_factory=dict)
    checks: list[CheckResult] = field(default_factory=list)
    succeeded: bool = False
    skipped: bool = False  # did not run (busy, shutting down): not a drill result, never a failure
    stopped: bool = False  # of the skipped ones: stopped by the shutdown (its history record says interrupted)
    reason: str = ""
    dump_bytes: int = 0
    toc: Toc | None = None
    scratch: str = ""
    safety: str = ""
    rto_seconds: float | None = None
    notes: list[str] = field(default_factory=list)
    not_in_dump: list[TableName] = field(default_factory=list)  # critical tables the backup does not hold

    @property
    def recovery_seconds(self) -> float:
        return sum(self.phases.get(p, 0.0) for p in ("download", "restore", "checks"))


def to_result(run: DrillRun, report: str | None) -> DrillResult:
    """The drill as the snapshot keeps it (for metrics, status and policy); `report` is the report's path."""
    return DrillResult(
        scenario=run.scenario, started_at=run.started_at, succeeded=run.succeeded, reason=run.reason,
        recovery_seconds=run.recovery_seconds, rto_seconds=run.rto_seconds, phases=dict(run.phases),
        checks_failed=sum(1 for c in run.checks if not c.ok), backup_id=run.backup.backup_id if run.backup else None,
        report=report,
    )
