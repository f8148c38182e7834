"""The compliance export check: compliance_export_overdue, when a database's export is past its cadence plus
grace, or the last one failed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from daemon.core.policy.findings import finding, format_duration_s
from daemon.core.snapshot import DatabaseState, Finding


@dataclass(frozen=True)
class CompliancePolicy:
    """What the check needs: the cadence, the grace, since when the export has been configured (none is overdue
    before its first chance), and the last export: when, whether it succeeded, and why not."""

    every: timedelta
    grace: timedelta
    since: datetime | None
    last_at: datetime | None = None
    last_ok: bool | None = None
    last_reason: str = ""
    last_good_at: datetime | None = None
    tables: tuple[tuple[str, int, int], ...] = ()  # (table, rows, bytes) of the last good export, for metrics


def compliance_check(db: DatabaseState, policy: CompliancePolicy | None, now: datetime) -> Finding:
    """Active when the last export failed, or no export succeeded within `every + grace` (counted from the
    newest good one, else from `since`)."""
    if policy is None:
        return finding(db, "compliance_export_overdue", False, "no compliance export is configured", now)
    problems = []
    if policy.last_ok is False and policy.last_at is not None:
        problems.append(f"the export of {policy.last_at:%Y-%m-%d %H:%M} failed: {policy.last_reason}")
    since = policy.last_good_at or policy.since
    if since is not None and now - since > policy.every + policy.grace:
        what = (f"last success {format_duration_s((now - since).total_seconds())} ago" if policy.last_good_at
                else "never succeeded")
        problems.append(f"compliance export {what} (every {format_duration_s(policy.every.total_seconds())})")
    return finding(db, "compliance_export_overdue", bool(problems), "; ".join(problems) or "compliance export on "
                   "schedule", now)
